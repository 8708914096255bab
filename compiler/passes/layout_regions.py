"""`layout-regions`: give every stage a rectangle of PEs and every op a region inside it.

Pipelined: stages get disjoint rectangles, sized to balance their time (each stage costs
`max(FLOPs / FLOP per cycle, weight bytes / SRAM read bytes per cycle)`; PEs go to the costliest
stages) while every stage keeps the PEs its weights, state and activations need. The rectangles
follow a snake: horizontal bands from the top, left to right, then right to left, so consecutive
layers are neighbours. Inside a stage, each matrix weight gets its own sub-rectangle (guillotine
cuts along the longer side, area proportional to bytes) and its main consumer runs there; other
ops run on the whole stage. Where a consumer's results would crowd a rectangle sized so (a long
prompt), areas follow weight plus result bytes, and a non-matmul consumer making more elements
than its weight (a depthwise convolution over the prompt) runs on the whole stage. A GEMM (more
than one row) whose rectangle is nearly square gets a square one and the Cannon dataflow when
its blocks fit in a PE (`cannon_share`); other matmuls use broadcast-and-reduce.
On a cluster (several wafers stacked on the grid's rows) the stages are cut into contiguous
ranges, one per wafer, balanced by bytes (`wafer_groups`), and each wafer is laid out alone.
Streaming: every stage and every op gets the whole grid, the wafer running one layer at a
time; matrix weights read by a matmul get their sub-rectangles as above, the others run on
the whole grid.

Before:
    %t = "wse.transpose"(%w) {permutation = [1, 0], stage = 1 : i64} ...
    %y = "wse.matmul"(%x, %t) {stage = 1 : i64} : (tensor<8x64xf32>, tensor<64x256xf32>) -> ...
    %z = "wse.gelu"(%y) {approximate = "tanh", stage = 1 : i64} ...
After:
    module attributes {wse.stage_regions = [[0, 0, 3, 4], [3, 0, 5, 4], ...], ...}
    %t = "wse.transpose"(%w) {permutation = [1, 0], region = [3, 0, 2, 2], stage = 1 : i64} ...
    %y = "wse.matmul"(%x, %t) {dataflow = "cannon", region = [3, 0, 2, 2], stage = 1 : i64} ...
    %z = "wse.gelu"(%y) {approximate = "tanh", region = [3, 0, 5, 4], stage = 1 : i64} ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

from compiler.mlir import int_list_attr, ir, shape_of, str_attr
from compiler.passes.common import (
    STREAM_SHARE,
    PassContext,
    body_ops,
    ceil_div,
    element_bytes,
    flops,
    format_bytes,
    func_block,
    get_int,
    is_float,
    kind,
    matmul_rows,
    matmul_weight,
    nbytes,
    pipelined_overflow,
    primary_consumer,
    producer,
    set_ints,
    set_module_attr,
    stage_names,
    state_inputs,
    users,
    weight_param,
)
from core.errors import PlacementError
from core.geometry import Rect


@dataclass(frozen=True)
class LayoutRegionsOptions:
    """`bands`: rows of stages in the snake (0: chosen so stages are near-square).
    `sram_headroom`: the fraction of a stage's usable SRAM its estimate may fill (the rest
    absorbs tile padding and buffers). `gemm_dataflow`: "auto", "broadcast" or "cannon".
    `cannon_min_aspect`: in "auto", the short/long side ratio a GEMM rectangle needs to be
    squared for Cannon. `result_share`: the largest share of a PE's usable SRAM a weight's
    consumer's results may take on a rectangle sized by weight bytes (beyond it, as with a
    long prompt, the stage's rectangles are sized by weight plus result bytes).
    `cannon_share`: in "auto", the largest share Cannon's blocks may take (its output block,
    two passes of it, two input blocks; beyond it the GEMM broadcasts)."""

    bands: int = 0
    sram_headroom: float = 0.85
    gemm_dataflow: str = "auto"
    cannon_min_aspect: float = 0.75
    result_share: float = 0.25
    cannon_share: float = 0.5


@dataclass
class _Stage:
    weights: list  # the used params of this stage
    weight_bytes: int = 0
    state_bytes: int = 0
    activation_bytes: int = 0
    flops: int = 0
    element_bytes: int = 4


class LayoutRegions:
    name = "layout-regions"

    def __init__(self, options: LayoutRegionsOptions = LayoutRegionsOptions()):
        if options.gemm_dataflow not in ("auto", "broadcast", "cannon"):
            raise ValueError(
                f"gemm_dataflow must be auto, broadcast or cannon, not {options.gemm_dataflow!r}"
            )
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        readers = users(module)
        stages = self._stages(module, readers)
        if ctx.mode == "pipelined":
            rects = self._pipelined_rects(stages, ctx)
        else:
            rects = [ctx.grid] * len(stages)
        set_module_attr(
            module, "wse.stage_regions", ir.ArrayAttr.get([int_list_attr(r) for r in rects])
        )
        for op in body_ops(module):
            if kind(op) != "param":
                set_ints(op, "region", rects[get_int(op, "stage")])
        usable = ctx.target.usable_sram_bytes_per_pe
        streaming = ctx.mode == "streaming"
        for s, stage in enumerate(stages):
            matrices = [
                w
                for w in stage.weights
                if len(shape_of(w.result)) >= 2 and not _on_whole_stage(w, readers, streaming)
            ]
            leaves = self._leaves(rects[s], matrices, readers, usable, streaming)
            for weight in matrices:
                consumer, path = primary_consumer(weight, readers)
                cap = usable * (STREAM_SHARE if streaming else self.options.sram_headroom)
                region, dataflow = self._gemm_region(consumer, leaves[weight], usable, cap)
                for op in path + [consumer]:
                    set_ints(op, "region", region)
                if kind(consumer) == "grouped_matmul":
                    _place_experts(consumer, region, readers)
                if dataflow:
                    consumer.attributes["dataflow"] = str_attr(dataflow)

    # -- statistics --------------------------------------------------------------------------

    def _stages(self, module: ir.Module, readers: dict) -> list[_Stage]:
        stages = [_Stage([]) for _ in stage_names(module)]
        ops = body_ops(module)
        for op in ops:
            if "stage" not in op.attributes:
                continue
            stage = stages[get_int(op, "stage")]
            if kind(op) == "param":
                stage.weights.append(op)
                stage.weight_bytes += nbytes(op.result)
            else:
                stage.flops += flops(op)
        for s in stages:
            s.element_bytes = min(
                (element_bytes(w.result) for w in s.weights if len(shape_of(w.result)) >= 2),
                default=4,
            )
        block = func_block(module)
        for arg in state_inputs(module):
            consumers = [u for u in readers.get(arg, ()) if "stage" in u.attributes]
            if consumers:
                stages[min(get_int(u, "stage") for u in consumers)].state_bytes += nbytes(arg)
        results = list(block.operations)[-1].operands
        for value in list(results)[1:]:
            op = producer(value)
            if op is not None and is_float(value):
                stages[get_int(op, "stage")].state_bytes += nbytes(value)
        self._activation_peaks(ops, stages, readers)
        return stages

    @staticmethod
    def _activation_peaks(ops: list, stages: list[_Stage], readers: dict) -> None:
        """Peak bytes of live results per stage, walking the program in order."""
        index = {op: i for i, op in enumerate(ops)}
        frees: dict[int, list] = {}
        live = [0] * len(stages)
        for i, op in enumerate(ops):
            if kind(op) != "param" and not weight_param(op.results[0]):
                s = get_int(op, "stage")
                size = sum(nbytes(r) for r in op.results)
                live[s] += size
                stages[s].activation_bytes = max(stages[s].activation_bytes, live[s])
                last = max(
                    (index.get(u, len(ops)) for r in op.results for u in readers.get(r, ())),
                    default=i,
                )
                frees.setdefault(last, []).append((s, size))
            for stage, freed in frees.pop(i, ()):
                live[stage] -= freed

    # -- pipelined sizing and the snake ------------------------------------------------------

    def _pipelined_rects(self, stages: list[_Stage], ctx: PassContext) -> list[Rect]:
        """Rectangles per stage; on a cluster, contiguous stages per wafer (balanced by bytes),
        each wafer laid out on its own rows of the stacked grid."""
        target = ctx.target
        usable = target.usable_sram_bytes_per_pe
        need = [s.weight_bytes + s.state_bytes + s.activation_bytes for s in stages]
        if len(stages) > target.num_pes:
            raise PlacementError(
                f"pipelined placement needs a rectangle of PEs per layer: {len(stages)} layers "
                f"but {target.name} has {target.num_pes} PEs. Options: mode='streaming', or a "
                "bigger target.",
                needed_bytes=sum(need),
                available_bytes=usable * target.num_pes,
            )
        if sum(need) > usable * target.num_pes:
            weights = sum(s.weight_bytes for s in stages)
            state = sum(s.state_bytes for s in stages)
            raise pipelined_overflow(
                target,
                sum(need),
                f"weights {format_bytes(weights)}, state {format_bytes(state)}, activations "
                f"{format_bytes(sum(need) - weights - state)}, {len(stages)} stages",
            )
        rects: list[Rect] = []
        for wafer, group in enumerate(wafer_groups(need, target.wafers)):
            held = sum(need[i] for i in group)
            if held > usable * target.wafer_pes or len(group) > target.wafer_pes:
                raise PlacementError(
                    f"pipelined placement on {target.name}: wafer {wafer} holds stages "
                    f"{group[0]}-{group[-1]} ({format_bytes(held)}), more than one "
                    f"wafer's {format_bytes(usable * target.wafer_pes)}: the layers do not "
                    "split evenly enough over this many wafers. Options: more wafers, or "
                    "mode='streaming'.",
                    needed_bytes=sum(need),
                    available_bytes=usable * target.num_pes,
                )
            y0 = wafer * target.wafer_height_pes
            for r in self._wafer_rects([stages[i] for i in group], [need[i] for i in group], ctx):
                rects.append(Rect(r.x, r.y + y0, r.width, r.height))
        return rects

    def _wafer_rects(self, stages: list[_Stage], need: list[int], ctx: PassContext) -> list[Rect]:
        """One wafer's stages: PEs for their bytes, the rest balancing their time; a snake."""
        target = ctx.target
        usable, pes_total = target.usable_sram_bytes_per_pe, target.wafer_pes
        headroom = self.options.sram_headroom
        pes = [max(1, ceil_div(n, int(usable * headroom))) for n in need]
        if sum(pes) > pes_total:
            pes = [max(1, ceil_div(n, usable)) for n in need]
        cost = [
            max(
                s.flops
                / (
                    target.fp16_flops_per_cycle_per_pe
                    if s.element_bytes <= 2
                    else target.fp32_flops_per_cycle_per_pe
                ),
                s.weight_bytes / target.sram_read_bytes_per_cycle,
            )
            for s in stages
        ]
        areas = _water_fill(pes, cost, pes_total)
        return _snake(areas, target.grid_width_pes, target.wafer_height_pes, self.options.bands)

    def _leaves(
        self, rect: Rect, matrices: list, readers: dict, usable: int, streaming: bool
    ) -> dict:
        """Each matrix's rectangle inside stage rectangle `rect`: areas by weight bytes, or by
        weight plus result bytes where a consumer's results would crowd its rectangle.
        Streaming, beside experts weights (streamed in passes) the layer's other weights are
        sized up by one common factor so that, where the stage has room, each could be held
        at `STREAM_SHARE` of a PE; among themselves they still split by bytes."""
        consumers = {w: primary_consumer(w, readers)[0] for w in matrices}
        made = {w: sum(nbytes(r) for r in consumers[w].results) for w in matrices}
        size = {w: nbytes(w.result) for w in matrices}
        if streaming:
            total, cap = sum(size.values()), usable * STREAM_SHARE
            for w in matrices:
                if kind(consumers[w]) != "grouped_matmul":
                    size[w] = max(size[w], math.ceil(size[w] / cap * total / rect.num_pes))
        leaves = _guillotine(rect, [(w, size[w]) for w in matrices])
        limit = usable * self.options.result_share
        if all(made[w] <= limit * leaves[w].num_pes for w in matrices):
            return leaves
        return _guillotine(rect, [(w, size[w] + made[w]) for w in matrices])

    # -- GEMM dataflow -----------------------------------------------------------------------

    def _gemm_region(self, consumer, leaf: Rect, usable: int, cap: float) -> tuple[Rect, str]:
        """`leaf`, broadcast, or its q x q square for Cannon: where the blocks fit and the
        weight's tile on the square stays within `cap` bytes per PE."""
        found = matmul_weight(consumer)
        if found is None:
            return leaf, ""
        param, transposed = found
        n, k = shape_of(param.result) if transposed else reversed(shape_of(param.result))
        q = min(leaf.width, leaf.height, k, n)
        square = min(leaf.width, leaf.height) / max(leaf.width, leaf.height)
        rows = matmul_rows(consumer.operands[0])
        # Per PE, at most: its output block and two passes' worth of it (double-buffered), and
        # two blocks of the shifted input.
        side = ceil_div(rows, max(q, 1)) * element_bytes(consumer.result)
        blocks = side * (3 * ceil_div(n, max(q, 1)) + 2 * ceil_div(k, max(q, 1)))
        fits = (
            square >= self.options.cannon_min_aspect
            and blocks <= usable * self.options.cannon_share
            and nbytes(param.result) <= cap * q * q
        )
        cannon = (
            self.options.gemm_dataflow != "broadcast"
            and rows > 1
            and q >= 2
            and (self.options.gemm_dataflow == "cannon" or fits)
        )
        if cannon:
            return Rect(leaf.x, leaf.y, q, q), "cannon"
        return leaf, "broadcast"


def _on_whole_stage(weight, readers: dict, streaming: bool) -> bool:
    """Whether `weight`'s main consumer runs on the whole stage rather than on a rectangle of
    the weight's size: it is no matmul and its results have more elements than the weight (a
    depthwise convolution over the prompt), so they would crowd a rectangle sized for it; a
    view on the way that repeats the weight counts as made (Inkling-2-Loop's learned queries,
    expanded over the prompt's tokens for a batched matmul: 3.5 MB on the 20 PEs of the
    weight's rectangle). Streaming, any consumer but a matmul with the weight as its
    right-hand side runs there (a weight streamed in for other work has no reason to crowd the
    few PEs its share of the layer's bytes would give it: Inkling-2's convolution taps in
    decode, widened to fp32, took 16 kB on one PE). A `wse.grouped_matmul`'s experts weight
    always has its rectangle; its bias runs there too."""
    consumer, path = primary_consumer(weight, readers)
    if kind(consumer) == "grouped_matmul":  # its rhs has the rectangle; its bias follows it
        return producer(consumer.operands[1]) != weight
    if matmul_weight(consumer) is not None:
        return False
    made = max(sum(math.prod(shape_of(r)) for r in op.results) for op in [*path, consumer])
    return streaming or made > math.prod(shape_of(weight.result))


def expert_rects(region: Rect, experts: int) -> list[Rect]:
    """`region` cut into one rectangle per expert (equal areas); with fewer PEs than experts,
    expert i gets PE i mod the region's PEs."""
    if region.num_pes < experts:
        pes = [i % region.num_pes for i in range(experts)]
        return [Rect(region.x + p % region.width, region.y + p // region.width, 1, 1) for p in pes]
    parts = _guillotine(region, [(i, 1) for i in range(experts)])
    return [parts[i] for i in range(experts)]


def _place_experts(matmul, region: Rect, readers: dict) -> None:
    """Each expert of a `wse.grouped_matmul` on its own part of `region` (`expert_regions`,
    E x [x, y, w, h]), also set on the `wse.moe_dispatch` feeding it and the `wse.moe_combine`
    reading it: the ends of its all-to-all traffic."""
    rects = expert_rects(region, shape_of(matmul.result)[0])
    attr = int_list_attr([v for r in rects for v in r])
    matmul.attributes["expert_regions"] = attr
    source = producer(matmul.operands[0])
    linked = [source] if source is not None and kind(source) == "moe_dispatch" else []
    linked += [u for u in readers.get(matmul.result, ()) if kind(u) == "moe_combine"]
    for op in linked:
        op.attributes["expert_regions"] = attr


def wafer_groups(sizes: list[int], wafers: int) -> list[list[int]]:
    """`sizes` (stages in order) cut into at most `wafers` contiguous non-empty groups with the
    largest group sum as small as possible (exact, by dynamic programming; ties: cuts late)."""
    count = min(wafers, len(sizes))
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    # best[k][i]: the smallest largest sum cutting the first i sizes into k groups; cut[k][i].
    best = [[0.0] + [math.inf] * len(sizes)]
    cut = [[0] * (len(sizes) + 1)]
    for k in range(1, count + 1):
        row, cuts = [math.inf] * (len(sizes) + 1), [0] * (len(sizes) + 1)
        for i in range(k, len(sizes) + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value <= row[i]:
                    row[i], cuts[i] = value, j
        best.append(row)
        cut.append(cuts)
    bounds, i = [len(sizes)], len(sizes)
    for k in range(count, 0, -1):
        i = cut[k][i]
        bounds.append(i)
    bounds.reverse()
    return [list(range(lo, hi)) for lo, hi in pairwise(bounds)]


def _water_fill(minimum: list[int], cost: list[float], total: int) -> list[float]:
    """PEs per stage: at least `minimum`, the rest making `cost / PEs` as even as possible."""
    if sum(minimum) >= total or not any(cost):
        return [float(m) for m in minimum]
    lo, hi = 0.0, 1.0
    while sum(max(m, hi * c) for m, c in zip(minimum, cost, strict=True)) < total:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(max(m, mid * c) for m, c in zip(minimum, cost, strict=True)) < total:
            lo = mid
        else:
            hi = mid
    return [max(m, lo * c) for m, c in zip(minimum, cost, strict=True)]


def apportion(total: int, weights: list[float]) -> list[int]:
    """Integers >= 1 that sum to `total`, proportional to `weights` (largest remainder)."""
    spare = total - len(weights)
    scale = spare / (sum(weights) or 1)
    raw = [w * scale for w in weights]
    out = [1 + int(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: int(raw[i]) - raw[i])
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def _snake(areas: list[float], width: int, height: int, bands: int) -> list[Rect]:
    """Disjoint rectangles with about `areas` PEs each, in bands traversed as a snake."""
    count = len(areas)
    bands = bands or round(math.sqrt(count * height / width))
    bands = min(max(bands, ceil_div(count, width), 1), count, height)
    cum = [0.0]
    for a in areas:
        cum.append(cum[-1] + a)
    bounds = [0]
    for b in range(1, bands):
        goal = cum[-1] * b / bands
        choices = range(bounds[-1] + 1, count - (bands - b) + 1)
        bounds.append(min(choices, key=lambda i: abs(cum[i] - goal)))
    bounds.append(count)
    if any(hi - lo > width for lo, hi in pairwise(bounds)):
        bounds = [round(b * count / bands) for b in range(bands + 1)]
    groups = [list(range(lo, hi)) for lo, hi in pairwise(bounds)]
    heights = apportion(height, [sum(areas[i] for i in g) for g in groups])
    rects: list[Rect] = [Rect(0, 0, 0, 0)] * count
    y = 0
    for b, (group, h) in enumerate(zip(groups, heights, strict=True)):
        widths = apportion(width, [areas[i] for i in group])
        x = 0 if b % 2 == 0 else width
        for i, w in zip(group, widths, strict=True):
            if b % 2:
                x -= w
            rects[i] = Rect(x, y, w, h)
            if b % 2 == 0:
                x += w
        y += h
    return rects


def _guillotine(rect: Rect, items: list[tuple]) -> dict:
    """Split `rect` among `items` ((key, size) in order) by cuts along the longer side, areas
    proportional to size; items share the rectangle only when it has a single PE."""
    if not items:
        return {}
    if len(items) == 1 or rect.num_pes == 1:
        return {key: rect for key, _ in items}
    total = sum(size for _, size in items) or 1
    prefix, best, split = 0, None, 1
    for i, (_, size) in enumerate(items[:-1], start=1):
        prefix += size
        if best is None or abs(prefix - total / 2) < best:
            best, split, head = abs(prefix - total / 2), i, prefix
    long = rect.width if rect.width >= rect.height else rect.height
    cut = min(max(round(long * head / total), 1), long - 1)
    if rect.width >= rect.height:
        first, second = (
            Rect(rect.x, rect.y, cut, rect.height),
            Rect(rect.x + cut, rect.y, rect.width - cut, rect.height),
        )
    else:
        first, second = (
            Rect(rect.x, rect.y, rect.width, cut),
            Rect(rect.x, rect.y + cut, rect.width, rect.height - cut),
        )
    return {**_guillotine(first, items[:split]), **_guillotine(second, items[split:])}
