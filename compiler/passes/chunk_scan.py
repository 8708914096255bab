"""`chunk-scan`: run every `wse.selective_scan` over the sequence in chunks of `chunk` steps.

A `wse.ssd_scan` (Mamba-2) already has a chunk (the model's, often 256); the chunk changes
only rounding, so it is re-chosen per PE: a PE holding P channels of a head (state N) does per
step about T (N + P) + 2 N P + N P / T multiply-adds in chunks of T (intra-chunk scores, the
state's read-out and update, its decay once per chunk), least at T = sqrt(N P / (N + P)); the
chunk is that, at most `chunk_steps` and the model's (so the (T x T) scores fit a PE).

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

import math
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
            elif kind(op) == "ssd_scan":
                length = shape_of(op.operands[0])[1]
                width, state = _ssd_per_pe(op)[1], shape_of(op.operands[3])[-1]
                best = round(math.sqrt(width * state / (width + state)))
                steps = min(best, get_int(op, "chunk"), length, self.options.chunk_steps)
                set_int(op, "chunk", max(1, steps))


def working_set_bytes(op) -> int:
    """Bytes per PE a chunked `wse.selective_scan` needs besides its operands and results: its
    channels' fp32 state and two chunks of B_t and C_t."""
    batch, channels, _ = shape_of(op.operands[0])
    state = shape_of(op.operands[2])[-1]
    per_pe = ceil_div(batch * channels, region_of(op).num_pes)
    chunks = 2 * 2 * get_int(op, "chunk") * state * element_bytes(op.operands[3])
    return per_pe * state * STATE_BYTES + chunks


def _ssd_per_pe(op) -> tuple[int, int]:
    """(heads, channels of each) a PE of a `wse.ssd_scan`'s region holds: heads split over the
    PEs first, then a head's channels."""
    batch, _, heads, width = shape_of(op.operands[0])
    pes = region_of(op).num_pes
    if pes <= batch * heads:
        return ceil_div(batch * heads, pes), width
    return 1, ceil_div(width, pes // (batch * heads))


def ssd_working_set_bytes(op) -> int:
    """Bytes per PE a `wse.ssd_scan` needs besides its operands and results: its heads' fp32
    states, one chunk's fp32 scores and decays (chunk x chunk each, formed once per head at a
    time) and two chunks of B_t and C_t."""
    heads, width = _ssd_per_pe(op)
    state = shape_of(op.operands[3])[-1]
    steps = get_int(op, "chunk")
    chunks = 2 * 2 * steps * state * element_bytes(op.operands[3])
    scores = 2 * steps * steps * STATE_BYTES
    return heads * width * state * STATE_BYTES + scores + chunks
