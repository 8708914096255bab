"""Softmax and the norms: softmax, layer norm, RMS norm."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext, Unavailable
from compiler.lowering.registry import register
from compiler.mlir import f64_attr, i64_attr

aten = torch.ops.aten


def _no_upcast(node: fx.Node) -> str | None:
    return "softmax with half_to_float=True is not supported" if node.args[2] else None


@register(aten._softmax.default, check=_no_upcast)
def _softmax(ctx: LoweringContext, node: fx.Node):
    rank = len(node.args[0].meta["val"].shape)
    x = ctx.value(node.args[0])
    return ctx.emit(wse.SoftmaxOp, x, i64_attr(node.args[1] % rank), ctx.out_type()).result


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


def _last_dim_only(node: fx.Node) -> str | None:
    return None if len(node.args[1]) == 1 else "RMS norm over more than the last dim"


@register(aten.rms_norm.default, check=_last_dim_only)
def _rms_norm(ctx: LoweringContext, node: fx.Node):
    args = list(node.args) + [None] * (4 - len(node.args))
    x, _, weight, eps = args
    dtype = ctx.out_dtype()
    eps = node.kwargs.get("eps", eps)
    if eps is None:
        eps = torch.finfo(dtype).eps
    return ctx.emit(
        wse.RmsNormOp,
        ctx.value(x),
        f64_attr(eps),
        ctx.out_type(),
        weight=_optional(ctx, weight, dtype),
    ).result
