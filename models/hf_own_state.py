"""Explicit decode state of Hugging Face families that keep it outside transformers' `Cache`.

`models.hf_state` calls these where a family's recurrent state is not in a cache layer:

- RWKV takes and returns ``state``, five (batch, hidden, layers) tensors written in place: a
  prefill returns them; a decode step runs on copies. Its one-token path broadcasts a
  (batch, hidden) token shift against (batch, 1, hidden), right for one sequence only, so
  each sequence steps alone, vectorised over the batch by `torch.func.vmap`.
- xLSTM keeps (C, n, m) per layer in its own `xLSTMCache`, updated by ``copy_``: a decode
  step's cache holds copies of its input state (`torch.export` makes the copies functional).
- RecurrentGemma keeps each recurrent block's conv window and RG-LRU state on the module
  (``conv1d_state``, ``rg_lru.recurrent_states``): around a forward pass `module_state`
  moves them between the modules and `hf_recurrent_state`'s layers, which carry them as
  ``conv:0`` and ``recurrent:0``; its local-attention layers use the cache as any family's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _rwkv_prefill(model: Any, input_ids: Tensor) -> tuple[Tensor, ...]:
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    return (out.logits, *out.state)


def _rwkv_decode(model: Any, input_ids: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    def step(ids: Tensor, *one: Tensor) -> tuple[Tensor, ...]:  # one sequence: batch 1
        out = model(input_ids=ids[None], state=[s[None].clone() for s in one], use_cache=True)
        return (out.logits[0, -1:], *(s[0] for s in out.state))

    return torch.func.vmap(step)(input_ids, *state)


def _xlstm_run(model: Any, input_ids: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A forward pass over an `xLSTMCache` holding copies of `state` (empty: zeros, shaped
    as the layers' heads are: the config rounds its own up to a multiple of 64)."""
    from transformers.models.xlstm.modeling_xlstm import xLSTMCache

    batch, heads = input_ids.shape[0], model.config.num_heads
    dtype = model.get_input_embeddings().weight.dtype
    cache = xLSTMCache(model.config, batch, dtype, str(input_ids.device))
    # an int: as a tensor it is a constant the model adds to in place, which export refuses
    cache.seqlen_offset = 0  # type: ignore[assignment]
    if not state:
        zeros = functools.partial(torch.zeros, dtype=dtype, device=input_ids.device)
        layers = [block.mlstm_layer for block in model.backbone.blocks]
        state = tuple(
            t
            for layer in layers
            for qk, v in [(layer.qk_dim // heads, layer.v_dim // heads)]
            for t in (zeros(batch, heads, qk, v), zeros(batch, heads, qk), zeros(batch, heads, 1))
        )
    c = [t.clone() for t in state]
    cache.rnn_state = {i: (c[3 * i], c[3 * i + 1], c[3 * i + 2]) for i in range(len(c) // 3)}
    out = model(input_ids=input_ids, cache=cache, use_cache=True)
    return (out.logits[:, -1:], *(t for layer in cache.rnn_state.values() for t in layer))


# model_type -> (prefill, decode, what the state holds)
_FAMILIES = {
    "rwkv": (_rwkv_prefill, _rwkv_decode, "RWKV's time-mix and channel-mix state"),
    "xlstm": (
        lambda model, input_ids: _xlstm_run(model, input_ids, ()),
        _xlstm_run,
        "the mLSTM state (C, n, m)",
    ),
}


def handles(model: PreTrainedModel) -> bool:
    """Whether the family's whole decode state is its own (not transformers' cache)."""
    return model.config.model_type in _FAMILIES


def prefill(model: PreTrainedModel, input_ids: Tensor) -> tuple[Tensor, ...]:
    """``(logits of the last position, *state)`` after `input_ids`."""
    return _FAMILIES[model.config.model_type][0](model, input_ids)


def decode(model: PreTrainedModel, input_ids: Tensor, state: tuple[Tensor, ...]):
    """``(logits, *new_state)`` of one token per sequence after `state`."""
    return _FAMILIES[model.config.model_type][1](model, input_ids, state)


def words(model: PreTrainedModel) -> str | None:
    """What the family's own decode state holds, per layer, in words (None: not its own)."""
    entry = _FAMILIES.get(model.config.model_type)
    if entry is None:
        return None
    return f"{entry[2]} of {model.config.get_text_config(decoder=True).num_hidden_layers} layer(s)"


def prepare(model: PreTrainedModel) -> None:
    """Eager set-up a forward pass would do in place (RWKV rescales its weights for
    inference on its first call), done before `torch.export` traces one."""
    rescale = getattr(getattr(model, "rwkv", None), "_rescale_layers", None)
    if rescale is not None:
        with torch.no_grad():
            rescale()


def _module_blocks(model: Any, layers: list) -> list[tuple[Any, Any]]:
    """(RecurrentGemma recurrent block, its cache layer) of each layer keeping state on its
    module."""
    decoder = getattr(getattr(model, "model", model), "layers", ())
    pairs = [(getattr(d, "temporal_block", None), c) for d, c in zip(decoder, layers, strict=False)]
    return [(block, cache) for block, cache in pairs if hasattr(block, "conv1d_state")]


@contextlib.contextmanager
def module_state(model: PreTrainedModel, layers: list) -> Iterator[None]:
    """RecurrentGemma's module-held state taken from `layers` (None: a prefill starts from
    zeros) for one forward pass, and returned to them after it; the modules are restored."""
    blocks = _module_blocks(model, layers)
    saved = [(block.conv1d_state, block.rg_lru.recurrent_states) for block, _ in blocks]
    for block, cache in blocks:
        block.conv1d_state = cache.conv_states[0]
        block.rg_lru.recurrent_states = cache.recurrent_states[0]
    try:
        yield
        for block, cache in blocks:
            cache.conv_states[0] = block.conv1d_state
            cache.recurrent_states[0] = block.rg_lru.recurrent_states
    finally:
        for (block, _), (conv, recurrent) in zip(blocks, saved, strict=True):
            block.conv1d_state, block.rg_lru.recurrent_states = conv, recurrent
