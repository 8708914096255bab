"""`wafersim targets`: the target presets."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from core.target import load_target, presets
from simulator.cli.common import Command
from simulator.report import target_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the presets as JSON")


def run(args: argparse.Namespace, console: Console) -> int:
    rows = [target_report(load_target(name)) for name in presets()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="target presets")
    for col in ("name", "grid", "PEs", "SRAM/PE", "clock", "peak fp16", "notes"):
        table.add_column(col, justify="left" if col in ("name", "notes") else "right")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['grid'][0]} x {r['grid'][1]}" + (f" x {r['wafers']}" if r["wafers"] > 1 else ""),
            f"{r['pes']:,}",
            f"{r['sram_bytes_per_pe'] / 1024:g} KiB",
            f"{r['clock_hz'] / 1e9:g} GHz",
            f"{r['peak_fp16_pflops']:.3g} PFLOP/s",
            f"{r['description']}; grid: {r['grid_source']}",
        )
    console.print(table)
    return 0


COMMAND = Command("list the target presets", add_arguments, run)
