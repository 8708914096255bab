"""Reference kernels of the general ops (rounding, inverse trigonometry, cumulative product,
sort, scatter): registered into `runtime.reference.KERNELS`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from runtime.program import Instruction
from runtime.reference import KERNELS, check_indices, out_dtype


def _scatter(ins: Instruction, x, updates, *indices) -> torch.Tensor:
    check_indices(ins, x, updates, *indices)
    key: list = [None] * x.dim()
    for d, idx in zip(ins.attrs["indexed_dims"], indices, strict=True):
        key[d] = idx
    return torch.ops.aten.index_put(x, key, updates, bool(ins.attrs["accumulate"]))


def _sort(ins: Instruction, x) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.sort(x, dim=ins.attrs["dim"], descending=ins.attrs["descending"], stable=True)
    return out.values, out.indices


_UNARY: dict[str, Callable] = {
    "floor": torch.floor,
    "ceil": torch.ceil,
    "trunc": torch.trunc,
    "round": torch.round,
    "sign": torch.sign,
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "asinh": torch.asinh,
    "acosh": torch.acosh,
    "atanh": torch.atanh,
    "expm1": torch.expm1,
    "log2": torch.log2,
    "log10": torch.log10,
}
_BINARY: dict[str, Callable] = {
    "fmod": torch.fmod,
    "remainder": torch.remainder,
    "atan2": torch.atan2,
    "xor": torch.bitwise_xor,
}
for _name, _fn in _UNARY.items():
    KERNELS.register(_name, lambda ins, x, fn=_fn: fn(x))
for _name, _fn in _BINARY.items():
    KERNELS.register(_name, lambda ins, a, b, fn=_fn: fn(a, b))

KERNELS.register("cumprod", lambda ins, x: torch.cumprod(x, ins.attrs["dim"], dtype=out_dtype(ins)))
KERNELS.register("sort", _sort)
KERNELS.register("scatter", _scatter)
