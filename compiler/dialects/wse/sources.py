"""Ops that make a tensor from nothing: weights by name, literals, ranges."""

from typing import Any

from torch_mlir import ir

from compiler.dialects.wse.base import (
    TensorResult,
    Wse,
    _fail,
    _shape,
)


class ParamOp(Wse.Operation, name="param"):
    """A model weight, named by its key in the model's state dict.

    `%w = "wse.param"() {sym_name = "lm_head.weight"} : () -> tensor<128x64xf32>`

    Invariants: the name is non-empty; the tensor is produced once per function and
    read-only. Placement later cuts it into per-PE tiles.
    """

    sym_name: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not ir.StringAttr(self.attributes["sym_name"]).value:
            return _fail(self, "needs a non-empty name")
        return True


class ConstantOp(Wse.Operation, name="constant"):
    """A literal tensor (masks, scalars). Not for weights: use `wse.param`.

    `%c = "wse.constant"() {value = dense<-1.0e4> : tensor<f32>} : () -> tensor<bf16>`

    `value` holds the elements in a storage type (f32/f64 for floats, i64 for integers, i1
    for booleans) with the result's shape; the result converts them to its element type.
    """

    value: Any
    result: TensorResult

    def verify_invariants(self) -> bool:
        attr = self.attributes["value"]
        if not isinstance(attr, ir.DenseElementsAttr):
            return _fail(self, "needs a dense elements 'value'")
        if tuple(ir.RankedTensorType(attr.type).shape) != _shape(self.result):
            return _fail(self, "value shape differs from the result shape")
        return True


class IotaOp(Wse.Operation, name="iota"):
    """`result[i] = start + i * step` for a 1-D result (`torch.arange`).

    `%r = "wse.iota"() {start = 0.0 : f64, step = 1.0 : f64} : () -> tensor<8xi64>`
    """

    start: ir.FloatAttr
    step: ir.FloatAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if len(_shape(self.result)) != 1:
            return _fail(self, "result must be 1-D")
        return True
