"""The one place that uses the MLIR Python API (the bindings shipped in the torch-mlir wheel).

The bindings are young: `dialects.ext` cannot express optional attributes or dense-array
attributes, IRDL binds every operand of a variadic group to one type, ops print in generic
form, and locations are plain objects. Everything else in the project goes through the names
defined here; the one exception is the dialect definition itself (`compiler/dialects/wse/`),
which is written in the bindings' `ext` DSL. An import-linter contract in pyproject.toml keeps
`torch_mlir` out of every other module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch_mlir import ir
from torch_mlir.dialects import func
from torch_mlir.dialects.ext import OperandDef
from torch_mlir.dialects.irdl import Variadicity

from core import dtypes

__all__ = [
    "ir",
    "func",
    "SourceLocation",
    "new_context",
    "tensor_type",
    "torch_dtype",
    "shape_of",
    "i64_attr",
    "f64_attr",
    "bool_attr",
    "str_attr",
    "int_list_attr",
    "dense_attr",
    "splat_attr",
    "build_constant",
    "attr_to_python",
    "op_location",
    "read_location",
    "print_module",
    "operands_in_order",
    "parse_module",
]


def new_context() -> ir.Context:
    """A fresh MLIR context with the `wse` dialect loaded."""
    from compiler.dialects import wse

    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        wse.Wse.load()
    return ctx


def element_type(dtype: torch.dtype) -> ir.Type:
    """The MLIR element type for a torch dtype (current context)."""
    return ir.Type.parse(dtypes.by_torch(dtype).name)


def supported_dtype(dtype: torch.dtype) -> bool:
    """Whether tensors of this dtype can appear in a wse module."""
    return dtypes.supported(dtype)


def tensor_type(shape, dtype: torch.dtype) -> ir.RankedTensorType:
    """`tensor<shape x dtype>` in the current context."""
    return ir.RankedTensorType.get([int(d) for d in shape], element_type(dtype))


def torch_dtype(t: ir.Type) -> torch.dtype:
    """The torch dtype of a ranked tensor type (or of an element type)."""
    if isinstance(t, ir.RankedTensorType):
        t = t.element_type
    return dtypes.by_name(str(t)).torch


def dtype_name(dtype: torch.dtype) -> str:
    """The MLIR spelling of a torch dtype ("f32", "bf16", "i64", ...)."""
    return dtypes.by_torch(dtype).name


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of `dtype_name`."""
    return dtypes.by_name(name).torch


def shape_of(value_or_type) -> tuple[int, ...]:
    """Static shape of a ranked-tensor value or type."""
    t = value_or_type.type if hasattr(value_or_type, "type") else value_or_type
    return tuple(ir.RankedTensorType(t).shape)


def i64_attr(v: int) -> ir.IntegerAttr:
    return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(v))


def bool_attr(v: bool) -> ir.IntegerAttr:
    return ir.IntegerAttr.get(ir.IntegerType.get_signless(1), int(bool(v)))


def f64_attr(v: float) -> ir.FloatAttr:
    return ir.FloatAttr.get(ir.F64Type.get(), float(v))


def str_attr(v: str) -> ir.StringAttr:
    return ir.StringAttr.get(v)


def int_list_attr(values) -> ir.ArrayAttr:
    """A list of i64 (the bindings cannot constrain dense i64 arrays, so this is an ArrayAttr)."""
    return ir.ArrayAttr.get([i64_attr(v) for v in values])


def storage_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a `wse.constant` stores its values in: f32 for floats, i64 for ints, i1 for bool."""
    if dtype == torch.bool:
        return torch.bool
    if dtype.is_floating_point:
        return torch.float64 if dtype == torch.float64 else torch.float32
    return torch.int64


def dense_attr(values: torch.Tensor, dtype: torch.dtype) -> ir.DenseElementsAttr:
    """Dense elements holding `values` in the storage dtype of `dtype` (see `storage_dtype`);
    a splat when every element is the same."""
    values = values.detach().cpu().to(storage_dtype(dtype))
    flat = values.reshape(-1)
    if flat.numel() > 0 and bool((flat == flat[0]).all()) and not flat[0].isnan():
        return splat_attr(flat[0].item(), values.shape, dtype)
    t = tensor_type(values.shape, values.dtype)
    return ir.DenseElementsAttr.get(np.ascontiguousarray(values.numpy()), type=t)


def splat_attr(value: bool | int | float, shape, dtype: torch.dtype) -> ir.DenseElementsAttr:
    """`shape` elements all equal to `value`, in the storage dtype of `dtype`: one scalar, never
    the elements one by one (a zero-size tensor gets its empty dense attribute)."""
    storage = storage_dtype(dtype)
    if math.prod(shape) == 0:
        return dense_attr(torch.empty(tuple(shape), dtype=storage), dtype)
    scalar = torch.tensor(value, dtype=torch.float64 if isinstance(value, float) else None)
    first = scalar.to(storage).item()
    t = tensor_type(shape, storage)
    element = (
        ir.FloatAttr.get(t.element_type, first)
        if storage.is_floating_point
        else ir.IntegerAttr.get(t.element_type, int(first))
    )
    return ir.DenseElementsAttr.get_splat(t, element)


def build_constant(value: ir.DenseElementsAttr, result_type, loc: ir.Location) -> ir.Value:
    """A `wse.constant` built generically: the ext builder drops a falsy attribute, and the
    dense attribute of a zero-size tensor is falsy."""
    return ir.Operation.create(
        "wse.constant", results=[result_type], attributes={"value": value}, loc=loc
    ).result


def attr_to_python(attr: ir.Attribute):
    """A JSON-friendly Python value for an attribute used by the wse dialect."""
    if isinstance(attr, ir.StringAttr):
        return attr.value
    if isinstance(attr, ir.BoolAttr):
        return bool(attr.value)
    if isinstance(attr, ir.IntegerAttr):
        return bool(attr.value) if str(attr.type) == "i1" else int(attr.value)
    if isinstance(attr, ir.FloatAttr):
        return float(attr.value)
    if isinstance(attr, ir.ArrayAttr):
        return [attr_to_python(a) for a in attr]
    if isinstance(attr, ir.DenseElementsAttr):
        dense = attr
        shape = list(dense.type.shape)
        if dense.is_splat:
            return {"shape": shape, "splat": attr_to_python(dense.get_splat_value())}
        return {"shape": shape, "values": np.array(dense).reshape(-1).tolist()}
    raise TypeError(f"no Python form for attribute {attr}")


@dataclass(frozen=True)
class SourceLocation:
    """Where an op came from: the FX node, its ATen op, and the user's file and line."""

    node: str
    op: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.file else "<unknown>"


def op_location(src: SourceLocation) -> ir.Location:
    """`loc(fused<"aten.op">["fx_node", "file.py":line:0])`."""
    parts = [ir.Location.name(src.node)]
    if src.file:
        parts.append(ir.Location.file(src.file, src.line, 0))
    return ir.Location.fused(parts, metadata=ir.StringAttr.get(src.op))


_FUSED = re.compile(
    r'loc\(fused<"(?P<op>[^"]*)">\["(?P<node>[^"]*)"(?:, "(?P<file>[^"]*)":(?P<line>\d+):\d+)?\]\)'
)


def read_location(loc: ir.Location) -> SourceLocation:
    """Inverse of `op_location`; unknown locations give empty fields."""
    m = _FUSED.fullmatch(str(loc))
    if not m:
        return SourceLocation("", "", "", 0)
    return SourceLocation(m["node"], m["op"], m["file"] or "", int(m["line"] or 0))


def print_module(module: ir.Module) -> str:
    """Module text with locations, the form that round-trips through `parse_module`."""
    return module.operation.get_asm(enable_debug_info=True)


def parse_module(text: str, context: ir.Context) -> ir.Module:
    """Parse (and verify) module text in `context`."""
    with context:
        return ir.Module.parse(text)


def operands_in_order(op) -> list:
    """An ext-defined op's operands in declaration order, variadic groups flattened and an
    absent optional operand as `None`."""
    flat = []
    for field in type(op)._fields:
        if not isinstance(field, OperandDef):
            continue
        value = getattr(op, field.name)
        if field.variadicity == Variadicity.variadic:
            flat.extend(value)
        else:
            flat.append(value)
    return flat
