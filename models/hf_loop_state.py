"""Explicit decode state for Hugging Face families that loop over a section of their layers
(Dory, `models.hf_state`'s hook).

Dory runs its recurrent layers `n_recurrent_loops` times. With ``recurrent_kv_cache_mode ==
"per_loop"`` each further loop keeps its own keys and values, in copies of the recurrent cache
layers that its forward deep-copies onto a cache of `num_hidden_layers` layers: `cache_types`
gives the explicit cache those layers from the start, so no copy happens. With ``"last_loop"``
only the last loop writes; the earlier ones attend to the cache's past and their own tokens,
read from every cache layer's keys. `loops` has them see what the layer's update would return
(their token in its slot, the cache unchanged), which a prefill's empty state and a decode
step's slots both give with the one mask transformers builds for the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _looped(model: PreTrainedModel) -> bool:
    return model.config.get_text_config(decoder=True).model_type == "dory"


def cache_types(model: PreTrainedModel, types: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """`types` (`hf_recurrent_state.cache_types`) and, for Dory's per-loop cache, a layer per
    further loop over its recurrent layers, as its forward appends them."""
    config = model.config.get_text_config(decoder=True)
    if not _looped(model) or config.recurrent_kv_cache_mode != "per_loop":
        return types
    start = config.n_input_layers
    looped = types[start : start + config.n_recurrent_layers]
    return types + looped * (config.n_recurrent_loops - 1)


class _Peek:
    """A cache whose update returns what the layer's would, storing nothing."""

    def __init__(self, layers: list):
        self.layers = layers

    def update(self, keys: Tensor, values: Tensor, layer_idx: int, *args, **kwargs):
        layer = self.layers[layer_idx]
        if layer.position is None:  # a prefill: no past
            return keys, values
        slots = torch.arange(layer.max_cache_len, device=keys.device)
        hit = (slots == layer.position)[None, None, :, None]
        return torch.where(hit, keys, layer.keys), torch.where(hit, values, layer.values)


@contextlib.contextmanager
def loops(model: PreTrainedModel, layers: list) -> Iterator[None]:
    """Around a forward over cache `layers`: Dory's last-loop-only cache read by `_Peek`."""
    config = model.config.get_text_config(decoder=True)
    if not _looped(model) or config.recurrent_kv_cache_mode != "last_loop":
        yield
        return

    def peek(module, args, kwargs):
        if kwargs.get("shared_kv_states") is None:
            return None
        return args, {**kwargs, "shared_kv_states": None, "cache": _Peek(layers)}

    start = config.n_input_layers
    recurrent = model.model.layers[start : start + config.n_recurrent_layers]
    hooks = [
        layer.self_attn.register_forward_pre_hook(peek, with_kwargs=True) for layer in recurrent
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
