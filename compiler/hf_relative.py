"""Inkling's relative-position bias over the distances a prompt can reach.

Inkling, Inkling-2 and Inkling-2-Loop mix a trained bank of bias profiles, ``proj``
(d_rel, rel_extent), into one bias per backward distance: ``relative_states @ proj`` makes
``rel_extent`` logits per token and head (1,024 by default), of which a gather keeps one per
key. A query's distance to any of the ``kv_len`` keys it is given is below ``kv_len``: the keys
are consecutive positions ending at or after the last query's own (a full, sliding or
explicit-state cache, in prefill and decode). So the rewrite mixes only the first
``min(rel_extent, kv_len)`` profiles: the same bias, with the matmul and its result cut from
``rel_extent`` columns to
``kv_len`` (a 128-token prefill over 144 cache slots at default size: 7x less).
"""

from collections.abc import Callable
from typing import Any

from torch import Tensor


def _bias(module: Any, relative_states: Tensor, distance: Tensor) -> Tensor:
    """[batch, heads, q, kv] bias from [batch, q, heads, d_rel] states and [.., q, kv]
    distances, mixing the profiles of the distances below the key count only."""
    width = min(module.rel_extent, distance.shape[-1])
    rel_logits = (relative_states @ module.proj[:, :width]).transpose(1, 2)
    gather_index = distance.clamp(0, width - 1).expand(*rel_logits.shape[:2], -1, -1)
    position_bias = rel_logits.gather(-1, gather_index)
    return position_bias.masked_fill((distance < 0) | (distance >= module.rel_extent), 0.0)


def _inkling_logits(
    module: Any,  # transformers' InklingRelativeLogits
    original: Callable[..., Tensor],
    relative_states: Tensor,
    query_positions: Tensor,
    key_positions: Tensor,
) -> Tensor:
    """Inkling's relative logits over the first ``min(rel_extent, kv_len)`` distances."""
    distance = (query_positions[:, None] - key_positions[None, :])[None, None, :, :]
    return _bias(module, relative_states, distance)


def _inkling2_bias(
    module: Any,  # transformers' Inkling2(Loop)RelativePositionBias
    original: Callable[..., Tensor],
    hidden_states: Tensor,
    relative_distance: Tensor,
    position_ids: Tensor,
) -> Tensor:
    """Inkling-2's relative-position bias over the first ``min(rel_extent, kv_len)`` distances."""
    states = module.linear(hidden_states).view(*hidden_states.shape[:-1], module.num_heads, -1)
    return _bias(module, module.norm(states, position_ids), relative_distance)


_MODELS = "transformers.models"
# (rewrite name, target class, method, forward)
RELATIVE_BIASES: tuple[tuple[str, str, str, Callable[..., object]], ...] = (
    (
        "relative-bias",
        f"{_MODELS}.inkling.modeling_inkling.InklingRelativeLogits",
        "forward",
        _inkling_logits,
    ),
    (
        "relative-bias",
        f"{_MODELS}.inkling2.modeling_inkling2.Inkling2RelativePositionBias",
        "forward",
        _inkling2_bias,
    ),
    (
        "relative-bias",
        f"{_MODELS}.inkling2_loop.modeling_inkling2_loop.Inkling2LoopRelativePositionBias",
        "forward",
        _inkling2_bias,
    ),
)
