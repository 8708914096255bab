"""`wafersim verify` and `wafersim ops`: numerics against eager, and op coverage."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from rich.console import Console
from rich.table import Table

import compiler
import models
from compiler.lowering import RULES, op_name
from core import dtypes
from runtime.reference import KERNELS

TINY = [name for name in models.names() if name.startswith("tiny-")]


def verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="a registered model that can be built on the CPU (e.g. tiny-llama)"
    )
    p.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--dtype", choices=dtypes.COMPUTE_LABELS, default="fp32")
    p.add_argument("--reference", choices=["fp64", "eager"], default="fp64")
    p.add_argument("--all", action="store_true", help="print every op, not only the failing ones")
    p.add_argument("--json", action="store_true")


def run_verify(args: argparse.Namespace, console: Console) -> int:
    """Compile the model, verify it op by op, print the rows; exit 1 on a divergence."""
    model = models.build(args.model, dtype=dtypes.by_label(args.dtype).torch)
    graph = model.prefill_module() if args.phase == "prefill" else model.decode_module()
    inputs = models.example_inputs(
        args.model, args.batch, args.seq, phase=args.phase, dtype=dtypes.by_label(args.dtype).torch
    )
    report = compiler.compile(graph, inputs).verify(*inputs, reference=args.reference)
    divergence = report.first_divergence
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "reference": report.reference,
                    "passed": report.passed,
                    "first_divergence": None if divergence is None else vars(divergence),
                    "isolated": [vars(r) for r in report.isolated],
                    "accumulated": [vars(r) for r in report.accumulated],
                },
                indent=2,
            )
        )
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
    if divergence is None:
        console.print(f"all {len(report.isolated)} ops within tolerance (docs/numerics.md)")
        return 0
    console.print(
        f"first divergence ({divergence.mode}): {divergence.node} = {divergence.op} "
        f"at {divergence.location}"
    )
    return 1


def ops_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def coverage() -> list[dict]:
    """Per supported ATen op: its family, the tiny models using it, the wse ops it lowered to
    there, and the runtimes implementing all of those."""
    from runtime.jax_runtime import RULES as JAX_RULES

    runtimes = {"reference": set(KERNELS) | {"param"}, "jax": set(JAX_RULES) | {"param"}}
    used_by: dict[str, set[str]] = defaultdict(set)
    emits: dict[str, set[str]] = defaultdict(set)
    for name in TINY:
        model = models.build(name)
        for phase, graph in (
            ("prefill", model.prefill_module()),
            ("decode", model.decode_module()),
        ):
            compiled = compiler.compile(graph, models.example_inputs(name, seq=8, phase=phase))
            for ins in compiled.program.instructions:
                if ins.source_op:
                    used_by[ins.source_op].add(name)
                    emits[ins.source_op].add(ins.op)
    rows = []
    for target, rule in sorted(RULES.items(), key=lambda item: op_name(item[0])):
        name = op_name(target)
        wse_ops = sorted(emits.get(name, ()))
        rows.append(
            {
                "op": name,
                "family": rule.family,
                "models": sorted(used_by.get(name, ())),
                "wse_ops": wse_ops,
                "runtimes": [r for r, ops in runtimes.items() if wse_ops and set(wse_ops) <= ops],
            }
        )
    return rows


def run_ops(args: argparse.Namespace, console: Console) -> int:
    rows = coverage()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{len(rows)} supported ATen ops (models: tiny-* prefill and decode)")
    for column in ("op", "family", "wse ops", "models", "runtimes"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["op"],
            r["family"],
            " ".join(r["wse_ops"]) or "-",
            " ".join(r["models"]) or "-",
            " ".join(r["runtimes"]) or "(not used by a registered model)",
        )
    console.print(table)
    return 0
