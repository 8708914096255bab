"""Softmax and the norms: softmax, layer norm, RMS norm."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext, Unavailable
from compiler.lowering.registry import register
from compiler.mlir import (
    bool_attr,
    f64_attr,
    i64_attr,
    int_list_attr,
    shape_of,
    str_attr,
    tensor_type,
    torch_dtype,
)

aten = torch.ops.aten


def _no_upcast(node: fx.Node) -> str | None:
    return "softmax with half_to_float=True is not supported" if node.args[2] else None


def _on_a_vector_if_scalar(build):
    """Run `build(ctx, x, dim)` on a 0-d input as its one-element vector, reshaped back."""

    def rule(ctx: LoweringContext, node: fx.Node):
        x = ctx.value(node.args[0])
        rank = len(shape_of(x))
        if rank:
            return build(ctx, x, node.args[1] % rank)
        vector = ctx.emit(wse.ReshapeOp, x, tensor_type([1], torch_dtype(x.type))).result
        return ctx.emit(wse.ReshapeOp, build(ctx, vector, 0), ctx.out_type()).result

    return rule


@register(aten._softmax.default, check=_no_upcast, limits="no half_to_float")
@_on_a_vector_if_scalar
def _softmax(ctx: LoweringContext, x, dim: int):
    return ctx.emit(wse.SoftmaxOp, x, i64_attr(dim), x.type).result


@register(aten._log_softmax.default, check=_no_upcast, limits="no half_to_float")
@_on_a_vector_if_scalar
def _log_softmax(ctx: LoweringContext, x, dim: int):
    """`x - max - log(sum(exp(x - max)))` along `dim`, from reduce ops."""
    shape = shape_of(x)
    if 0 in shape:
        return x
    kept = tensor_type([1 if d == dim else n for d, n in enumerate(shape)], torch_dtype(x.type))

    def reduce(kind: str, value):
        attrs = (str_attr(kind), int_list_attr([dim]), bool_attr(True))
        return ctx.emit(wse.ReduceOp, value, *attrs, kept).result

    shifted = ctx.emit(wse.SubOp, x, reduce("max", x), x.type).result
    total = reduce("sum", ctx.emit(wse.ExpOp, shifted, x.type).result)
    return ctx.emit(wse.SubOp, shifted, ctx.emit(wse.LogOp, total, kept).result, x.type).result


def _optional(ctx: LoweringContext, arg, dtype):
    return None if arg is None else ctx.operand(arg, dtype)


@register(aten.native_layer_norm.default)
def _layer_norm(ctx: LoweringContext, node: fx.Node):
    x, normalized_shape, weight, bias, eps = node.args
    dtype = ctx.meta(node, 0).dtype
    out = ctx.emit(
        wse.LayerNormOp,
        ctx.value(x),
        i64_attr(len(normalized_shape)),
        f64_attr(eps),
        ctx.out_type(index=0),
        weight=_optional(ctx, weight, dtype),
        bias=_optional(ctx, bias, dtype),
    ).result
    saved = Unavailable("layer norm's saved mean and rstd are training outputs; use eval mode")
    return (out, saved, saved)


@register(aten.rms_norm.default)
def _rms_norm(ctx: LoweringContext, node: fx.Node):
    """One `wse.rms_norm` over the last dim; over several last dims, on the input (and
    weight) flattened over them."""
    args = list(node.args) + [None] * (4 - len(node.args))
    x, normalized, weight, eps = args
    dtype = ctx.out_dtype()
    eps = node.kwargs.get("eps", eps)
    if eps is None:
        eps = torch.finfo(dtype).eps
    h, weight, out = ctx.value(x), _optional(ctx, weight, dtype), ctx.out_type()
    shape = list(shape_of(h))
    if len(normalized) != 1 and shape:
        width = 1
        for n in shape[len(shape) - len(normalized) :]:
            width *= n
        flat = shape[: len(shape) - len(normalized)] + [width]
        h = ctx.emit(wse.ReshapeOp, h, tensor_type(flat, dtype)).result
        if weight is not None:
            weight = ctx.emit(wse.ReshapeOp, weight, tensor_type([width], dtype)).result
    elif not shape:
        h = ctx.emit(wse.ReshapeOp, h, tensor_type([1], dtype)).result
    h = ctx.emit(wse.RmsNormOp, h, f64_attr(eps), h.type, weight=weight).result
    return h if shape_of(h) == shape_of(out) else ctx.emit(wse.ReshapeOp, h, out).result


@register(aten.native_group_norm.default)
def _group_norm(ctx: LoweringContext, node: fx.Node):
    """Group norm: a layer norm over each group's (channels / groups) x spatial elements,
    then the per-channel weight and bias."""
    x, weight, bias, n, channels, spatial, groups, eps = node.args
    dtype = ctx.meta(node, 0).dtype
    shape = list(x.meta["val"].shape)
    grouped = tensor_type([n, groups, channels // groups * spatial], dtype)
    h = ctx.emit(wse.ReshapeOp, ctx.operand(x, dtype), grouped).result
    h = ctx.emit(wse.LayerNormOp, h, i64_attr(1), f64_attr(eps), grouped).result
    out = ctx.out_type(index=0)
    h = ctx.emit(wse.ReshapeOp, h, out).result
    per_channel = tensor_type([channels] + [1] * (len(shape) - 2), dtype)
    for operand, op_class in ((weight, wse.MulOp), (bias, wse.AddOp)):
        if operand is not None:
            v = ctx.emit(wse.ReshapeOp, ctx.operand(operand, dtype), per_channel).result
            h = ctx.emit(op_class, h, v, out).result
    saved = Unavailable("group norm's saved mean and rstd are training outputs; use eval mode")
    return (h, saved, saved)
