"""`wafersim sweep`: prefill and decode cost against the context length, models side by side.

Each point (model x target x wafers x context) is the prefill of `seq` tokens and one decode
step after it. Points run one after another, in `--workers` processes, or on a Dask cluster
(`simulator.distribute`), each process reusing its placements; a point that fails after
`--retries` is a row with its error, and the sweep exits 1 only when every point fails, or any
does with `--strict`."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

import models
from core.arguments import non_negative, positive
from core.errors import CommandLineError, ModelSimError
from core.outputs import output_dir
from core.target import load_target
from simulator import distribute
from simulator.cli.common import (
    Command,
    estimate_line,
    model_arguments,
    progress_bar,
    pyplot,
)
from simulator.cost import load_calibration
from simulator.disk_cache import from_arguments
from simulator.phases import SimOptions
from simulator.report import calibration_summary, sweep_report
from simulator.sweep_points import SweepPoint, family

DEFAULT_SEQS = "128,1024,8192,32768"
COLUMNS: tuple[str, ...] = ("context", "prefill on", "prefill ms", "prefill µs/token")
COLUMNS += ("decode on", "decode µs/token", "decode tokens/s", "KV/state", "fits", "notes")
LEFT = ("model", "family", "target", "prefill on", "decode on", "fits", "notes")


def _counts(flag: str, example: str):
    """argparse type: `positive` counts separated by commas, sorted, each once."""

    def parse(text: str) -> list[int]:
        try:
            return sorted({positive(p) for p in text.split(",")})
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(
                f"{flag} takes positive whole numbers separated by commas (e.g. {example}): {exc}"
            ) from exc

    return parse


_seqs = _counts("--seq", "128,1024")


def _names(text: str) -> list[str]:
    """Target presets or files separated by commas, each once, in the order given."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",")))
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"--targets takes names separated by commas, got {text!r:.60}"
        )
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="registered models (e.g. gpt2-small mamba-130m)")
    p.add_argument(
        "--seq", type=_seqs, default=_seqs(DEFAULT_SEQS), help=f"context lengths ({DEFAULT_SEQS})"
    )
    model_arguments(p)
    grid = p.add_argument_group("the grid and how its points run")
    grid.add_argument(
        "--targets", type=_names, metavar="T1,T2", help="target presets or files (default --target)"
    )
    grid.add_argument(
        "--wafers", type=_counts("--wafers", "1,2,4"), metavar="N1,N2", help="cluster sizes"
    )
    grid.add_argument("--workers", type=positive, default=1, help="worker processes (default 1)")
    grid.add_argument(
        "--engine",
        choices=distribute.ENGINES,
        help="serial, processes or dask (default: processes when --workers > 1, else serial)",
    )
    grid.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="Dask scheduler (--engine dask)"
    )
    grid.add_argument(
        "--scheduler-timeout",
        type=positive,
        default=int(distribute.SCHEDULER_TIMEOUT_S),
        metavar="S",
        help="seconds to reach --scheduler",
    )
    grid.add_argument("--retries", type=non_negative, default=1, help="retries of a failed point")
    grid.add_argument("--strict", action="store_true", help="exit 1 when any point fails")


def _specs(args: argparse.Namespace, options: SimOptions) -> list[distribute.SweepSpec]:
    """The grid's points, models x targets x wafers x contexts, in that order."""
    targets = args.targets or [args.target]
    for target in targets:
        load_target(target)  # a bad name or file is a one-line error before any point runs
    disk = from_arguments(args.cache_dir, args.no_cache)
    cache_dir = None if disk is None else str(disk.root)
    return [
        distribute.SweepSpec(
            model, replace(options, target=target, wafers=wafers, seq=seq), cache_dir
        )
        for model in args.models
        for target in targets
        for wafers in args.wafers or [None]
        for seq in args.seq
    ]


def _engine(args: argparse.Namespace) -> str:
    engine = args.engine or ("processes" if args.workers > 1 else "serial")
    if args.scheduler and engine != "dask":
        raise CommandLineError("--scheduler needs --engine dask")
    return engine


def _point(outcome: distribute.Outcome) -> SweepPoint:
    """The outcome's point, or a row of nothing whose note gives the error."""
    if not outcome.failed:
        return outcome.value
    spec = outcome.spec
    note = f"failed after {outcome.attempts} attempt(s): {outcome.error}"
    return SweepPoint(spec.model, family(spec.model), spec.options.seq, None, None, (note,))


def run(args: argparse.Namespace, console: Console) -> int:
    unknown = [m for m in args.models if m not in models.names()]
    if unknown:
        raise ModelSimError(f"unknown model(s) {unknown}; known: {', '.join(models.names())}")
    options = SimOptions(
        target=args.target, dtype=args.dtype, mode=args.mode, calibration=load_calibration()
    )
    engine, specs = _engine(args), _specs(args, options)
    output_dir("--plot", args.plot)
    with progress_bar(len(specs)) as step:
        outcomes = distribute.run(
            distribute.simulate_point,
            specs,
            engine=engine,
            workers=args.workers,
            retries=args.retries,
            scheduler=args.scheduler,
            timeout=args.scheduler_timeout,
            progress=step,
        )
    points = [_point(outcome) for outcome in outcomes]
    failed = sum(outcome.failed for outcome in outcomes)
    status = 1 if failed and (args.strict or failed == len(outcomes)) else 0
    if failed:
        Console(stderr=True).print(f"{failed} of {len(outcomes)} points failed (see their notes)")
    wheres = [outcome.spec.where for outcome in outcomes]
    several = len(set(wheres)) > 1
    if args.plot:
        labels = [f"{p.model} ({p.family})" for p in points]
        if several:
            labels = [f"{label} on {w}" for label, w in zip(labels, wheres, strict=True)]
        _plot(points, args.plot, labels)
    if args.json:
        print(json.dumps(_report(outcomes, points, options), indent=2))
        return status
    on = ", ".join(dict.fromkeys(wheres))
    table = Table(title=f"wafersim sweep on {on} ({args.dtype}): cost vs context length")
    columns = ["model", "family", *(["target"] if several else []), *COLUMNS]
    for col in columns:
        table.add_column(col, justify="left" if col in LEFT else "right")
    for point, where in zip(points, wheres, strict=True):
        table.add_row(point.model, point.family, *([where] if several else []), *_cells(point))
    console.print(table)
    console.print(estimate_line(calibration_summary(options.calibration, options.target)))
    return status


def _on(phase) -> str:
    """Where a phase runs: "2 wafers", "1 wafer", "streaming", or "-" when it fits nowhere."""
    if phase is None:
        return "-"
    if phase.sim.mode == "streaming":
        return "streaming"
    wafers = phase.sim.target.wafers
    return f"{wafers} wafer{'s' if wafers > 1 else ''}"


def _bytes(n: float) -> str:
    """`n` bytes in kB, MB or GB, three significant digits."""
    unit, size = next(((u, s) for u, s in (("GB", 1e9), ("MB", 1e6)) if n >= s), ("kB", 1e3))
    return f"{n / size:.3g} {unit}"


def _cells(point: SweepPoint) -> list[str]:
    """The `COLUMNS` of one point."""
    pre, dec = point.prefill, point.decode
    state = _bytes(point.state_bytes) + (" > 1 wafer" if point.state_outgrows_wafer else "")
    return [
        f"{point.seq:,}",
        _on(pre),
        f"{pre.seconds * 1e3:,.3f}" if pre else "-",
        f"{pre.seconds * 1e6 / point.seq:,.3f}" if pre else "-",
        _on(dec),
        f"{dec.seconds * 1e6:,.2f}" if dec else "-",
        f"{dec.tokens_per_second:,.0f}" if dec else "-",
        state,
        "yes" if point.fits else "no",
        "; ".join(point.notes),
    ]


def _report(outcomes: list[distribute.Outcome], points: list[SweepPoint], options) -> dict:
    """`sweep_report`, each row with its target and wafers, and a failed one's error."""
    report = sweep_report(points, options)
    report["target"] = ",".join(dict.fromkeys(o.spec.target_name for o in outcomes))
    for row, outcome in zip(report["rows"], outcomes, strict=True):
        row.update(target=outcome.spec.target_name, wafers=outcome.spec.options.wafers)
        if outcome.failed:
            row.update(error=outcome.error, attempts=outcome.attempts)
    return report


def _plot(points: list[SweepPoint], directory: Path, series: list[str]) -> None:
    """sweep.png: prefill time per prompt token, decode time per token and KV/state bytes vs
    context, one line per `series` label (one per point); the prefill crossovers between
    families, the prefills placed on several wafers ("4 w") or streamed, and the contexts
    where a KV cache outgrows one wafer's SRAM are marked."""
    directory.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), layout="constrained")
    lines: dict[str, list[tuple[int, float]]] = {}
    for row, label in enumerate(dict.fromkeys(series)):
        mine = [p for p, s in zip(points, series, strict=True) if s == label]
        color = None
        for ax, value in zip(axes, (_prefill_per_token, _decode_per_token, _state), strict=True):
            shown = [(p.seq, v) for p in mine if (v := value(p)) is not None]
            xs, ys = [seq for seq, _ in shown], [v for _, v in shown]
            drawn = ax.plot(xs, ys, marker="o", label=label, color=color) if shown else []
            color = drawn[0].get_color() if drawn else color
            if value is _prefill_per_token:
                lines[label] = shown
                for p in mine:
                    if (where := _on(p.prefill)) not in ("-", "1 wafer"):
                        ax.annotate(
                            where.replace(" wafers", " w"),
                            (p.seq, value(p)),
                            textcoords="offset points",
                            xytext=(4, -10),
                            fontsize=7,
                            color=color,
                        )
        outgrows = outgrows_at(mine)
        if outgrows and outgrows <= 64 * max(p.seq for p in mine):
            for ax in axes:
                ax.axvline(outgrows, color=color, linestyle="--", linewidth=0.8)
            axes[2].annotate(
                f"{label.split(' (')[0]}: KV > 1 wafer\nat {outgrows:,.0f} tokens",
                (outgrows, mine[-1].wafer_sram_bytes / 1e9),
                textcoords="offset points",
                xytext=(-4, -24 - 22 * row),  # one row per model: labels never overlap
                ha="right",
                fontsize=7,
                color=color,
            )
    for seq, us, text in _crossovers(lines, points, series):
        axes[0].plot([seq], [us], marker="X", markersize=12, color="black", zorder=5)
        axes[0].annotate(text, (seq, us), textcoords="offset points", xytext=(6, 8), fontsize=8)
    if points:
        axes[2].axhline(points[0].wafer_sram_bytes / 1e9, color="grey", linewidth=0.8)
        axes[2].annotate(
            "one wafer's SRAM", (min(p.seq for p in points), points[0].wafer_sram_bytes / 1e9)
        )
    titles = (
        "prefill: µs per prompt token",
        "decode: µs per generated token",
        "KV cache / recurrent state (GB)",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.savefig(directory / "sweep.png")
    plt.close(fig)


def outgrows_at(points: list[SweepPoint]) -> float | None:
    """The context at which a model's state outgrows one wafer's SRAM: the first swept one
    that does, else extrapolated along its last two points (a KV cache grows linearly); None
    for a state that does not grow."""
    over = next((p.seq for p in points if p.state_outgrows_wafer), None)
    if over is not None or len(points) < 2:
        return over
    a, b = points[-2], points[-1]
    slope = (b.state_bytes - a.state_bytes) / max(b.seq - a.seq, 1)
    return b.seq + (b.wafer_sram_bytes - b.state_bytes) / slope if slope > 0 else None


def _prefill_per_token(point: SweepPoint) -> float | None:
    return point.prefill.seconds * 1e6 / point.seq if point.prefill else None


def _decode_per_token(point: SweepPoint) -> float | None:
    return point.decode.seconds * 1e6 if point.decode else None


def _state(point: SweepPoint) -> float | None:
    return point.state_bytes / 1e9 if point.state_bytes else None


def _crossovers(lines: dict, points: list[SweepPoint], series: list[str]) -> list[tuple]:
    """Where a transformer's prefill per token overtakes another family's: (context, µs,
    text), interpolated on the log-log lines between the two contexts around it."""
    family = {s: p.family for p, s in zip(points, series, strict=True)}
    found = []
    for a, b in itertools.combinations(lines, 2):
        if family[a] == family[b] or "transformer" not in (family[a], family[b]):
            continue
        ya, yb = dict(lines[a]), dict(lines[b])
        common = sorted(set(ya) & set(yb))
        for lo, hi in itertools.pairwise(common):
            d0, d1 = math.log(ya[lo] / yb[lo]), math.log(ya[hi] / yb[hi])
            if d0 * d1 < 0:
                f = d0 / (d0 - d1)
                seq = math.exp(math.log(lo) + f * math.log(hi / lo))
                us = math.exp(math.log(ya[lo]) + f * math.log(ya[hi] / ya[lo]))
                names = " / ".join(x.split(" (")[0] for x in (a, b))
                found.append((seq, us, f"crossover {names}\n~{seq:,.0f} tokens"))
    return found


COMMAND = Command(
    "prefill and decode cost vs context length, models side by side", add_arguments, run
)
