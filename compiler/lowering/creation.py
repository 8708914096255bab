"""Tensor creation: arange, full, full_like, scalar_tensor."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import build_constant, f64_attr, splat_attr

aten = torch.ops.aten


@register(aten.arange.start_step)
def _arange(ctx: LoweringContext, node: fx.Node):
    start, step = node.args[0], (node.args[2] if len(node.args) > 2 else 1)
    return ctx.emit(wse.IotaOp, f64_attr(start), f64_attr(step), ctx.out_type()).result


@register(aten.full.default, aten.full_like.default, aten.scalar_tensor.default)
def _full(ctx: LoweringContext, node: fx.Node):
    """A splat constant: one value, whatever the size (`zeros(2**28)` holds one scalar)."""
    value = node.args[0] if node.target is aten.scalar_tensor.default else node.args[1]
    out = ctx.out_type()
    value_attr = splat_attr(value, out.shape, ctx.out_dtype())
    return build_constant(value_attr, out, ctx.location)


@register(
    aten.empty.memory_format,
    aten.empty_permuted.default,
    aten.empty_strided.default,
    limits="the contents are zeros (eager leaves them uninitialised)",
)
def _empty(ctx: LoweringContext, node: fx.Node):
    out = ctx.out_type()
    return build_constant(splat_attr(0, out.shape, ctx.out_dtype()), out, ctx.location)
