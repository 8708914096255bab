"""`plan-sram`: give every weight tile, state buffer and activation a byte range in the SRAM
of its PEs, and check that no PE overflows.

Each PE's usable SRAM fills from offset 0: weight tiles (pipelined: resident, matrices first,
then vectors on top; streaming: buffers where a weight's tiles stay from the use of the previous
weight, so the next layer streams in while the current one computes, to its own last use;
a streamed weight arrives as its readers view it, sliced or converted, so its views take no
SRAM of their own), then state (KV cache, SSM state; resident), then activations, live from
their op to their last reader (first-fit reuse). Pipelined, activations share one workspace
per stage region, then one per sub-region of a stage (a matmul's rectangle). Streaming, the
wafer runs one layer at a time on rectangles that change from layer to layer, so weight and
activation buffers are each placed first fit among the buffers live on their own PEs.
A result's bytes per PE are its size spread over its region, except the per-PE working sets of
split matmuls: broadcast slices and partial sums (`rows_per_pass` rows, `cols_per_pass`
columns), and Cannon's activation and output blocks (double-buffered as they move; a block run
in several passes keeps its whole output block besides). A tiled attention's working set (its
blocks and running statistics, never the whole score matrix) and a chunked scan's (its state
and two chunks of B_t and C_t) are `scratch` ([offset, bytes]), live only while the op runs.

Before:
    %wt = "wse.weight_tiles"(%w) {..., sram_offset = 0 : i64, tile_grid = [2, 2], tile_shape = [128, 32]} ...
    %y = "wse.gelu"(%x) {approximate = "tanh", region = [3, 0, 5, 4], stage = 1 : i64} ...
After:
    %wt = "wse.weight_tiles"(%w) {..., sram_offset = 16384 : i64, ...} ...
    %y = "wse.gelu"(%x) {approximate = "tanh", region = [3, 0, 5, 4], sram = [33792, 128],
        stage = 1 : i64} ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.mlir import i64_attr, ir, shape_of
from compiler.passes.chunk_scan import ssd_working_set_bytes
from compiler.passes.chunk_scan import working_set_bytes as scan_working_set
from compiler.passes.common import (
    WEIGHT_VIEWS,
    PassContext,
    body_ops,
    ceil_div,
    element_bytes,
    format_bytes,
    func_block,
    get_int,
    get_ints,
    get_str,
    has,
    kind,
    nbytes,
    producer,
    region_of,
    set_ints,
    sram_map,
    stage_names,
    stage_regions,
    streamed_view,
    tile_bytes,
    tile_rect,
    users,
)
from compiler.passes.tile_attention import working_set_bytes as attention_working_set
from core.errors import PlacementError
from core.geometry import Rect


@dataclass(frozen=True)
class PlanSramOptions:
    """`align_bytes`: alignment of every buffer. `prefetch_weights`: in streaming mode, keep
    a weight's buffer from the previous weight's use, so loads overlap compute."""

    align_bytes: int = 8
    prefetch_weights: bool = True


class PlanSram:
    name = "plan-sram"

    def __init__(self, options: PlanSramOptions = PlanSramOptions()):
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        ops = body_ops(module)
        readers = users(module)
        index = {op: i for i, op in enumerate(ops)}
        self.top = np.zeros((ctx.target.grid_height_pes, ctx.target.grid_width_pes), np.int64)
        tiles = [op for op in ops if kind(op) == "weight_tiles"]
        if ctx.mode == "pipelined":
            for op in sorted(tiles, key=lambda t: len(get_ints(t, "tile_shape")) < 2):
                op.attributes["sram_offset"] = i64_attr(
                    self._reserve(tile_rect(op), tile_bytes(op))
                )
        else:
            self._streamed_weights(tiles, readers, index, len(ops))
        state = [op for op in ops if kind(op) == "host_transfer" and get_str(op, "kind") == "state"]
        in_place = _in_place_updates(module, state, readers, index)
        for op in state:
            if op not in in_place:
                size = self._result_bytes(op)
                set_ints(op, "sram", [self._reserve(region_of(op), size), size])
        buffers: list[tuple[ir.Operation, str, Rect, int, int, int]] = []
        for op in ops:
            skip = kind(op) in ("param", "weight_tiles") or op in state or op in in_place
            if skip or streamed_view(op) or not op.results:
                continue
            last = _last_read(op, readers, index, len(ops))
            buffers.append((op, "sram", region_of(op), index[op], last, self._result_bytes(op)))
            if scratch := _scratch_bytes(op):
                buffers.append((op, "scratch", region_of(op), index[op], index[op], scratch))
        if ctx.mode == "pipelined":
            self._stage_pools(buffers, stage_regions(module))
        else:
            offsets = self._scan_by_pe([entry[2:] for entry in buffers])
            for (op, name, *_, n), offset in zip(buffers, offsets, strict=True):
                set_ints(op, name, [offset, n])
        for op, home in in_place.items():  # last: an op's hash changes with its attributes
            set_ints(op, "sram", get_ints(home, "sram"))
        self._check(module, ctx)

    def _stage_pools(self, buffers: list, regions: list[Rect]) -> None:
        """Pipelined: one workspace per (stage, region), whole stages' first, each reserved
        where nothing else is on its PEs, its buffers first fit in it."""
        pools: dict[tuple[int, Rect], list] = {}
        for op, name, region, start, end, n in buffers:
            pools.setdefault((get_int(op, "stage"), region), []).append((op, name, start, end, n))
        for key in sorted(pools, key=lambda k: (k[1] != regions[k[0]], k)):
            entries = pools[key]
            offsets, size = self._linear_scan([(start, end, n) for *_, start, end, n in entries])
            base = self._reserve(key[1], size)
            for (op, name, *_, n), offset in zip(entries, offsets, strict=True):
                set_ints(op, name, [base + offset, n])

    # -- allocation --------------------------------------------------------------------------

    def _align(self, n: int) -> int:
        return ceil_div(n, self.options.align_bytes) * self.options.align_bytes

    def _reserve(self, rect: Rect, size: int) -> int:
        """The lowest aligned offset free on every PE of `rect`; reserves `size` bytes there."""
        view = self.top[rect.slices]
        offset = self._align(int(view.max()))
        view[...] = np.maximum(view, offset + size)
        return offset

    def _linear_scan(self, intervals: list[tuple[int, int, int]]) -> tuple[list[int], int]:
        """First-fit offsets for (start, end, bytes) live ranges sorted by start; pool size."""
        free: list[tuple[int, int]] = []  # (offset, size), sorted by offset
        live: list[tuple[int, int, int]] = []  # (end, offset, size)
        offsets, high = [], 0
        for start, end, size in intervals:
            for item in [item for item in live if item[0] < start]:
                live.remove(item)
                free = _release(free, item[1], item[2])
            size = self._align(size)
            for i, (offset, room) in enumerate(free):
                if room >= size:
                    free[i : i + 1] = [(offset + size, room - size)] if room > size else []
                    break
            else:
                offset = high
                if free and free[-1][0] + free[-1][1] == high:
                    offset = free.pop()[0]
                high = max(high, offset + size)
            live.append((end, offset, size))
            offsets.append(offset)
        return offsets, high

    def _streamed_weights(self, tiles: list, readers: dict, index: dict, count: int) -> None:
        """Streaming: weight buffers live from the previous weight's load (with prefetch) or
        their own, to the last use through views, first fit among the buffers on their PEs."""
        entries = []
        for i, op in enumerate(tiles):
            start = index[tiles[i - 1]] if i and self.options.prefetch_weights else index[op]
            end = _last_use(op, readers, index, count)
            entries.append((tile_rect(op), start, end, tile_bytes(op)))
        for op, offset in zip(tiles, self._scan_by_pe(entries), strict=True):
            op.attributes["sram_offset"] = i64_attr(offset)

    def _scan_by_pe(self, entries: list[tuple[Rect, int, int, int]]) -> list[int]:
        """First-fit offsets for (rect, start, end, bytes) live ranges sorted by start, where
        two buffers must not share bytes only if their rectangles share a PE; each lies above
        what is reserved on its PEs, which then rises to the highest byte each PE reaches. One
        pool for the whole grid would charge every PE with a buffer on a few (a small weight's
        leaf, a matmul's partial sums on its rectangle)."""
        count = len(entries)
        box = np.array([(r.x, r.y, r.x + r.width, r.y + r.height) for r, *_ in entries], np.int64)
        ends = np.array([end for _, _, end, _ in entries], np.int64)
        low, high = np.zeros(count, np.int64), np.zeros(count, np.int64)
        floors: dict[Rect, int] = {}
        reached: dict[Rect, int] = {}
        live = np.zeros(0, np.int64)
        for i, (rect, start, _, size) in enumerate(entries):
            live = live[ends[live] >= start]
            near = live[
                (box[live, 0] < box[i, 2])
                & (box[i, 0] < box[live, 2])
                & (box[live, 1] < box[i, 3])
                & (box[i, 1] < box[live, 3])
            ]
            if rect not in floors:
                floors[rect] = self._align(int(self.top[rect.slices].max()))
            offset, size = floors[rect], self._align(size)
            spans = zip(low[near].tolist(), high[near].tolist(), strict=True)
            for below, above in sorted(spans):
                if below >= offset + size:
                    break
                offset = max(offset, above)
            low[i], high[i] = offset, offset + size
            reached[rect] = max(reached.get(rect, 0), offset + size)
            live = np.append(live, i)
        for rect, top in reached.items():
            view = self.top[rect.slices]
            np.maximum(view, top, out=view)
        return [int(v) for v in low]

    # -- sizes -------------------------------------------------------------------------------

    @staticmethod
    def _result_bytes(op) -> int:
        """Bytes per PE of `op`'s results on its region."""
        name = kind(op)
        region = region_of(op)
        e = element_bytes(op.results[0])
        if name == "fabric_broadcast":
            shape = shape_of(op.input)
            dim, parts = get_int(op, "dim"), get_int(op, "parts")
            rows = min(math.prod(shape) // max(shape[dim], 1), get_int(op, "rows_per_pass"))
            return rows * ceil_div(shape[dim], parts) * e
        if name == "tile_matmul":
            cols = get_ints(producer(op.operands[1]), "tile_grid")[1]
            width = ceil_div(shape_of(op.result)[-1], cols)
            if has(op, "cols_per_pass"):
                width = min(width, get_int(op, "cols_per_pass"))
            rows = get_int(op, "rows_per_pass") * width * e
            if get_str(op, "dataflow") == "broadcast":
                return rows
            block = ceil_div(math.prod(shape_of(op.result)[:-1]), cols) * width * e
            return 2 * rows if rows >= block else block + 2 * rows  # + blocks of a pass
        if name == "fabric_shift":
            shape, q = shape_of(op.input), region.width
            rows = ceil_div(math.prod(shape[:-1]), q)
            if has(op, "rows_per_pass"):
                rows = min(rows, get_int(op, "rows_per_pass"))
            return 2 * rows * ceil_div(shape[-1], q) * e
        return ceil_div(sum(nbytes(r) for r in op.results), region.num_pes)

    # -- the check ---------------------------------------------------------------------------

    def _check(self, module: ir.Module, ctx: PassContext) -> None:
        target = ctx.target
        used = sram_map(module, target.grid_width_pes, target.grid_height_pes)
        usable = target.usable_sram_bytes_per_pe
        peak = int(used.max())
        if peak <= usable:
            return
        y, x = np.unravel_index(int(used.argmax()), used.shape)
        names, regions = stage_names(module), stage_regions(module)
        where = next(
            (
                n
                for n, r in zip(names, regions, strict=True)
                if r.contains(Rect(int(x), int(y), 1, 1))
            ),
            "?",
        )
        over = int(np.maximum(used - usable, 0).sum())
        available = usable * target.num_pes
        options = (
            "Options: mode='streaming' (weights stay in external memory and stream in one "
            "layer at a time), or a bigger target."
            if ctx.mode == "pipelined"
            else "Options: a shorter sequence or smaller batch, or a bigger target."
        )
        raise PlacementError(
            f"{ctx.mode} placement needs {peak:,} B of SRAM on PE ({x}, {y}) (stage {where}) but "
            f"{target.name} has {usable:,} B usable per PE; {int((used > usable).sum()):,} PEs "
            f"overflow by {format_bytes(over)} in all, using {format_bytes(int(used.sum()))} "
            f"of {format_bytes(available)}. {options}",
            needed_bytes=int(used.sum()) + over,
            available_bytes=available,
        )


def _scratch_bytes(op) -> int:
    """Bytes per PE an op needs only while it runs: a tiled attention's or chunked scan's
    working set."""
    if kind(op) == "attention" and has(op, "kv_block"):
        return attention_working_set(op)
    if kind(op) == "selective_scan" and has(op, "chunk"):
        return scan_working_set(op)
    if kind(op) == "ssd_scan":
        return ssd_working_set_bytes(op)
    return 0


def _in_place_updates(module: ir.Module, state: list, readers: dict, index: dict) -> dict:
    """State updated in place (decode): the i-th state result leaves from the buffer of the
    i-th state argument when both lie on one region, and so does the op computing it when that
    op reads the old state last (a masked write into the KV cache). Op -> the input transfer
    whose buffer it shares."""
    inputs: dict[int, list] = {}
    for op in state:
        source = op.operands[0]
        if get_str(op, "direction") == "in" and isinstance(source, ir.BlockArgument):
            inputs.setdefault(source.arg_number, []).append(op)
    returned = list(func_block(module).operations)[-1].operands
    outs = {op.results[0]: op for op in state if get_str(op, "direction") == "out"}
    results = [outs[v] for v in returned if v in outs]
    aliases: dict = {}
    if len(results) != len(inputs):
        return aliases
    for (_, homes), out in zip(sorted(inputs.items()), results, strict=True):
        home = homes[0]
        if (
            len(homes) > 1
            or region_of(home) != region_of(out)
            or home.result.type != out.result.type
        ):
            continue
        aliases[out] = home
        update = producer(out.operands[0])
        last_read = max(
            (index.get(u, len(index)) for u in readers.get(home.result, ())), default=-1
        )
        if (
            update is not None
            and region_of(update) == region_of(home)
            and update.results[0].type == home.result.type
            and home.result in list(update.operands)
            and last_read == index[update]
        ):
            aliases[update] = home
    return aliases


def _release(free: list[tuple[int, int]], offset: int, size: int) -> list[tuple[int, int]]:
    """`free` with the block [offset, offset + size) returned, neighbours merged."""
    blocks = sorted(free + [(offset, size)])
    merged = [blocks[0]]
    for start, room in blocks[1:]:
        if merged[-1][0] + merged[-1][1] == start:
            merged[-1] = (merged[-1][0], merged[-1][1] + room)
        else:
            merged.append((start, room))
    return merged


def _last_read(op, readers: dict, index: dict, count: int) -> int:
    """The last op reading any of `op`'s results (`count`: the function's return)."""
    return max(
        (index.get(u, count) for r in op.results for u in readers.get(r, ())),
        default=index[op],
    )


def _last_use(op, readers: dict, index: dict, count: int) -> int:
    """The last op reading `op`'s result, directly or through weight views."""
    last = index[op]
    for user in readers.get(op.results[0], ()):
        if user.name == "func.return":
            return count
        last = max(last, index.get(user, count))
        if kind(user) in WEIGHT_VIEWS:
            last = max(last, _last_use(user, readers, index, count))
    return last
