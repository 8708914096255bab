"""`tile-attention`: tile every `wse.attention` flash-style over the PEs of its region.

A tile holds `q_block` query rows of one (batch, head) and visits the keys `kv_block` at a
time: scores of the block, then the online-softmax recurrence (running max and sum, the output
accumulator rescaled), so the score matrix is never materialised whole. Tiles spread over the
region's PEs, a PE running several in turn when there are more tiles than PEs. When there are
more PEs than tiles, each tile's keys are split over `kv_parts` PEs (flash-decoding) whose
partial (max, sum, accumulator) merge at the end. The per-PE working set, which `plan-sram`
charges, is the q block, the K and V blocks (double-buffered as they move), the scores block and
the fp32 running statistics and accumulator (`working_set_bytes`): bounded by the options,
whatever the context length.

Before:
    %o = "wse.attention"(%q, %k, %v) {is_causal = true, region = [0, 0, 4, 2], scale = 0.25 : f64,
        stage = 0 : i64} : (tensor<1x2x64x16xf32>, ...) -> tensor<1x2x64x16xf32>
After:
    %o = "wse.attention"(%q, %k, %v) {is_causal = true, kv_block = 8 : i64, kv_parts = 1 : i64,
        q_block = 8 : i64, region = [0, 0, 4, 2], scale = 0.25 : f64, stage = 0 : i64} ...
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

STAT_BYTES = 4  # running max, sum, scores and accumulator are fp32


@dataclass(frozen=True)
class TileAttentionOptions:
    """`q_rows`: the most query rows a tile holds (its accumulator and scores rows).
    `kv_bytes`: bytes of one K block (kv_block keys x head dim) a PE receives at a time."""

    q_rows: int = 8
    kv_bytes: int = 512


class TileAttention:
    name = "tile-attention"

    def __init__(self, options: TileAttentionOptions = TileAttentionOptions()):
        if options.q_rows < 1 or options.kv_bytes < 1:
            raise ValueError("q_rows and kv_bytes must be >= 1")
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        for op in body_ops(module):
            if kind(op) == "attention":
                for name, value in self.tiling(op).items():
                    set_int(op, name, value)

    def tiling(self, op) -> dict[str, int]:
        """q_block, kv_block, kv_parts for `op` on its region: query tiles spread over the PEs
        (several per PE when there are more tiles than PEs), then the keys split over the PEs
        left."""
        q, k = shape_of(op.operands[0]), shape_of(op.operands[1])
        heads, length, keys = max(1, math.prod(q[:-2])), q[-2], k[-2]
        pes = region_of(op).num_pes
        q_tiles = min(length, max(1, pes // heads))
        q_block = min(self.options.q_rows, ceil_div(length, q_tiles))
        kv_block = min(
            keys, max(1, self.options.kv_bytes // (q[-1] * element_bytes(op.operands[1])))
        )
        tiles = heads * ceil_div(length, q_block)
        kv_parts = max(1, min(ceil_div(keys, kv_block), pes // tiles))
        return {"q_block": q_block, "kv_block": kv_block, "kv_parts": kv_parts}


def working_set_bytes(op) -> int:
    """Bytes per PE a tiled `wse.attention` needs besides its operands and result: the q block,
    K and V blocks (double-buffered), the scores block, running max and sum, accumulator."""
    q, v = shape_of(op.operands[0]), shape_of(op.operands[2])
    q_block, kv_block = get_int(op, "q_block"), get_int(op, "kv_block")
    e = element_bytes(op.operands[0])
    inputs = q_block * q[-1] * e + 2 * kv_block * (q[-1] + v[-1]) * e
    stats = (q_block * kv_block + 2 * q_block + q_block * v[-1]) * STAT_BYTES
    return inputs + stats
