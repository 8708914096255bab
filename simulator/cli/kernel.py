"""`wafersim kernel`: one kernel (GEMV, GEMM, all-reduce) simulated on a grid of PEs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core import dtypes
from core.outputs import output_file
from simulator.cli.common import Command, parse_grid
from simulator.cost import load_calibration
from simulator.kernels import ALGORITHMS, DEFAULT_ALGORITHM, simulate_kernel
from simulator.report import kernel_report
from simulator.trace import chrome_trace


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=sorted(ALGORITHMS), help="kernel to simulate")
    p.add_argument("--m", type=int, default=1, help="rows of the left operand (gemm)")
    p.add_argument("--k", type=int, default=1, help="reduction size (gemv, gemm)")
    p.add_argument("--n", type=int, default=1, help="output columns / vector length")
    p.add_argument("--grid", type=parse_grid, help="PE grid WxH (default: the whole target)")
    algos = "; ".join(
        f"{k}: {', '.join(v)} (default {DEFAULT_ALGORITHM[k]})" for k, v in ALGORITHMS.items()
    )
    p.add_argument("--algo", help=f"algorithm; {algos}")
    p.add_argument("--target", default="wse2", help="preset name or target file (default wse2)")
    p.add_argument("--dtype", default="fp16", choices=dtypes.COMPUTE_LABELS)
    p.add_argument("--x-resident", action="store_true", help="gemv: x already on every PE")
    p.add_argument("--group-size", type=int, default=0, help="tree/two_phase group (0: sqrt)")
    p.add_argument("--calibration", type=Path, help="calibration file (default: the bundled one)")
    p.add_argument("--trace", type=Path, help="write a Chrome/Perfetto trace JSON here")
    p.add_argument(
        "--json", action="store_true", help="print a JSON report (simulator/schema.json)"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    calibration = load_calibration(args.calibration) if args.calibration else load_calibration()
    output_file("--trace", args.trace)
    result = simulate_kernel(
        args.kind,
        args.m,
        args.k,
        args.n,
        args.grid,
        args.algo,
        args.target,
        args.dtype,
        x_resident=args.x_resident,
        group_size=args.group_size,
        calibration=calibration,
    )
    if args.trace:
        args.trace.write_text(json.dumps(chrome_trace(result.events, result.clock_hz, result.kind)))
    if args.json:
        print(json.dumps(kernel_report(result, calibration), indent=2))
        return 0
    w, h = result.grid
    shape = {
        "gemv": f"[1,{result.k}] x [{result.k},{result.n}]",
        "gemm": f"[{result.m},{result.k}] x [{result.k},{result.n}]",
    }
    table = Table(title=f"wafersim kernel {result.kind} ({result.algo})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    b = result.breakdown
    for label, value in (
        ("shape", shape.get(result.kind, f"{result.n} elements per PE, summed along columns")),
        ("target / dtype", f"{result.target} / {result.dtype}"),
        ("grid", f"{w} x {h} PEs"),
        ("cycles", f"{result.cycles:,}"),
        ("time", f"{result.seconds * 1e6:,.3f} µs at {result.clock_hz / 1e9:g} GHz"),
        ("FMAC utilisation", f"{100 * result.utilization:.2f} %"),
        (
            "critical path",
            f"compute {b.compute_cycles:,} + comm {b.comm_cycles:,} + wait {b.wait_cycles:,}",
        ),
        ("events", f"{len(result.events):,}"),
    ):
        table.add_row(label, value)
    console.print(table)
    if result.busiest_links:
        links = Table(title="busiest links")
        for col in ("link", "busy cycles", "utilisation"):
            links.add_column(col, justify="right")
        for link in result.busiest_links:
            links.add_row(
                f"({link.x},{link.y}) {link.direction}",
                f"{link.busy_cycles:,}",
                f"{100 * link.utilization:.1f} %",
            )
        console.print(links)
    return 0


COMMAND = Command("simulate one kernel (gemv, gemm, allreduce)", add_arguments, run)
