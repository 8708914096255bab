"""Placement: from a tensor-level `wse` module to one placed on a wafer's PE grid.

`place(module, target, mode)` runs the passes (`pipeline.py`, one per file, named like their
flags) and returns a `PlacementPlan`; `place_program(mlir, target)` does it for a lowered
module's text and returns a `Placed`: the placed MLIR text, its `Program` and the report.

Placement takes the module as text on purpose: the text is the boundary between MLIR contexts.
Each placement attempt parses a private copy into a fresh context (passes rewrite it in
place, and `auto` may try pipelined and then streaming on the same input), so the caller's
module is never mutated. The parse is timed as `pass_seconds["parse"]` in the report
(about 0.03 s for gpt2-small).

What a placed module guarantees, for the simulators and runtimes that consume it:
- every op but `wse.param` (a weight's name) has `stage` (i64) and `region` ([x, y, w, h]);
  ops whose result occupies SRAM have `sram` ([offset, bytes_per_pe] on every PE of region),
  and ops with a working set while they run (tiled attention, chunked scan) `scratch`;
- every used weight reaches its readers through `wse.weight_tiles` (tile grid, tile shape,
  PE rectangle and SRAM offset: an exact affine map from tile to PE and bytes);
- matmuls on weights are `wse.tile_matmul` with `wse.fabric_broadcast` + `wse.fabric_reduce`
  (attribute `algorithm`: chain, tree, two_phase) or `wse.fabric_shift` (Cannon); values cross
  stages through `wse.fabric_stream` (with `relays` where its route found no free colour)
  and enter or leave through `wse.host_transfer`; transposes that move elements between PEs
  are `wse.fabric_permute`;
- the module has `wse.placement` ({mode, target, grid, usable_sram_bytes_per_pe}),
  `wse.stages` and `wse.stage_regions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.passes.pipeline import PlacementOptions, PlacementPlan, passes, place
from compiler.placement_report import PlacementReport
from compiler.serialize import to_program
from core.target import Target
from runtime.program import Program

__all__ = [
    "Placed",
    "PlacementOptions",
    "PlacementPlan",
    "PlacementReport",
    "passes",
    "place",
    "place_program",
]


@dataclass(frozen=True)
class Placed:
    """A compiled model placed on its target: module text, runtime program, report."""

    mlir: str
    program: Program
    report: PlacementReport

    @property
    def mode(self) -> str:
        return self.report.mode


def place_program(
    mlir: str, target: Target, *, mode: str = "auto", options: PlacementOptions | None = None
) -> Placed:
    """Place a lowered module's text on `target` in `mode`: its placed text, its runtime
    program and its report."""
    plan = place(mlir, target, mode, options=options or PlacementOptions())
    with plan.context:
        return Placed(plan.text(), to_program(plan.module), plan.report)
