"""Reductions: sum, mean, max/min, any/all, argmax, cumsum."""

from __future__ import annotations

import functools

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.lowering.shape import slice_along
from compiler.mlir import (
    bool_attr,
    i64_attr,
    int_list_attr,
    shape_of,
    str_attr,
    tensor_type,
    torch_dtype,
)

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


def _keepdim(node: fx.Node, position: int = 2) -> bool:
    given = node.args[position] if len(node.args) > position else None
    return bool(node.kwargs.get("keepdim", given or False))


def _argmax_of(ctx: LoweringContext, x, dim: int | None, keepdim: bool, out):
    """Index of the first maximum of `x` along `dim` (None: of the flattened tensor), in the
    shape `out`; a 0-d `x` gives 0."""
    shape = shape_of(x)
    if not shape:
        return ctx.constant(0, torch.int64, shape_of(out))
    if dim is None:
        count = 1
        for n in shape:
            count *= n
        x = ctx.emit(wse.ReshapeOp, x, tensor_type([count], torch_dtype(x.type))).result
        dim = 0
    dropped = [n for i, n in enumerate(shape_of(x)) if i != dim]
    result = ctx.emit(wse.ArgmaxOp, x, i64_attr(dim), tensor_type(dropped, torch.int64)).result
    if keepdim or tuple(dropped) != shape_of(out):
        result = ctx.emit(wse.ReshapeOp, result, out).result
    return result


def _negated(ctx: LoweringContext, node: fx.Node, negate: bool):
    x = ctx.value(node.args[0])
    return ctx.emit(wse.NegOp, x, x.type).result if negate else x


def _arg_extreme(negate: bool, ctx: LoweringContext, node: fx.Node):
    """`argmax` (and `argmin`, the argmax of -x) along a dim or over the whole tensor."""
    rank = len(node.args[0].meta["val"].shape)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dim = None if dim is None or rank == 0 else dim % rank
    x = _negated(ctx, node, negate)
    return _argmax_of(ctx, x, dim, _keepdim(node), ctx.out_type())


register(aten.argmax.default)(functools.partial(_arg_extreme, False))
register(aten.argmin.default, limits="floating-point inputs")(functools.partial(_arg_extreme, True))


def _extreme_with_index(kind: str, ctx: LoweringContext, node: fx.Node):
    """`max.dim` / `min.dim`: the values and the index of the first extreme along `dim`."""
    rank = len(node.args[0].meta["val"].shape)
    dim, keepdim = node.args[1] % max(rank, 1), _keepdim(node)
    x = ctx.value(node.args[0])
    if rank == 0:
        return x, ctx.constant(0, torch.int64)
    attrs = (str_attr(kind), int_list_attr([dim]), bool_attr(keepdim))
    values = ctx.emit(wse.ReduceOp, x, *attrs, ctx.out_type(index=0)).result
    searched = _negated(ctx, node, kind == "min")
    return values, _argmax_of(ctx, searched, dim, keepdim, ctx.out_type(index=1))


register(aten.max.dim)(functools.partial(_extreme_with_index, "max"))
register(aten.min.dim, limits="floating-point inputs")(
    functools.partial(_extreme_with_index, "min")
)


@register(aten.max.default, aten.min.default)
def _extreme(ctx: LoweringContext, node: fx.Node):
    kind = "max" if node.target is aten.max.default else "min"
    x = ctx.value(node.args[0])
    rank = len(shape_of(x))
    if rank == 0:
        return x
    attrs = (str_attr(kind), int_list_attr(range(rank)), bool_attr(False))
    return ctx.emit(wse.ReduceOp, x, *attrs, ctx.out_type()).result


def _scan_along(op_class, ctx: LoweringContext, node: fx.Node):
    """`cumsum` / `cumprod` along a dim; a 0-d input is its own prefix."""
    rank = len(node.args[0].meta["val"].shape)
    x = ctx.operand(node.args[0], ctx.out_dtype())
    if rank == 0:
        return x
    return ctx.emit(op_class, x, i64_attr(node.args[1] % rank), ctx.out_type()).result


register(aten.cumsum.default)(functools.partial(_scan_along, wse.CumsumOp))
register(aten.cumprod.default)(functools.partial(_scan_along, wse.CumprodOp))


@register(aten.prod.dim_int, aten.prod.default)
def _prod(ctx: LoweringContext, node: fx.Node):
    """The last element of the cumulative product (of the flattened input without a dim)."""
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    shape = list(shape_of(x))
    if node.target is aten.prod.default or not shape:
        count = 1
        for n in shape:
            count *= n
        x = ctx.emit(wse.ReshapeOp, x, tensor_type([count], dtype)).result
        shape, dim = [count], 0
    else:
        dim = int(node.args[1]) % len(shape)
    if shape[dim] == 0:
        return ctx.constant(1, dtype, shape_of(ctx.out_type()))
    x = ctx.emit(wse.CumprodOp, x, i64_attr(dim), x.type).result
    x = slice_along(ctx, x, dim, shape[dim] - 1, shape[dim])
    return ctx.emit(wse.ReshapeOp, x, ctx.out_type()).result


@register(aten.linalg_vector_norm.default)
def _vector_norm(ctx: LoweringContext, node: fx.Node):
    """`sum(|x|**ord) ** (1/ord)` over dims; ord inf / -inf are max / min of |x|, ord 0
    counts the non-zeros."""
    args = list(node.args) + [2, None, False][len(node.args) - 1 :]
    order, dims, keepdim = args[1], args[2], node.kwargs.get("keepdim", args[3])
    dtype = ctx.out_dtype()
    x = ctx.operand(node.args[0], dtype)
    rank, out = len(shape_of(x)), ctx.out_type()
    magnitude = ctx.emit(wse.AbsOp, x, x.type).result
    if order == 0:
        zero = ctx.constant(0.0, dtype)
        nonzero = ctx.emit(
            wse.CmpOp, magnitude, zero, str_attr("ne"), tensor_type(shape_of(x), torch.bool)
        ).result
        magnitude = ctx.convert(nonzero, dtype)
    elif order not in (1, float("inf"), float("-inf")):
        power = ctx.constant(float(order), dtype)
        magnitude = ctx.emit(wse.PowOp, magnitude, power, x.type).result
    if rank == 0:
        total = magnitude
    else:
        kind = {float("inf"): "max", float("-inf"): "min"}.get(order, "sum")
        attrs = (str_attr(kind), int_list_attr(normalize_dims(dims, rank)), bool_attr(keepdim))
        total = ctx.emit(wse.ReduceOp, magnitude, *attrs, out).result
    if order in (0, 1, float("inf"), float("-inf")):
        return total
    root = ctx.constant(1.0 / order, dtype)
    return ctx.emit(wse.PowOp, total, root, total.type).result
