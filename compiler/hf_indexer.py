"""A static-shape forward for Qwen4-Exp's QSA sparse-attention indexer (`compiler.hf_rewrites`).

HF's indexer loops over batch and queries and ``nonzero``-s each query's visible keys: data-
dependent shapes. The same selection as fixed-size tensor ops, for every query at once: a visible
key's rank among its query's visible keys (a cumulative sum) gives its block (rank // ratio); the
keys of rank r are gathered through a scatter of positions by rank; the blocks past the query's
complete ones score -1 (scores are sums of ReLUs, >= 0) so a fixed-k ``topk`` over every possible
block picks eager's blocks; the tail past the complete blocks stays visible. Cost: the pooled
keys and scores of every block of the whole key length for every query (eager: only the
visible ones), O(S x KV x head_dim) per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def _gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[b, index[b, ...]]`` for ``table`` (B, N, D) and ``index`` (B, ...): (B, ..., D),
    as one row lookup (an embedding's ``index_select``)."""
    batch, rows, width = table.shape
    offset = (torch.arange(batch, device=table.device) * rows).view(
        batch, *([1] * (index.dim() - 1))
    )
    picked = table.reshape(batch * rows, width).index_select(0, (index + offset).reshape(-1))
    return picked.view(*index.shape, width)


def _ranked_positions(visible: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """(rank (B, S, KV): each key's rank among its query's visible keys, -1 when hidden;
    positions (B, S, length): the position of the visible key of each rank, 0 past the last)."""
    batch, queries, keys = visible.shape
    rank = torch.cumsum(visible.long(), -1) - 1
    slot = torch.where(visible, rank, keys)  # hidden keys go to a dropped slot
    source = torch.arange(keys, device=visible.device).expand(batch, queries, keys)
    positions = torch.zeros(batch, queries, keys + 1, dtype=torch.long, device=visible.device)
    positions = positions.scatter(-1, slot, source)
    return torch.where(visible, rank, -1), positions[..., :length]


def _qsa_indexer(
    indexer: Any,  # transformers' Qwen4ExpTextQSAIndexer
    original: Callable[..., Tensor],
    hidden_states: Tensor,
    position_embeddings: tuple[Tensor, Tensor],
    attention_mask: Tensor,
    cache: Any = None,
) -> Tensor:
    """Qwen4-Exp's QSA indexer with fixed-size ops (module docstring): the same boolean
    selection mask (B, 1, S, KV) as eager's per-query ``nonzero`` loop."""
    from transformers.models.qwen4_exp.modeling_qwen4_exp import apply_rotary_pos_emb

    batch, length, _ = hidden_states.shape
    dim, ratio = indexer.index_head_dim, indexer.compress_ratio
    full_cos, full_sin = position_embeddings
    q, keys = torch.split(
        indexer.index_qk_proj(hidden_states),
        [indexer.index_n_heads * dim, indexer.index_kv_heads * dim],
        dim=-1,
    )
    q = indexer.q_layernorm(q.reshape(batch, length, -1, dim))
    q = apply_rotary_pos_emb(
        q, cos=full_cos[:, -length:], sin=full_sin[:, -length:], unsqueeze_dim=2
    )
    keys = keys.reshape(batch, length, -1, dim).squeeze(2)
    if cache is not None:
        keys = cache.update_indexer(keys, indexer.layer_idx)
    visible = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
    visible = visible[:, 0].expand(batch, length, -1)  # (B, S, KV)
    blocks = visible.shape[-1] // ratio  # the most complete blocks a query can have
    if blocks == 0:
        return visible.unsqueeze(1)
    rank, positions = _ranked_positions(visible, blocks * ratio)
    complete = (rank.amax(-1, keepdim=True) + 1) // ratio  # (B, S, 1)
    members = positions.view(batch, length, blocks, ratio)
    pooled = _gather_rows(keys, members).float().mean(dim=-2).to(keys.dtype)
    starts = members[..., 0]
    block_keys = apply_rotary_pos_emb(
        indexer.k_layernorm(pooled).unsqueeze(-2),
        cos=_gather_rows(full_cos, starts),
        sin=_gather_rows(full_sin, starts),
        unsqueeze_dim=-2,
    ).squeeze(-2)  # (B, S, G, D)
    scores = torch.matmul(q.float(), block_keys.float().transpose(-1, -2))  # (B, S, H, G)
    scores = torch.relu(scores).sum(dim=-2) / math.sqrt(dim)
    scores = scores.masked_fill(torch.arange(blocks, device=scores.device) >= complete, -1.0)
    chosen = scores.topk(min(indexer.block_topk, blocks), dim=-1).indices
    chosen = torch.where(chosen < complete, chosen, blocks)  # an incomplete pick is dropped
    picked = torch.zeros(batch, length, blocks + 1, dtype=torch.bool, device=chosen.device)
    picked = picked.scatter(-1, chosen, True)
    block = (rank.clamp(min=0) // ratio).clamp(max=blocks - 1)
    selected = picked[..., :blocks].gather(-1, block) | (rank >= complete * ratio)
    return (visible & selected).unsqueeze(1)


INDEXERS: tuple[tuple[str, str, str, Callable[..., object]], ...] = (
    (
        "qsa-indexer",
        "transformers.models.qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextQSAIndexer",
        "forward",
        _qsa_indexer,
    ),
)
