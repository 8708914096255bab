"""PyTorch's `op_db` through Wafer: `benchmarks/op_db.py [--samples N] [--runtime R] [--ops ...]`.

Compiles the first N float32 samples of every op in PyTorch's operator database (or of the ops
named) and compares each with eager. An op passes when every sample eager runs matches. Prints
the overall pass rate, the pass rate of the ops transformers and SSMs use
(`tests/op_db_samples.py: TRANSFORMER_OPS`), and every op that does not pass, with its worst outcome.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from op_db_samples import TRANSFORMER_OPS, float32_ops, run_op  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="samples per op (default 4)")
    parser.add_argument("--runtime", default="reference", choices=("reference", "jax"))
    parser.add_argument("--ops", nargs="*", help="op_db names to run (default: all)")
    parser.add_argument("--quiet", action="store_true", help="print only the totals")
    args = parser.parse_args()
    ops = float32_ops()
    unknown = sorted(set(args.ops or ()) - set(ops))
    if unknown:
        print(f"not float32 ops of op_db, skipped: {' '.join(unknown)}")
    names = [n for n in args.ops or sorted(ops) if n in ops]
    results = {name: run_op(ops[name], args.samples, args.runtime) for name in names}
    passed = {name for name, (worst, _) in results.items() if worst.status == "pass"}
    statuses = Counter(worst.status for worst, _ in results.values())
    if not args.quiet:
        for name, (worst, counts) in sorted(results.items()):
            if worst.status != "pass":
                detail = f" {worst.detail}" if worst.detail else ""
                print(f"{name:50s} {worst.status}{detail}  {dict(counts)}")
    print(f"op_db float32 ({args.runtime}, {args.samples} samples per op)")
    print(f"  all ops: {len(passed)} / {len(names)} pass ({100 * len(passed) / len(names):.1f} %)")
    wanted = [n for n in TRANSFORMER_OPS if n in results]
    used = sum(n in passed for n in wanted)
    if wanted:
        print(f"  transformer/SSM ops: {used} / {len(wanted)} pass")
    print("  worst outcome per op: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
