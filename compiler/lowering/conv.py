"""Convolution: the causal depthwise conv1d of Mamba blocks."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import i64_attr

aten = torch.ops.aten


def _depthwise_1d(node: fx.Node) -> str | None:
    x, weight, _, stride, padding, dilation, transposed, _, groups = node.args
    channels = x.meta["val"].shape[1] if len(x.meta["val"].shape) == 3 else None
    if (
        channels is None
        or groups != channels
        or weight.meta["val"].shape[0] != channels
        or list(stride) != [1]
        or list(dilation) != [1]
        or transposed
        or len(set(padding)) != 1
    ):
        return (
            "only depthwise 1-D convolution (groups = channels, stride 1, dilation 1) is supported"
        )
    return None


@register(aten.convolution.default, check=_depthwise_1d)
def _convolution(ctx: LoweringContext, node: fx.Node):
    x, weight, bias, _, padding = node.args[:5]
    dtype = ctx.out_dtype()
    return ctx.emit(
        wse.DepthwiseConv1dOp,
        ctx.operand(x, dtype),
        ctx.operand(weight, dtype),
        i64_attr(padding[0]),
        ctx.out_type(),
        bias=None if bias is None else ctx.operand(bias, dtype),
    ).result
