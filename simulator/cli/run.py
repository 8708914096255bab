"""`wafersim run`: a model compiled, placed and simulated, prefill and decode.

Prints rich tables (summary, per-layer time, per-op-class time, pipeline, busiest links, SRAM)
or, with `--json`, the `run` report (`simulator/schema.json`, `$defs/run`). Every figure is a
model estimate: the output says so, with the calibration error of `benchmarks/calibration.py`
beside it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import models
from core.arguments import non_negative, positive
from core.errors import ModelSimError
from core.outputs import output_dir, output_file
from models import hf_files
from simulator.cli.common import (
    Command,
    estimate_line,
    model_arguments,
    parse_grid,
    progress_bar,
    pyplot,
)
from simulator.cost import (
    Calibration,
    CostModel,
    achievable_flops_per_cycle_per_pe,
    load_calibration,
)
from simulator.disk_cache import DiskCache, from_arguments
from simulator.hf_sim import simulate_hf
from simulator.phases import (
    DEFAULT_MAX_WAFERS,
    WHAT_IF_RESIDENT,
    ModelSim,
    Phase,
    PlacementCache,
    SimOptions,
    load_factory,
    simulate_model,
)
from simulator.report import calibration_summary, run_report
from simulator.trace import chrome_trace, link_busy_cycles

WHAT_IFS = "weights-resident"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="a registered model, path/to/file.py:factory, or a Hugging Face config.json or "
        "model directory",
    )
    model_arguments(p)
    p.add_argument("--grid", type=parse_grid, help="confine the program to WxH PEs of the target")
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--seq", type=positive, default=128, help="prompt length (default 128)")
    p.add_argument(
        "--decode",
        type=non_negative,
        default=16,
        metavar="N",
        help="decode steps (default 16; 0: none)",
    )
    p.add_argument("--trace", type=Path, help="write a Chrome/Perfetto trace JSON here")
    p.add_argument(
        "--wafers",
        type=positive,
        metavar="N",
        help="pipeline on up to N wafers of the target's kind (default: the target's own "
        f"count; auto on one wafer: up to {DEFAULT_MAX_WAFERS})",
    )
    p.add_argument(
        "--what-if",
        choices=[WHAT_IFS],
        help="a labelled what-if: 'weights-resident' counts streamed weights as already in SRAM "
        "(experiments that assume it, e.g. a published per-layer figure); every figure says so",
    )
    p.add_argument(
        "--all-logits",
        action="store_true",
        help="prefill returns every position's logits (default: the last position's)",
    )


def _simulate(
    model: str, options: SimOptions, progress: Callable[[str], None], disk: DiskCache | None
) -> ModelSim:
    """A registered model, a `path/to/file.py:factory` module, or a Hugging Face config."""
    if ":" in model and model.split(":")[0].endswith(".py"):
        return simulate_model(load_factory(model), options, PlacementCache(), progress)
    if model not in models.names() and hf_files.config_path(model) is not None:
        return simulate_hf(model, options, progress)
    if model not in models.names():
        raise ModelSimError(f"unknown model {model!r}; known: {', '.join(models.names())}")
    return simulate_model(model, options, PlacementCache(disk), progress)


def run(args: argparse.Namespace, console: Console) -> int:
    options = SimOptions(
        target=args.target,
        seq=args.seq,
        batch=args.batch,
        decode_steps=args.decode,
        dtype=args.dtype,
        mode=args.mode,
        grid=args.grid,
        calibration=load_calibration(),
        all_logits=args.all_logits,
        resident_weights=args.what_if == WHAT_IFS,
        wafers=args.wafers,
    )
    output_file("--trace", args.trace)
    output_dir("--plot", args.plot)
    disk = from_arguments(args.cache_dir, args.no_cache)
    with progress_bar(1 + bool(args.decode)) as step:
        result = _simulate(args.model, options, step, disk)
    phases = [p for p in (result.prefill, result.decode) if p is not None]
    if args.trace:
        args.trace.write_text(json.dumps(_trace(phases, result.target.clock_hz)))
    if args.plot:
        _plot(result, phases, args.plot)
    if args.json:
        print(json.dumps(run_report(result, options.calibration), indent=2))
        return 0
    _print(result, phases, options.calibration, console)
    return 0


def _trace(phases: list[Phase], clock_hz: float) -> dict:
    """One trace: the phases one after the other, each layer a process named 'phase: layer'."""
    merged: list[dict] = []
    offset_us, pid_base = 0.0, 0
    for phase in phases:
        trace = chrome_trace(phase.sim.events, clock_hz, phase.name)
        names = {layer.stage: layer.name for layer in phase.sim.layers}
        for event in trace["traceEvents"]:
            event = dict(event, pid=event["pid"] + pid_base)
            if event["ph"] == "M" and event["name"] == "process_name":
                stage = event["args"]["name"]
                label = names.get(int(stage), stage) if stage.isdigit() else stage
                event["args"] = {"name": f"{phase.name}: {label}"}
            elif event["ph"] == "X":
                event["ts"] += offset_us
            merged.append(event)
        pid_base = max(e["pid"] for e in merged) + 1
        offset_us += phase.sim.makespan_cycles * 1e6 / clock_hz
    return {"traceEvents": merged, "displayTimeUnit": "ns", "otherData": {"clock_hz": clock_hz}}


def _print(
    result: ModelSim, phases: list[Phase], calibration: Calibration, console: Console
) -> None:
    t = result.target
    prefill, decode = result.prefill, result.decode
    calibrated = calibration_summary(calibration, t)
    bar = "" if calibrated["error_bar_pct"] is None else f" ± {calibrated['error_bar_pct']:.0f} %"
    cm = CostModel(t, calibration, result.dtype)
    achievable = achievable_flops_per_cycle_per_pe(cm) * t.num_pes * t.clock_hz
    what_if = any(WHAT_IF_RESIDENT in p.notes for p in phases)
    title = f"wafersim run {result.model}" + (f", {WHAT_IF_RESIDENT}" if what_if else "")
    summary = Table(title=title, show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = _deployment_rows(phases, what_if)
    rows += [
        (
            "target",
            f"{t.name}: {t.grid_width_pes} x {t.wafer_height_pes} PEs"
            + (f" x {t.wafers} wafers" if t.wafers > 1 else "")
            + f", {t.clock_hz / 1e9:g} GHz, {result.dtype}",
        ),
        ("prefill", f"{prefill.tokens:,} tokens; {prefill.report.mode_reason or prefill.sim.mode}"),
        (
            "time to first token",
            f"{prefill.cycles:,} cycles = {prefill.seconds * 1e3:,.3f} ms{bar} "
            f"({prefill.tokens_per_second:,.0f} tokens/s)",
        ),
        (
            "prefill utilisation",
            f"{100 * prefill.sim.utilization:.2f} % of "
            f"{prefill.sim.peak_flops / 1e15:.3g} PFLOP/s dense peak; "
            f"{100 * prefill.sim.utilization * prefill.sim.peak_flops / achievable:.2f} % of "
            f"{achievable / 1e15:.3g} PFLOP/s achievable (best FMAC loop, SRAM ports)",
        ),
    ]
    if decode is not None:
        rows += [
            ("decode", f"{decode.steps} steps; {decode.report.mode_reason or decode.sim.mode}"),
            (
                "per-token latency",
                f"{decode.cycles:,} cycles = {decode.seconds * 1e6:,.2f} µs{bar} "
                f"({decode.tokens_per_second:,.0f} tokens/s per sequence)",
            ),
            (
                "decode throughput",
                f"{decode.throughput_tokens_per_second:,.0f} tokens/s{bar} with "
                f"{decode.sequences_in_flight} sequence(s) in flight",
            ),
            ("decode utilisation", f"{100 * decode.sim.utilization:.3f} %"),
        ]
    rows += _wafer_link_rows(phases)
    for label, value in rows:
        summary.add_row(label, value)
    console.print(summary)
    console.print(_layers_table(phases))
    console.print(_ops_table(phases))
    pipeline = Table(title="pipeline")
    for col in ("phase", "mode", "chunks", "single pass cycles", "bubble", "slowest stage"):
        pipeline.add_column(col, justify="left" if col in ("phase", "mode") else "right")
    for p in phases:
        pipeline.add_row(
            p.name,
            p.sim.mode,
            str(p.sim.chunks),
            f"{p.sim.makespan_cycles:,}",
            f"{100 * p.sim.bubble_fraction:.1f} %",
            f"{p.sim.slowest_stage_cycles:,}",
        )
    console.print(pipeline)
    links = Table(title="busiest links")
    for col in ("phase", "link", "busy cycles", "utilisation"):
        links.add_column(col, justify="left" if col == "phase" else "right")
    for p in phases:
        for link in p.sim.busiest_links:
            links.add_row(
                p.name,
                f"({link.x},{link.y}) {link.direction}",
                f"{link.busy_cycles:,}",
                f"{100 * link.utilization:.1f} %",
            )
    console.print(links)
    sram = Table(title="SRAM (placement report)")
    for col in ("phase", "fits", "fullest PE", "median PE", "in use", "by kind"):
        sram.add_column(col, justify="left" if col in ("phase", "by kind") else "right")
    for p in phases:
        data = p.report.to_dict()
        sram.add_row(
            p.name,
            "yes" if data["fits"] else "NO",
            f"{data['sram_bytes_per_pe_max']:,} / {data['usable_sram_bytes_per_pe']:,} B",
            f"{data['sram_bytes_per_pe_median']:,.0f} B",
            f"{data['sram_bytes_total'] / 1e9:.3f} GB",
            ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in data["bytes_by_kind"].items()),
        )
    console.print(sram)
    for p in phases:
        for note in p.notes:
            console.print(f"[dim]{p.name}: {note}[/dim]")
    console.print(estimate_line(calibrated))


def _deployment_rows(phases: list[Phase], what_if: bool) -> list[tuple[str, str]]:
    """The first rows: how the model is deployed and why (per phase when they differ)."""
    lines = {p.name: p.report.deployment or p.sim.mode for p in phases}
    rows = (
        [("deployment", next(iter(lines.values())))]
        if len(set(lines.values())) == 1
        else [(f"{name} deployment", line) for name, line in lines.items()]
    )
    return rows + ([("WHAT-IF", WHAT_IF_RESIDENT)] if what_if else [])


def _wafer_link_rows(phases: list[Phase]) -> list[tuple[str, str]]:
    """Transfers between wafers, per phase that has any."""
    rows = []
    for p in phases:
        links, clock = p.sim.wafer_links, p.sim.target.clock_hz
        if links.transfers:
            rows.append(
                (
                    f"{p.name} wafer links",
                    f"{links.transfers} transfers, {links.bytes / 1e6:,.3f} MB, "
                    f"{links.cycles:,} cycles in all ({links.cycles / clock * 1e6:,.2f} µs)",
                )
            )
    return rows


def _layers_table(phases: list[Phase]) -> Table:
    table = Table(title="per-layer time (busy cycles; critical path: compute / comm / wait)")
    table.add_column("stage", justify="right")
    table.add_column("layer")
    for p in phases:
        table.add_column(f"{p.name} busy", justify="right")
        table.add_column(f"{p.name} critical", justify="right")
    by_phase = [{layer.stage: layer for layer in p.sim.layers} for p in phases]
    stages = sorted(set().union(*by_phase))
    for s in stages:
        name = next(layers[s].name for layers in by_phase if s in layers)
        cells = []
        for layers in by_phase:
            layer = layers.get(s)
            cells += (
                ["-", "-"]
                if layer is None
                else [
                    f"{layer.busy_cycles:,}",
                    f"{layer.compute_cycles:,} / {layer.comm_cycles:,} / {layer.wait_cycles:,}",
                ]
            )
        table.add_row(str(s), name, *cells)
    return table


def _ops_table(phases: list[Phase], top: int = 12) -> Table:
    table = Table(title=f"per-op-class time (top {top} by busy cycles)")
    for col in ("phase", "op", "tasks", "busy cycles", "critical compute", "comm", "wait"):
        table.add_column(col, justify="left" if col in ("phase", "op") else "right")
    for p in phases:
        for o in p.sim.op_classes[:top]:
            table.add_row(
                p.name,
                o.op,
                f"{o.tasks:,}",
                f"{o.busy_cycles:,}",
                f"{o.compute_cycles:,}",
                f"{o.comm_cycles:,}",
                f"{o.wait_cycles:,}",
            )
    return table


def _plot(result: ModelSim, phases: list[Phase], directory: Path) -> None:
    """sram_heatmap.png, link_utilization.png and layer_times.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    result.prefill.report.save_heatmap(directory / "sram_heatmap.png")
    plt = pyplot()
    t = result.target
    fig, axes = plt.subplots(1, len(phases), figsize=(7 * len(phases), 6), layout="constrained")
    for ax, p in zip(np.atleast_1d(axes), phases, strict=True):
        links = link_busy_cycles(p.sim.events, t.grid_width_pes, t.grid_height_pes)
        image = ax.imshow(
            sum(links.values()) / (4 * max(p.sim.makespan_cycles, 1)),
            cmap="magma",
            interpolation="nearest",
        )
        fig.colorbar(image, ax=ax, label="mean link utilisation (4 directions)")
        ax.set_title(f"{result.model} {p.name}: link utilisation")
        ax.set_xlabel("x (PE column)")
        ax.set_ylabel("y (PE row)")
    fig.savefig(directory / "link_utilization.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    width = 0.8 / len(phases)
    for i, p in enumerate(phases):
        stages = [layer.stage for layer in p.sim.layers]
        busy = [layer.busy_cycles * 1e6 / t.clock_hz for layer in p.sim.layers]
        ax.bar(np.array(stages) + i * width, busy, width, label=p.name)
    ax.set_yscale("log")
    ax.set_xlabel("stage")
    ax.set_ylabel("busy time per pass (µs)")
    ax.set_title(f"{result.model} on {t.name}: time per layer")
    ax.legend()
    fig.savefig(directory / "layer_times.png")
    plt.close(fig)


COMMAND = Command(
    "compile, place and simulate a model's prefill and decode (cycle estimates)", add_arguments, run
)
