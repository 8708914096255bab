"""Static-shape forwards for Hugging Face MoE modules whose eager loops route with data-dependent
shapes (`compiler.hf_rewrites`), beside the common experts rewrite of `compiler.hf_moe`.

* LongCat-Flash: routed experts through ``wafer::moe_dispatch`` / ``grouped_matmul`` /
  ``moe_combine`` (capacity T); its zero-compute (identity) experts add ``x * weight`` for each
  of the k choices that names one, in expert order as eager's loop does: k masked adds.
* JetMoE: MLP and attention experts (``split_with_sizes`` over the router's counts) through
  the same ops, capacity T; the attention experts dispatch the T x k (token, choice) rows.
* DBRX: its experts' loop over the experts hit (``nonzero``) as the same ``wafer::moe_*`` ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from core.moe import grouped_matmul, moe_combine, moe_dispatch, moe_router


def _swiglu_experts(experts: Any, x: Tensor, index: Tensor, weights: Tensor, num: int) -> Tensor:
    """The first ``num`` experts of fused ``gate_up_proj`` (E, 2I, H) and ``down_proj``
    (E, H, I) on tokens ``x`` (T, H) routed by ``index`` / ``weights`` (T, k), capacity T."""
    tokens = x.shape[0]
    xs, gates, slots = moe_dispatch(x, index, weights, num, tokens)
    gate, up = grouped_matmul(xs, experts.gate_up_proj[:num], None, True).chunk(2, dim=-1)
    ys = grouped_matmul(experts.act_fn(gate) * up, experts.down_proj[:num], None, True)
    return moe_combine(ys, gates, slots, tokens)


def _longcat_experts(
    experts: Any,  # transformers' LongcatFlashExperts
    original: Callable[..., Tensor],
    hidden_states: Tensor,
    top_k_index: Tensor,
    top_k_weights: Tensor,
) -> Tensor:
    """LongCat-Flash's routed experts as ``wafer::moe_*`` ops (capacity T) and its zero-compute
    experts (index >= ``num_routed_experts``) as k masked adds of ``x * weight``, taken in
    expert order (the k choices sorted by index), so the sum matches eager's loop."""
    routed = experts.num_routed_experts
    if experts.training or routed == 0 or top_k_index.numel() == 0:
        return original(hidden_states, top_k_index, top_k_weights)
    out = _swiglu_experts(experts, hidden_states, top_k_index, top_k_weights, routed)
    out = out.to(hidden_states.dtype)
    index, order = torch.sort(top_k_index, dim=-1)
    weights = top_k_weights.gather(1, order)
    for k in range(index.shape[1]):
        identity = (hidden_states * weights[:, k, None]).to(hidden_states.dtype)
        out = out + torch.where(index[:, k, None] >= routed, identity, 0.0)
    return out


def _longcat_router(router: Any, original: Callable[..., object], hidden_states: Tensor):
    """LongCat-Flash routing (softmax over routed and zero experts, chosen with the correction
    bias, times ``routed_scaling_factor``; the classifier's bias unused, as in eager) as one
    ``wafer::moe_router``."""
    hidden_states = hidden_states.reshape(-1, router.hidden_dim)
    logits = F.linear(hidden_states.float(), router.classifier.weight.float())
    weights, indices = moe_router(
        logits,
        router.e_score_correction_bias,
        router.top_k,
        "softmax",
        False,
        scale=float(router.routed_scaling_factor),
    )
    return logits, weights, indices


def _jetmoe_route(router: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """JetMoE's top-k gating (softmax over the k best logits) as one ``wafer::moe_router``:
    ``(gates (T, k) in x's dtype, indices (T, k), logits)``."""
    logits = router.layer(x).float()
    weights, indices = moe_router(logits, None, router.top_k, "topk_softmax", False)
    return weights.to(x.dtype), indices, logits


def _per_expert(linear: Any, rows: Tensor, indices: Tensor, weights: Tensor, summed: bool):
    """Row (t, j) of ``rows`` (T k, K) times the weight (E, N, K) of ``linear``'s (a
    ``JetMoeParallelExperts``) expert ``indices[t, j]``, times ``weights[t, j]``: (T k, N), or
    with ``summed`` each token's k rows summed in expert order, (T, N). Dispatch with capacity
    T (an expert takes each token at most once), one ``grouped_matmul``, combine."""
    tokens, top_k = indices.shape
    flat = (indices.reshape(-1, 1), weights.reshape(-1, 1))
    xs, gates, slots = moe_dispatch(rows, *flat, linear.num_experts, tokens)
    ys = grouped_matmul(xs, linear.weight, None, True)
    if summed:  # slot (t, j) -> token t; the empty slot T k -> T
        return moe_combine(ys, gates, slots // top_k, tokens)
    return moe_combine(ys, gates, slots, tokens * top_k)


def _jetmoe_moe(moe: Any, original: Callable[..., Tensor], layer_input: Tensor) -> Tensor:
    """JetMoE's MLP experts (``JetMoeMoE``) as ``wafer::moe_*`` ops with capacity T instead of
    ``split_with_sizes`` over the router's per-expert counts."""
    if moe.training:
        return original(layer_input)
    shape = layer_input.shape
    x = layer_input.reshape(-1, shape[-1])
    tokens = x.shape[0]
    gates, indices, _ = _jetmoe_route(moe.router, x)
    xs, weights, slots = moe_dispatch(x, indices, gates, moe.router.num_experts, tokens)
    gate, up = grouped_matmul(xs, moe.input_linear.weight, None, True).chunk(2, dim=-1)
    ys = grouped_matmul(moe.activation(gate) * up, moe.output_linear.weight, None, True)
    return moe_combine(ys, weights, slots, tokens).view(shape) + moe.bias


def _jetmoe_map(moa: Any, original: Callable[..., object], layer_input: Tensor):
    """JetMoE's attention experts' query projections (``JetMoeMoA.map``) as ``wafer::moe_*``
    ops: each (token, choice) row through its expert. Returns (queries (B, L, k, D), router
    logits, the routing ``reduce`` reuses)."""
    if moa.training:
        return original(layer_input)
    bsz, length, hidden = layer_input.shape
    x = layer_input.reshape(-1, hidden)
    gates, indices, logits = _jetmoe_route(moa.router, x)
    rows = x[:, None].expand(-1, indices.shape[1], -1).reshape(-1, hidden)  # (T k, H)
    queries = _per_expert(moa.input_linear, rows, indices, torch.ones_like(gates), False)
    return queries.view(bsz, length, indices.shape[1], -1), logits, (gates, indices)


def _jetmoe_reduce(moa: Any, original: Callable[..., object], layer_input: Tensor, topo_info):
    """JetMoE's attention experts' output projections (``JetMoeMoA.reduce``) as
    ``wafer::moe_*`` ops: each (token, choice) row through its expert, gate-weighted, summed
    per token in expert order as eager's ``index_add`` does."""
    if moa.training:
        return original(layer_input, topo_info)
    bsz, length, _, width = layer_input.shape
    gates, indices = topo_info
    out = _per_expert(moa.output_linear, layer_input.reshape(-1, width), indices, gates, True)
    return out.view(bsz, length, -1) + moa.bias


def _dbrx_experts(
    experts: Any,  # transformers' DbrxExperts
    original: Callable[..., Tensor],
    hidden_states: Tensor,
    top_k_index: Tensor,
    top_k_weights: Tensor,
) -> Tensor:
    """DBRX's experts (a loop over the experts hit, by ``nonzero``) as ``wafer::moe_*`` ops,
    capacity T: ``w1``, ``v1`` and ``w2`` are (E x I, H), gate and up read transposed."""
    if experts.training:
        return original(hidden_states, top_k_index, top_k_weights)
    mlp, width, num = experts.mlp, experts.hidden_size, experts.num_experts
    x = hidden_states.reshape(-1, width)
    tokens, shape = x.shape[0], (num, experts.ffn_hidden_size, width)
    xs, gates, slots = moe_dispatch(x, top_k_index, top_k_weights, num, tokens)
    gate = grouped_matmul(xs, mlp.w1.view(shape), None, True)
    up = grouped_matmul(xs, mlp.v1.view(shape), None, True)
    ys = grouped_matmul(mlp.activation_fn(gate) * up, mlp.w2.view(shape), None, False)
    return moe_combine(ys, gates, slots, tokens).view(hidden_states.shape[0], -1, width)


_LONGCAT = "transformers.models.longcat_flash.modeling_longcat_flash"
_JETMOE = "transformers.models.jetmoe.modeling_jetmoe"
# (rewrite name, target class, method, forward)
STATIC_MOE: tuple[tuple[str, str, str, Callable[..., object]], ...] = (
    ("moe-experts", f"{_LONGCAT}.LongcatFlashExperts", "forward", _longcat_experts),
    ("moe-router", f"{_LONGCAT}.LongcatFlashTopkRouter", "forward", _longcat_router),
    ("moe-experts", f"{_JETMOE}.JetMoeMoE", "forward", _jetmoe_moe),
    ("moe-attention", f"{_JETMOE}.JetMoeMoA", "map", _jetmoe_map),
    ("moe-attention", f"{_JETMOE}.JetMoeMoA", "reduce", _jetmoe_reduce),
    ("moe-experts", "transformers.models.dbrx.modeling_dbrx.DbrxExperts", "forward", _dbrx_experts),
)
