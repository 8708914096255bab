"""`split-matmuls`: turn every matmul on a tiled weight into per-PE products and explicit
fabric traffic.

dataflow "broadcast" (GEMV and narrow regions): the activation's K slices go along the PE rows
(`wse.fabric_broadcast`), each PE multiplies its slice by its tile (`wse.tile_matmul`, one
partial sum per PE row) and the partials are summed down the columns (`wse.fabric_reduce`,
algorithm "chain" for few rows, "tree" for some, "two_phase" for many, or as the options say).
dataflow "cannon" (GEMM on a square region): the weight tiles stay put, activation blocks
rotate along the rows (`wse.fabric_shift`) and output blocks along the columns, each PE adding
one block product per step (`wse.tile_matmul`); no reduction is needed.

Before:
    %wt = "wse.weight_tiles"(%w) {region = [3, 0, 2, 2], tile_dims = [1, 0], tile_grid = [2, 2], ...}
    %t = "wse.transpose"(%wt) {permutation = [1, 0], region = [3, 0, 2, 2], stage = 1 : i64} ...
    %y = "wse.matmul"(%x, %t, %b) {dataflow = "broadcast", region = [3, 0, 2, 2], stage = 1 : i64}
        : (tensor<1x64xf32>, tensor<64x256xf32>, tensor<256xf32>) -> tensor<1x256xf32>
After:
    %xb = "wse.fabric_broadcast"(%x) {axis = "row", dim = 1 : i64, parts = 2 : i64,
        region = [3, 0, 2, 2], rows_per_pass = 1 : i64, stage = 1 : i64} ...
    %p = "wse.tile_matmul"(%xb, %wt, %b) {dataflow = "broadcast", transpose_rhs = true, ...}
        : (tensor<1x64xf32>, tensor<256x64xf32>, tensor<256xf32>) -> tensor<2x1x256xf32>
    %y = "wse.fabric_reduce"(%p) {algorithm = "chain", axis = "col", group = 1 : i64, ...}
        : (tensor<2x1x256xf32>) -> tensor<1x256xf32>
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.dialects import wse
from compiler.dialects.wse import REDUCE_ALGORITHMS
from compiler.mlir import bool_attr, i64_attr, int_list_attr, ir, shape_of, str_attr
from compiler.passes.common import (
    PassContext,
    body_ops,
    ceil_div,
    element_bytes,
    get_int,
    get_ints,
    get_str,
    kind,
    matmul_rows,
    matmul_weight,
    matrix_view,
    set_int,
    set_ints,
)


@dataclass(frozen=True)
class SplitMatmulsOptions:
    """`reduce_algorithm`: "auto" or one of chain, tree, two_phase. `rows_per_pass`: rows of M
    a broadcast GEMM handles at a time (bounds the per-PE partial buffers). `two_phase_group`:
    rows per first-phase group (0: about the square root of the row count). `cols_per_pass`:
    columns of partial sums a broadcast PE makes and sends at a time (bounds them on narrow
    regions, e.g. a vocabulary-wide GEMV; 0: its whole tile). `cannon_rows`: rows of an M
    block a Cannon pass moves at a time (a longer block runs in several passes; 0: whole).
    `broadcast_share`: the largest share of a PE's usable SRAM a broadcast pass's K slices may
    take; a narrow weight on a region with few rows (a router's) gets fewer rows per pass."""

    reduce_algorithm: str = "auto"
    rows_per_pass: int = 8
    broadcast_share: float = 0.25
    two_phase_group: int = 0
    cols_per_pass: int = 512
    cannon_rows: int = 64


class SplitMatmuls:
    name = "split-matmuls"

    def __init__(self, options: SplitMatmulsOptions = SplitMatmulsOptions()):
        if options.reduce_algorithm not in ("auto",) + REDUCE_ALGORITHMS:
            raise ValueError(f"reduce_algorithm must be auto or one of {REDUCE_ALGORITHMS}")
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        for op in body_ops(module):
            if kind(op) != "matmul" or "dataflow" not in op.attributes:
                continue
            found = matrix_view(op.operands[1]) if matmul_weight(op) else None
            if found is None or kind(found[0]) != "weight_tiles":
                continue
            tiles, transposed, views = found
            with ir.InsertionPoint(op), op.location:
                result = self._split(op, tiles.result, transposed, ctx)
            op.result.replace_all_uses_with(result)
            op.operation.erase()
            for view in views:
                if not list(view.result.uses):
                    view.operation.erase()

    def _split(self, op, tiles, transposed: bool, ctx: PassContext) -> ir.Value:
        x, bias = op.operands[0], op.bias
        out_shape = shape_of(op.result)
        n = out_shape[-1]
        extra_bias = bias is not None and shape_of(bias) != (n,)
        kept_bias = None if extra_bias else bias
        stage = get_int(op, "stage")
        rows = matmul_rows(x)
        if get_str(op, "dataflow") == "cannon":
            region = get_ints(op, "region")
            q = region[2]
            block = ceil_div(rows, q)
            per_pass = min(block, self.options.cannon_rows or block)
            shifted = _staged(
                wse.FabricShiftOp(
                    input=x,
                    region=int_list_attr(region),
                    axis=str_attr("row"),
                    skew=i64_attr(1),
                    step=i64_attr(1),
                    steps=i64_attr(q),
                    result=x.type,
                ),
                stage,
            )
            if per_pass < block:
                set_int(shifted, "rows_per_pass", per_pass)
            product = _staged(
                wse.TileMatmulOp(
                    lhs=shifted.result,
                    rhs=tiles,
                    region=int_list_attr(region),
                    dataflow=str_attr("cannon"),
                    transpose_rhs=bool_attr(transposed),
                    rows_per_pass=i64_attr(per_pass),
                    result=op.result.type,
                    bias=kept_bias,
                ),
                stage,
            )
            result = product.result
        else:
            budget = int(self.options.broadcast_share * ctx.target.usable_sram_bytes_per_pe)
            result = self._broadcast_reduce(
                op, x, tiles, transposed, kept_bias, stage, rows, budget
            )
        if extra_bias:
            add = _staged(wse.AddOp(lhs=result, rhs=bias, result=op.result.type), stage)
            set_ints(add, "region", get_ints(op, "region"))
            result = add.result
        return result

    def _broadcast_reduce(
        self, op, x, tiles, transposed, bias, stage: int, rows: int, budget: int
    ) -> ir.Value:
        """Broadcast, per-PE products, reduce; a pass's K slices stay within `budget` bytes."""
        region = int_list_attr(get_ints(tiles.owner, "region"))
        parts = get_ints(tiles.owner, "tile_grid")[0]
        row_bytes = max(1, ceil_div(shape_of(x)[-1], parts) * element_bytes(x))
        per_pass = i64_attr(min(rows, self.options.rows_per_pass, max(1, budget // row_bytes)))
        sent = _staged(
            wse.FabricBroadcastOp(
                input=x,
                region=region,
                axis=str_attr("row"),
                dim=i64_attr(len(shape_of(x)) - 1),
                parts=i64_attr(parts),
                rows_per_pass=per_pass,
                result=x.type,
            ),
            stage,
        )
        element = ir.RankedTensorType(op.result.type).element_type
        partial_type = ir.RankedTensorType.get([parts, *shape_of(op.result)], element)
        partials = _staged(
            wse.TileMatmulOp(
                lhs=sent.result,
                rhs=tiles,
                region=region,
                dataflow=str_attr("broadcast"),
                transpose_rhs=bool_attr(transposed),
                rows_per_pass=per_pass,
                result=partial_type,
                bias=bias,
            ),
            stage,
        )
        columns = ceil_div(shape_of(op.result)[-1], get_ints(tiles.owner, "tile_grid")[1])
        if 0 < self.options.cols_per_pass < columns:
            set_int(partials, "cols_per_pass", self.options.cols_per_pass)
        algorithm = self._algorithm(parts)
        group = 1
        if algorithm == "two_phase":
            group = self.options.two_phase_group or max(1, round(math.sqrt(parts)))
        return _staged(
            wse.FabricReduceOp(
                input=partials.result,
                region=region,
                axis=str_attr("col"),
                algorithm=str_attr(algorithm),
                group=i64_attr(group),
                result=op.result.type,
            ),
            stage,
        ).result

    def _algorithm(self, parts: int) -> str:
        if self.options.reduce_algorithm != "auto":
            return self.options.reduce_algorithm
        if parts < 8:
            return "chain"
        return "tree" if parts < 64 else "two_phase"


def _staged(op, stage: int):
    set_int(op, "stage", stage)
    return op
