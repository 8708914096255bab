"""Mamba's scans: `wafer::selective_scan` -> `wse.selective_scan`, `wafer::ssd_scan` ->
`wse.ssd_scan` (Mamba-2), one op each."""

from __future__ import annotations

import torch
import torch.fx as fx

import core.custom_ops  # noqa: F401  (registers torch.ops.wafer.selective_scan)
import core.ssd  # noqa: F401  (registers torch.ops.wafer.ssd_scan)
from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import register
from compiler.mlir import bool_attr, i64_attr


@register(torch.ops.wafer.selective_scan.default)
def _selective_scan(ctx: LoweringContext, node: fx.Node):
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "h0")
    args = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
    tensors = [None if args.get(n) is None else ctx.value(args[n]) for n in names[:8]]
    h0 = None if args.get("h0") is None else ctx.value(args["h0"])
    op = ctx.emit(
        wse.SelectiveScanOp,
        *tensors,
        h0,
        bool_attr(bool(args.get("delta_softplus", False))),
        ctx.out_type(index=0),
        ctx.out_type(index=1),
    )
    return (op.y, op.last_state)


@register(torch.ops.wafer.ssd_scan.default)
def _ssd_scan(ctx: LoweringContext, node: fx.Node):
    names = ("x", "dt", "A", "B", "C", "D", "chunk", "h0")
    args = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
    tensors = [None if args.get(n) is None else ctx.value(args[n]) for n in (*names[:6], "h0")]
    op = ctx.emit(
        wse.SsdScanOp,
        *tensors,
        i64_attr(int(args["chunk"])),
        ctx.out_type(index=0),
        ctx.out_type(index=1),
    )
    return (op.y, op.last_state)
