"""Reductions: sum, mean, max/min, any/all, argmax, cumsum."""

from __future__ import annotations

import functools

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import bool_attr, i64_attr, int_list_attr, shape_of, str_attr, tensor_type

aten = torch.ops.aten


def normalize_dims(dims, rank: int) -> list[int]:
    """Dims as sorted non-negative ints; None or [] means every dim."""
    if dims is None or (isinstance(dims, list | tuple) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(d % rank if rank else 0 for d in dims)


def _reduce(kind: str, ctx: LoweringContext, node: fx.Node):
    source = node.args[0]
    rank = len(source.meta["val"].shape)
    dims = normalize_dims(node.args[1] if len(node.args) > 1 else None, rank)
    keepdim = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    dtype = torch.bool if kind == "any" else ctx.out_dtype()
    x = ctx.operand(source, dtype)
    if rank == 0:
        return x
    attrs = (str_attr(kind), int_list_attr(dims), bool_attr(keepdim))
    return ctx.emit(wse.ReduceOp, x, *attrs, ctx.out_type()).result


for _kind, _targets in {
    "sum": (aten.sum.dim_IntList,),
    "mean": (aten.mean.dim, aten.mean.default),
    "max": (aten.amax.default,),
    "min": (aten.amin.default,),
    "any": (aten.any.dim, aten.any.dims, aten.any.default),
}.items():
    register(*_targets)(functools.partial(_reduce, _kind))


def _has_dim(node: fx.Node) -> str | None:
    return None if len(node.args) > 1 and node.args[1] is not None else "argmax needs a dim"


@register(aten.argmax.default, check=_has_dim)
def _argmax(ctx: LoweringContext, node: fx.Node):
    rank = len(node.args[0].meta["val"].shape)
    dim = node.args[1] % rank
    keepdim = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    out = ctx.out_type()
    if keepdim:
        dropped = [n for i, n in enumerate(shape_of(out)) if i != dim]
        result = ctx.emit(
            wse.ArgmaxOp, ctx.value(node.args[0]), i64_attr(dim), tensor_type(dropped, torch.int64)
        ).result
        return ctx.emit(wse.ReshapeOp, result, out).result
    return ctx.emit(wse.ArgmaxOp, ctx.value(node.args[0]), i64_attr(dim), out).result


@register(aten.cumsum.default)
def _cumsum(ctx: LoweringContext, node: fx.Node):
    rank = len(node.args[0].meta["val"].shape)
    x = ctx.operand(node.args[0], ctx.out_dtype())
    return ctx.emit(wse.CumsumOp, x, i64_attr(node.args[1] % max(rank, 1)), ctx.out_type()).result
