"""`tile-weights`: cut every weight into per-PE tiles with a `wse.weight_tiles` op.

The tile grid follows the weight's main consumer: a matmul weight in (K, N) orientation puts
K over PE rows and N over PE columns of the consumer's region (one tile per PE; q x q for the
Cannon dataflow); other matrices split their first dim over rows and their last over columns
(higher ranks: their two largest dims, so no whole dim of thousands stays on one PE; turned
round where a tile would otherwise take more than `stream_share` of a PE);
vectors split over the columns of the region's top row (the row where reductions end, so a
bias sits where it is added). Pipelined: one `wse.weight_tiles` per weight, resident
(`home = "sram"`), right after the `wse.param`. Streaming: one per use, `home = "external"`,
right before the user: the tiles stream in when needed. SRAM offsets come later (`plan-sram`).

Before:
    %w = "wse.param"() {stage = 1 : i64, sym_name = "model.blocks.0.mlp.fc.weight"} : () -> tensor<256x64xf32>
    %t = "wse.transpose"(%w) {permutation = [1, 0], region = [3, 0, 2, 2], stage = 1 : i64} ...
    %y = "wse.matmul"(%x, %t) {dataflow = "cannon", region = [3, 0, 2, 2], stage = 1 : i64} ...
After:
    %w = "wse.param"() {stage = 1 : i64, sym_name = "model.blocks.0.mlp.fc.weight"} : () -> tensor<256x64xf32>
    %wt = "wse.weight_tiles"(%w) {home = "sram", region = [3, 0, 2, 2], sram_offset = 0 : i64,
        stage = 1 : i64, tile_dims = [1, 0], tile_grid = [2, 2], tile_shape = [128, 32]} ...
    %t = "wse.transpose"(%wt) {permutation = [1, 0], region = [3, 0, 2, 2], stage = 1 : i64} ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.mlir import i64_attr, int_list_attr, ir, shape_of, str_attr
from compiler.passes.common import (
    STREAM_SHARE,
    PassContext,
    body_ops,
    ceil_div,
    element_bytes,
    get_int,
    get_ints,
    get_str,
    kind,
    matmul_weight,
    primary_consumer,
    producer,
    region_of,
    set_int,
    tile_bytes,
    users,
    weight_consumers,
)
from core.geometry import Rect


@dataclass(frozen=True)
class TileWeightsOptions:
    """`split_vectors`: spread vectors over the top row of their region (else one PE each).
    `stream_share`: the most of a PE's usable SRAM one weight's tile should hold: streaming, a
    bigger experts weight streams in passes over its experts (`stream_passes`); a bigger tile
    of another matrix is cut the other way round where that makes it smaller."""

    split_vectors: bool = True
    stream_share: float = STREAM_SHARE


class TileWeights:
    name = "tile-weights"

    def __init__(self, options: TileWeightsOptions = TileWeightsOptions()):
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        usable = ctx.target.usable_sram_bytes_per_pe
        readers = users(module)
        for param in body_ops(module):
            if kind(param) != "param" or "stage" not in param.attributes:
                continue
            if ctx.mode == "pipelined":
                consumer, _ = primary_consumer(param, readers)
                with ir.InsertionPoint.after(param):
                    tiles = self._tiles(param, consumer, "sram", usable)
                param.result.replace_all_uses_except(tiles.result, tiles.operation)
                continue
            direct: dict = {}
            for consumer, path in weight_consumers(param, readers):
                direct.setdefault(path[0] if path else consumer, consumer)
            for user, consumer in direct.items():
                with ir.InsertionPoint(user):
                    tiles = self._tiles(param, consumer, "external", usable)
                user.operation.replace_uses_of_with(param.result, tiles.result)
                if kind(consumer) == "grouped_matmul":  # after: its views set its width
                    self._stream_passes(tiles, usable)

    def _tiles(self, param, consumer, home: str, usable: int):
        shape = shape_of(param.result)
        region = region_of(consumer)
        dims, grid = self._grid(param, consumer, region, shape, usable)
        tile = list(shape)
        for d, g in zip(dims, grid, strict=True):
            if d != -1:
                tile[d] = ceil_div(shape[d], g)
        attributes = {
            "region": int_list_attr(Rect(region.x, region.y, grid[1], grid[0])),
            "tile_dims": int_list_attr(dims),
            "tile_grid": int_list_attr(grid),
            "tile_shape": int_list_attr(tile),
            "sram_offset": i64_attr(0),
            "home": str_attr(home),
        }
        # Built generically: the ext builder drops a falsy attribute, as a 0-d weight's
        # empty `tile_shape` is (e.g. Gemma's `embed_scale`).
        op = ir.Operation.create(
            "wse.weight_tiles",
            results=[param.result.type],
            operands=[param.result],
            attributes=attributes,
            loc=param.location,
        )
        set_int(op, "stage", get_int(consumer, "stage"))
        return op

    def _stream_passes(self, tiles, usable: int) -> None:
        """Stream an experts weight (dim 0 unsplit, a `wse.grouped_matmul`'s rhs) whose tile
        would hold more than `stream_share` of a PE's SRAM in passes of a few experts each: a
        PE then holds two passes' slices (one in use, the next arriving), not every expert."""
        budget = int(self.options.stream_share * usable)
        dims, tile = get_ints(tiles, "tile_dims"), get_ints(tiles, "tile_shape")
        if 0 in dims or tile_bytes(tiles) <= budget:
            return
        per_expert = tile_bytes(tiles) // tile[0]
        passes = ceil_div(tile[0], max(1, budget // (2 * per_expert)))
        if 2 * ceil_div(tile[0], passes) < tile[0]:  # else two passes' slices are every expert
            set_int(tiles, "stream_passes", passes)

    def _grid(
        self, param, consumer, region: Rect, shape, usable: int
    ) -> tuple[list[int], list[int]]:
        """(tile_dims, tile_grid) of `param` for its consumer's region (`usable` bytes a PE)."""
        rank = len(shape)
        if rank == 0:
            return [-1, -1], [1, 1]
        if rank == 1:
            cols = _fit(shape[0], region.width) if self.options.split_vectors else 1
            return [-1, 0], [1, cols]
        found = matmul_weight(consumer)
        if kind(consumer) == "grouped_matmul" and producer(consumer.operands[1]) == param:
            # Every expert's block per tile: per PE the bytes of expert e's matrix alone on
            # its 1/E of the region (its `expert_regions` rectangle, where the simulator runs it).
            dims = [2, 1] if get_int(consumer, "transpose_rhs") else [1, 2]
        elif found is not None and found[0] == param:
            dims = [1, 0] if found[1] else [0, 1]
            if "dataflow" in consumer.attributes and get_str(consumer, "dataflow") == "cannon":
                return dims, [region.height, region.width]
        else:  # the two largest dims; turned round where a tile would take more than
            # `stream_share` of a PE and turned it is smaller (a short convolution's channels
            # held across a rectangle one PE high)
            dims = sorted(sorted(range(rank), key=lambda d: -shape[d])[:2])
            budget = self.options.stream_share * usable / element_bytes(param.result)
            if _tile_elements(shape, dims, region) > budget:
                dims = min([dims, dims[::-1]], key=lambda ds: _tile_elements(shape, ds, region))
        return dims, _grid_of(shape, dims, region)


def _grid_of(shape, dims: list[int], region: Rect) -> list[int]:
    """Tiles of dims[0] over `region`'s rows and of dims[1] over its columns."""
    return [_fit(shape[dims[0]], region.height), _fit(shape[dims[1]], region.width)]


def _tile_elements(shape, dims: list[int], region: Rect) -> int:
    """Elements of one tile of `shape` cut along `dims` over `region`."""
    grid = _grid_of(shape, dims, region)
    cut = {d: ceil_div(shape[d], g) for d, g in zip(dims, grid, strict=True)}
    return math.prod(cut.get(d, n) for d, n in enumerate(shape))


def _fit(size: int, pes: int) -> int:
    """Tiles along a dim of `size` over at most `pes` PEs, none of them empty."""
    if size == 0:
        return 1
    return ceil_div(size, ceil_div(size, min(size, pes)))
