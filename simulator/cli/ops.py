"""`wafersim ops`: the supported ATen ops, the models using them, the runtimes implementing
them, and each rule's limits."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from simulator.cli.common import Command
from simulator.coverage import coverage
from simulator.report import coverage_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, console: Console) -> int:
    rows = coverage()
    if args.json:
        print(json.dumps(coverage_report(rows), indent=2))
        return 0
    table = Table(title=f"{len(rows)} supported ATen ops (models: tiny-* prefill and decode)")
    for column in ("op", "family", "wse ops", "models", "runtimes", "limits"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.op,
            r.family,
            " ".join(r.wse_ops) or "-",
            " ".join(r.models) or "-",
            " ".join(r.runtimes) or "(not used by a registered model)",
            r.limits or "-",
        )
    console.print(table)
    return 0


COMMAND = Command(
    "list supported ATen ops, their limits, the models using them and the runtimes "
    "implementing them",
    add_arguments,
    run,
)
