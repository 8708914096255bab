"""`insert-streams`: make the traffic between stages and with the host explicit.

A value produced in one stage and read in another travels once per reading stage with a
`wse.fabric_stream` (pipelined mode only: in streaming mode every stage runs on the same PEs).
Function inputs enter through `wse.host_transfer` (direction "in") on the region of each stage
that reads them and results leave through one (direction "out"). Floating-point results after
the first, and inputs of their types, are the model state (KV cache, SSM state: kind "state",
resident between calls); the rest is per-call data (kind "data").

Before:
    %h = "wse.add"(%a, %b) {region = [0, 0, 3, 4], stage = 1 : i64} ...
    %n = "wse.layer_norm"(%h, %g, %c) {region = [3, 0, 5, 4], stage = 2 : i64, ...} ...
After:
    %h = "wse.add"(%a, %b) {region = [0, 0, 3, 4], stage = 1 : i64} ...
    %s = "wse.fabric_stream"(%h) {hops = 4 : i64, region = [3, 0, 5, 4], src_region = [0, 0, 3, 4],
        stage = 2 : i64} ...
    %n = "wse.layer_norm"(%s, %g, %c) {region = [3, 0, 5, 4], stage = 2 : i64, ...} ...
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.dialects import wse
from compiler.mlir import i64_attr, int_list_attr, ir, str_attr
from compiler.passes.common import (
    PassContext,
    body_ops,
    func_block,
    get_int,
    is_float,
    kind,
    producer,
    region_of,
    set_int,
    stage_regions,
    state_inputs,
)


@dataclass(frozen=True)
class InsertStreamsOptions:
    """`share_streams`: one stream per value and reading stage (else one per reading op)."""

    share_streams: bool = True


class InsertStreams:
    name = "insert-streams"

    def __init__(self, options: InsertStreamsOptions = InsertStreamsOptions()):
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        regions = stage_regions(module)
        state = state_inputs(module)
        moved: dict = {}
        for op in body_ops(module):
            if kind(op) == "param":
                continue
            stage = get_int(op, "stage")
            for value in dict.fromkeys(op.operands):
                source = producer(value)
                key: tuple
                if source is None:
                    key = (value, regions[stage])
                elif kind(source) == "param" or ctx.mode == "streaming":
                    continue
                elif get_int(source, "stage") == stage:
                    continue
                else:
                    key = (value, stage)
                if not self.options.share_streams:
                    key = (*key, op)
                if key not in moved:
                    with ir.InsertionPoint(op), op.location:
                        moved[key] = self._move(value, source, regions[stage], stage, state)
                op.operation.replace_uses_of_with(value, moved[key])
        terminator = list(func_block(module).operations)[-1]
        sent: dict = {}
        for index, value in enumerate(list(terminator.operands)):
            if value not in sent:
                source = producer(value)
                stage = 0 if source is None else get_int(source, "stage")
                region = regions[stage] if source is None else region_of(source)
                is_state = index > 0 and is_float(value)
                with ir.InsertionPoint(terminator), terminator.location:
                    out = wse.HostTransferOp(
                        input=value,
                        region=int_list_attr(region),
                        direction=str_attr("out"),
                        kind=str_attr("state" if is_state else "data"),
                        result=value.type,
                    )
                set_int(out, "stage", stage)
                sent[value] = out.result
            terminator.operation.replace_uses_of_with(value, sent[value])

    @staticmethod
    def _move(value, source, region, stage: int, state: set) -> ir.Value:
        if source is None:
            op = wse.HostTransferOp(
                input=value,
                region=int_list_attr(region),
                direction=str_attr("in"),
                kind=str_attr("state" if value in state else "data"),
                result=value.type,
            )
        else:
            src = region_of(source)
            op = wse.FabricStreamOp(
                input=value,
                region=int_list_attr(region),
                src_region=int_list_attr(src),
                hops=i64_attr(src.hops_to(region)),
                result=value.type,
            )
        set_int(op, "stage", stage)
        return op.result
