"""Elementwise ops: arithmetic, comparisons, logic, math functions, activations, casts."""

from __future__ import annotations

import functools

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import f64_attr, shape_of, str_attr, tensor_type

aten = torch.ops.aten


def _meta_or_scalar(arg):
    if isinstance(arg, fx.Node):
        val = arg.meta["val"]
        return torch.empty(val.shape, dtype=val.dtype, device="meta")
    return arg


HALF = (torch.bfloat16, torch.float16)


def _binary(op_class, ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    # Eager keeps a Python scalar at full precision and rounds once after computing in float32
    # ("opmath"); rounding the scalar to a half type first would differ from eager.
    scalar = any(not isinstance(a, fx.Node) for a in node.args[:2])
    compute = torch.float32 if dtype in HALF and scalar else dtype
    lhs, rhs = (ctx.operand(a, compute) for a in node.args[:2])
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        rhs = ctx.emit(wse.MulOp, rhs, ctx.constant(alpha, compute), rhs.type).result
    out = tensor_type(shape_of(ctx.out_type()), compute)
    return ctx.convert(ctx.emit(op_class, lhs, rhs, out).result, dtype)


for _op_class, _targets in {
    wse.AddOp: (aten.add.Tensor, aten.add.Scalar),
    wse.SubOp: (aten.sub.Tensor, aten.sub.Scalar),
    wse.MulOp: (aten.mul.Tensor, aten.mul.Scalar),
    wse.DivOp: (aten.div.Tensor, aten.div.Scalar),
    wse.PowOp: (aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar),
    wse.MaximumOp: (aten.maximum.default,),
    wse.MinimumOp: (aten.minimum.default,),
}.items():
    register(*_targets)(functools.partial(_binary, _op_class))


def _bool_only(node: fx.Node) -> str | None:
    dtypes = {a.meta["val"].dtype for a in node.args if isinstance(a, fx.Node)}
    return None if dtypes == {torch.bool} else "only boolean operands are supported"


def _logical(op_class, ctx: LoweringContext, node: fx.Node):
    lhs, rhs = (ctx.operand(a, torch.bool) for a in node.args[:2])
    return ctx.emit(op_class, lhs, rhs, ctx.out_type()).result


register(aten.bitwise_and.Tensor, aten.logical_and.default, check=_bool_only)(
    functools.partial(_logical, wse.AndOp)
)
register(aten.bitwise_or.Tensor, aten.logical_or.default, check=_bool_only)(
    functools.partial(_logical, wse.OrOp)
)


def _compare(predicate: str, ctx: LoweringContext, node: fx.Node):
    dtype = torch.result_type(*(_meta_or_scalar(a) for a in node.args[:2]))
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:2])
    return ctx.emit(wse.CmpOp, lhs, rhs, str_attr(predicate), ctx.out_type()).result


for _predicate in wse.CMP_PREDICATES:
    register(getattr(aten, _predicate).Tensor, getattr(aten, _predicate).Scalar)(
        functools.partial(_compare, _predicate)
    )


@register(aten.where.self)
def _where(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    cond = ctx.operand(node.args[0], torch.bool)
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[1:3])
    return ctx.emit(wse.WhereOp, cond, lhs, rhs, ctx.out_type()).result


@register(aten.logical_not.default, aten.bitwise_not.default, check=_bool_only)
def _not(ctx: LoweringContext, node: fx.Node):
    return ctx.emit(wse.NotOp, ctx.operand(node.args[0], torch.bool), ctx.out_type()).result


def _unary(op_class, ctx: LoweringContext, node: fx.Node):
    x = ctx.operand(node.args[0], ctx.out_dtype())
    return ctx.emit(op_class, x, ctx.out_type()).result


for _op_class, _target in {
    wse.NegOp: aten.neg.default,
    wse.ExpOp: aten.exp.default,
    wse.LogOp: aten.log.default,
    wse.Log1pOp: aten.log1p.default,
    wse.SqrtOp: aten.sqrt.default,
    wse.RsqrtOp: aten.rsqrt.default,
    wse.ReciprocalOp: aten.reciprocal.default,
    wse.AbsOp: aten.abs.default,
    wse.SinOp: aten.sin.default,
    wse.CosOp: aten.cos.default,
    wse.TanhOp: aten.tanh.default,
    wse.ErfOp: aten.erf.default,
    wse.SigmoidOp: aten.sigmoid.default,
    wse.ReluOp: aten.relu.default,
    wse.SiluOp: aten.silu.default,
}.items():
    register(_target)(functools.partial(_unary, _op_class))


@register(aten.gelu.default)
def _gelu(ctx: LoweringContext, node: fx.Node):
    x = ctx.value(node.args[0])
    approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    return ctx.emit(wse.GeluOp, x, str_attr(approximate), ctx.out_type()).result


@register(aten.softplus.default)
def _softplus(ctx: LoweringContext, node: fx.Node):
    args = list(node.args) + [1, 20][len(node.args) - 1 :]
    beta, threshold = args[1], args[2]
    x = ctx.value(node.args[0])
    return ctx.emit(wse.SoftplusOp, x, f64_attr(beta), f64_attr(threshold), ctx.out_type()).result


@register(aten.clamp.default)
def _clamp(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    low, high = (list(node.args[1:]) + [None, None])[:2]
    if low is not None:
        x = ctx.emit(wse.MaximumOp, x, ctx.constant(low, dtype), x.type).result
    if high is not None:
        x = ctx.emit(wse.MinimumOp, x, ctx.constant(high, dtype), x.type).result
    return x


@register(aten._to_copy.default)
def _to_copy(ctx: LoweringContext, node: fx.Node):
    return ctx.convert(ctx.value(node.args[0]), ctx.out_dtype())
