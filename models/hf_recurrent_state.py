"""Explicit recurrent decode state for Hugging Face SSMs and hybrids (`models.hf_state`'s hook).

transformers keeps a Mamba (or other linear-attention) layer's state in a `Cache` layer as conv
and recurrent (SSM) tensors, updated in place. Here each layer of the cache is a state layer
whose tensors are inputs and outputs: a prefill stores the prompt's last conv window and final
SSM state by assignment; a decode step hands the mixer a copy of its input state (the mixer's
own ``copy_`` then updates that copy, which `torch.export` makes functional) and returns it. A
hybrid's attention layers keep `hf_state`'s keys and values. Which tensors a layer carries
(`Layout`) is read off a one-token probe, as transformers creates them lazily.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Per layer, the names of the state tensors it carries, in order: "keys", "values",
# "conv:i", "recurrent:i" (i: the layer's state index).
Layout = tuple[tuple[str, ...], ...]
RECURRENT_TYPES = ("conv", "linear_attention", "hybrid", "hybrid_sliding")


def cache_types(model: PreTrainedModel) -> list[tuple[str, int]]:
    """Each layer's cache type and number of conv/recurrent states, as transformers' caches
    build them ("dummy": a layer without cache, as Gemma-3n's shared-KV layers)."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    config = model.config.get_text_config(decoder=True)
    types, kwargs = get_layer_types_and_kwargs(config)
    layers = [(t, k.get("number_of_states", 0)) for t, k in zip(types, kwargs, strict=True)]
    if (passes := getattr(config, "loop_num_passes", 1)) > 1:  # Inkling-2-Loop: one cache
        # layer per further pass over its looped layers, as its forward appends them
        layers += layers[config.loop_layer_index_start : config.loop_layer_index_end] * (passes - 1)
    return layers


def layer_types(model: PreTrainedModel) -> list[tuple[str, int]] | None:
    """`cache_types`, or None when no layer keeps recurrent state (a plain KV cache)."""
    types = cache_types(model)
    return types if any(t in RECURRENT_TYPES for t, _ in types) else None


def kv_layout(types: list[tuple[str, int]]) -> Layout:
    """The `Layout` of a plain KV cache: keys and values per layer with a cache."""
    return tuple(() if kind == "dummy" else ("keys", "values") for kind, _ in types)


@functools.cache
def _recurrent_class():
    """The state-space layer class, defined on first use (transformers is imported only then)."""
    from transformers.cache_utils import LinearAttentionLayer

    class RecurrentLayer(LinearAttentionLayer):
        """Conv and recurrent state of one linear-attention layer: updated by assignment, never
        in place; a decode step starts from copies of its input state."""

        def __init__(self, states: int, given: dict[str, Tensor] | None):
            LinearAttentionLayer.__init__(self, number_of_states=states)
            for name, tensor in (given or {}).items():
                kind, i = name.split(":")
                getattr(self, f"{kind}_states")[int(i)] = tensor.clone()
                getattr(self, f"is_{kind}_states_initialized")[int(i)] = True
                self.has_previous_state[int(i)] = True
                if kind == "conv":
                    self.conv_kernel_size[int(i)] = tensor.shape[-1]

        def lazy_initialization(
            self, conv_states=None, recurrent_states=None, state_idx=0, conv_kernel_size=None
        ):
            if conv_states is not None:
                self.conv_kernel_size[state_idx] = conv_kernel_size or conv_states.shape[-1]
                self.is_conv_states_initialized[state_idx] = True
            if recurrent_states is not None:
                self.is_recurrent_states_initialized[state_idx] = True

        def update_conv_state(
            self,
            conv_states: Tensor,
            state_idx: int = 0,
            conv_kernel_size: int | None = None,
            **kwargs,
        ) -> Tensor:
            if not self.is_conv_states_initialized[state_idx]:
                self.lazy_initialization(
                    conv_states=conv_states, state_idx=state_idx, conv_kernel_size=conv_kernel_size
                )
            size = int(self.conv_kernel_size[state_idx] or 0)
            previous = self.conv_states[state_idx]
            if previous is not None and self.has_previous_state[state_idx]:
                full = torch.cat([previous, conv_states], dim=-1)
            else:
                left = max(0, size - conv_states.shape[-1])
                full = torch.nn.functional.pad(conv_states, (left, 0))
                self.has_previous_state[state_idx] = True
            self.conv_states[state_idx] = full[..., -size:]
            return full

        def update_recurrent_state(self, recurrent_states: Tensor, state_idx: int = 0, **kwargs):
            self.is_recurrent_states_initialized[state_idx] = True
            self.recurrent_states[state_idx] = recurrent_states
            return recurrent_states

        def names(self) -> tuple[str, ...]:
            """The state this layer carries after a forward pass (see `Layout`)."""
            return tuple(
                f"{kind}:{i}"
                for i in range(self.number_of_states)
                for kind in ("conv", "recurrent")
                if getattr(self, f"{kind}_states")[i] is not None
            )

        def state(self) -> tuple[Tensor, ...]:
            out = []
            for name in RecurrentLayer.names(self):
                kind, i = name.split(":")
                out.append(getattr(self, f"{kind}_states")[int(i)])
            return tuple(out)

    return RecurrentLayer


@functools.cache
def _hybrid_class():
    """A layer with attention keys and values (`hf_state`'s layer) and conv/recurrent state."""
    from models.hf_state import _cache_layer_class

    recurrent, attention = _recurrent_class(), _cache_layer_class()

    class HybridLayer(recurrent, attention):
        def __init__(self, states, given, keys, values, position, slots):
            attention.__init__(self, keys, values, position, slots)
            recurrent.__init__(self, states, given)

        def lazy_initialization(self, *args, **kwargs) -> None:
            if not args:
                recurrent.lazy_initialization(self, **kwargs)

        def names(self) -> tuple[str, ...]:
            return ("keys", "values", *recurrent.names(self))

        def state(self) -> tuple[Tensor, ...]:
            return (self.keys, self.values, *recurrent.state(self))

    return HybridLayer


@functools.cache
def _no_state_class():
    """A layer without cache (an MLP or MoE block of a hybrid)."""
    from transformers.cache_utils import DummyLayer

    class NoState(DummyLayer):
        def names(self) -> tuple[str, ...]:
            return ()

        def state(self) -> tuple[Tensor, ...]:
            return ()

    return NoState


@functools.cache
def _cache_class():
    """transformers' `Cache` whose layers may all be state-space layers."""
    from transformers.cache_utils import Cache

    class StateCache(Cache):
        def _attention(self) -> bool:
            return any(hasattr(layer, "keys") for layer in self.layers)

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return super().get_seq_length(layer_idx) if self._attention() else 0

        def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
            if self._attention():
                return super().get_mask_sizes(query_length, layer_idx)
            return query_length, 0

    return StateCache


def make_layers(
    types: list[tuple[str, int]],
    slots: int,
    position=None,
    state=(),
    layout: Layout = (),
    offset: bool = True,
) -> list:
    """The cache layers for `types`: empty for a prefill (`position` None), else holding
    `state` as `layout` lays it out, for a decode step at `position` (`offset`: whether
    attention layers report it as the query offset, `hf_state`'s layer)."""
    from models.hf_state import _cache_layer_class

    recurrent, hybrid, attention = _recurrent_class(), _hybrid_class(), _cache_layer_class()
    tensors = iter(state)
    layers = []
    for index, (kind, states) in enumerate(types):
        given = {name: next(tensors) for name in layout[index]} if layout else {}
        keys, values = given.pop("keys", None), given.pop("values", None)
        if kind in ("conv", "linear_attention"):
            layers.append(recurrent(states, given))
        elif kind in ("hybrid", "hybrid_sliding"):
            layers.append(hybrid(states, given, keys, values, position, slots))
        elif kind == "dummy":
            layers.append(_no_state_class()())
        else:
            layers.append(attention(keys, values, position, slots, offset))
    return layers


def missing(layer) -> str | None:
    """Why `layer` after a forward pass carries no explicit state (its family keeps it
    elsewhere), or None."""
    recurrent = _recurrent_class()
    if isinstance(layer, recurrent) and not recurrent.names(layer):
        return "keeps its recurrent state outside transformers' cache"
    if any(t is None for t in layer.state()):
        return "left no keys and values in transformers' cache"
    return None


def layout_of(layers: list) -> Layout:
    """The `Layout` of layers after a forward pass (each checked by `missing`)."""
    return tuple(
        layer.names() if hasattr(layer, "names") else ("keys", "values") for layer in layers
    )


def state_cache(layers: list):
    """transformers' `Cache` over `layers`; with no attention layer its sequence length is 0
    and its mask spans the query (positions are given explicitly), where transformers' own
    would raise."""
    return _cache_class()(layers=layers)
