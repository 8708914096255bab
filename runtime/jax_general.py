"""JAX rules of the general ops (rounding, inverse trigonometry, cumulative product, sort,
scatter): registered into `runtime.jax_runtime.RULES`, reproducing `runtime.reference_general`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from runtime.jax_runtime import Options, out_dtype, register
from runtime.program import Instruction


def _scatter(ins: Instruction, opts: Options, x, updates, *indices) -> jax.Array:
    key: list = [slice(None)] * x.ndim
    for d, idx in zip(ins.attrs["indexed_dims"], indices, strict=True):
        key[d] = idx
    at = x.at[tuple(key)]
    return at.add(updates) if ins.attrs["accumulate"] else at.set(updates)


def _sort(ins: Instruction, opts: Options, x) -> tuple[jax.Array, jax.Array]:
    dim = ins.attrs["dim"]
    order = jnp.argsort(x, axis=dim, stable=True, descending=bool(ins.attrs["descending"]))
    return jnp.take_along_axis(x, order, axis=dim), order.astype(jnp.int64)


def _sign(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isnan(x), 0, jnp.sign(x))  # torch.sign(nan) is 0


_UNARY: dict[str, Callable] = {
    "floor": jnp.floor,
    "ceil": jnp.ceil,
    "trunc": jnp.trunc,
    "round": jnp.round,
    "sign": _sign,
    "tan": jnp.tan,
    "asin": jnp.arcsin,
    "acos": jnp.arccos,
    "atan": jnp.arctan,
    "sinh": jnp.sinh,
    "cosh": jnp.cosh,
    "asinh": jnp.arcsinh,
    "acosh": jnp.arccosh,
    "atanh": jnp.arctanh,
    "expm1": jnp.expm1,
    "log2": jnp.log2,
    "log10": jnp.log10,
}
_BINARY: dict[str, Callable] = {
    "fmod": jnp.fmod,
    "remainder": jnp.remainder,
    "atan2": jnp.arctan2,
    "xor": jnp.bitwise_xor,
}
for _name, _fn in _UNARY.items():
    register(_name, rule=lambda ins, opts, x, fn=_fn: fn(x))
for _name, _fn in _BINARY.items():
    register(_name, rule=lambda ins, opts, a, b, fn=_fn: fn(a, b))

register(
    "cumprod",
    rule=lambda ins, opts, x: jnp.cumprod(x, axis=ins.attrs["dim"], dtype=out_dtype(ins)),
)
register("sort", rule=_sort)
register("scatter", rule=_scatter)
