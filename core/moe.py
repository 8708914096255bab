"""Mixture of experts as four PyTorch custom ops, one per stage of an MoE layer.

* ``wafer::moe_router(logits (T, E), selection_bias, top_k, scoring, normalize, groups,
  topk_groups, scale)`` -> ``(weights (T, k) f32, indices (T, k) i64)``: the top-k experts of
  each token and their gate weights. ``scoring``: "softmax" (softmax over all experts, then top-k:
  Mixtral, Qwen-MoE, Jamba), "topk_softmax" (top-k of the logits, then softmax over the k:
  gpt-oss, Granite-MoE) or "sigmoid" (DeepSeek-V3: experts chosen by sigmoid + `selection_bias`,
  in the best `topk_groups` of `groups` groups; weights are the unbiased sigmoid scores).
  ``normalize`` divides the k weights by their sum; ``scale`` multiplies them last.
* ``wafer::moe_dispatch(x (T, H), indices, weights, num_experts, capacity)`` ->
  ``(xs (E, C, H), gates (E, C) f32, slots (E, C) i64)``: token rows packed into `capacity` slots
  per expert, in token order; `slots` holds each slot's token (T for an empty slot), `gates` its
  weight (0 when empty). Tokens past an expert's capacity are dropped.
* ``wafer::grouped_matmul(xs (E, C, K), w, bias (E, N) | None, transpose_rhs)`` -> (E, C, N):
  expert e's rows times its weight, ``w`` (E, K, N), or (E, N, K) when ``transpose_rhs``.
* ``wafer::moe_combine(ys (E, C, H), gates, slots, num_tokens)`` -> (T, H): the gate-weighted
  sum of each token's expert rows (float32 accumulation, in expert order), in ``ys.dtype``.

Data-dependent routing becomes static shapes through the capacity: with ``capacity = T`` (the
default every rewrite uses) no token can be dropped and the result equals eager's; the
grouped matmuls then run E x T rows where k x T are useful (E / k times the FLOPs).
"""

import torch
from torch import Tensor

SCORINGS = ("softmax", "topk_softmax", "sigmoid")


def moe_router_reference(
    logits: Tensor,
    selection_bias: Tensor | None,
    top_k: int,
    scoring: str,
    normalize: bool,
    groups: int = 1,
    topk_groups: int = 1,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Numerical ground truth of ``wafer::moe_router`` (see the module docstring)."""
    x = logits.float()
    if scoring == "topk_softmax":
        values, indices = torch.topk(x, top_k, dim=-1)
        return torch.softmax(values, dim=-1) * scale, indices
    scores = torch.softmax(x, dim=-1) if scoring == "softmax" else torch.sigmoid(x)
    choice = scores if selection_bias is None else scores + selection_bias.float()
    if groups > 1:
        tokens, experts = choice.shape
        grouped = choice.view(tokens, groups, experts // groups)
        best = grouped.topk(2, dim=-1)[0].sum(-1).topk(topk_groups, dim=-1)[1]
        keep = torch.zeros(tokens, groups, dtype=torch.bool).scatter(1, best, True)
        keep = keep[:, :, None].expand(grouped.shape).reshape(tokens, experts)
        choice = choice.masked_fill(~keep, float("-inf"))
    indices = torch.topk(choice, top_k, dim=-1)[1]
    weights = scores.gather(1, indices)
    if normalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights * scale, indices


def moe_slots(indices: Tensor, weights: Tensor, num_experts: int, capacity: int):
    """(slots (E, C) i64, gates (E, C) f32) of `moe_dispatch`, computed without data-dependent
    shapes: a token's slot in expert e is the count of earlier tokens routed to e."""
    tokens = indices.shape[0]
    chosen = indices[..., None] == torch.arange(num_experts)  # (T, k, E)
    hit = chosen.any(1)  # (T, E)
    gate = (weights.float()[..., None] * chosen).sum(1)  # (T, E)
    position = torch.cumsum(hit.long(), 0) - 1
    column = torch.where(hit & (position < capacity), position, capacity).t()  # (E, T)
    slots = torch.full((num_experts, capacity + 1), tokens, dtype=torch.long)
    slots.scatter_(1, column, torch.arange(tokens).expand(num_experts, tokens).contiguous())
    gates = torch.zeros(num_experts, capacity + 1).scatter_(1, column, gate.t().contiguous())
    return slots[:, :capacity], gates[:, :capacity]


@torch.library.custom_op("wafer::moe_router", mutates_args=())
def moe_router(
    logits: Tensor,
    selection_bias: Tensor | None,
    top_k: int,
    scoring: str,
    normalize: bool,
    groups: int = 1,
    topk_groups: int = 1,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Top-k routing (see module docstring); returns ``(weights f32, indices i64)``."""
    return moe_router_reference(
        logits, selection_bias, top_k, scoring, normalize, groups, topk_groups, scale
    )


@moe_router.register_fake
def _moe_router_fake(logits, selection_bias, top_k, scoring, normalize, *args):
    rows = logits.shape[0]
    return logits.new_empty(rows, top_k, dtype=torch.float32), logits.new_empty(
        rows, top_k, dtype=torch.long
    )


@torch.library.custom_op("wafer::moe_dispatch", mutates_args=())
def moe_dispatch(
    x: Tensor, indices: Tensor, weights: Tensor, num_experts: int, capacity: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pack token rows into per-expert slots; returns ``(xs, gates, slots)``."""
    slots, gates = moe_slots(indices, weights, num_experts, capacity)
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])])
    return padded[slots], gates, slots


@moe_dispatch.register_fake
def _moe_dispatch_fake(x, indices, weights, num_experts, capacity):
    return (
        x.new_empty(num_experts, capacity, x.shape[1]),
        x.new_empty(num_experts, capacity, dtype=torch.float32),
        x.new_empty(num_experts, capacity, dtype=torch.long),
    )


@torch.library.custom_op("wafer::grouped_matmul", mutates_args=())
def grouped_matmul(xs: Tensor, w: Tensor, bias: Tensor | None, transpose_rhs: bool) -> Tensor:
    """Per-expert product ``xs[e] @ w[e]`` (``w[e].T`` with ``transpose_rhs``) plus bias[e]."""
    out = torch.matmul(xs, w.transpose(-1, -2) if transpose_rhs else w)
    return out if bias is None else out + bias[:, None, :]


@grouped_matmul.register_fake
def _grouped_matmul_fake(xs, w, bias, transpose_rhs):
    return xs.new_empty(*xs.shape[:2], w.shape[1] if transpose_rhs else w.shape[2])


@torch.library.custom_op("wafer::moe_combine", mutates_args=())
def moe_combine(ys: Tensor, gates: Tensor, slots: Tensor, num_tokens: int) -> Tensor:
    """Gate-weighted sum of the slots of each token; returns (T, H) in ``ys.dtype``."""
    rows = ys.float() * gates[..., None]
    out = torch.zeros(num_tokens + 1, ys.shape[-1]).index_add_(
        0, slots.reshape(-1), rows.reshape(-1, ys.shape[-1])
    )
    return out[:num_tokens].to(ys.dtype)


@moe_combine.register_fake
def _moe_combine_fake(ys, gates, slots, num_tokens):
    return ys.new_empty(num_tokens, ys.shape[-1])
