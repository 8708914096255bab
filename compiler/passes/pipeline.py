"""The placement pipeline: every pass in order, in one function.

`place(module, target, mode)` copies the module, runs

    partition-stages -> layout-regions -> tile-weights -> tile-attention -> chunk-scan
    -> split-matmuls -> insert-streams -> fabric-permutes -> route-colors -> plan-sram

and returns a `PlacementPlan` with the placed module and its report. Pipelined placement uses
the fewest wafers of the target (a cluster: up to its `wafers`) that hold every weight, layers
split across them in contiguous ranges; streaming uses one wafer. `mode="auto"` falls back to
streaming when no allowed cluster holds the model; `report.deployment` says how and why.
`print_after=("tile-weights",)` (or `"all"`) prints the IR after those passes.
`run_passes` runs any list of passes on a parsed module (`python -m compiler.opt` uses it).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from compiler.mlir import ir, new_context, parse_module, print_module, read_location, shape_of
from compiler.passes.chunk_scan import ChunkScan, ChunkScanOptions
from compiler.passes.common import (
    MODES,
    PassContext,
    ceil_div,
    func_block,
    placement_attr,
    set_module_attr,
)
from compiler.passes.fabric_permutes import FabricPermutes, FabricPermutesOptions
from compiler.passes.insert_streams import InsertStreams, InsertStreamsOptions
from compiler.passes.layout_regions import LayoutRegions, LayoutRegionsOptions
from compiler.passes.partition_stages import PartitionStages, PartitionStagesOptions
from compiler.passes.plan_sram import PlanSram, PlanSramOptions
from compiler.passes.route_colors import RouteColors, RouteColorsOptions
from compiler.passes.split_matmuls import SplitMatmuls, SplitMatmulsOptions
from compiler.passes.tile_attention import TileAttention, TileAttentionOptions
from compiler.passes.tile_weights import TileWeights, TileWeightsOptions
from core.errors import EmptyTensorError, PlacementError
from core.target import Target, cluster, load_target

if TYPE_CHECKING:
    from compiler.placement_report import PlacementReport


@dataclass(frozen=True)
class PlacementOptions:
    """Options of every pass, by pass."""

    partition: PartitionStagesOptions = field(default_factory=PartitionStagesOptions)
    layout: LayoutRegionsOptions = field(default_factory=LayoutRegionsOptions)
    tiles: TileWeightsOptions = field(default_factory=TileWeightsOptions)
    attention: TileAttentionOptions = field(default_factory=TileAttentionOptions)
    scan: ChunkScanOptions = field(default_factory=ChunkScanOptions)
    matmuls: SplitMatmulsOptions = field(default_factory=SplitMatmulsOptions)
    streams: InsertStreamsOptions = field(default_factory=InsertStreamsOptions)
    permutes: FabricPermutesOptions = field(default_factory=FabricPermutesOptions)
    routes: RouteColorsOptions = field(default_factory=RouteColorsOptions)
    sram: PlanSramOptions = field(default_factory=PlanSramOptions)


def passes(options: PlacementOptions) -> list:
    """The placement passes, in the order they run."""
    return [
        PartitionStages(options.partition),
        LayoutRegions(options.layout),
        TileWeights(options.tiles),
        TileAttention(options.attention),
        ChunkScan(options.scan),
        SplitMatmuls(options.matmuls),
        InsertStreams(options.streams),
        FabricPermutes(options.permutes),
        RouteColors(options.routes),
        PlanSram(options.sram),
    ]


@dataclass
class PlacementPlan:
    """A placed module (in its own context) with its mode, why, its report and pass times."""

    module: ir.Module
    context: ir.Context
    target: Target
    mode: str
    mode_reason: str
    report: PlacementReport
    pass_seconds: dict[str, float]

    def text(self) -> str:
        """The placed module, printed with locations (parses back)."""
        return print_module(self.module)


def place(
    module: ir.Module | str,
    target: str | Target,
    mode: str = "auto",
    *,
    options: PlacementOptions = PlacementOptions(),
    print_after: Collection[str] | str = (),
    file: TextIO | None = None,
) -> PlacementPlan:
    """Place a copy of `module` (a lowered `wse` module or its text) on `target`."""
    if mode not in ("auto",) + MODES:
        raise ValueError(f"mode must be 'auto', 'pipelined' or 'streaming', not {mode!r}")
    target = load_target(target)
    text = module if isinstance(module, str) else print_module(module)
    run = functools.partial(_run, text, options=options, print_after=print_after, file=file)
    if mode == "streaming":
        return _streamed(run, target, "requested", "streaming: requested")
    try:
        return _pipelined(run, target, explicit=mode == "pipelined")
    except PlacementError as exc:
        if mode == "pipelined":
            raise
        short = exc
    unit = cluster(target, 1)
    share = short.needed_bytes / (unit.usable_sram_bytes_per_pe * unit.num_pes)
    allowed = f"{target.wafers} wafer{'s' if target.wafers > 1 else ''}"
    why = (
        f"needs {share:.1f} x {unit.name} of SRAM, more than the {allowed} allowed"
        if share > target.wafers
        else f"needs {share:.2f} x {unit.name} of SRAM; pipelined, a PE overflows on the "
        f"{allowed} allowed"
    )
    try:
        return _streamed(run, target, why, f"streaming: {short}")
    except PlacementError as exc:
        raise PlacementError(
            f"{short} Weight streaming does not fit either: {exc}",
            needed_bytes=short.needed_bytes,
            available_bytes=short.available_bytes,
        ) from exc


def _streamed(run, target: Target, why: str, reason: str) -> PlacementPlan:
    """Streaming on one wafer of `target`, weights from external memory; `why` says why in
    short, `reason` in full."""
    unit = cluster(target, 1)
    rate = f"{unit.external_memory_bytes_per_second / 1e9:g} GB/s"
    plan = run(unit, "streaming", reason)
    plan.report.deployment = f"weights streamed from external memory at {rate} ({why})"
    return plan


def _pipelined(run, target: Target, *, explicit: bool) -> PlacementPlan:
    """Pipelined, weights resident, on the fewest wafers of `target` (up to its `wafers`)
    that hold them: contiguous layers per wafer, balanced by bytes."""
    unit, wafers = cluster(target, 1), 1
    per_wafer = unit.usable_sram_bytes_per_pe * unit.num_pes
    failed: list[int] = []
    first_need = 0
    while True:
        try:
            plan = run(cluster(target, wafers), "pipelined", "")
            break
        except PlacementError as exc:
            needed = exc.needed_bytes
            first_need = first_need or needed
            if wafers >= target.wafers:
                raise _no_cluster(exc, target, needed, per_wafer) from exc
            failed.append(wafers)
            wafers = min(target.wafers, max(wafers + 1, ceil_div(needed, per_wafer)))
    low = failed[-1] + 1 if failed else wafers
    while low < wafers:  # the jump skipped counts (an estimate): bisect down to the fewest
        middle = (low + wafers) // 2
        try:
            plan, wafers = run(cluster(target, middle), "pipelined", ""), middle
        except PlacementError:
            failed.append(middle)
            low = middle + 1
    failed.sort()
    report = plan.report
    plan.mode_reason = report.mode_reason = (
        f"pipelined: all weights, state and activations fit in SRAM "
        f"(fullest PE {report.sram_bytes_per_pe_max:,} of "
        f"{target.usable_sram_bytes_per_pe:,} usable bytes)"
    )
    share = (first_need or int(report.usage.sum())) / per_wafer
    if wafers == 1:
        report.deployment = (
            f"fits one {unit.name} ({share:.2f} of its SRAM): pipelined, weights resident"
        )
        return plan
    why = (
        f"needs {share:.2f} x {unit.name} of SRAM"
        if share >= 1
        else f"does not fit one {unit.name} (a PE overflows at {share:.2f} x its SRAM)"
    )
    notes = [f"{_counts(failed)} do not hold it"] if failed[1:] else []
    notes += ["pipelined requested"] if explicit else []
    notes.append(f"up to {target.wafers} allowed")
    report.deployment = (
        f"{why}: pipelined on {wafers} wafers, weights resident ({'; '.join(notes)})"
    )
    return plan


def _counts(counts: list[int]) -> str:
    """Sorted wafer counts as runs: `[1, 4, 5, 6]` -> "1, 4-6 wafers"."""
    runs: list[list[int]] = []
    for n in counts:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"{text} wafers"


def _no_cluster(exc: PlacementError, target: Target, needed: int, per_wafer: int):
    """The error for a model that no allowed cluster of `target`'s wafers holds."""
    take = ceil_div(needed, per_wafer)
    return PlacementError(
        f"{exc} It needs {needed:,} B of SRAM; {target.wafers} x {target.unit_name} hold "
        f"{per_wafer * target.wafers:,} B: it would take about {take} wafers of "
        f"{per_wafer:,} B (allow more with --wafers, or mode='streaming').",
        needed_bytes=needed,
        available_bytes=per_wafer * target.wafers,
    )


def run_passes(
    module: ir.Module,
    steps: list,
    ctx: PassContext,
    print_after: Collection[str] = (),
    file: TextIO | None = None,
) -> dict[str, float]:
    """Run `steps` in order on `module` (inside its context), print the IR after those named in
    `print_after`, then verify it. Returns the seconds each pass and the verifier took."""
    seconds = {}
    for step in steps:
        clock = time.perf_counter()
        step.run(module, ctx)
        seconds[step.name] = time.perf_counter() - clock
        if step.name in print_after:
            print(f"// -----// IR Dump After {step.name} //----- //", file=file or sys.stdout)
            print(print_module(module), file=file or sys.stdout)
    clock = time.perf_counter()
    module.operation.verify()
    seconds["verify"] = time.perf_counter() - clock
    return seconds


def _run(text, target, mode, reason, *, options, print_after, file) -> PlacementPlan:
    from compiler.placement_report import PlacementReport  # it reads modules with the pass helpers

    if isinstance(print_after, str):
        print_after = [p.name for p in passes(options)] if print_after == "all" else [print_after]
    clock = time.perf_counter()
    context = new_context()
    module = parse_module(text, context)
    seconds = {"parse": time.perf_counter() - clock}
    _check_not_empty(module)
    with context, ir.Location.unknown():
        set_module_attr(module, "wse.placement", placement_attr(target, mode))
        seconds |= run_passes(module, passes(options), PassContext(target, mode), print_after, file)
        clock = time.perf_counter()
        report = PlacementReport.from_module(module, target, reason, seconds)
        seconds["report"] = time.perf_counter() - clock
    return PlacementPlan(module, context, target, mode, reason, report, seconds)


def _check_not_empty(module: ir.Module) -> None:
    """Refuse a matmul on a tensor of no elements: `split-matmuls` spreads its rows and columns
    over PEs, at least one each (elementwise ops and reductions of zero-size tensors place)."""
    for op in func_block(module).operations:
        if op.name != "wse.matmul":
            continue
        for value in [*op.operands, *op.results]:
            if 0 in shape_of(value):
                src = read_location(op.location)
                raise EmptyTensorError(
                    f"{src.op or op.name} (node {src.node}, {src}) multiplies a tensor of shape "
                    f"{list(shape_of(value))}, with no elements (a zero-size batch or sequence): "
                    "placement spreads a matmul over at least one PE row and column. Compile "
                    "with at least one row, or with target=None to run it on the reference runtime."
                )
