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
- OpenAI GPT (GPT-1) has no cache: around a pass each block's attention is replaced by one
  that writes its keys and values to its cache layer and attends to what the layer returns
  (the prompt causally; a decode step to the slots up to its position).
- MiniMax's lightning-attention layers read and write their (K^T V) state through the
  `MiniMaxCache` methods ``get_linear_cache``/``set_linear_cache``: around a pass the cache
  gets them, over its recurrent layers' ``recurrent:0``; its full-attention layers keep keys
  and values as any family's.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
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


def _xlstm_run(
    model: Any, input_ids: Tensor, state: tuple[Tensor, ...], every_position: bool = False
) -> tuple[Tensor, ...]:
    """A forward pass over an `xLSTMCache` holding copies of `state` (empty: zeros, shaped
    as the layers' heads are: the config rounds its own up to a multiple of 64): the logits
    of the last position (or of every one) and the new state."""
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
    logits = out.logits if every_position else out.logits[:, -1:]
    return (logits, *(t for layer in cache.rnn_state.values() for t in layer))


class XLSTMFromZeroState(torch.nn.Module):
    """``forward(input_ids) -> logits`` of every position, from zero state in the model's
    dtype through xLSTM's cache, as its prefill runs. Its forward without a cache starts
    from float32 state, which transformers' kernels then multiply with bf16 (or float64)
    keys and fail; in float32 the two are the same computation."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return _xlstm_run(self.model, input_ids, (), every_position=True)[0]


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
    """Around one forward pass over cache `layers`: the state a family's modules keep, or read
    and write outside transformers' cache, carried by those layers instead (RecurrentGemma,
    OpenAI GPT, MiniMax); the modules are restored after it."""
    kind = model.config.model_type
    patch = _PATCHES.get(kind, _recurrent_gemma_state)
    with patch(model, layers):
        yield


@contextlib.contextmanager
def _recurrent_gemma_state(model: Any, layers: list) -> Iterator[None]:
    """RecurrentGemma's module-held state taken from `layers` (None: a prefill starts from
    zeros) for one forward pass, and returned to them after it."""
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


@contextlib.contextmanager
def _forwards(replaced: list[tuple[Any, Callable]]) -> Iterator[None]:
    """Each module's `forward` replaced for the duration (its own restored after)."""
    saved = [module.__dict__.get("forward") for module, _ in replaced]
    for module, forward in replaced:
        module.forward = forward
    try:
        yield
    finally:
        for (module, _), own in zip(replaced, saved, strict=True):
            if own is None:
                del module.forward
            else:
                module.forward = own


def _gpt_attention(attn: Any, layer: Any) -> Callable:
    """OpenAI GPT's `Attention.forward` over cache `layer` (`hf_state`'s): a prefill attends
    causally within the prompt, a decode step to the layer's slots up to its position; masked
    scores are -1e4, as transformers' own. Its padding mask is not used (there is none)."""

    def forward(x: Tensor, attention_mask=None, output_attentions=False) -> list[Tensor]:
        query, key, value = attn.c_attn(x).split(attn.split_size, dim=2)
        query, key, value = (attn.split_heads(t) for t in (query, key, value))
        keys, values = layer.update(key, value)
        scores = query @ keys.transpose(-1, -2)
        if attn.scale:
            scores = scores / math.sqrt(value.shape[-1])
        if layer.position is None:
            visible = attn.bias[:, :, : scores.shape[-2], : scores.shape[-1]]
        else:
            slots = torch.arange(keys.shape[-2], device=x.device)
            visible = (slots <= layer.position).to(scores.dtype)
        scores = scores * visible + -1e4 * (1 - visible)
        weights = attn.attn_dropout(torch.softmax(scores, dim=-1))
        return [attn.resid_dropout(attn.c_proj(attn.merge_heads(weights @ values)))]

    return forward


def _openai_gpt_state(model: Any, layers: list) -> contextlib.AbstractContextManager:
    """GPT-1's blocks attending over cache `layers` for one forward pass."""
    blocks = model.transformer.h
    return _forwards(
        [(b.attn, _gpt_attention(b.attn, layer)) for b, layer in zip(blocks, layers, strict=True)]
    )


def _minimax_state(model: Any, layers: list) -> contextlib.AbstractContextManager:
    """MiniMax over cache `layers` for one forward pass: the cache reads and writes each
    lightning layer's state in its recurrent layer, and the model is called with
    ``use_cache=False`` (it refuses any cache but its own otherwise; its layers use the one
    given all the same)."""
    inner = model.model
    own_forward = inner.forward

    def get_linear_cache(index: int) -> Tensor | None:
        return layers[index].recurrent_states[0]

    def set_linear_cache(index: int, state: Tensor) -> None:
        layers[index].update_recurrent_state(state)

    def forward(*args, cache=None, **kwargs):
        if cache is not None:
            cache.get_linear_cache, cache.set_linear_cache = get_linear_cache, set_linear_cache
        return own_forward(*args, cache=cache, **{**kwargs, "use_cache": False})

    return _forwards([(inner, forward)])


_PATCHES: dict[str, Callable[[Any, list], contextlib.AbstractContextManager]] = {
    "openai-gpt": _openai_gpt_state,
    "minimax": _minimax_state,
}
