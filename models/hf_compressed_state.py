"""Explicit decode state for compressed attention (DeepSeek-V4's CSA and HCA layers,
`models.hf_state`'s hook).

A V4 layer attends to its sliding window of keys (keys and values are one tensor) and to
compressed entries, one per window of `rate` tokens: the softmax-gated sum of the window's
projected keys (CSA: with the previous window's first half, the overlap, and a lightning
indexer that compresses its own keys and picks the top-k entries per query). transformers'
cache layer keeps the entries emitted so far, the tokens of the window not yet complete and
the overlap, each growing with the sequence. Here they have fixed shapes: `capacity` entry
slots, a ring of `rate` tokens (token ``t`` in ``t % rate``) and the overlap, per compressor.
A prefill keeps transformers' own computation and pads what it leaves; a decode step writes
its token into the ring, compresses the ring as one window, and selects the entry into slot
``position // rate`` and the overlap into place only when the step completes the window. A
window 0 has no overlap before it (its gate -inf), and the entries not yet emitted are masked:
CSA's indexer and block bias do that from the query's position; HCA's decode step (which
transformers gives no bias, every entry it holds being emitted) gets `_mask_entries`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SPARSE, HEAVY = "compressed_sparse_attention", "heavily_compressed_attention"
# Each compressor's state, in `Layout` order (an HCA layer has no overlap nor indexer)
_NAMES = tuple(
    f"{compressor}:{part}"
    for compressor in ("compressor", "indexer")
    for part in ("entries", "buffer_kv", "buffer_gate", "overlap_kv", "overlap_gate")
)


@functools.cache
def _compressed_class():
    """The compressed-attention cache layer, defined on first use (imports transformers)."""
    from models.hf_state import _cache_layer_class

    state_layer = _cache_layer_class()

    class CompressedLayer(state_layer):
        """Sliding-window keys (`hf_state`'s layer, keys only: V4's values are its keys) and
        each compressor's entries, ring and (CSA) overlap, named ``"compressor:entries"``
        etc. (`Layout`), implementing transformers' `DeepseekV4CSACache` methods."""

        def __init__(self, keys, position, slots, offset, kind: str, rate: int, given: dict):
            super().__init__(keys, keys, position, slots, offset)
            self.rate, self.capacity = rate, max(1, slots // rate)
            self.overlapping = kind == SPARSE  # CSA: windows overlap by the previous one's
            self.stored: dict[str, Tensor] = dict(given)

        def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
            keys = state_layer.update(self, key_states, key_states)[0]
            return keys, keys

        def _complete(self) -> Tensor:
            """Whether this decode step's token completes its window."""
            return (self.position + 1) % self.rate == 0

        def store_compression_weights(self, name: str, kv: Tensor, gate: Tensor):
            """The windows to compress, and the first one's first position: a prefill's
            complete windows, the rest kept in the ring; a decode step's ring."""
            if self.position is None:
                usable = kv.shape[1] // self.rate * self.rate
                pad = (0, 0, 0, self.rate - (kv.shape[1] - usable))
                self.stored[f"{name}:buffer_kv"] = F.pad(kv[:, usable:], pad)
                self.stored[f"{name}:buffer_gate"] = F.pad(gate[:, usable:], pad)
                if self.overlapping:  # none until a window completes (`update_overlap_state`)
                    shape = (kv.shape[0], self.rate, kv.shape[-1] // 2)  # two tensors: an
                    # export given one as both would read them as one input
                    self.stored[f"{name}:overlap_kv"] = kv.new_zeros(shape)
                    self.stored[f"{name}:overlap_gate"] = gate.new_zeros(shape)
                return kv[:, :usable], gate[:, :usable], 0
            ring = torch.arange(self.rate, device=kv.device) == self.position % self.rate
            kv = self._select(f"{name}:buffer_kv", ring[None, :, None], kv)
            gate = self._select(f"{name}:buffer_gate", ring[None, :, None], gate)
            return kv, gate, self.position // self.rate * self.rate

        def update_overlap_state(self, name: str, kv: Tensor, gate: Tensor, head_dim: int):
            """The overlap before the first window (None in a prefill), keeping the last
            window's."""
            last_kv, last_gate = kv[:, -1, :, :head_dim], gate[:, -1, :, :head_dim]
            if self.position is None:
                self.stored[f"{name}:overlap_kv"] = last_kv.clone()
                self.stored[f"{name}:overlap_gate"] = last_gate.clone()
                return None, None
            prior_kv = self.stored[f"{name}:overlap_kv"]
            prior_gate = self.stored[f"{name}:overlap_gate"]
            self._select(f"{name}:overlap_kv", self._complete(), last_kv)
            self._select(f"{name}:overlap_gate", self._complete(), last_gate)
            first = self.position < self.rate  # window 0: zero keys, -inf gates, as transformers'
            none_kv, none_gate = torch.zeros_like(prior_kv), torch.full_like(prior_gate, -torch.inf)
            return torch.where(first, none_kv, prior_kv), torch.where(first, none_gate, prior_gate)

        def update_compressor_states(self, name: str, compressed: Tensor) -> Tensor:
            """The entries emitted so far (a prefill's), or every entry slot (a decode step's,
            this window's selected in if complete)."""
            key = f"{name}:entries"
            if self.position is None:
                missing = self.capacity - compressed.shape[1]
                self.stored[key] = F.pad(compressed, (0, 0, 0, missing))
                return compressed
            slots = torch.arange(self.capacity, device=compressed.device)
            hit = (slots == self.position // self.rate) & self._complete()
            return self._select(key, hit[None, :, None], compressed)

        def _select(self, key: str, where: Tensor, new: Tensor) -> Tensor:
            """`new` into the state `key` where `where` holds (a decode step's write)."""
            self.stored[key] = torch.where(where, new, self.stored[key])
            return self.stored[key]

        def names(self) -> tuple[str, ...]:
            return ("keys", *(name for name in _NAMES if name in self.stored))

        def state(self) -> tuple[Tensor, ...]:
            return (self.keys, *(self.stored[name] for name in self.names()[1:]))

    return CompressedLayer


def convert(model: PreTrainedModel, types: list[tuple[str, int]], layers: list, given=None) -> list:
    """`layers` with those of compressed-attention `types` made `CompressedLayer`s, holding
    the state `given` them (by layer index, name: tensor; none for a prefill)."""
    rates = model.config.get_text_config(decoder=True).to_dict().get("compress_rates") or {}
    compressed = _compressed_class()
    for index, (kind, _) in enumerate(types):
        if kind in (SPARSE, HEAVY):
            old = layers[index]
            state = (given or {}).get(index, {})
            layers[index] = compressed(
                old.keys, old.position, old.max_cache_len, old.offset, kind, rates[kind], state
            )
    return layers


def _mask_entries(layer, module, args, output):
    """HCA's decode-step output with a block bias hiding the entry slots not yet emitted."""
    entries, bias = output
    if bias is not None:
        return output
    emitted = (layer.position + 1) // layer.rate
    visible = torch.arange(layer.capacity, device=entries.device) < emitted
    hidden = torch.full_like(visible, -torch.inf, dtype=entries.dtype)
    bias = torch.where(visible, torch.zeros_like(hidden), hidden)
    return entries, bias[None, None, None].expand(entries.shape[0], 1, 1, -1)


@contextlib.contextmanager
def entry_masks(model: PreTrainedModel, layers: list) -> Iterator[None]:
    """Around a decode step over cache `layers`: HCA layers' entry slots masked."""
    compressed = _compressed_class()
    heavy = [
        index
        for index, layer in enumerate(layers)
        if isinstance(layer, compressed) and layer.position is not None and not layer.overlapping
    ]
    hooks = [
        model.model.layers[index].self_attn.compressor.register_forward_hook(
            functools.partial(_mask_entries, layers[index])
        )
        for index in heavy
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
