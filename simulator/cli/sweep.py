"""`wafersim sweep`: prefill and decode cost against the context length, models side by side.

Each point is the prefill of `seq` tokens and one decode step after it; placements are reused
across the points (one `PlacementCache` per sweep)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

import models
from core.arguments import positive
from core.errors import ModelSimError
from core.outputs import output_dir
from simulator.cli.common import (
    Command,
    estimate_line,
    model_arguments,
    progress_bar,
    pyplot,
)
from simulator.cost import load_calibration
from simulator.phases import PlacementCache, SimOptions, SweepPoint, sweep_point
from simulator.report import calibration_summary, sweep_report

DEFAULT_SEQS = "128,1024,8192,32768"


def _seqs(text: str) -> list[int]:
    """Context lengths separated by commas, each a `positive` count."""
    try:
        return sorted({positive(p) for p in text.split(",")})
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(
            f"--seq takes positive whole numbers separated by commas (e.g. 128,1024): {exc}"
        ) from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="registered models (e.g. gpt2-small mamba-130m)")
    p.add_argument(
        "--seq", type=_seqs, default=_seqs(DEFAULT_SEQS), help=f"context lengths ({DEFAULT_SEQS})"
    )
    model_arguments(p)


def run(args: argparse.Namespace, console: Console) -> int:
    unknown = [m for m in args.models if m not in models.names()]
    if unknown:
        raise ModelSimError(f"unknown model(s) {unknown}; known: {', '.join(models.names())}")
    options = SimOptions(
        target=args.target, dtype=args.dtype, mode=args.mode, calibration=load_calibration()
    )
    output_dir("--plot", args.plot)
    placements = PlacementCache()
    points = []
    with progress_bar(2 * len(args.models) * len(args.seq)) as step:
        for model in args.models:
            for seq in args.seq:
                points.append(sweep_point(model, replace(options, seq=seq), placements, step))
    if args.plot:
        _plot(points, args.plot)
    if args.json:
        print(json.dumps(sweep_report(points, options), indent=2))
        return 0
    table = Table(title=f"wafersim sweep on {args.target} ({args.dtype}): cost vs context length")
    columns = ["model", "family", "context", "prefill mode", "TTFT ms", "prefill µs/token"]
    columns += ["decode mode", "decode µs/token", "decode tokens/s", "notes"]
    for col in columns:
        table.add_column(
            col, justify="right" if "/" in col or col in ("context", "TTFT ms") else "left"
        )
    for point in points:
        pre, dec = point.prefill, point.decode
        table.add_row(
            point.model,
            point.family,
            f"{point.seq:,}",
            pre.sim.mode if pre else "-",
            f"{pre.seconds * 1e3:,.3f}" if pre else "-",
            f"{pre.seconds * 1e6 / point.seq:,.3f}" if pre else "-",
            dec.sim.mode if dec else "-",
            f"{dec.seconds * 1e6:,.2f}" if dec else "-",
            f"{dec.tokens_per_second:,.0f}" if dec else "-",
            "; ".join(point.notes),
        )
    console.print(table)
    console.print(estimate_line(calibration_summary(options.calibration)))
    return 0


def _plot(points: list[SweepPoint], directory: Path) -> None:
    """sweep.png: prefill time per prompt token and decode time per token vs context."""
    directory.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, (pre_ax, dec_ax) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for model in dict.fromkeys(p.model for p in points):
        mine = [p for p in points if p.model == model]
        for ax, phase_of, per_prompt_token in (
            (pre_ax, lambda p: p.prefill, True),
            (dec_ax, lambda p: p.decode, False),
        ):
            shown = [(p.seq, phase_of(p)) for p in mine if phase_of(p)]
            xs = [seq for seq, _ in shown]
            ys = [ph.seconds * 1e6 / (seq if per_prompt_token else 1) for seq, ph in shown]
            ax.plot(xs, ys, marker="o", label=f"{model} ({mine[0].family})")
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


COMMAND = Command(
    "prefill and decode cost vs context length, models side by side", add_arguments, run
)
