"""Mixture of experts: the `wafer::moe_*` and `wafer::grouped_matmul` custom ops (`core.moe`),
one `wse` op each."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx

import core.moe  # noqa: F401  (registers torch.ops.wafer.moe_*)
from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import bool_attr, f64_attr, i64_attr, str_attr

ROUTER_ARGS = "logits selection_bias top_k scoring normalize groups topk_groups scale".split()


def _args(node: fx.Node, names: Sequence[str], defaults: dict) -> dict:
    return defaults | dict(zip(names, node.args, strict=False)) | dict(node.kwargs)


def _optional(ctx: LoweringContext, arg):
    return None if arg is None else ctx.value(arg)


@register(torch.ops.wafer.moe_router.default)
def _moe_router(ctx: LoweringContext, node: fx.Node):
    a = _args(node, ROUTER_ARGS, {"groups": 1, "topk_groups": 1, "scale": 1.0})
    op = ctx.emit(
        wse.MoeRouterOp,
        ctx.value(a["logits"]),
        _optional(ctx, a["selection_bias"]),
        i64_attr(a["top_k"]),
        str_attr(a["scoring"]),
        bool_attr(a["normalize"]),
        i64_attr(a["groups"]),
        i64_attr(a["topk_groups"]),
        f64_attr(a["scale"]),
        ctx.out_type(index=0),
        ctx.out_type(index=1),
    )
    return (op.weights, op.indices)


@register(torch.ops.wafer.moe_dispatch.default)
def _moe_dispatch(ctx: LoweringContext, node: fx.Node):
    a = _args(node, ("x", "indices", "weights", "num_experts", "capacity"), {})
    op = ctx.emit(
        wse.MoeDispatchOp,
        *(ctx.value(a[n]) for n in ("x", "indices", "weights")),
        i64_attr(a["capacity"]),
        *(ctx.out_type(index=i) for i in range(3)),
    )
    return (op.xs, op.gates, op.slots)


@register(torch.ops.wafer.grouped_matmul.default)
def _grouped_matmul(ctx: LoweringContext, node: fx.Node):
    a = _args(node, ("xs", "w", "bias", "transpose_rhs"), {})
    op = ctx.emit(
        wse.GroupedMatmulOp,
        ctx.value(a["xs"]),
        ctx.value(a["w"]),
        _optional(ctx, a["bias"]),
        bool_attr(a["transpose_rhs"]),
        ctx.out_type(),
    )
    return op.result


@register(torch.ops.wafer.moe_combine.default)
def _moe_combine(ctx: LoweringContext, node: fx.Node):
    a = _args(node, ("ys", "gates", "slots", "num_tokens"), {})
    values = (ctx.value(a[n]) for n in ("ys", "gates", "slots"))
    return ctx.emit(wse.MoeCombineOp, *values, ctx.out_type()).result
