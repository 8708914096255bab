"""The JSON reports of `wafersim`, built from result objects (schema: `simulator/schema.json`).

`kernel_report` is the `kernel` report; `run_report` the `run` report, which extends the prefill
placement report's dict (`compiler.placement_report`, whose `SCHEMA_VERSION` every report
carries); `sweep_report` the `sweep` report. `target_report`, `verify_report` and
`coverage_report` are the `--json` output of `targets`, `verify` and `ops`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from compiler.placement_report import SCHEMA_VERSION
from core.target import Target
from simulator.cost import (
    CALIBRATION_PATH,
    Calibration,
    CostModel,
    achievable_flops_per_cycle_per_pe,
)
from simulator.coverage import OpCoverage
from simulator.kernels import KernelResult
from simulator.phases import WHAT_IF_RESIDENT, ModelSim, Phase, SimOptions
from simulator.sweep_points import SweepPoint


def calibration_constants(calibration: Calibration) -> dict:
    """The calibration's constants, without their sources."""
    return {name: value for name, value in vars(calibration).items() if name != "sources"}


# What a report on a WSE-3 target says is not calibrated there.
UNCALIBRATED_WSE3 = (
    "WSE-3 is not calibrated: the constants are fitted on WSE-2, and WSE-3's SIMD width and "
    "SRAM ports are unpublished (derived) figures"
)


def calibration_summary(calibration: Calibration, target: Target | str | None = None) -> dict:
    """The constants and the last calibration result (`benchmarks/calibration.py` writes it
    into `simulator/calibration.json`): the error on held-out figures (not the fit error), the
    error bar from the held-out residuals, and what is not calibrated on `target`."""
    result = json.loads(CALIBRATION_PATH.read_text()).get("last_result", {})
    wafer = target if isinstance(target, str) or target is None else target.wafer
    return {
        "constants": calibration_constants(calibration),
        "validation_error_pct": result.get("validation_max_abs_error_pct"),
        "error_bar_pct": result.get("error_bar_pct"),
        "validation_points": result.get("validation_points", 0),
        "fit_points": result.get("fit_points", 0),
        "loo_max_abs_error_pct": result.get("loo_max_abs_error_pct"),
        "model_level": result.get("model_level"),
        "uncalibrated": UNCALIBRATED_WSE3 if wafer and wafer.startswith("wse3") else None,
        "source": "docs/calibration.md (benchmarks/calibration.py)",
    }


def kernel_report(result: KernelResult, calibration: Calibration) -> dict:
    """The `--json` object of `wafersim kernel`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": result.kind,
        "algo": result.algo,
        "target": result.target,
        "dtype": result.dtype,
        "m": result.m,
        "k": result.k,
        "n": result.n,
        "grid": list(result.grid),
        "clock_hz": result.clock_hz,
        "cycles": result.cycles,
        "seconds": result.seconds,
        "flops": result.flops,
        "utilization": result.utilization,
        "breakdown": result.breakdown.as_dict(),
        "busiest_links": [dataclasses.asdict(link) for link in result.busiest_links],
        "events": len(result.events),
        "calibration": calibration_constants(calibration),
    }


def phase_report(phase: Phase | None) -> dict | None:
    """The `prefill` / `decode` object of the `run` report."""
    if phase is None:
        return None
    sim = phase.sim
    return {
        "cycles": sim.cycles,
        "seconds": sim.seconds,
        "tokens_per_second": phase.tokens_per_second,
        "tokens": phase.tokens,
        "steps": phase.steps,
        "context_tokens": phase.context_tokens,
        "mode": sim.mode,
        "mode_reason": phase.report.mode_reason,
        "deployment": phase.report.deployment,
        "wafers": sim.target.wafers,
        "wafer_links": dataclasses.asdict(sim.wafer_links),
        "what_if": what_if(phase),
        "fits": phase.report.fits,
        "sram_bytes_per_pe_max": phase.report.sram_bytes_per_pe_max,
        "chunks": sim.chunks,
        "single_pass_cycles": sim.makespan_cycles,
        "slowest_stage_cycles": sim.slowest_stage_cycles,
        "sequences_in_flight": phase.sequences_in_flight,
        "throughput_tokens_per_second": phase.throughput_tokens_per_second,
        "flops": sim.flops,
        "utilization": sim.utilization,
        "bubble_fraction": sim.bubble_fraction,
        "breakdown": sim.breakdown.as_dict(),
        "layers": [dataclasses.asdict(layer) for layer in sim.layers],
        "op_classes": [dataclasses.asdict(o) for o in sim.op_classes],
        "busiest_links": [dataclasses.asdict(link) for link in sim.busiest_links],
        "events": len(sim.events),
        "compile_seconds": phase.compile_seconds,
        "simulate_seconds": phase.simulate_seconds,
        "notes": list(phase.notes),
    }


def what_if(phase: Phase | None) -> str | None:
    """The what-if a phase's figures assume, None when they assume none."""
    return WHAT_IF_RESIDENT if phase is not None and WHAT_IF_RESIDENT in phase.notes else None


def run_report(result: ModelSim, calibration: Calibration) -> dict:
    """The `--json` object of `wafersim run`: the prefill placement report extended with the
    simulation of both phases."""
    report = result.prefill.report.to_dict()
    report.update(
        schema_version=SCHEMA_VERSION,
        model=result.model,
        dtype=result.dtype,
        batch=result.batch,
        seq=result.seq,
        clock_hz=result.target.clock_hz,
        peak_flops=result.prefill.sim.peak_flops,
        achievable_peak_flops=achievable_flops_per_cycle_per_pe(
            CostModel(result.target, calibration, result.dtype)
        )
        * result.target.num_pes
        * result.target.clock_hz,
        utilization=result.prefill.sim.utilization,
        prefill=phase_report(result.prefill),
        decode=phase_report(result.decode),
        what_if=what_if(result.prefill) or what_if(result.decode),
        calibration=calibration_summary(calibration, result.target),
        notes=list(result.notes),
    )
    return report


def brief_report(phase: Phase | None) -> dict | None:
    """A phase in a sweep row: its time, rate, mode and utilisation."""
    if phase is None:
        return None
    return {
        "cycles": phase.cycles,
        "seconds": phase.seconds,
        "tokens_per_second": phase.tokens_per_second,
        "mode": phase.sim.mode,
        "wafers": phase.sim.target.wafers,
        "utilization": phase.sim.utilization,
    }


def sweep_row(point: SweepPoint) -> dict:
    return {
        "model": point.model,
        "family": point.family,
        "seq": point.seq,
        "notes": list(point.notes),
        "prefill": brief_report(point.prefill),
        "decode": brief_report(point.decode),
        "state_bytes": point.state_bytes,
        "wafer_sram_bytes": point.wafer_sram_bytes,
        "state_outgrows_wafer": point.state_outgrows_wafer,
        "fits": point.fits,
        "wafers_used": point.wafers,
    }


def sweep_report(points: Sequence[SweepPoint], options: SimOptions) -> dict:
    """The `--json` object of `wafersim sweep`: one row per (model, context length)."""
    target = options.target
    return {
        "schema_version": SCHEMA_VERSION,
        "target": target if isinstance(target, str) else target.name,
        "dtype": options.dtype,
        "rows": [sweep_row(point) for point in points],
        "calibration": calibration_summary(options.calibration, options.target),
    }


def target_report(target: Target) -> dict:
    """One preset of `wafersim targets`."""
    return {
        "name": target.name,
        "grid": [target.grid_width_pes, target.wafer_height_pes],
        "wafers": target.wafers,
        "wafer_link_bytes_per_second": target.wafer_link_bytes_per_second,
        "pes": target.num_pes,
        "sram_bytes_per_pe": target.sram_bytes_per_pe,
        "clock_hz": target.clock_hz,
        "peak_fp16_pflops": target.peak_flops(16) / 1e15,
        "description": target.description,
        "grid_source": target.source("grid_width_pes"),
    }


def verify_report(model: str, verification) -> dict:
    """`wafersim verify --json`: a `CompiledModule.verify` report of `model`."""
    divergence = verification.first_divergence
    return {
        "model": model,
        "reference": verification.reference,
        "passed": verification.passed,
        "first_divergence": None if divergence is None else vars(divergence),
        "isolated": [vars(r) for r in verification.isolated],
        "accumulated": [vars(r) for r in verification.accumulated],
    }


def coverage_report(rows: Sequence[OpCoverage]) -> list[dict]:
    """`wafersim ops --json`: one object per supported ATen op."""
    return [dataclasses.asdict(row) for row in rows]
