"""Matrix products: mm, bmm, addmm, and scaled dot-product attention."""

from __future__ import annotations

import torch
import torch.fx as fx

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import bool_attr, f64_attr, int_list_attr, shape_of, str_attr, tensor_type

aten = torch.ops.aten


@register(aten.mm.default, aten.bmm.default)
def _matmul(ctx: LoweringContext, node: fx.Node):
    dtype = ctx.out_dtype()
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:2])
    return ctx.emit(wse.MatmulOp, lhs, rhs, ctx.out_type()).result


@register(aten.addmm.default)
def _addmm(ctx: LoweringContext, node: fx.Node):
    """`beta * bias + alpha * (lhs @ rhs)`: the bias fused into `wse.matmul` when both are 1."""
    dtype = ctx.out_dtype()
    bias, lhs, rhs = (ctx.operand(a, dtype) for a in node.args[:3])
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    out = ctx.out_type()
    if beta == 1 and alpha == 1:
        return ctx.emit(wse.MatmulOp, lhs, rhs, out, bias=bias).result
    product = ctx.emit(wse.MatmulOp, lhs, rhs, out).result
    if alpha != 1:
        product = ctx.emit(wse.MulOp, product, ctx.constant(alpha, dtype), out).result
    if beta == 0:  # eager ignores the bias then, NaN included
        return product
    if beta != 1:
        bias = ctx.emit(wse.MulOp, bias, ctx.constant(beta, dtype), bias.type).result
    return ctx.emit(wse.AddOp, product, bias, out).result


def _inference_attention(node: fx.Node) -> str | None:
    dropout = node.args[4] if len(node.args) > 4 else node.kwargs.get("dropout_p", 0.0)
    return "attention dropout is a training feature; call model.eval()" if dropout else None


@register(
    aten.scaled_dot_product_attention.default,
    check=_inference_attention,
    limits="inference: no dropout",
)
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


def _scaled_sum(ctx: LoweringContext, node: fx.Node, product):
    """`beta * node.args[0] + alpha * product` in the result's shape (beta 0 drops the input)."""
    dtype, out = ctx.out_dtype(), ctx.out_type()
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    if alpha != 1:
        product = ctx.emit(wse.MulOp, product, ctx.constant(alpha, dtype), out).result
    if beta == 0:
        return product
    bias = ctx.operand(node.args[0], dtype)
    if beta != 1:
        bias = ctx.emit(wse.MulOp, bias, ctx.constant(beta, dtype), bias.type).result
    return ctx.emit(wse.AddOp, product, bias, out).result


@register(aten.addmv.default)
def _addmv(ctx: LoweringContext, node: fx.Node):
    """`beta * v + alpha * (m @ x)`: the vector as an (K, 1) matrix."""
    dtype, out = ctx.out_dtype(), ctx.out_type()
    m, x = (ctx.operand(a, dtype) for a in node.args[1:3])
    (k,) = shape_of(x)
    column = ctx.emit(wse.ReshapeOp, x, tensor_type([k, 1], dtype)).result
    product = ctx.emit(wse.MatmulOp, m, column, tensor_type([shape_of(m)[0], 1], dtype)).result
    return _scaled_sum(ctx, node, ctx.emit(wse.ReshapeOp, product, out).result)


@register(aten.addbmm.default)
def _addbmm(ctx: LoweringContext, node: fx.Node):
    """`beta * input + alpha * sum_b(lhs[b] @ rhs[b])`."""
    dtype, out = ctx.out_dtype(), ctx.out_type()
    lhs, rhs = (ctx.operand(a, dtype) for a in node.args[1:3])
    batch, rows = shape_of(lhs)[:2]
    products = tensor_type([batch, rows, shape_of(rhs)[-1]], dtype)
    product = ctx.emit(wse.MatmulOp, lhs, rhs, products).result
    attrs = (str_attr("sum"), int_list_attr([0]), bool_attr(False))
    return _scaled_sum(ctx, node, ctx.emit(wse.ReduceOp, product, *attrs, out).result)
