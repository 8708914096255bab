"""The JAX rule of `wse.ssd_scan` (Mamba-2): the chunked-matmul form, `lax.scan` over chunks.

Registered into `runtime.jax_runtime.RULES` when that module is imported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from runtime.jax_runtime import HIGHEST, Options, register
from runtime.program import Instruction


def _segment_sum(a: jax.Array) -> jax.Array:
    """(..., T) -> (..., T, T): a[s+1] + ... + a[t] for s <= t, else -inf (as `core.ssd`)."""
    steps = a.shape[-1]
    below = jnp.swapaxes(jnp.broadcast_to(a[..., None, :], (*a.shape, steps)), -1, -2)
    summed = jnp.cumsum(jnp.where(jnp.tri(steps, k=-1, dtype=bool), below, 0.0), axis=-2)
    return jnp.where(jnp.tri(steps, dtype=bool), summed, -jnp.inf)


def _chunk(a_rate: jax.Array):
    """The step of `lax.scan`: one chunk from the carried (b, h, p, n) state."""

    def step(state, xs):
        x, dt, b, c = xs  # (b, T, h, p), (b, T, h), (b, T, h, n), (b, T, h, n)
        a = jnp.swapaxes(dt * a_rate, 1, 2)  # (b, h, T)
        cum = jnp.cumsum(a, axis=-1)
        scores = jnp.einsum("bthn,bshn->bhts", c, b, precision=HIGHEST)
        scores = scores * jnp.exp(_segment_sum(a))
        y = jnp.einsum("bhts,bshp->bthp", scores, x * dt[..., None], precision=HIGHEST)
        carried = jnp.einsum("bthn,bhpn->bthp", c, state, precision=HIGHEST)
        y = y + carried * jnp.swapaxes(jnp.exp(cum), 1, 2)[..., None]
        to_end = jnp.swapaxes(jnp.exp(cum[..., -1:] - cum), 1, 2) * dt  # (b, T, h)
        fresh = jnp.einsum("bthn,bthp->bhpn", to_end[..., None] * b, x, precision=HIGHEST)
        return state * jnp.exp(cum[..., -1])[..., None, None] + fresh, y

    return step


def _ssd_scan(ins: Instruction, opts: Options, x, dt, a, b, c, d_skip, h0=None):
    """Chunks of `chunk` steps (the last padded with dt = 0: no state change), scanned in order."""
    batch, length, heads, width = x.shape
    chunk = min(ins.attrs["chunk"], max(length, 1))
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    f32 = jnp.float32
    b, c = (jnp.repeat(t.astype(f32), heads // t.shape[2], axis=2) for t in (b, c))

    def by_chunk(t):
        t = jnp.pad(t.astype(f32), ((0, 0), (0, pad)) + ((0, 0),) * (t.ndim - 2))
        return jnp.moveaxis(t.reshape(batch, chunks, chunk, *t.shape[2:]), 1, 0)

    init = jnp.zeros((batch, heads, width, b.shape[-1]), f32) if h0 is None else h0.astype(f32)
    xs = tuple(by_chunk(t) for t in (x, dt, b, c))
    state, ys = lax.scan(_chunk(a.astype(f32)), init, xs)
    y = jnp.moveaxis(ys, 0, 1).reshape(batch, chunks * chunk, heads, width)[:, :length]
    if d_skip is not None:
        y = y + d_skip.astype(f32)[:, None] * x.astype(f32)
    return y.astype(x.dtype), state.astype(x.dtype)


register("ssd_scan", rule=_ssd_scan)
