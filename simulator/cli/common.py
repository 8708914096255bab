"""What the subcommands share: the `Command` entry, argument types and groups, output paths
checked before the work, the progress bar, matplotlib, and the line that says the figures are
estimates."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from core import dtypes

MODES = ("auto", "pipelined", "streaming")


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it adds its arguments, how it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Console], int]


def parse_grid(text: str) -> tuple[int, int]:
    """`WxH` (e.g. 420x420) as (width, height); argparse type for every `--grid`."""
    match = re.fullmatch(r"([0-9]{1,7})x([0-9]{1,7})", text.strip().lower())
    if not match or not int(match[1]) or not int(match[2]):
        raise argparse.ArgumentTypeError(
            f"grid must look like WxH (e.g. 420x420), got {text!r:.40}"
        )
    return int(match[1]), int(match[2])


def model_arguments(p: argparse.ArgumentParser) -> None:
    """The options `run` and `sweep` share."""
    p.add_argument("--target", default="wse3", help="preset name or target file (default wse3)")
    p.add_argument("--dtype", default="fp16", choices=dtypes.COMPUTE_LABELS)
    p.add_argument("--mode", default="auto", choices=MODES, help="placement mode (default auto)")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots into DIR")
    p.add_argument("--json", action="store_true", help="print a JSON report (schema.json)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache placed programs here (default $WAFER_CACHE_DIR, else ~/.cache/wafer)",
    )
    cache.add_argument("--no-cache", action="store_true", help="compile everything afresh")


@contextmanager
def progress_bar(total: int) -> Iterator[Callable[[str], None]]:
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


def estimate_line(summary: dict) -> str:
    """What the figures are, from a `report.calibration_summary`: the error on held-out
    figures, the error bar, and what is not calibrated on the target."""
    error, bar = summary["validation_error_pct"], summary["error_bar_pct"]
    if error is None or bar is None:
        return (
            "Model estimates, not measurements (no calibration result yet: run "
            "benchmarks/calibration.py)."
        )
    line = (
        f"Model estimates, not measurements: error bar ±{bar:.0f} %; on "
        f"{summary['validation_points']} published figures held out of the fit the cost model "
        f"is within {error:.1f} % (max |error|; fitted on {summary['fit_points']} kernel-level "
        "WSE-2 figures, docs/calibration.md)."
    )
    return line + (f" {summary['uncalibrated']}." if summary.get("uncalibrated") else "")


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
