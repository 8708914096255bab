"""Convolution: 1-D, as the depthwise `wse.depthwise_conv1d` of Mamba blocks when it is one,
else (grouped, strided, padded, dilated) as taps gathered by slices and one batched matmul."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.lowering.shape import pad_dim, stack_taps
from compiler.mlir import i64_attr, shape_of, tensor_type

aten = torch.ops.aten


def _is_depthwise(node: fx.Node) -> bool:
    x, weight, _, stride, padding, dilation, _, _, groups = node.args
    channels = x.meta["val"].shape[1]
    return (
        groups == channels
        and weight.meta["val"].shape[0] == channels
        and list(stride) == [1]
        and list(dilation) == [1]
        and len(set(padding)) == 1
    )


def _one_dimensional(node: fx.Node) -> str | None:
    x, transposed = node.args[0], node.args[6]
    if len(x.meta["val"].shape) != 3 or transposed:
        return "only 1-D convolution over (batch, channels, length) is supported (no transposed)"
    return None


@register(
    aten.convolution.default,
    check=_one_dimensional,
    limits="1-D over (batch, channels, length) only: grouped, strided, padded and dilated; "
    "no 2-D/3-D or transposed convolution",
)
def _convolution(ctx: LoweringContext, node: fx.Node):
    x, weight, bias, _, padding = node.args[:5]
    dtype = ctx.out_dtype()
    bias = None if bias is None else ctx.operand(bias, dtype)
    if _is_depthwise(node):
        return ctx.emit(
            wse.DepthwiseConv1dOp,
            ctx.operand(x, dtype),
            ctx.operand(weight, dtype),
            i64_attr(padding[0]),
            ctx.out_type(),
            bias=bias,
        ).result
    return _general_conv1d(ctx, node, bias)


def _general_conv1d(ctx: LoweringContext, node: fx.Node, bias):
    """Taps: K strided slices of the padded input stacked to (N, C, K, Lout); then
    (G, O/G, C/G*K) @ (N, G, C/G*K, Lout) -> (N, O, Lout)."""
    x, weight, _, stride, padding, dilation, _, _, groups = node.args
    dtype = ctx.out_dtype()
    n = x.meta["val"].shape[0]
    out_channels, per_group, k = weight.meta["val"].shape
    s, d = int(stride[0]), int(dilation[0])
    out = shape_of(ctx.out_type())
    length = out[2]
    h = pad_dim(ctx, ctx.operand(x, dtype), 2, padding[0], padding[0])
    stacked = stack_taps(ctx, h, 2, k, length, s, axis=2, dilation=d)
    rows = per_group * k
    cols = ctx.emit(wse.ReshapeOp, stacked, tensor_type([n, groups, rows, length], dtype)).result
    w = ctx.emit(
        wse.ReshapeOp,
        ctx.operand(weight, dtype),
        tensor_type([groups, out_channels // groups, rows], dtype),
    ).result
    product = tensor_type([n, groups, out_channels // groups, length], dtype)
    y = ctx.emit(wse.MatmulOp, w, cols, product).result
    y = ctx.emit(wse.ReshapeOp, y, ctx.out_type()).result
    if bias is not None:
        column_bias = ctx.emit(wse.ReshapeOp, bias, tensor_type([out_channels, 1], dtype)).result
        y = ctx.emit(wse.AddOp, y, column_bias, ctx.out_type()).result
    return y
