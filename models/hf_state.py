"""Hugging Face causal LMs as pure prefill and decode functions over explicit KV-cache tensors.

`HFPrefill` and `HFDecode` wrap a transformers model like `models.base.Prefill` and `Decode`
wrap a reference model: ``prefill(input_ids) -> (logits, *state)`` and
``decode(input_ids, position, *state) -> (logits, *new_state)``, the state being every layer's
keys and values, each (batch, kv heads, slots, head dim). Inside, a transformers `Cache` whose
layers hold those tensors stands in for `DynamicCache` / `StaticCache`: a decode step writes
its key and value at slot ``position`` with an elementwise select (no in-place `index_copy_`)
and attends to slots ``<= position`` (a sliding-window layer: the last of them in its window),
so `torch.export` sees a pure function. The cache keeps every token in its own slot, in
sliding-window layers too (no ring buffer): it reports ``slots`` keys and ``position`` tokens
before the step's, and transformers masks each layer from those, as for its `StaticCache`.
A layer that reuses another's keys and values (Gemma-3n's shared-KV layers) carries none; a
sparse-attention layer (DeepSeek-V3.2's DSA) its indexer's keys too, kept as its keys are.
A family whose forward prepends tokens (CPM-Ant) has slots for them too (`hf_prepended`); one
that loops over its layers (Dory) a cache layer per loop (`hf_loop_state`); DeepSeek-V4's
compressed attention fixed-shape compressed entries (`hf_compressed_state`).
SSMs and hybrids carry conv and recurrent state (`hf_recurrent_state`); RWKV, xLSTM and
RecurrentGemma the state they keep outside transformers' cache (`hf_own_state`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from core.errors import NoKVCacheError
from models import (
    hf_compressed_state,
    hf_loop_state,
    hf_own_state,
    hf_prepended,
    hf_recurrent_state,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@functools.cache
def _cache_layer_class():
    """The cache layer, defined on first use: transformers is imported only when needed."""
    from transformers.cache_utils import StaticLayer

    class StateLayer(StaticLayer):
        """A layer of explicit state: the prompt's keys padded to `slots` (`position` None),
        or this token's key and value selected into slot `position` (a decode step)."""

        def __init__(
            self, keys: Tensor | None, values: Tensor | None, position, slots: int, offset=True
        ):
            super().__init__(max_cache_len=slots)
            self.keys, self.values, self.position = keys, values, position
            self.offset = offset  # report `position` as the query offset (else 0: masked)
            self.indexer_keys: Tensor | None = None  # a DSA indexer's (`update_indexer`)
            self.is_initialized = True

        def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
            if self.position is None or self.keys is None or self.values is None:
                b, h, length, _ = key_states.shape
                pad = key_states.new_zeros(b, h, self.max_cache_len - length, 1)
                self.keys = torch.cat([key_states, pad.expand(-1, -1, -1, key_states.shape[-1])], 2)
                self.values = torch.cat(
                    [value_states, pad.expand(-1, -1, -1, value_states.shape[-1])], 2
                )
                return key_states, value_states
            slots = torch.arange(self.max_cache_len, device=key_states.device)
            hit = (slots == self.position)[None, None, :, None]
            self.keys = torch.where(hit, key_states, self.keys)
            self.values = torch.where(hit, value_states, self.values)
            return self.keys, self.values

        def update_indexer(self, indexer_keys: Tensor) -> Tensor:
            """A sparse-attention indexer's keys (batch, tokens, dim; DeepSeek-V3.2's DSA),
            kept as the keys are: the prompt's padded to `slots`, or this token's selected
            into slot `position`, every slot returned (the step's mask hides those beyond)."""
            if self.position is None or self.indexer_keys is None:
                b, length, dim = indexer_keys.shape
                pad = indexer_keys.new_zeros(b, self.max_cache_len - length, dim)
                self.indexer_keys = torch.cat([indexer_keys, pad], 1)
                return indexer_keys
            slots = torch.arange(self.max_cache_len, device=indexer_keys.device)
            hit = (slots == self.position)[None, :, None]
            self.indexer_keys = torch.where(hit, indexer_keys, self.indexer_keys)
            return self.indexer_keys

        @property
        def indexer_position_ids(self) -> Tensor | None:
            """The positions of the tokens before this step, as Qwen4-Exp's QSA indexer keeps
            them on its first indexed layer (3, batch, tokens): none in a prefill; in a decode
            step, slot i's position is i, and the step's own position follows them, so the
            indexer reads every slot's rotary angle by its index (slots past `position` are
            masked)."""
            if self.position is None or self.keys is None:
                return None
            slots = torch.arange(self.max_cache_len - 1, device=self.keys.device)
            return slots.expand(3, self.keys.shape[0], -1)

        @indexer_position_ids.setter
        def indexer_position_ids(self, positions: Tensor) -> None:
            """Nothing to keep: a slot's position is its index."""

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return (query_length if self.position is None else self.max_cache_len), 0

        def get_seq_length(self) -> int:  # tokens before this step's: the query offset
            return self.position if self.position is not None and self.offset else 0

        def names(self) -> tuple[str, ...]:
            """The state this layer carries (`hf_recurrent_state.Layout`)."""
            return ("keys", "values") + (() if self.indexer_keys is None else ("indexer",))

        def state(self) -> tuple:
            indexer = () if self.indexer_keys is None else (self.indexer_keys,)
            return self.keys, self.values, *indexer

    return StateLayer


def init_state(model: nn.Module, batch: int, slots: int) -> tuple[Tensor, ...]:
    """Zero decode state for `batch` sequences, shaped as a one-token prefill of the model
    leaves it (any family's head layout): keys and values of `slots` slots per attention
    layer, conv and recurrent state per state-space layer (`hf_recurrent_state`), or the
    state a family keeps itself (`hf_own_state`). `NoKVCacheError` if no explicit state can
    carry it; any other error is the model's own."""
    state = _probe(model, batch, slots)[0][1:]
    return tuple(torch.zeros_like(t) for t in state)


def _no_state(model: nn.Module, reason: str) -> NoKVCacheError:
    return NoKVCacheError(
        f"{type(model).__name__}: {reason}; Wafer's explicit decode state holds attention keys "
        "and values (and a sparse-attention indexer's keys, DeepSeek-V4's compressed entries, "
        "a looped layer's per-loop cache), the conv/recurrent state of transformers' "
        "linear-attention cache layers and the state RWKV, xLSTM, RecurrentGemma, GPT-1 and "
        "MiniMax keep themselves, and this family keeps its decode state otherwise; simulate "
        "its prefill alone (--decode 0)"
    )


class HFForward(nn.Module):
    """``forward(input_ids) -> logits of the last position``, no cache: the prefill of a family
    whose decode state `init_state` cannot carry."""

    model: PreTrainedModel

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = cast("PreTrainedModel", model)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits[:, -1:]


def _run(model: PreTrainedModel, ids: Tensor, positions: Tensor, layers: list, **kwargs):
    """Logits of the last position and the layers' keys and values after `ids`."""
    cache = hf_recurrent_state.state_cache(layers)
    with (
        hf_own_state.module_state(model, layers),
        hf_loop_state.loops(model, layers),
        hf_compressed_state.entry_masks(model, layers),
    ):
        out = model(
            input_ids=ids,
            position_ids=positions[None].expand(ids.shape[0], -1),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
    return (out.logits, *(t for layer in layers for t in layer.state()))


def _cache_types(model: PreTrainedModel) -> list[tuple[str, int]]:
    """Each cache layer's type (`hf_recurrent_state.cache_types`), with those a looping
    family's forward would append (`hf_loop_state`)."""
    return hf_loop_state.cache_types(model, hf_recurrent_state.cache_types(model))


def _probe(model: nn.Module, batch: int, slots: int):
    """A one-token prefill of `batch` sequences into `slots` slots: ``(logits, *state)``, and
    which state each layer carries (`hf_recurrent_state.Layout`)."""
    probe = torch.zeros((batch, 1), dtype=torch.int64, device=next(model.parameters()).device)
    prefill = HFPrefill(model, slots)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        for context in PROBE_CONTEXTS:
            stack.enter_context(context(model))
        return prefill(probe), prefill.layout


# Entered around `init_state`'s probe, each with the model: `compiler.hf_rewrites` adds its
# forwards (the ones export sees), so a family whose own forward reads routing data (JetMoE's
# per-expert counts `.tolist()`) probes on the meta device too.
PROBE_CONTEXTS: list[Callable[[nn.Module], AbstractContextManager]] = []


class HFPrefill(nn.Module):
    """``forward(input_ids) -> (logits of the last position, *state)``; the state holds the
    prompt's keys and values in the first of `slots` cache slots, and as many more as the
    model's forward prepends tokens (`hf_prepended`)."""

    model: PreTrainedModel

    def __init__(self, model: nn.Module, slots: int):
        super().__init__()
        self.model = cast("PreTrainedModel", model)
        self.slots = slots + hf_prepended.prepended(self.model)
        self.own = hf_own_state.handles(self.model)
        if self.own:
            hf_own_state.prepare(self.model)
        self.layout: hf_recurrent_state.Layout = ()

    def forward(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        if self.own:  # RWKV, xLSTM: state outside transformers' cache (`hf_own_state`)
            return hf_own_state.prefill(self.model, input_ids)
        types = _cache_types(self.model)
        layers = hf_recurrent_state.make_layers(types, self.slots)
        layers = hf_compressed_state.convert(self.model, types, layers)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        out = _run(self.model, input_ids, positions, layers)
        for index, layer in enumerate(layers):
            if reason := hf_recurrent_state.missing(layer):
                raise _no_state(self.model, f"layer {index} {reason}")
        self.layout = hf_recurrent_state.layout_of(layers)
        return out


class HFDecode(nn.Module):
    """``forward(input_ids (b, 1), position (1,), *state) -> (logits, *new_state)``: one token
    at `position`, attending to the cache slots up to it (a sliding-window layer: to those in
    its window)."""

    model: PreTrainedModel

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = cast("PreTrainedModel", model)
        self.own = hf_own_state.handles(self.model)
        if self.own:
            hf_own_state.prepare(self.model)
        self.types = _cache_types(self.model)
        recurrent = hf_recurrent_state.layer_types(self.model) is not None
        indexed = any(kind in _PROBED for kind, _ in self.types)
        self.layout = hf_recurrent_state.kv_layout(self.types)
        if (recurrent or indexed) and not self.own:
            self.layout = _probe(model, 1, 1)[1]
        self.masked = not recurrent and not _masks_from_offset(self.model)
        self.prepended = hf_prepended.prepended(self.model)

    def _layers(self, position: Tensor, state: tuple[Tensor, ...]) -> tuple[int, list]:
        """The cache's slots (0: no attention layer) and its layers holding `state`."""
        names = [name for layer in self.layout for name in layer]
        slots = state[names.index("keys")].shape[-2] if "keys" in names else 0
        layers = hf_recurrent_state.make_layers(
            self.types, slots, position, state, self.layout, offset=not self.masked
        )
        placed = [(index, name) for index, layer in enumerate(self.layout) for name in layer]
        compressed: dict[int, dict[str, Tensor]] = {}
        for (index, name), tensor in zip(placed, state, strict=True):
            if name == "indexer":  # `make_layers` places keys, values and recurrent state
                layers[index].indexer_keys = tensor
            elif name.startswith(("compressor:", "indexer:")):
                compressed.setdefault(index, {})[name] = tensor
        return slots, hf_compressed_state.convert(self.model, self.types, layers, compressed)

    def forward(self, input_ids: Tensor, position: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if self.own:  # RWKV, xLSTM: state outside transformers' cache (`hf_own_state`)
            return hf_own_state.decode(self.model, input_ids, state)
        if self.prepended:  # CPM-Ant: its prompt tokens fill the first slots
            slot = position + self.prepended
            layers = self._layers(slot, state)[1]
            cache = hf_recurrent_state.state_cache(layers)
            logits = hf_prepended.cpmant_decode(self.model, input_ids, slot, cache)
            return (logits, *(t for layer in layers for t in layer.state()))
        slots, layers = self._layers(position, state)
        if not self.masked:  # transformers builds each layer type's mask (causal, sliding
            # window, ALiBi) from the cache's sizes and query offset, as for its static cache
            return _run(self.model, input_ids, position, layers)
        visible = torch.arange(slots, device=position.device) <= position
        mask = visible[None, None, None].expand(input_ids.shape[0], 1, 1, slots)
        return _run(
            self.model, input_ids, position, layers, attention_mask=_as_mask(self.model, mask)
        )


# The cache layer type of DeepSeek-V3.2-style sparse attention, whose indexer keeps keys too.
INDEXED = "indexed_attention"

# Cache layer types whose state `HFDecode` reads off a probe: DSA's, and DeepSeek-V4's
# compressed attention (`hf_compressed_state`).
_PROBED = (INDEXED, hf_compressed_state.SPARSE, hf_compressed_state.HEAVY)

# Families whose attention takes only a 2-D padding mask (ALiBi built from it): BLOOM; or whose
# every layer keeps a sliding window of keys whatever its type: DeepSeek-V4.
_MASKED_FROM_OFFSET = ("bloom", "deepseek_v4")


def _masks_from_offset(model: PreTrainedModel) -> bool:
    """Let transformers mask a decode step from the cache's query offset: needed by
    sliding-window layers and by `_MASKED_FROM_OFFSET`; other families get one explicit 4-D mask,
    as some (BioGPT, MPT) do shape arithmetic on the offset, which `torch.export` cannot trace
    when it is the step's position tensor."""
    text = model.config.get_text_config(decoder=True)
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        sliding = any("sliding" in str(t) for t in layer_types)
    else:
        sliding = getattr(text, "sliding_window", None) is not None
    return sliding or text.model_type in _MASKED_FROM_OFFSET


def _as_mask(model: PreTrainedModel, visible: Tensor) -> Tensor:
    """The 4-D mask as the model's attention takes it: boolean for SDPA, else additive (0 where
    visible, the dtype's lowest value elsewhere), as eager attention adds it to the scores."""
    if model.config._attn_implementation == "sdpa":
        return visible
    dtype = next(model.parameters()).dtype
    hidden = torch.full(visible.shape, torch.finfo(dtype).min, dtype=dtype, device=visible.device)
    return torch.where(visible, torch.zeros_like(hidden), hidden)
