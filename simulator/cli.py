"""The `wafersim` command (also `python -m simulator`).

Subcommands live in one table, `COMMANDS`: each entry names its help line, a function that adds
its arguments to its subparser, and a function that runs it and returns the exit status. Bad
input exits with status 2 and one line on stderr: `wafersim: error: <reason>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core import dtypes
from core.errors import WaferError
from core.target import load_target, presets
from simulator import checks, commands
from simulator.cost import Calibration, load_calibration
from simulator.kernels import ALGORITHMS, DEFAULT_ALGORITHM, KernelResult, simulate_kernel
from simulator.trace import chrome_trace

SCHEMA_VERSION = 1


class UsageError(Exception):
    """Bad command-line input; reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it adds its arguments, how it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Console], int]


def _kernel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=sorted(ALGORITHMS), help="kernel to simulate")
    p.add_argument("--m", type=int, default=1, help="rows of the left operand (gemm)")
    p.add_argument("--k", type=int, default=1, help="reduction size (gemv, gemm)")
    p.add_argument("--n", type=int, default=1, help="output columns / vector length")
    p.add_argument(
        "--grid", type=commands.parse_grid, help="PE grid WxH (default: the whole target)"
    )
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


def kernel_report(result: KernelResult, calibration: Calibration) -> dict:
    """The `--json` object of `wafersim kernel` (schema: simulator/schema.json)."""
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
        "calibration": {
            name: value for name, value in vars(calibration).items() if name != "sources"
        },
    }


def _run_kernel(args: argparse.Namespace, console: Console) -> int:
    calibration = load_calibration(args.calibration) if args.calibration else load_calibration()
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


def _targets_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the presets as JSON")


def _run_targets(args: argparse.Namespace, console: Console) -> int:
    rows = []
    for name in presets():
        t = load_target(name)
        rows.append(
            {
                "name": t.name,
                "grid": [t.grid_width_pes, t.grid_height_pes],
                "pes": t.num_pes,
                "sram_bytes_per_pe": t.sram_bytes_per_pe,
                "clock_hz": t.clock_hz,
                "peak_fp16_pflops": t.peak_flops(16) / 1e15,
                "description": t.description,
                "grid_source": t.source("grid_width_pes"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="target presets")
    for col in ("name", "grid", "PEs", "SRAM/PE", "clock", "peak fp16", "notes"):
        table.add_column(col, justify="left" if col in ("name", "notes") else "right")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['grid'][0]} x {r['grid'][1]}",
            f"{r['pes']:,}",
            f"{r['sram_bytes_per_pe'] / 1024:g} KiB",
            f"{r['clock_hz'] / 1e9:g} GHz",
            f"{r['peak_fp16_pflops']:.3g} PFLOP/s",
            f"{r['description']}; grid: {r['grid_source']}",
        )
    console.print(table)
    return 0


COMMANDS: dict[str, Command] = {
    "kernel": Command(
        "simulate one kernel (gemv, gemm, allreduce)", _kernel_arguments, _run_kernel
    ),
    "targets": Command("list the target presets", _targets_arguments, _run_targets),
    "verify": Command(
        "compile a registered model and verify it op by op against eager PyTorch",
        checks.verify_arguments,
        checks.run_verify,
    ),
    "ops": Command(
        "list supported ATen ops, the models using them and the runtimes implementing them",
        checks.ops_arguments,
        checks.run_ops,
    ),
    "run": Command(
        "compile, place and simulate a model's prefill and decode (cycle estimates)",
        commands.run_arguments,
        commands.run_run,
    ),
    "sweep": Command(
        "prefill and decode cost vs context length, models side by side",
        commands.sweep_arguments,
        commands.run_sweep,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wafersim", description="Cycle-approximate wafer-scale simulator.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `wafersim`; returns the exit status."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch/transformers pytree noise
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args, Console())
    except (UsageError, WaferError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        print(f"wafersim: error: {reason}", file=sys.stderr)
        return 2
