"""The placement pipeline: every pass in order, in one function.

`place(module, target, mode)` copies the module, runs

    partition-stages -> layout-regions -> tile-weights -> split-matmuls -> insert-streams
    -> plan-sram

and returns a `PlacementPlan` with the placed module and its report. `mode="auto"` tries
pipelined and falls back to streaming when the model does not fit, saying why.
`print_after=("tile-weights",)` (or `"all"`) prints the IR after those passes.
`run_passes` runs any list of passes on a parsed module (`python -m compiler.opt` uses it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from compiler.mlir import ir, new_context, parse_module, print_module, read_location, shape_of
from compiler.passes.common import (
    MODES,
    PassContext,
    func_block,
    placement_attr,
    set_module_attr,
)
from compiler.passes.insert_streams import InsertStreams, InsertStreamsOptions
from compiler.passes.layout_regions import LayoutRegions, LayoutRegionsOptions
from compiler.passes.partition_stages import PartitionStages, PartitionStagesOptions
from compiler.passes.plan_sram import PlanSram, PlanSramOptions
from compiler.passes.split_matmuls import SplitMatmuls, SplitMatmulsOptions
from compiler.passes.tile_weights import TileWeights, TileWeightsOptions
from core.errors import EmptyTensorError, PlacementError
from core.target import Target, load_target

if TYPE_CHECKING:
    from compiler.placement_report import PlacementReport


@dataclass(frozen=True)
class PlacementOptions:
    """Options of every pass, by pass."""

    partition: PartitionStagesOptions = field(default_factory=PartitionStagesOptions)
    layout: LayoutRegionsOptions = field(default_factory=LayoutRegionsOptions)
    tiles: TileWeightsOptions = field(default_factory=TileWeightsOptions)
    matmuls: SplitMatmulsOptions = field(default_factory=SplitMatmulsOptions)
    streams: InsertStreamsOptions = field(default_factory=InsertStreamsOptions)
    sram: PlanSramOptions = field(default_factory=PlanSramOptions)


def passes(options: PlacementOptions) -> list:
    """The placement passes, in the order they run."""
    return [
        PartitionStages(options.partition),
        LayoutRegions(options.layout),
        TileWeights(options.tiles),
        SplitMatmuls(options.matmuls),
        InsertStreams(options.streams),
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
    if mode != "auto":
        return _run(text, target, mode, f"{mode}: requested", options, print_after, file)
    try:
        plan = _run(text, target, "pipelined", "", options, print_after, file)
    except PlacementError as exc:
        return _run(text, target, "streaming", f"streaming: {exc}", options, print_after, file)
    report = plan.report
    plan.mode_reason = report.mode_reason = (
        f"pipelined: all weights, state and activations fit in SRAM "
        f"(fullest PE {report.sram_bytes_per_pe_max:,} of "
        f"{target.usable_sram_bytes_per_pe:,} usable bytes)"
    )
    return plan


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


def _run(text, target, mode, reason, options, print_after, file) -> PlacementPlan:
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
