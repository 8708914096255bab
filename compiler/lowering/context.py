"""What a lowering rule sees: the values built so far, result types from FX metadata, and
helpers that build `wse` ops at the current node's source location."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.mlir import build_constant, dense_attr, ir, shape_of, tensor_type, torch_dtype
from core.errors import OpProblem, UnsupportedOperatorError


@dataclass(frozen=True)
class Unavailable:
    """A result the wse program does not produce (e.g. layer norm's saved mean)."""

    reason: str


class LoweringContext:
    """State shared by the rules while one graph lowers."""

    def __init__(self):
        self.values: dict[fx.Node, object] = {}
        self.node: fx.Node | None = None
        self.location: ir.Location | None = None
        self.source: dict[fx.Node, str] = {}

    # -- reading the graph ---------------------------------------------------------------

    def value(self, arg) -> ir.Value:
        """The wse value of an FX node argument."""
        v = self.values[arg]
        if isinstance(v, Unavailable):
            raise UnsupportedOperatorError(
                [OpProblem(str(arg.target), arg.name, self.source.get(arg, ""), v.reason)]
            )
        return v

    @staticmethod
    def meta(node: fx.Node, index: int | None = None) -> torch.Tensor:
        val = node.meta["val"]
        return val[index] if index is not None else val

    def out_type(self, node: fx.Node | None = None, index: int | None = None):
        """Result type of `node` (default: the current node) from its FX metadata."""
        val = self.meta(node or self.node, index)
        return tensor_type(val.shape, val.dtype)

    def out_dtype(self, node: fx.Node | None = None) -> torch.dtype:
        return self.meta(node or self.node).dtype

    # -- building ops ----------------------------------------------------------------------

    def emit(self, op_class, *args, **kwargs):
        """Build `op_class(*args, **kwargs)` at the current location; returns the op."""
        return op_class(*args, **kwargs, loc=self.location)

    def constant(self, value, dtype: torch.dtype, shape=()) -> ir.Value:
        """A literal tensor of `dtype` (a Python scalar is broadcast to `shape`)."""
        if isinstance(value, torch.Tensor):
            tensor = value
        else:
            tensor = torch.full(
                shape, value, dtype=torch.float64 if isinstance(value, float) else None
            )
        return build_constant(
            dense_attr(tensor, dtype), tensor_type(tensor.shape, dtype), self.location
        )

    def convert(self, value: ir.Value, dtype: torch.dtype) -> ir.Value:
        """`value` as `dtype`, inserting `wse.convert` only when the types differ."""
        if torch_dtype(value.type) == dtype:
            return value
        return self.emit(wse.ConvertOp, value, tensor_type(shape_of(value), dtype)).result

    def operand(self, arg, dtype: torch.dtype) -> ir.Value:
        """A tensor node converted to `dtype`, or a Python scalar as a 0-d constant."""
        if isinstance(arg, fx.Node):
            return self.convert(self.value(arg), dtype)
        return self.constant(arg, dtype)
