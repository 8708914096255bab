"""The JAX rules of the mixture-of-experts ops (`core.moe`): static shapes throughout.

Registered into `runtime.jax_runtime.RULES` when that module is imported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from runtime.jax_runtime import HIGHEST, Options, register
from runtime.program import Instruction


def _dtype(ins: Instruction, index: int):
    return jnp.dtype(str(ins.result_specs[index].torch_dtype).removeprefix("torch."))


def _group_mask(choice: jax.Array, groups: int, keep: int) -> jax.Array:
    """`choice` with experts outside each token's best `keep` groups set to -inf (a group
    scores the sum of its two best experts)."""
    tokens, experts = choice.shape
    grouped = choice.reshape(tokens, groups, experts // groups)
    best = lax.top_k(lax.top_k(grouped, 2)[0].sum(-1), keep)[1]  # (T, keep)
    kept = (best[..., None] == jnp.arange(groups)).any(1)  # (T, groups)
    kept = jnp.repeat(kept, experts // groups, axis=1)
    return jnp.where(kept, choice, -jnp.inf)


def _moe_router(ins: Instruction, opts: Options, logits, selection_bias):
    a = ins.attrs
    x = logits.astype(jnp.float32)
    if a["scoring"] == "topk_softmax":
        values, indices = lax.top_k(x, a["top_k"])
        weights = jax.nn.softmax(values, axis=-1)
    else:
        scores = jax.nn.softmax(x, axis=-1) if a["scoring"] == "softmax" else jax.nn.sigmoid(x)
        choice = scores if selection_bias is None else scores + selection_bias
        if a["groups"] > 1:
            choice = _group_mask(choice, a["groups"], a["topk_groups"])
        indices = lax.top_k(choice, a["top_k"])[1]
        weights = jnp.take_along_axis(scores, indices, axis=1)
        if a["normalize"]:
            weights = weights / weights.sum(-1, keepdims=True)
    return (weights * a["scale"]).astype(jnp.float32), indices.astype(_dtype(ins, 1))


def _moe_dispatch(ins: Instruction, opts: Options, x, indices, weights):
    tokens = x.shape[0]
    experts, capacity = ins.result_specs[0].shape[:2]
    chosen = indices[..., None] == jnp.arange(experts)  # (T, k, E)
    hit = chosen.any(1)
    gate = (weights.astype(jnp.float32)[..., None] * chosen).sum(1)  # (T, E)
    position = jnp.cumsum(hit.astype(jnp.int32), axis=0) - 1
    column = jnp.where(hit & (position < capacity), position, capacity)
    rows = jnp.broadcast_to(jnp.arange(experts), (tokens, experts))
    token = jnp.broadcast_to(jnp.arange(tokens)[:, None], (tokens, experts))
    slots = jnp.full((experts, capacity + 1), tokens, _dtype(ins, 2))
    slots = slots.at[rows, column].set(token.astype(slots.dtype))[:, :capacity]
    gates = jnp.zeros((experts, capacity + 1), jnp.float32).at[rows, column].set(gate)
    padded = jnp.concatenate([x, jnp.zeros((1, x.shape[1]), x.dtype)])
    return padded[slots], gates[:, :capacity], slots


def _grouped_matmul(ins: Instruction, opts: Options, xs, w, bias) -> jax.Array:
    spec = "eck,enk->ecn" if ins.attrs["transpose_rhs"] else "eck,ekn->ecn"
    opmath = jnp.float32 if xs.dtype in (jnp.bfloat16, jnp.float16) else xs.dtype
    out = jnp.einsum(spec, xs, w, precision=HIGHEST, preferred_element_type=opmath)
    out = out.astype(xs.dtype)
    return out if bias is None else out + bias[:, None, :]


def _moe_combine(ins: Instruction, opts: Options, ys, gates, slots) -> jax.Array:
    tokens, hidden = ins.result_specs[0].shape
    rows = (ys.astype(jnp.float32) * gates[..., None]).reshape(-1, hidden)
    out = jnp.zeros((tokens + 1, hidden), jnp.float32).at[slots.reshape(-1)].add(rows)
    return out[:tokens].astype(ys.dtype)


register("moe_router", rule=_moe_router)
register("moe_dispatch", rule=_moe_dispatch)
register("grouped_matmul", rule=_grouped_matmul)
register("moe_combine", rule=_moe_combine)
