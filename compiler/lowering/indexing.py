"""Gathers: embedding, advanced indexing, index_select."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import int_list_attr, shape_of, tensor_type

aten = torch.ops.aten


@register(aten.embedding.default)
def _embedding(ctx: LoweringContext, node: fx.Node):
    weight, indices = (ctx.value(a) for a in node.args[:2])
    return ctx.emit(wse.EmbeddingOp, weight, indices, ctx.out_type()).result


def _integer_indices(node: fx.Node) -> str | None:
    for index in node.args[1]:
        if index is not None and index.meta["val"].dtype == torch.bool:
            return "boolean-mask indexing has a data-dependent shape; use torch.where"
    return None


@register(aten.index.Tensor, check=_integer_indices)
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
    dim %= len(x.meta["val"].shape)
    return ctx.emit(
        wse.IndexOp, ctx.value(x), [ctx.value(index)], int_list_attr([dim]), ctx.out_type()
    ).result
