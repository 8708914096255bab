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


BITWISE = "integer or boolean operands (bitwise; logical on booleans)"


def _integral(node: fx.Node) -> str | None:
    dtypes = {a.meta["val"].dtype for a in node.args if isinstance(a, fx.Node)}
    if any(d.is_floating_point or d.is_complex for d in dtypes):
        return "only integer or boolean operands are supported"
    return None


def _logical(op_class, ctx: LoweringContext, node: fx.Node):
    """Operands in the result's dtype: bool for `logical_*` (nonzero), the promoted integer
    (or bool) type for `bitwise_*`."""
    lhs, rhs = (ctx.operand(a, ctx.out_dtype()) for a in node.args[:2])
    return ctx.emit(op_class, lhs, rhs, ctx.out_type()).result


register(aten.bitwise_and.Tensor, check=_integral, limits=BITWISE)(
    functools.partial(_logical, wse.AndOp)
)
register(aten.logical_and.default)(functools.partial(_logical, wse.AndOp))
register(aten.bitwise_or.Tensor, check=_integral, limits=BITWISE)(
    functools.partial(_logical, wse.OrOp)
)
register(aten.logical_or.default)(functools.partial(_logical, wse.OrOp))


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


@register(aten.logical_not.default)
@register(aten.bitwise_not.default, check=_integral, limits=BITWISE)
def _not(ctx: LoweringContext, node: fx.Node):
    x = ctx.operand(node.args[0], ctx.out_dtype())
    return ctx.emit(wse.NotOp, x, ctx.out_type()).result


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


for _op_class, _target in {
    wse.FloorOp: aten.floor.default,
    wse.CeilOp: aten.ceil.default,
    wse.TruncOp: aten.trunc.default,
    wse.SignOp: aten.sign.default,
    wse.TanOp: aten.tan.default,
    wse.AsinOp: aten.asin.default,
    wse.AcosOp: aten.acos.default,
    wse.AtanOp: aten.atan.default,
    wse.SinhOp: aten.sinh.default,
    wse.CoshOp: aten.cosh.default,
    wse.AsinhOp: aten.asinh.default,
    wse.AcoshOp: aten.acosh.default,
    wse.AtanhOp: aten.atanh.default,
    wse.Expm1Op: aten.expm1.default,
    wse.Log2Op: aten.log2.default,
    wse.Log10Op: aten.log10.default,
}.items():
    register(_target)(functools.partial(_unary, _op_class))

for _op_class, _targets in {
    wse.FmodOp: (aten.fmod.Tensor, aten.fmod.Scalar),
    wse.RemainderOp: (aten.remainder.Tensor, aten.remainder.Scalar),
    wse.Atan2Op: (aten.atan2.default,),
}.items():
    register(*_targets)(functools.partial(_binary, _op_class))

register(aten.bitwise_xor.Tensor, check=_integral, limits=BITWISE)(
    functools.partial(_logical, wse.XorOp)
)
register(aten.logical_xor.default)(functools.partial(_logical, wse.XorOp))


def _no_decimals(node: fx.Node) -> str | None:
    return "round with decimals is not supported" if node.kwargs.get("decimals") else None


@register(aten.round.default, check=_no_decimals, limits="no decimals argument")
def _round(ctx: LoweringContext, node: fx.Node):
    return _unary(wse.RoundOp, ctx, node)


@register(aten.exp2.default)
def _exp2(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    return ctx.emit(wse.PowOp, ctx.constant(2.0, dtype), x, ctx.out_type()).result


@register(aten.isnan.default)
def _isnan(ctx: LoweringContext, node: fx.Node):
    x = ctx.value(node.args[0])
    return ctx.emit(wse.CmpOp, x, x, str_attr("ne"), ctx.out_type()).result


@register(aten.isinf.default)
def _isinf(ctx: LoweringContext, node: fx.Node):
    x = ctx.value(node.args[0])
    if not node.args[0].meta["val"].dtype.is_floating_point:
        return ctx.constant(False, torch.bool, shape_of(ctx.out_type()))
    magnitude = ctx.emit(wse.AbsOp, x, x.type).result
    infinity = ctx.constant(float("inf"), node.args[0].meta["val"].dtype)
    return ctx.emit(wse.CmpOp, magnitude, infinity, str_attr("eq"), ctx.out_type()).result


@register(aten.clamp.Tensor)
def _clamp_tensor(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    low, high = (list(node.args[1:]) + [None, None])[:2]
    low, high = node.kwargs.get("min", low), node.kwargs.get("max", high)
    out = tensor_type(shape_of(ctx.out_type()), dtype)
    if low is not None:
        x = ctx.emit(wse.MaximumOp, x, ctx.operand(low, dtype), out).result
    if high is not None:
        x = ctx.emit(wse.MinimumOp, x, ctx.operand(high, dtype), out).result
    return x


_ROUNDING = {"trunc": wse.TruncOp, "floor": wse.FloorOp}


@register(aten.div.Tensor_mode)
def _div_mode(ctx: LoweringContext, node: fx.Node):
    """`div(a, b, rounding_mode=...)`: true division, then trunc or floor (integers divide
    in float64 and convert back, exact for |values| < 2**53)."""
    mode = node.kwargs.get("rounding_mode", node.args[2] if len(node.args) > 2 else None)
    dtype = ctx.out_dtype()
    compute = dtype if dtype.is_floating_point else torch.float64
    lhs, rhs = (ctx.operand(a, compute) for a in node.args[:2])
    out = tensor_type(shape_of(ctx.out_type()), compute)
    result = ctx.emit(wse.DivOp, lhs, rhs, out).result
    if mode is not None:
        result = ctx.emit(_ROUNDING[mode], result, out).result
    return ctx.convert(result, dtype)


@register(aten.hardtanh.default)
def _hardtanh(ctx: LoweringContext, node: fx.Node):
    args = list(node.args) + [-1.0, 1.0][len(node.args) - 1 :]
    dtype = ctx.out_dtype()
    x = ctx.operand(args[0], dtype)
    x = ctx.emit(wse.MaximumOp, x, ctx.constant(args[1], dtype), x.type).result
    return ctx.emit(wse.MinimumOp, x, ctx.constant(args[2], dtype), x.type).result


@register(aten.leaky_relu.default)
def _leaky_relu(ctx: LoweringContext, node: fx.Node):
    slope = node.args[1] if len(node.args) > 1 else 0.01
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    zero = ctx.constant(0.0, dtype)
    positive = ctx.emit(wse.CmpOp, x, zero, str_attr("gt"), tensor_type(shape_of(x), torch.bool))
    scaled = ctx.emit(wse.MulOp, x, ctx.constant(slope, dtype), x.type).result
    return ctx.emit(wse.WhereOp, positive.result, x, scaled, x.type).result


@register(aten.elu.default)
def _elu(ctx: LoweringContext, node: fx.Node):
    """`scale * x` where x > 0, else `alpha * scale * expm1(input_scale * x)` (ELU, CELU,
    SELU)."""
    alpha, scale, input_scale = (list(node.args[1:]) + [1.0, 1.0, 1.0][len(node.args) - 1 :])[:3]
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)

    def times(value, factor):
        if factor == 1:
            return value
        return ctx.emit(wse.MulOp, value, ctx.constant(factor, dtype), x.type).result

    positive = ctx.emit(
        wse.CmpOp, x, ctx.constant(0.0, dtype), str_attr("gt"), tensor_type(shape_of(x), torch.bool)
    ).result
    negative = ctx.emit(wse.Expm1Op, times(x, input_scale), x.type).result
    negative = times(negative, alpha * scale)
    return ctx.emit(wse.WhereOp, positive, times(x, scale), negative, x.type).result


@register(aten.fmax.default, aten.fmin.default)
def _fmax(ctx: LoweringContext, node: fx.Node):
    """`fmax` / `fmin`: `maximum` / `minimum` that ignore a NaN operand (NaN only if both)."""
    op_class = wse.MaximumOp if node.target is aten.fmax.default else wse.MinimumOp
    dtype = ctx.out_dtype()
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:2])
    out = ctx.out_type()
    both = ctx.emit(op_class, lhs, rhs, out).result
    lhs_nan = ctx.emit(wse.CmpOp, lhs, lhs, str_attr("ne"), tensor_type(shape_of(lhs), torch.bool))
    rhs_nan = ctx.emit(wse.CmpOp, rhs, rhs, str_attr("ne"), tensor_type(shape_of(rhs), torch.bool))
    result = ctx.emit(wse.WhereOp, lhs_nan.result, rhs, both, out).result
    return ctx.emit(wse.WhereOp, rhs_nan.result, lhs, result, out).result


@register(aten.hypot.default)
def _hypot(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:2])
    out = ctx.out_type()
    squares = [ctx.emit(wse.MulOp, v, v, v.type).result for v in (lhs, rhs)]
    total = ctx.emit(wse.AddOp, *squares, out).result
    return ctx.emit(wse.SqrtOp, total, out).result


@register(aten.erfc.default)
def _erfc(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    erf = ctx.emit(wse.ErfOp, x, x.type).result
    return ctx.emit(wse.SubOp, ctx.constant(1.0, dtype), erf, x.type).result
