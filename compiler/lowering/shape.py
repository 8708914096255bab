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
    if not parts:  # every input empty: so is the result
        return ctx.constant(0, dtype, shape_of(out))
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


def pad_dim(ctx: LoweringContext, x, dim: int, before: int, after: int, value=0):
    """`x` with `before` and `after` elements of `value` added along `dim` (negative amounts
    crop instead)."""
    size = shape_of(x)[dim]
    x = slice_along(ctx, x, dim, max(-before, 0), size - max(-after, 0))
    dtype = torch_dtype(x.type)
    for amount, first in ((before, True), (after, False)):
        if amount <= 0:
            continue
        shape = list(shape_of(x))
        fill = ctx.constant(value, dtype, shape[:dim] + [amount] + shape[dim + 1 :])
        shape[dim] += amount
        pair = (fill, x) if first else (x, fill)
        x = ctx.emit(wse.ConcatOp, *pair, i64_attr(dim), tensor_type(shape, dtype)).result
    return x


def stack_taps(
    ctx: LoweringContext,
    x,
    dim: int,
    taps: int,
    count: int,
    step: int,
    axis: int,
    dilation: int = 1,
):
    """Windows along `dim` of `x`: tap t of window w is element `t * dilation + w * step`.
    Each tap is one strided slice (`count` long on `dim`); the `taps` slices are stacked on a
    new dim at `axis` of the result."""
    dtype = torch_dtype(x.type)
    stacked = None
    for tap in range(taps):
        start = tap * dilation
        piece = slice_along(ctx, x, dim, start, start + (count - 1) * step + 1, step)
        shape = list(shape_of(piece))
        shape.insert(axis, 1)
        piece = ctx.emit(wse.ReshapeOp, piece, tensor_type(shape, dtype)).result
        if stacked is not None:
            shape[axis] = tap + 1
            piece = ctx.emit(
                wse.ConcatOp, stacked, piece, i64_attr(axis), tensor_type(shape, dtype)
            ).result
        stacked = piece
    return stacked


@register(aten.unfold.default)
def _unfold(ctx: LoweringContext, node: fx.Node):
    """`x.unfold(dim, size, step)`: the windows as `size` stacked taps on a new last dim;
    windows that tile `dim` exactly (step == size) as a reshape; 0-d `x` as a 1-element dim."""
    x, out = ctx.value(node.args[0]), ctx.out_type()
    shape, dtype = list(shape_of(x)), torch_dtype(x.type)
    if 0 in shape_of(out):
        return ctx.constant(0, dtype, shape_of(out))
    if not shape:
        return ctx.emit(wse.ReshapeOp, x, out).result
    dim, size, step = int(node.args[1]) % len(shape), int(node.args[2]), int(node.args[3])
    count = shape_of(out)[dim]
    if step != size:
        return stack_taps(ctx, x, dim, size, count, step, len(shape))
    x = slice_along(ctx, x, dim, 0, count * size)
    split = shape[:dim] + [count, size] + shape[dim + 1 :]
    x = ctx.emit(wse.ReshapeOp, x, tensor_type(split, dtype)).result
    order = list(range(len(split)))
    return transpose(ctx, x, order[: dim + 1] + order[dim + 2 :] + [dim + 1])


@register(aten.constant_pad_nd.default)
def _constant_pad(ctx: LoweringContext, node: fx.Node):
    """Pad (or, for negative amounts, crop) the last dims: `pad` holds (before, after) pairs
    from the last dim backwards; padding is `value` (default 0)."""
    x, pad = node.args[:2]
    value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    result = ctx.value(x)
    rank = len(shape_of(result))
    for i in range(len(pad) // 2):
        result = pad_dim(ctx, result, rank - 1 - i, int(pad[2 * i]), int(pad[2 * i + 1]), value)
    return result


@register(aten.repeat.default)
def _repeat(ctx: LoweringContext, node: fx.Node):
    """`x.repeat(r)`: x viewed as (1, s0, 1, s1, ...), broadcast to (r0, s0, r1, s1, ...) and
    flattened pairwise."""
    x, repeats = ctx.value(node.args[0]), [int(r) for r in node.args[1]]
    shape = [1] * (len(repeats) - len(shape_of(x))) + list(shape_of(x))
    dtype = torch_dtype(x.type)
    interleaved = [n for s in shape for n in (1, s)]
    x = ctx.emit(wse.ReshapeOp, x, tensor_type(interleaved, dtype)).result
    wide = [n for r, s in zip(repeats, shape, strict=True) for n in (r, s)]
    x = ctx.emit(wse.BroadcastOp, x, tensor_type(wide, dtype)).result
    return ctx.emit(wse.ReshapeOp, x, ctx.out_type()).result


@register(aten.copy.default)
def _copy(ctx: LoweringContext, node: fx.Node):
    """`copy(dst, src)`: `src` converted to `dst`'s dtype and broadcast to its shape."""
    src, out = ctx.operand(node.args[1], ctx.out_dtype()), ctx.out_type()
    if shape_of(src) == shape_of(out):
        return src
    return ctx.emit(wse.BroadcastOp, src, out).result


@register(aten.diagonal.default)
def _diagonal(ctx: LoweringContext, node: fx.Node):
    """`x.diagonal(offset, dim1, dim2)`: the two dims moved last, then picked by a pair of
    index vectors; the diagonal becomes the last dim."""
    args = list(node.args) + [0, 0, 1][len(node.args) - 1 :]
    x, offset, dim1, dim2 = ctx.value(args[0]), int(args[1]), int(args[2]), int(args[3])
    rank = len(shape_of(x))
    dim1, dim2 = dim1 % rank, dim2 % rank
    others = [d for d in range(rank) if d not in (dim1, dim2)]
    x = transpose(ctx, x, others + [dim1, dim2])
    length = shape_of(ctx.out_type())[-1]
    rows = ctx.constant(torch.arange(length) + max(-offset, 0), torch.int64)
    cols = ctx.constant(torch.arange(length) + max(offset, 0), torch.int64)
    dims = int_list_attr([rank - 2, rank - 1])
    return ctx.emit(wse.IndexOp, x, [rows, cols], dims, ctx.out_type()).result
