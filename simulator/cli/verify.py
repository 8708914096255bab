"""`wafersim verify`: a registered model compiled and checked op by op against eager PyTorch."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

import compiler
import models
from core import dtypes
from core.arguments import positive
from simulator.cli.common import Command
from simulator.report import verify_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="a registered model that can be built on the CPU (e.g. tiny-llama)"
    )
    p.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--seq", type=positive, default=16)
    p.add_argument("--dtype", choices=dtypes.COMPUTE_LABELS, default="fp32")
    p.add_argument("--reference", choices=["fp64", "eager"], default="fp64")
    p.add_argument("--all", action="store_true", help="print every op, not only the failing ones")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, console: Console) -> int:
    """Compile the model, verify it op by op, print the rows; exit 1 on a divergence."""
    models.check_context(args.model, args.seq)
    model = models.build(args.model, dtype=dtypes.by_label(args.dtype).torch)
    graph = model.prefill_module() if args.phase == "prefill" else model.decode_module()
    inputs = models.example_inputs(
        args.model, args.batch, args.seq, phase=args.phase, dtype=dtypes.by_label(args.dtype).torch
    )
    report = compiler.compile(graph, inputs).verify(*inputs, reference=args.reference)
    if args.json:
        print(json.dumps(verify_report(args.model, report), indent=2))
        return 0 if report.passed else 1
    table = Table(title=f"{args.model} {args.phase} {args.dtype} vs {report.reference}")
    for column in ("node", "op", "location", "isolated abs", "ULP", "accumulated abs", "ok"):
        table.add_column(column, justify="right" if "abs" in column or column == "ULP" else "left")
    shown = 0
    for iso, acc in zip(report.isolated, report.accumulated, strict=True):
        ok = iso.passed and acc.passed
        if ok and not args.all:
            continue
        shown += 1
        table.add_row(
            iso.node,
            iso.op,
            iso.location,
            f"{iso.max_abs_error:.2e}",
            f"{iso.max_ulp_error:.1f}",
            f"{acc.max_abs_error:.2e}",
            "yes" if ok else "NO",
        )
    if shown:
        console.print(table)
    divergence = report.first_divergence
    if divergence is None:
        console.print(f"all {len(report.isolated)} ops within tolerance (docs/numerics.md)")
        return 0
    console.print(
        f"first divergence ({divergence.mode}): {divergence.node} = {divergence.op} "
        f"at {divergence.location}"
    )
    return 1


COMMAND = Command(
    "compile a registered model and verify it op by op against eager PyTorch", add_arguments, run
)
