"""Special functions built from elementwise `wse` ops: `erfinv` (Gemma-3n's activation
sparsity cuts at a normal quantile, `Normal(0, 1).icdf(p) = sqrt(2) * erfinv(2p - 1)`)."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import shape_of, str_attr, tensor_type

aten = torch.ops.aten

# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), single precision:
# polynomials in w = -log(1 - x^2), one for w < 5 and one in sqrt(w) for the tails.
_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
            -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)  # fmt: skip
_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
         -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)  # fmt: skip
ERFINV = (
    "float32 accuracy (Giles' single-precision approximation: within 6e-7 relative on [-1, 1]);"
    " float64 inputs get the same polynomials, so no better than float32 (1e-4 at 1 - 1e-9)"
)


@register(aten.erfinv.default, limits=ERFINV)
def _erfinv(ctx: LoweringContext, node: fx.Node):
    """`p(w) * x`, in float32 (float64 for float64); +-inf at +-1 and NaN beyond."""
    dtype = ctx.out_dtype()
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    x = ctx.operand(node.args[0], compute)

    def const(value: float):
        return ctx.constant(value, compute)

    def binary(op_class, lhs, rhs):
        return ctx.emit(op_class, lhs, rhs, x.type).result

    def unary(op_class, value):
        return ctx.emit(op_class, value, x.type).result

    def compare(lhs, rhs, predicate: str):
        bool_type = tensor_type(shape_of(x), torch.bool)
        return ctx.emit(wse.CmpOp, lhs, rhs, str_attr(predicate), bool_type).result

    def horner(coefficients: tuple[float, ...], w):
        p = const(coefficients[0])
        for c in coefficients[1:]:
            p = binary(wse.AddOp, binary(wse.MulOp, p, w), const(c))
        return p

    one = const(1.0)
    product = binary(wse.MulOp, binary(wse.SubOp, one, x), binary(wse.AddOp, one, x))
    w = unary(wse.NegOp, unary(wse.LogOp, product))
    central = horner(_CENTRAL, binary(wse.SubOp, w, const(2.5)))
    tail = horner(_TAIL, binary(wse.SubOp, unary(wse.SqrtOp, w), const(3.0)))
    p = ctx.emit(wse.WhereOp, compare(w, const(5.0), "lt"), central, tail, x.type).result
    ends = compare(unary(wse.AbsOp, x), one, "eq")
    infinite = binary(wse.MulOp, x, const(float("inf")))
    result = ctx.emit(wse.WhereOp, ends, infinite, binary(wse.MulOp, p, x), x.type).result
    return ctx.convert(result, dtype)
