"""Median placement time per model and target, export and lowering excluded.

Run: `.venv/bin/python benchmarks/placement.py [--repeat N] [--only NAME ...] [--targets ...]`.
`place` is parsing the lowered module, the six passes, verification and the report;
`+ print` adds printing the placed module and deriving its runtime program (`place_program`).
Goals on a 2-core machine: gpt2-small <= 2 s, llama-8b <= 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import compiler
import models
from compiler.passes import place
from compiler.serialize import to_program

WORKLOADS = {
    "gpt2-small": ("gpt2-small", torch.float32),
    "llama-8b": ("llama-8b", torch.bfloat16),
    "llama-70b": ("llama-70b", torch.bfloat16),
}


def lowered(name: str, seq: int) -> str:
    model_name, dtype = WORKLOADS[name]
    model = models.build(model_name, device="meta", dtype=dtype)
    inputs = models.example_inputs(model_name, seq=seq)
    return compiler.compile(model, inputs, target="wse2").mlir


def measure(text: str, target: str) -> tuple[float, float, object]:
    start = time.perf_counter()
    plan = place(text, target, "auto")
    placed = time.perf_counter()
    with plan.context:
        plan.text()
        to_program(plan.module)
    return placed - start, time.perf_counter() - start, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--only", nargs="*", default=["gpt2-small", "llama-8b"])
    parser.add_argument("--targets", nargs="*", default=["wse2", "wse3"])
    opts = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {opts.repeat}")
    print(
        f"{'model':12} {'target':7} {'ops':>6} {'place s':>8} {'+ print s':>10} {'mode':10} "
        f"{'max B/PE':>9} {'slowest passes'}"
    )
    for name in opts.only:
        text = lowered(name, opts.seq)
        ops = text.count('"wse.')
        for target in opts.targets:
            runs = [measure(text, target) for _ in range(opts.repeat)]
            plan = runs[-1][2]
            slowest = sorted(plan.pass_seconds.items(), key=lambda kv: -kv[1])[:3]
            print(
                f"{name:12} {target:7} {ops:6d} {statistics.median(r[0] for r in runs):8.2f} "
                f"{statistics.median(r[1] for r in runs):10.2f} {plan.mode:10} "
                f"{plan.report.sram_bytes_per_pe_max:9,d} "
                + ", ".join(f"{k} {v:.2f}" for k, v in slowest)
            )


if __name__ == "__main__":
    main()
