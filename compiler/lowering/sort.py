"""Sorting: sort, topk, and the variance reductions (var, var_mean) built from reduce ops."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.reduction import normalize_dims
from compiler.lowering.registry import register
from compiler.lowering.shape import slice_along
from compiler.mlir import bool_attr, i64_attr, int_list_attr, shape_of, str_attr, tensor_type

aten = torch.ops.aten


def _sorted(ctx: LoweringContext, node: fx.Node, dim: int, descending: bool):
    """(values, indices) of the input sorted along `dim`; a 0-d input is its own sort."""
    x = ctx.value(node.args[0])
    shape = shape_of(x)
    if not shape:
        return x, ctx.constant(0, torch.int64)
    dim %= len(shape)
    op = ctx.emit(
        wse.SortOp,
        x,
        i64_attr(dim),
        bool_attr(descending),
        x.type,
        tensor_type(shape, torch.int64),
    )
    return op.values, op.indices


@register(aten.sort.default, aten.sort.stable, limits="always stable")
def _sort(ctx: LoweringContext, node: fx.Node):
    if node.target is aten.sort.stable:
        dim, descending = node.kwargs.get("dim", -1), node.kwargs.get("descending", False)
    else:
        args = list(node.args) + [-1, False][len(node.args) - 1 :]
        dim, descending = args[1], args[2]
    return _sorted(ctx, node, dim, bool(descending))


@register(aten.topk.default, limits="ties come in index order (eager's order is unspecified)")
def _topk(ctx: LoweringContext, node: fx.Node):
    """The first `k` of a stable sort, descending for `largest` (results always sorted)."""
    args = list(node.args) + [-1, True, True][len(node.args) - 2 :]
    k, dim, largest = int(args[1]), args[2], args[3]
    values, indices = _sorted(ctx, node, dim, bool(largest))
    if not shape_of(values):
        if k == 1:
            return values, indices
        empty = shape_of(ctx.out_type(index=0))
        return ctx.constant(0, ctx.out_dtype(), empty), ctx.constant(0, torch.int64, empty)
    dim %= len(shape_of(values))
    return slice_along(ctx, values, dim, 0, k), slice_along(ctx, indices, dim, 0, k)


def _variance(ctx: LoweringContext, node: fx.Node, keepdim: bool):
    """(var, mean) over the dims of `var.correction`-style arguments."""
    x = ctx.value(node.args[0])
    shape = shape_of(x)
    dims = normalize_dims(node.args[1] if len(node.args) > 1 else None, len(shape))
    correction = node.kwargs.get("correction")
    correction = 1.0 if correction is None else float(correction)
    count = 1
    for d in dims:
        count *= shape[d] if shape else 1
    dtype = ctx.meta(node, 0 if isinstance(node.meta["val"], tuple) else None).dtype
    kept = tuple(1 if i in dims else n for i, n in enumerate(shape))

    def reduce(kind: str, value, keep: bool):
        if not shape:
            return value
        out_shape = kept if keep else tuple(n for i, n in enumerate(shape) if i not in dims)
        attrs = (str_attr(kind), int_list_attr(dims), bool_attr(keep))
        return ctx.emit(wse.ReduceOp, value, *attrs, tensor_type(out_shape, dtype)).result

    mean = reduce("mean", x, True)
    centred = ctx.emit(wse.SubOp, x, mean, x.type).result
    squares = ctx.emit(wse.MulOp, centred, centred, x.type).result
    total = reduce("sum", squares, keepdim)
    divisor = ctx.constant(float(max(count - correction, 0)), dtype)
    var = ctx.emit(wse.DivOp, total, divisor, total.type).result
    if not keepdim and shape:
        mean = ctx.emit(wse.ReshapeOp, mean, total.type).result
    return var, mean


@register(aten.var.correction, limits="floating-point inputs")
def _var(ctx: LoweringContext, node: fx.Node):
    return _variance(ctx, node, bool(node.kwargs.get("keepdim", False)))[0]


@register(aten.var_mean.correction, limits="floating-point inputs")
def _var_mean(ctx: LoweringContext, node: fx.Node):
    return _variance(ctx, node, bool(node.kwargs.get("keepdim", False)))
