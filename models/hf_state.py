"""Hugging Face causal LMs as pure prefill and decode functions over explicit KV-cache tensors.

`HFPrefill` and `HFDecode` wrap a transformers model like `models.base.Prefill` and `Decode`
wrap a reference model: ``prefill(input_ids) -> (logits, *state)`` and
``decode(input_ids, position, *state) -> (logits, *new_state)``, the state being every layer's
keys and values, each (batch, kv heads, slots, head dim). Inside, a transformers `Cache` whose
layers hold those tensors stands in for `DynamicCache` / `StaticCache`: a decode step writes
its key and value at slot ``position`` with an elementwise select (no in-place `index_copy_`)
and attends to slots ``<= position``, so `torch.export` sees a pure function.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from core.errors import HFConfigError, NoKVCacheError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@functools.cache
def _cache_layer_class():
    """The cache layer, defined on first use: transformers is imported only when needed."""
    from transformers.cache_utils import StaticLayer

    class StateLayer(StaticLayer):
        """A layer of explicit state: the prompt's keys padded to `slots` (`position` None),
        or this token's key and value selected into slot `position` (a decode step)."""

        def __init__(self, keys: Tensor | None, values: Tensor | None, position, slots: int):
            super().__init__(max_cache_len=slots)
            self.keys, self.values, self.position = keys, values, position
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

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return (query_length if self.position is None else self.max_cache_len), 0

        def get_seq_length(self) -> int:
            return 0

    return StateLayer


def _layers(config) -> int:
    return config.get_text_config(decoder=True).num_hidden_layers


def check_decodable(model: nn.Module, slots: int) -> None:
    """A cache of `slots` slots, read whole with one mask, is exact for `model`: it has no
    sliding-window layer, or `slots` fit in its window (a longer one needs a ring buffer)."""
    text = cast("PreTrainedModel", model).config.get_text_config(decoder=True)
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    sliding = "sliding_attention" in layer_types if layer_types else window is not None
    if sliding and isinstance(window, int) and slots > window:
        raise HFConfigError(
            f"{type(model).__name__}: {slots} cache slots exceed its sliding window of {window} "
            "tokens, which needs a ring-buffer cache Wafer does not build yet; use at most "
            f"{window} tokens (--seq plus --decode)"
        )


def init_state(model: nn.Module, batch: int, slots: int) -> tuple[Tensor, ...]:
    """Zero KV cache of `slots` slots for `batch` sequences: keys and values of every layer,
    shaped as a one-token prefill of the model leaves them (any family's head layout)."""
    probe = torch.zeros((batch, 1), dtype=torch.int64, device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            state = HFPrefill(model, slots)(probe)[1:]
    except HFConfigError:
        raise
    except Exception as exc:  # the family's cache is not a plain KV cache
        reason = " ".join(str(exc).split())[:200]
        raise NoKVCacheError(
            f"{type(model).__name__}: Wafer's explicit decode state holds attention keys and "
            "values only, and this family keeps other per-layer state (Mamba conv/SSM state, "
            f"linear attention) [{reason}]; simulate its prefill alone (--decode 0)"
        ) from None
    return tuple(torch.zeros_like(t) for t in state)


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
    from transformers.cache_utils import Cache

    cache = Cache(layers=layers)
    out = model(
        input_ids=ids,
        position_ids=positions[None].expand(ids.shape[0], -1),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        **kwargs,
    )
    state = [t for layer in layers for t in (layer.keys, layer.values)]
    return (out.logits, *state)


class HFPrefill(nn.Module):
    """``forward(input_ids) -> (logits of the last position, *state)``; the state holds the
    prompt's keys and values in the first of `slots` cache slots."""

    model: PreTrainedModel

    def __init__(self, model: nn.Module, slots: int):
        super().__init__()
        check_decodable(model, slots)
        self.model, self.slots = cast("PreTrainedModel", model), slots

    def forward(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        layer = _cache_layer_class()
        layers = [layer(None, None, None, self.slots) for _ in range(_layers(self.model.config))]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return _run(self.model, input_ids, positions, layers)


class HFDecode(nn.Module):
    """``forward(input_ids (b, 1), position (1,), *state) -> (logits, *new_state)``: one token
    at `position`, attending to the cache slots up to it."""

    model: PreTrainedModel

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = cast("PreTrainedModel", model)

    def forward(self, input_ids: Tensor, position: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        layer = _cache_layer_class()
        slots = state[0].shape[-2]
        check_decodable(self.model, slots)
        layers = [layer(state[i], state[i + 1], position, slots) for i in range(0, len(state), 2)]
        visible = torch.arange(slots, device=position.device) <= position
        mask = visible[None, None, None].expand(input_ids.shape[0], 1, 1, slots)
        return _run(
            self.model, input_ids, position, layers, attention_mask=_as_mask(self.model, mask)
        )


def _as_mask(model: PreTrainedModel, visible: Tensor) -> Tensor:
    """The 4-D mask as the model's attention takes it: boolean for SDPA, else additive (0 where
    visible, the dtype's lowest value elsewhere), as eager attention adds it to the scores."""
    if model.config._attn_implementation == "sdpa":
        return visible
    dtype = next(model.parameters()).dtype
    hidden = torch.full(visible.shape, torch.finfo(dtype).min, dtype=dtype, device=visible.device)
    return torch.where(visible, torch.zeros_like(hidden), hidden)
