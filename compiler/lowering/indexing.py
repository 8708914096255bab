"""Gathers: embedding, advanced indexing, index_select."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.lowering.shape import slice_along
from compiler.mlir import bool_attr, f64_attr, int_list_attr, shape_of, tensor_type

aten = torch.ops.aten


@register(aten.embedding.default)
def _embedding(ctx: LoweringContext, node: fx.Node):
    weight, indices = (ctx.value(a) for a in node.args[:2])
    return ctx.emit(wse.EmbeddingOp, weight, indices, ctx.out_type()).result


INTEGER_INDICES = "integer index tensors only (a boolean mask has a data-dependent shape)"


def _integer_indices(node: fx.Node) -> str | None:
    for index in node.args[1]:
        if index is not None and index.meta["val"].dtype == torch.bool:
            return "boolean-mask indexing has a data-dependent shape; use torch.where"
    return None


@register(aten.index.Tensor, check=_integer_indices, limits=INTEGER_INDICES)
def _index(ctx: LoweringContext, node: fx.Node):
    x, indices = node.args
    dims = [d for d, i in enumerate(indices) if i is not None]
    given = [i for i in indices if i is not None]
    common = torch.broadcast_shapes(*(i.meta["val"].shape for i in given))
    index_type = tensor_type(common, torch.int64)
    values = []
    for index in given:
        v = ctx.operand(index, torch.int64)
        if shape_of(v) != tuple(common):
            v = ctx.emit(wse.BroadcastOp, v, index_type).result
        values.append(v)
    return ctx.emit(wse.IndexOp, ctx.value(x), values, int_list_attr(dims), ctx.out_type()).result


@register(aten.index_select.default)
def _index_select(ctx: LoweringContext, node: fx.Node):
    x, dim, index = node.args
    rank = len(x.meta["val"].shape)
    if rank == 0:  # a 0-d source has one element: index 0 picks it
        return _gather_scalar(ctx, x, index)
    idx = ctx.value(index)
    if not shape_of(idx):
        idx = ctx.emit(wse.ReshapeOp, idx, tensor_type([1], torch.int64)).result
    return ctx.emit(
        wse.IndexOp, ctx.value(x), [idx], int_list_attr([dim % rank]), ctx.out_type()
    ).result


def _gather_scalar(ctx: LoweringContext, x: fx.Node, index: fx.Node):
    """A 0-d `x` indexed by `index` (all zeros): `x` in the result's shape, read through a
    `wse.index` of its one-element view so an index out of range still raises."""
    flat = ctx.emit(wse.ReshapeOp, ctx.value(x), tensor_type([1], ctx.out_dtype())).result
    idx = ctx.operand(index, torch.int64)
    picked = tensor_type(shape_of(idx), ctx.out_dtype())
    picked = ctx.emit(wse.IndexOp, flat, [idx], int_list_attr([0]), picked).result
    return ctx.emit(wse.ReshapeOp, picked, ctx.out_type()).result


def coordinates(ctx: LoweringContext, shape, dim: int):
    """An i64 tensor of `shape` holding each element's coordinate along `dim`."""
    n = shape[dim]
    iota = ctx.emit(wse.IotaOp, f64_attr(0), f64_attr(1), tensor_type([n], torch.int64)).result
    column = [n if d == dim else 1 for d in range(len(shape))]
    iota = ctx.emit(wse.ReshapeOp, iota, tensor_type(column, torch.int64)).result
    return ctx.emit(wse.BroadcastOp, iota, tensor_type(shape, torch.int64)).result


def _along(ctx: LoweringContext, index: fx.Node, dim: int) -> list:
    """Index tensors for every dim of an `index`-shaped pick along `dim` (gather/scatter)."""
    shape = list(index.meta["val"].shape)
    return [
        ctx.operand(index, torch.int64) if d == dim else coordinates(ctx, shape, d)
        for d in range(len(shape))
    ]


@register(aten.gather.default)
def _gather(ctx: LoweringContext, node: fx.Node):
    x, dim, index = node.args[:3]
    rank = len(x.meta["val"].shape)
    if rank == 0:
        return _gather_scalar(ctx, x, index)
    indices = _along(ctx, index, dim % rank)
    return ctx.emit(
        wse.IndexOp, ctx.value(x), indices, int_list_attr(range(rank)), ctx.out_type()
    ).result


def _scatter(ctx: LoweringContext, x: fx.Node, indices: list, dims, updates, accumulate: bool):
    dtype = ctx.out_dtype()
    return ctx.emit(
        wse.ScatterOp,
        ctx.operand(x, dtype),
        ctx.convert(updates, dtype),
        indices,
        int_list_attr(dims),
        bool_attr(accumulate),
        ctx.out_type(),
    ).result


def _unreduced(node: fx.Node) -> str | None:
    return "scatter with a reduce argument is not supported" if "reduce" in node.kwargs else None


@register(
    aten.scatter.src,
    aten.scatter.value,
    aten.scatter_add.default,
    check=_unreduced,
    limits="no reduce argument",
)
def _scatter_along(ctx: LoweringContext, node: fx.Node):
    """`scatter(x, dim, index, src or value)`; `scatter_add` accumulates."""
    x, dim, index, src = node.args[:4]
    dtype, accumulate = ctx.out_dtype(), node.target is aten.scatter_add.default
    updates = ctx.operand(src, dtype)
    rank = len(x.meta["val"].shape)
    if rank == 0:  # one element: it is the update, or the sum, unless the index is empty
        if index.meta["val"].numel() == 0:
            return ctx.operand(x, dtype)
        updates = ctx.emit(wse.ReshapeOp, updates, ctx.out_type()).result
        if not accumulate:
            return updates
        return ctx.emit(wse.AddOp, ctx.operand(x, dtype), updates, ctx.out_type()).result
    if isinstance(src, fx.Node):
        for d, n in enumerate(index.meta["val"].shape):
            updates = slice_along(ctx, updates, d, 0, n)
    return _scatter(ctx, x, _along(ctx, index, dim % rank), range(rank), updates, accumulate)


@register(aten.index_put.default, check=_integer_indices, limits=INTEGER_INDICES)
def _index_put(ctx: LoweringContext, node: fx.Node):
    x, indices, values = node.args[:3]
    accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
    dims = [d for d, i in enumerate(indices) if i is not None]
    given = [i for i in indices if i is not None]
    common = torch.broadcast_shapes(*(i.meta["val"].shape for i in given))
    index_type = tensor_type(common, torch.int64)
    values_list = []
    for index in given:
        v = ctx.operand(index, torch.int64)
        if shape_of(v) != tuple(common):
            v = ctx.emit(wse.BroadcastOp, v, index_type).result
        values_list.append(v)
    return _scatter(ctx, x, values_list, dims, ctx.value(values), bool(accumulate))


@register(aten.slice_scatter.default)
def _slice_scatter(ctx: LoweringContext, node: fx.Node):
    args = list(node.args) + [0, None, None, 1][len(node.args) - 2 :]
    x, src, dim, start, end, step = args[:6]
    shape = x.meta["val"].shape
    dim %= len(shape)
    positions = range(*slice(start, end, step).indices(shape[dim]))
    index = ctx.constant(torch.tensor(list(positions), dtype=torch.int64), torch.int64)
    return _scatter(ctx, x, [index], [dim], ctx.value(src), False)


@register(aten.flip.default)
def _flip(ctx: LoweringContext, node: fx.Node):
    x, dims = node.args[:2]
    shape = list(x.meta["val"].shape)
    result = ctx.value(x)
    for dim in sorted({d % len(shape) for d in dims} if shape else ()):
        if shape[dim] < 2:
            continue
        index = ctx.constant(torch.arange(shape[dim] - 1, -1, -1), torch.int64)
        result = ctx.emit(wse.IndexOp, result, [index], int_list_attr([dim]), result.type).result
    return result
