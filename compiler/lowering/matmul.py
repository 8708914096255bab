"""Matrix products: mm, bmm, addmm, and scaled dot-product attention."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import bool_attr, f64_attr

aten = torch.ops.aten


@register(aten.mm.default, aten.bmm.default)
def _matmul(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:2])
    return ctx.emit(wse.MatmulOp, lhs, rhs, ctx.out_type()).result


def _unit_scales(node: fx.Node) -> str | None:
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        return "addmm with beta or alpha other than 1 is not supported"
    return None


@register(aten.addmm.default, check=_unit_scales)
def _addmm(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    bias, lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:3])
    return ctx.emit(wse.MatmulOp, lhs, rhs, ctx.out_type(), bias=bias).result


def _inference_attention(node: fx.Node) -> str | None:
    dropout = node.args[4] if len(node.args) > 4 else node.kwargs.get("dropout_p", 0.0)
    return "attention dropout is a training feature; call model.eval()" if dropout else None


@register(aten.scaled_dot_product_attention.default, check=_inference_attention)
def _attention(ctx: LoweringContext, node: fx.Node):
    args = list(node.args) + [None] * (7 - len(node.args))
    query, key, value, mask, _, is_causal, scale = args[:7]
    is_causal = node.kwargs.get("is_causal", is_causal) or False
    scale = node.kwargs.get("scale", scale)
    mask = node.kwargs.get("attn_mask", mask)
    dtype = ctx.out_dtype()
    if scale is None:
        scale = query.meta["val"].shape[-1] ** -0.5
    if mask is not None:
        mask_dtype = torch.bool if mask.meta["val"].dtype == torch.bool else dtype
        mask = ctx.operand(mask, mask_dtype)
    q, k, v = (ctx.operand(a, dtype) for a in (query, key, value))
    return ctx.emit(
        wse.AttentionOp, q, k, v, f64_attr(scale), bool_attr(is_causal), ctx.out_type(), mask=mask
    ).result
