"""The one table of element types Wafer knows.

Each row has one spelling per audience: `name` is MLIR's element type (`f32`, `bf16`, `i64`),
used in the IR, in programs and artifacts; `label` is what a user types for a float compute
dtype (`--dtype fp16`) and what reports print. Everything else (torch dtype, bytes, the dtype a
PE computes in) is looked up here, never written down again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DType:
    """One element type: MLIR name, torch dtype, bytes per element, user label, and the
    float label the cost model charges its arithmetic at ("" for integer and bool types)."""

    name: str
    torch: torch.dtype
    bytes: int
    label: str
    compute: str


DTYPES: tuple[DType, ...] = (
    DType("f32", torch.float32, 4, "fp32", "fp32"),
    DType("f16", torch.float16, 2, "fp16", "fp16"),
    DType("bf16", torch.bfloat16, 2, "bf16", "bf16"),
    DType("f64", torch.float64, 8, "fp64", "fp32"),
    DType("i64", torch.int64, 8, "int64", ""),
    DType("i32", torch.int32, 4, "int32", ""),
    DType("i1", torch.bool, 1, "bool", ""),
)
# The float dtypes a user may compile, simulate or verify a model in (CLI `--dtype`).
COMPUTE_LABELS: tuple[str, ...] = ("bf16", "fp16", "fp32")

_BY_NAME = {d.name: d for d in DTYPES}
_BY_TORCH = {d.torch: d for d in DTYPES}
_BY_LABEL = {d.label: d for d in DTYPES}


def by_name(name: str) -> DType:
    """The row for an MLIR element type name; KeyError when Wafer does not know it."""
    return _BY_NAME[name]


def by_torch(dtype: torch.dtype) -> DType:
    """The row for a torch dtype; KeyError when the wse dialect cannot hold it."""
    return _BY_TORCH[dtype]


def by_label(label: str) -> DType:
    """The row for a user label (`fp16`); KeyError when unknown."""
    return _BY_LABEL[label]


def supported(dtype: torch.dtype) -> bool:
    """Whether tensors of this torch dtype can appear in a wse module."""
    return dtype in _BY_TORCH


def element_bytes(name: str) -> int:
    """Bytes per element of an MLIR element type."""
    return _BY_NAME[name].bytes
