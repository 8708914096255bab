"""`chunk-scan`: run every `wse.selective_scan` over the sequence in chunks of `chunk` steps.

A scan's channels are split over the PEs of its region; each PE keeps its channels' state h
(fp32) and consumes the sequence `chunk` time steps at a time: the chunk's B_t and C_t arrive
by multicast while the previous chunk is scanned (double-buffered), and the state carries from
one chunk to the next. So its working set, which `plan-sram` charges (`working_set_bytes`), is
bounded by the chunk, whatever the context length.

Before:
    %y, %h = "wse.selective_scan"(%u, %dt, %a, %b, %c, ...) {delta_softplus = true,
        region = [0, 0, 4, 2], stage = 0 : i64} : (tensor<1x64x1024xf32>, ...) -> ...
After:
    %y, %h = "wse.selective_scan"(%u, %dt, %a, %b, %c, ...) {chunk = 16 : i64,
        delta_softplus = true, region = [0, 0, 4, 2], stage = 0 : i64} ...
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.mlir import ir, shape_of
from compiler.passes.common import (
    PassContext,
    body_ops,
    ceil_div,
    element_bytes,
    get_int,
    kind,
    region_of,
    set_int,
)

STATE_BYTES = 4  # the state is fp32


@dataclass(frozen=True)
class ChunkScanOptions:
    """`chunk_steps`: the most time steps a chunk holds."""

    chunk_steps: int = 16


class ChunkScan:
    name = "chunk-scan"

    def __init__(self, options: ChunkScanOptions = ChunkScanOptions()):
        if options.chunk_steps < 1:
            raise ValueError("chunk_steps must be >= 1")
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        for op in body_ops(module):
            if kind(op) == "selective_scan":
                length = shape_of(op.operands[0])[-1]
                set_int(op, "chunk", min(length, self.options.chunk_steps))


def working_set_bytes(op) -> int:
    """Bytes per PE a chunked `wse.selective_scan` needs besides its operands and results: its
    channels' fp32 state and two chunks of B_t and C_t."""
    batch, channels, _ = shape_of(op.operands[0])
    state = shape_of(op.operands[2])[-1]
    per_pe = ceil_div(batch * channels, region_of(op).num_pes)
    chunks = 2 * 2 * get_int(op, "chunk") * state * element_bytes(op.operands[3])
    return per_pe * state * STATE_BYTES + chunks
