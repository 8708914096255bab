"""Placement and fabric ops.

Added by placement (`compiler/passes/`). A placed module also carries, on every other op,
the discardable attributes `stage` (i64: the pipeline stage, one model layer), `region`
([x, y, w, h]: the rectangle of PEs the op runs on; x is the column, y the row, from the top
left) and, for ops whose result occupies SRAM, `sram` ([offset, bytes_per_pe]: the byte range
of the result on every PE of `region`; `scratch`, same form: a working set held only while the
op runs, as a tiled attention's). `wse.param` stays a name: its `wse.weight_tiles`
users are where the weight lives. The communication ops below are value-preserving or
reducing, so a placed module still computes the model.
"""

from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _elem,
    _fail,
    _int,
    _int_list,
    _ints,
    _shape,
    _str,
)

FABRIC_AXES = ("row", "col")
REDUCE_ALGORITHMS = ("chain", "tree", "two_phase")
WEIGHT_HOMES = ("sram", "external")
GEMM_DATAFLOWS = ("broadcast", "cannon")


def _check_region(op, name: str = "region") -> bool:
    region = _int_list(op, name)
    if region is None or len(region) != 4:
        return _fail(op, f"'{name}' must be [x, y, w, h]")
    x, y, w, h = region
    if x < 0 or y < 0 or w < 1 or h < 1:
        return _fail(op, f"'{name}' needs x, y >= 0 and w, h >= 1, got {region}")
    return True


def _check_identity(op) -> bool:
    if op.input.type != op.result.type:
        return _fail(op, "result type must equal the input type")
    return True


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class WeightTilesOp(Wse.Operation, name="weight_tiles"):
    """A weight cut into tiles, one per PE; value-preserving (the result is the weight).

    `%t = "wse.weight_tiles"(%w) {home = "sram", region = [8, 0, 4, 2], sram_offset = 512 : i64,
        tile_dims = [1, 0], tile_grid = [2, 4], tile_shape = [48, 32]}
        : (tensor<192x64xf32>) -> tensor<192x64xf32>`

    Tensor dim `tile_dims[0]` is split over `tile_grid[0]` PE rows and dim `tile_dims[1]` over
    `tile_grid[1]` PE columns (-1: not split, grid 1). Every tile has `tile_shape`: the split dims
    have `ceil(size / grid)` elements, the others their full size; the last tiles are
    zero-padded. Tile (r, c) holds elements `[r*tr, (r+1)*tr) x [c*tc, (c+1)*tc)` of the split
    dims, row-major, at bytes `[sram_offset, sram_offset + prod(tile_shape) * element bytes)` of
    PE (x + c, y + r), where `region = [x, y, w, h]` (w >= grid[1], h >= grid[0]); a streamed
    weight its readers convert to a wider dtype is held at that width. `home` is
    "sram" (resident: loaded once) or "external" (streaming: the tiles stream in from external
    memory into that SRAM range when this op runs). Every element is stored exactly once.
    Optional `stream_passes` P (external, dim 0 not split: an experts weight): the tiles stream
    in P passes of `ceil(tile_shape[0] / P)` slices of dim 0, each into one of two buffers in
    turn (at `sram_offset` and right after the first), so a PE holds two slices, not the tile:
    its SRAM range is those two slices' bytes (`2 * ceil(tile_shape[0] / P)` < dim 0 for P > 1).
    """

    input: Tensor
    region: ir.ArrayAttr
    tile_dims: ir.ArrayAttr
    tile_grid: ir.ArrayAttr
    tile_shape: ir.ArrayAttr
    sram_offset: ir.IntegerAttr
    home: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not (_check_region(self) and _check_identity(self)):
            return False
        shape = _shape(self.input)
        dims, grid, tile = (_int_list(self, n) for n in ("tile_dims", "tile_grid", "tile_shape"))
        if dims is None or grid is None or tile is None or len(dims) != 2 or len(grid) != 2:
            return _fail(self, "tile_dims and tile_grid must be two integers each")
        if any(not -1 <= d < len(shape) for d in dims) or (dims[0] == dims[1] != -1):
            return _fail(self, f"tile_dims must be distinct dims of the weight or -1, got {dims}")
        if any(g < 1 for g in grid) or any(
            g != 1 for d, g in zip(dims, grid, strict=True) if d == -1
        ):
            return _fail(self, f"tile_grid must be >= 1, and 1 for unsplit dims, got {grid}")
        expect = list(shape)
        for d, g in zip(dims, grid, strict=True):
            if d != -1:
                expect[d] = _ceil_div(shape[d], g)
        if tile != expect:
            return _fail(self, f"tile_shape must be {expect} for this grid, got {tile}")
        x, y, w, h = _int_list(self, "region")
        if grid[0] > h or grid[1] > w:
            return _fail(self, f"tile_grid {grid} does not fit region {w}x{h}")
        if _int(self, "sram_offset") < 0 or _str(self, "home") not in WEIGHT_HOMES:
            return _fail(self, f"needs sram_offset >= 0 and home in {WEIGHT_HOMES}")
        if "stream_passes" in self.attributes and not (
            _str(self, "home") == "external"
            and 0 not in dims
            and 1 <= (passes := _int(self, "stream_passes")) <= max(1, shape[0])
            and (passes == 1 or 2 * -(-shape[0] // passes) <= shape[0])
        ):
            return _fail(
                self,
                "stream_passes P needs home 'external', dim 0 unsplit, 1 <= P <= dim 0, and"
                " P == 1 or two passes' slices (2 * ceil(dim 0 / P)) within dim 0",
            )
        return True


class FabricBroadcastOp(Wse.Operation, name="fabric_broadcast"):
    """Send slices of an activation along PE rows (or columns); value-preserving.

    `%b = "wse.fabric_broadcast"(%x) {axis = "row", dim = 1 : i64, parts = 4 : i64,
        region = [8, 0, 4, 4], rows_per_pass = 8 : i64} : (tensor<8x64xf32>) -> tensor<8x64xf32>`

    `dim` is cut into `parts` slices of `ceil(size / parts)`; slice p goes to every PE of region
    row y + p (axis "row": it travels along the row) or column x + p (axis "col"), in passes of
    `rows_per_pass` rows of the flattened leading dims.
    """

    input: Tensor
    region: ir.ArrayAttr
    axis: ir.StringAttr
    dim: ir.IntegerAttr
    parts: ir.IntegerAttr
    rows_per_pass: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not (_check_region(self) and _check_identity(self)):
            return False
        axis, dim, parts = _str(self, "axis"), _int(self, "dim"), _int(self, "parts")
        if axis not in FABRIC_AXES or not 0 <= dim < len(_shape(self.input)):
            return _fail(self, f"needs axis in {FABRIC_AXES} and dim in range")
        _, _, w, h = _int_list(self, "region")
        if not 1 <= parts <= (h if axis == "row" else w) or _int(self, "rows_per_pass") < 1:
            return _fail(
                self, "parts must be between 1 and the region's extent; rows_per_pass >= 1"
            )
        return True


class FabricShiftOp(Wse.Operation, name="fabric_shift"):
    """Cannon-style rotation of an activation's q x q blocks over a square region;
    value-preserving.

    `%a = "wse.fabric_shift"(%x) {axis = "row", region = [0, 0, 4, 4], skew = 1 : i64,
        step = 1 : i64, steps = 4 : i64} : (tensor<8x64xf32>) -> tensor<8x64xf32>`

    The activation (..., M, K) is held as q x q blocks, K over the rows and M over the columns
    of the region (block (k, i) on PE (x + i, y + k)), so each row meets the weight tiles of
    the same K slice. Before the first step, row r (axis "row"; column r for "col") rotates by
    `skew * r` PEs towards index 0; after each of the consumer's `steps` multiply-accumulate
    steps every block moves `step` PEs the same way. The consumer is a `wse.tile_matmul` with
    dataflow "cannon". With `rows_per_pass`, blocks move that many of their M rows at a time.
    """

    input: Tensor
    region: ir.ArrayAttr
    axis: ir.StringAttr
    skew: ir.IntegerAttr
    step: ir.IntegerAttr
    steps: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not (_check_region(self) and _check_identity(self)):
            return False
        _, _, w, h = _int_list(self, "region")
        if w != h or _str(self, "axis") not in FABRIC_AXES or _int(self, "steps") < 1:
            return _fail(self, f"needs a square region, axis in {FABRIC_AXES} and steps >= 1")
        return True


class TileMatmulOp(Wse.Operation, name="tile_matmul"):
    """Per-PE products of an activation and a tiled weight.

    `%p = "wse.tile_matmul"(%xb, %t, %bias) {dataflow = "broadcast", region = [8, 0, 4, 2],
        rows_per_pass = 8 : i64, transpose_rhs = true, operandSegmentSizes = array<i32: 1, 1, 1>}
        : (tensor<8x64xf32>, tensor<192x64xf32>, tensor<192xf32>) -> tensor<2x8x192xf32>`

    rhs is the weight as (K, N), or (N, K) when `transpose_rhs`. dataflow "broadcast": the
    result stacks P partial sums, `result[p] = lhs[..., K_p] @ rhs[K_p, :]` with K_p the p-th
    `ceil(K / P)` slice (PE row p's share), plus the bias in `result[0]`; a `wse.fabric_reduce`
    sums them. dataflow "cannon" (lhs from a `wse.fabric_shift`): `lhs @ rhs + bias` on a
    q x q region. The weight tiles stay put; at every step each PE multiplies the activation
    block it holds by its tile into the output block it holds, then output blocks move one PE
    towards row 0 (column shift) while activation blocks move as their shift says; after q
    steps output block (i, j) (M slice i, N slice j) is on PE (x + j, y + (i - j) mod q).
    `rows_per_pass` rows of M are processed at a time (Cannon: the rows of a block, or part
    of them per pass); with
    `cols_per_pass` (broadcast), a PE makes and sends its partial sums that many columns at a
    time.
    """

    lhs: Tensor
    rhs: Tensor
    region: ir.ArrayAttr
    dataflow: ir.StringAttr
    transpose_rhs: ir.IntegerAttr
    rows_per_pass: ir.IntegerAttr
    result: TensorResult
    bias: Tensor | None = None

    def verify_invariants(self) -> bool:
        if not _check_region(self):
            return False
        a, b, out = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        if len(a) < 2 or len(b) != 2:
            return _fail(self, "needs lhs of rank >= 2 and a 2-D rhs")
        k, n = (b[1], b[0]) if _int(self, "transpose_rhs") else b
        if a[-1] != k:
            return _fail(self, f"contraction dims differ: {a[-1]} vs {k}")
        dataflow = _str(self, "dataflow")
        if dataflow not in GEMM_DATAFLOWS:
            return _fail(self, f"dataflow must be one of {GEMM_DATAFLOWS}")
        expect = a[:-1] + (n,)
        if (dataflow == "cannon" and out != expect) or (
            dataflow == "broadcast" and (len(out) != len(expect) + 1 or out[1:] != expect)
        ):
            return _fail(
                self, f"result must be {'' if dataflow == 'cannon' else '(P,) + '}{expect}"
            )
        if self.bias is not None and _shape(self.bias) != (n,):
            return _fail(self, f"bias must be ({n},)")
        return _int(self, "rows_per_pass") >= 1 or _fail(self, "rows_per_pass must be >= 1")


class FabricReduceOp(Wse.Operation, name="fabric_reduce"):
    """Sum partial results held by the PE rows of a region: `result = sum(input, dim 0)`.

    `%y = "wse.fabric_reduce"(%p) {algorithm = "tree", axis = "col", group = 1 : i64,
        region = [8, 0, 4, 2]} : (tensor<2x8x192xf32>) -> tensor<8x192xf32>`

    Partial p lives on region row y + p; partials travel along columns (axis "col") to row y.
    `algorithm`: "chain" (each row adds its partial and passes the sum on, a pipelined chain),
    "tree" (pairwise, log2 P rounds), "two_phase" (chains within groups of `group` rows, then a
    chain over the group leaders).
    """

    input: Tensor
    region: ir.ArrayAttr
    axis: ir.StringAttr
    algorithm: ir.StringAttr
    group: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not _check_region(self):
            return False
        if _shape(self.input)[1:] != _shape(self.result) or _elem(self.input) != _elem(self.result):
            return _fail(self, "result must be the input without its leading (partials) dim")
        if (
            _str(self, "algorithm") not in REDUCE_ALGORITHMS
            or _str(self, "axis") not in FABRIC_AXES
        ):
            return _fail(
                self, f"algorithm must be one of {REDUCE_ALGORITHMS}, axis of {FABRIC_AXES}"
            )
        return _int(self, "group") >= 1 or _fail(self, "group must be >= 1")


class FabricStreamOp(Wse.Operation, name="fabric_stream"):
    """Move an activation from the PEs of `src_region` to those of `region`; value-preserving.

    `%s = "wse.fabric_stream"(%x) {hops = 6 : i64, region = [4, 0, 4, 4],
        src_region = [0, 0, 4, 4]} : (tensor<1x8x64xf32>) -> tensor<1x8x64xf32>`

    `hops` is the Manhattan distance between the regions' centres.
    """

    input: Tensor
    region: ir.ArrayAttr
    src_region: ir.ArrayAttr
    hops: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        return (
            _check_region(self)
            and _check_region(self, "src_region")
            and _check_identity(self)
            and (_int(self, "hops") >= 0 or _fail(self, "hops must be >= 0"))
        )


class FabricPermuteOp(Wse.Operation, name="fabric_permute"):
    """A transpose whose elements change PEs: an all-to-all over the PEs of `region`.

    `%t = "wse.fabric_permute"(%x) {permutation = [0, 2, 1, 3], region = [0, 0, 8, 8]}
        : (tensor<1x16x4x8xf32>) -> tensor<1x4x16x8xf32>`

    `result.shape[i] = input.shape[permutation[i]]`, as `wse.transpose`; the `fabric-permutes`
    pass makes it from a transpose whose PE-distributed dims change order, and a transpose that
    only moves size-1 dims (a relabelling) is never one.
    """

    input: Tensor
    permutation: ir.ArrayAttr
    region: ir.ArrayAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not _check_region(self):
            return False
        perm, shape = _ints(self.attributes["permutation"]), _shape(self.input)
        if sorted(perm) != list(range(len(shape))):
            return _fail(self, "permutation must permute the input dims")
        if tuple(shape[p] for p in perm) != _shape(self.result):
            return _fail(self, "result shape must be the permuted input shape")
        kept = [p for p in perm if shape[p] != 1]
        if kept == sorted(kept):
            return _fail(self, "only moves size-1 dims: a relabelling, use wse.transpose")
        return True


class HostTransferOp(Wse.Operation, name="host_transfer"):
    """A function input entering (or a result leaving) the PEs of `region`; value-preserving.

    `%k = "wse.host_transfer"(%arg2) {direction = "in", kind = "state", region = [4, 0, 4, 4]}
        : (tensor<1x2x64x16xf32>) -> tensor<1x2x64x16xf32>`

    kind "data" crosses the host link on every call; kind "state" (KV cache, SSM state) stays
    resident in SRAM between calls.
    """

    input: Tensor
    region: ir.ArrayAttr
    direction: ir.StringAttr
    kind: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _str(self, "direction") not in ("in", "out") or _str(self, "kind") not in (
            "data",
            "state",
        ):
            return _fail(self, "direction must be 'in' or 'out' and kind 'data' or 'state'")
        return _check_region(self) and _check_identity(self)
