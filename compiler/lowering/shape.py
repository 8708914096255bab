"""Layout and data movement: reshape, transpose, broadcast, slice, concat, split, and the
no-ops (clone, alias, assertions, tuple access)."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import i64_attr, int_list_attr, shape_of, tensor_type, torch_dtype

aten = torch.ops.aten


@register(aten.view.default, aten.unsqueeze.default, aten.squeeze.dims)
def _reshape(ctx: LoweringContext, node: fx.Node):
    x, out = ctx.value(node.args[0]), ctx.out_type()
    if shape_of(x) == shape_of(out):
        return x
    return ctx.emit(wse.ReshapeOp, x, out).result


def transpose(ctx: LoweringContext, x, permutation: list[int]):
    """`x` permuted; the identity permutation returns `x` itself."""
    if permutation == sorted(permutation):
        return x
    shape = shape_of(x)
    out = tensor_type([shape[p] for p in permutation], torch_dtype(x.type))
    return ctx.emit(wse.TransposeOp, x, int_list_attr(permutation), out).result


@register(aten.permute.default)
def _permute(ctx: LoweringContext, node: fx.Node):
    dims = [int(d) for d in node.args[1]]
    return transpose(ctx, ctx.value(node.args[0]), [d % len(dims) for d in dims])


@register(aten.expand.default)
def _expand(ctx: LoweringContext, node: fx.Node):
    x, out = ctx.value(node.args[0]), ctx.out_type()
    if shape_of(x) == shape_of(out):
        return x
    return ctx.emit(wse.BroadcastOp, x, out).result


def slice_along(ctx: LoweringContext, x, dim: int, start: int, end: int, step: int = 1):
    """`x[..., start:end:step, ...]` along `dim` with Python's clamping of start and end."""
    shape = list(shape_of(x))
    start, end, step = slice(start, end, step).indices(shape[dim])
    end = max(end, start)
    if (start, end, step) == (0, shape[dim], 1):
        return x
    shape[dim] = len(range(start, end, step))
    out = tensor_type(shape, torch_dtype(x.type))
    attrs = (i64_attr(dim), i64_attr(start), i64_attr(end), i64_attr(step))
    return ctx.emit(wse.SliceOp, x, *attrs, out).result


@register(aten.slice.Tensor)
def _slice(ctx: LoweringContext, node: fx.Node):
    args = list(node.args) + [0, None, None, 1][len(node.args) - 1 :]
    x, dim, start, end, step = args[:5]
    rank = len(x.meta["val"].shape)
    return slice_along(ctx, ctx.value(x), dim % rank, start or 0, end, step)


@register(aten.select.int)
def _select(ctx: LoweringContext, node: fx.Node):
    x, dim, index = node.args
    size = x.meta["val"].shape[dim]
    index = index % size
    picked = slice_along(ctx, ctx.value(x), dim % len(x.meta["val"].shape), index, index + 1)
    return ctx.emit(wse.ReshapeOp, picked, ctx.out_type()).result


@register(aten.split_with_sizes.default)
def _split(ctx: LoweringContext, node: fx.Node):
    x, sizes = node.args[0], node.args[1]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    dim %= len(x.meta["val"].shape)
    pieces, start = [], 0
    for size in map(int, sizes):
        pieces.append(slice_along(ctx, ctx.value(x), dim, start, start + size))
        start += size
    return tuple(pieces)


@register(aten.cat.default)
def _cat(ctx: LoweringContext, node: fx.Node):
    dtype, out = ctx.out_dtype(), ctx.out_type()
    rank = len(shape_of(out))
    dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % rank
    parts = [ctx.operand(t, dtype) for t in node.args[0] if t.meta["val"].numel() > 0]
    result = parts[0]
    for part in parts[1:]:
        shape = list(shape_of(result))
        shape[dim] += shape_of(part)[dim]
        result = ctx.emit(
            wse.ConcatOp, result, part, i64_attr(dim), tensor_type(shape, dtype)
        ).result
    return result


@register(aten.clone.default, aten.alias.default)
def _identity(ctx: LoweringContext, node: fx.Node):
    return ctx.value(node.args[0])


@register(operator.getitem)
def _getitem(ctx: LoweringContext, node: fx.Node):
    return ctx.values[node.args[0]][node.args[1]]


@register(aten._assert_tensor_metadata.default, aten._assert_scalar.default)
def _assertion(ctx: LoweringContext, node: fx.Node):
    return None
