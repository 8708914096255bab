"""`wafersim run` and `wafersim sweep`: whole models compiled, placed and simulated.

`run` prints rich tables (summary, per-layer time, per-op-class time, pipeline, busiest links,
SRAM) or, with `--json`, the placement report's dict extended with the simulation
(`simulator/schema.json`, `$defs/run`). `sweep` tabulates prefill and decode cost against the
context length for several models side by side. Every figure is a model estimate: the output
says so, with the calibration error of `benchmarks/calibration.py` beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import models
from core import dtypes
from core.errors import PlacementError
from core.target import load_target
from simulator.cost import CALIBRATION_PATH, Calibration, load_calibration
from simulator.model import (
    ModelSim,
    ModelSimError,
    Phase,
    load_factory,
    simulate_model,
    simulate_phase,
)
from simulator.trace import chrome_trace, link_busy_cycles

SCHEMA_VERSION = 1
MODES = ("auto", "pipelined", "streaming")
DEFAULT_SEQS = "128,1024,8192,32768"


# ---------------------------------------------------------------------------- arguments


def parse_grid(text: str) -> tuple[int, int]:
    """`WxH` (e.g. 420x420) as (width, height); argparse type for every `--grid`."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match or not int(match[1]) or not int(match[2]):
        raise argparse.ArgumentTypeError(f"grid must look like WxH (e.g. 420x420), got {text!r}")
    return int(match[1]), int(match[2])


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _seqs(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"--seq takes positive whole numbers separated by commas (e.g. 128,1024), got {text!r}"
        )
    return sorted({int(p) for p in parts})


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="wse3", help="preset name or target file (default wse3)")
    p.add_argument("--dtype", default="fp16", choices=dtypes.COMPUTE_LABELS)
    p.add_argument("--mode", default="auto", choices=MODES, help="placement mode (default auto)")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots into DIR")
    p.add_argument("--json", action="store_true", help="print a JSON report (schema.json)")


def run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model, or path/to/file.py:factory")
    _common(p)
    p.add_argument("--grid", type=parse_grid, help="confine the program to WxH PEs of the target")
    p.add_argument("--batch", type=_positive, default=1)
    p.add_argument("--seq", type=_positive, default=128, help="prompt length (default 128)")
    p.add_argument(
        "--decode", type=int, default=16, metavar="N", help="decode steps (default 16; 0: none)"
    )
    p.add_argument("--trace", type=Path, help="write a Chrome/Perfetto trace JSON here")


def sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="registered models (e.g. gpt2-small mamba-130m)")
    p.add_argument(
        "--seq", type=_seqs, default=_seqs(DEFAULT_SEQS), help=f"context lengths ({DEFAULT_SEQS})"
    )
    _common(p)


# ---------------------------------------------------------------------------- shared


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr (a terminal only), one tick per step; yields the callback."""
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("starting", total=total)

        def step(description: str) -> None:
            progress.update(task, description=description, advance=1)

        yield step


def calibration_summary(calibration: Calibration) -> dict:
    """The constants and the last calibration result (`benchmarks/calibration.py` writes it
    into `simulator/calibration.json`)."""
    result = json.loads(CALIBRATION_PATH.read_text()).get("last_result", {})
    return {
        "constants": {k: v for k, v in vars(calibration).items() if k != "sources"},
        "max_abs_error_pct": result.get("max_abs_error_pct"),
        "points": result.get("points", 0),
        "model_level": result.get("model_level"),
        "source": "docs/calibration.md (benchmarks/calibration.py)",
    }


def estimate_line(summary: dict) -> str:
    error = summary["max_abs_error_pct"]
    if error is None:
        return (
            "Model estimates, not measurements (no calibration result yet: run "
            "benchmarks/calibration.py)."
        )
    return (
        f"Model estimates, not measurements: the cost model is within {error:.1f} % (max |error|) "
        f"of {summary['points']} published WSE-2 figures (docs/calibration.md)."
    )


def _family(name: str) -> str:
    kind = type(models.config(name)).__name__.removesuffix("Config").lower()
    return {"gpt2": "transformer", "llama": "transformer"}.get(kind, kind)


def _simulate(model: str, args, progress, **kwargs) -> ModelSim:
    if ":" in model and model.split(":")[0].endswith(".py"):
        return simulate_model(load_factory(model), args.target, progress=progress, **kwargs)
    if model not in models.names():
        raise ModelSimError(f"unknown model {model!r}; known: {', '.join(models.names())}")
    return simulate_model(model, args.target, progress=progress, **kwargs)


# ---------------------------------------------------------------------------- JSON


def phase_report(phase: Phase | None) -> dict | None:
    """The `prefill` / `decode` object of the `--json` reports."""
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
        "layers": [
            {
                "stage": layer.stage,
                "name": layer.name,
                "start_cycles": layer.start_cycles,
                "end_cycles": layer.end_cycles,
                "busy_cycles": layer.busy_cycles,
                "compute_cycles": layer.compute_cycles,
                "comm_cycles": layer.comm_cycles,
                "wait_cycles": layer.wait_cycles,
            }
            for layer in sim.layers
        ],
        "op_classes": [
            {
                "op": o.op,
                "tasks": o.tasks,
                "busy_cycles": o.busy_cycles,
                "compute_cycles": o.compute_cycles,
                "comm_cycles": o.comm_cycles,
                "wait_cycles": o.wait_cycles,
            }
            for o in sim.op_classes
        ],
        "busiest_links": [dataclasses.asdict(link) for link in sim.busiest_links],
        "events": len(sim.events),
        "compile_seconds": phase.compile_seconds,
        "simulate_seconds": phase.simulate_seconds,
        "notes": list(phase.notes),
    }


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
        utilization=result.prefill.sim.utilization,
        prefill=phase_report(result.prefill),
        decode=phase_report(result.decode),
        calibration=calibration_summary(calibration),
        notes=list(result.notes),
    )
    return report


# ---------------------------------------------------------------------------- run


def run_run(args: argparse.Namespace, console: Console) -> int:
    if args.decode < 0:
        raise ModelSimError(f"--decode must be >= 0, got {args.decode}")
    calibration = load_calibration()
    with _progress(1 + bool(args.decode)) as step:
        result = _simulate(
            args.model,
            args,
            step,
            seq=args.seq,
            batch=args.batch,
            decode_steps=args.decode,
            dtype=args.dtype,
            mode=args.mode,
            grid=args.grid,
            calibration=calibration,
        )
    phases = [p for p in (result.prefill, result.decode) if p is not None]
    if args.trace:
        args.trace.write_text(json.dumps(_trace(phases, result.target.clock_hz)))
    if args.plot:
        _plot_run(result, phases, args.plot)
    if args.json:
        print(json.dumps(run_report(result, calibration), indent=2))
        return 0
    _print_run(result, phases, calibration, console)
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


def _print_run(result: ModelSim, phases: list[Phase], calibration, console: Console) -> None:
    t = result.target
    prefill, decode = result.prefill, result.decode
    summary = Table(title=f"wafersim run {result.model}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        (
            "target",
            f"{t.name}: {t.grid_width_pes} x {t.grid_height_pes} PEs, "
            f"{t.clock_hz / 1e9:g} GHz, {result.dtype}",
        ),
        ("prefill", f"{prefill.tokens:,} tokens; {prefill.report.mode_reason or prefill.sim.mode}"),
        (
            "time to first token",
            f"{prefill.cycles:,} cycles = {prefill.seconds * 1e3:,.3f} ms "
            f"({prefill.tokens_per_second:,.0f} tokens/s)",
        ),
        (
            "prefill utilisation",
            f"{100 * prefill.sim.utilization:.2f} % of "
            f"{prefill.sim.peak_flops / 1e15:.3g} PFLOP/s dense peak",
        ),
    ]
    if decode is not None:
        rows += [
            ("decode", f"{decode.steps} steps; {decode.report.mode_reason or decode.sim.mode}"),
            (
                "per-token latency",
                f"{decode.cycles:,} cycles = {decode.seconds * 1e6:,.2f} µs "
                f"({decode.tokens_per_second:,.0f} tokens/s per sequence)",
            ),
            (
                "decode throughput",
                f"{decode.throughput_tokens_per_second:,.0f} tokens/s with "
                f"{decode.sequences_in_flight} sequence(s) in flight",
            ),
            ("decode utilisation", f"{100 * decode.sim.utilization:.3f} %"),
        ]
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
    console.print(estimate_line(calibration_summary(calibration)))


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_run(result: ModelSim, phases: list[Phase], directory: Path) -> None:
    """sram_heatmap.png, link_utilization.png and layer_times.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    result.prefill.report.save_heatmap(directory / "sram_heatmap.png")
    plt = _pyplot()
    t = result.target
    fig, axes = plt.subplots(1, len(phases), figsize=(7 * len(phases), 6), layout="constrained")
    for ax, p in zip(np.atleast_1d(axes), phases, strict=True):
        busy = link_busy_cycles(p.sim.events, t.grid_width_pes, t.grid_height_pes)
        image = ax.imshow(
            sum(busy.values()) / (4 * max(p.sim.makespan_cycles, 1)),
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


# ---------------------------------------------------------------------------- sweep


def run_sweep(args: argparse.Namespace, console: Console) -> int:
    unknown = [m for m in args.models if m not in models.names()]
    if unknown:
        raise ModelSimError(f"unknown model(s) {unknown}; known: {', '.join(models.names())}")
    calibration = load_calibration()
    rows = []
    with _progress(2 * len(args.models) * len(args.seq)) as step:
        for model in args.models:
            for seq in args.seq:
                rows.append(_sweep_row(model, seq, args, calibration, step))
    if args.plot:
        _plot_sweep(rows, args.plot)
    if args.json:
        report = {
            "schema_version": SCHEMA_VERSION,
            "target": args.target,
            "dtype": args.dtype,
            "rows": rows,
            "calibration": calibration_summary(calibration),
        }
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title=f"wafersim sweep on {args.target} ({args.dtype}): cost vs context length")
    columns = ("model", "family", "context", "prefill mode", "TTFT ms", "prefill µs/token")
    columns += ("decode mode", "decode µs/token", "decode tokens/s", "notes")
    for col in columns:
        table.add_column(
            col, justify="right" if "/" in col or col in ("context", "TTFT ms") else "left"
        )
    for row in rows:
        pre, dec = row["prefill"], row["decode"]
        table.add_row(
            row["model"],
            row["family"],
            f"{row['seq']:,}",
            pre["mode"] if pre else "-",
            f"{pre['seconds'] * 1e3:,.3f}" if pre else "-",
            f"{pre['seconds'] * 1e6 / row['seq']:,.3f}" if pre else "-",
            dec["mode"] if dec else "-",
            f"{dec['seconds'] * 1e6:,.2f}" if dec else "-",
            f"{dec['tokens_per_second']:,.0f}" if dec else "-",
            "; ".join(row["notes"]),
        )
    console.print(table)
    console.print(estimate_line(calibration_summary(calibration)))
    return 0


def _sweep_row(model: str, seq: int, args, calibration, step) -> dict:
    """One (model, context length) point: the prefill of `seq` tokens and one decode step
    after it (a KV cache of seq + 1 tokens); a phase that fits no mode becomes a note."""
    target = load_target(args.target)
    row: dict = {"model": model, "family": _family(model), "seq": seq, "notes": []}
    for phase in ("prefill", "decode"):
        step(f"{model}: {phase} at {seq:,} tokens")
        try:
            result = simulate_phase(
                model,
                phase,
                target,
                seq=seq,
                cache=seq + 1,
                dtype=args.dtype,
                mode=args.mode,
                calibration=calibration,
            )
        except PlacementError as exc:
            row[phase] = None
            row["notes"].append(f"{phase} does not fit: {' '.join(str(exc).split()[:18])} ...")
            continue
        row[phase] = _brief(result)
        if result.sim.mode == "streaming" and args.mode == "auto":
            row["notes"].append(f"{phase} falls back to streaming (pipelined does not fit)")
    return row


def _brief(phase: Phase) -> dict:
    return {
        "cycles": phase.cycles,
        "seconds": phase.seconds,
        "tokens_per_second": phase.tokens_per_second,
        "mode": phase.sim.mode,
        "utilization": phase.sim.utilization,
    }


def _plot_sweep(rows: list[dict], directory: Path) -> None:
    """sweep.png: prefill time per prompt token and decode time per token vs context."""
    directory.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    fig, (pre_ax, dec_ax) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for model in dict.fromkeys(r["model"] for r in rows):
        points = [r for r in rows if r["model"] == model]
        for ax, key, scale in ((pre_ax, "prefill", True), (dec_ax, "decode", False)):
            xs = [r["seq"] for r in points if r[key]]
            ys = [r[key]["seconds"] * 1e6 / (r["seq"] if scale else 1) for r in points if r[key]]
            ax.plot(xs, ys, marker="o", label=f"{model} ({points[0]['family']})")
    for ax, title in (
        (pre_ax, "prefill: µs per prompt token"),
        (dec_ax, "decode: µs per generated token"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_title(title)
        ax.legend()
    fig.savefig(directory / "sweep.png")
    plt.close(fig)
