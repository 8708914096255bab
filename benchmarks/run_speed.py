"""Wall time of whole `wafersim` commands, cold (empty placement cache) and warm (filled).

Run: `.venv/bin/python benchmarks/run_speed.py [--repeat N] [--only NAME ...]`.
Each command runs as its own process (`python -m simulator ...`, imports included), with a
fresh cache directory per cold run, which the warm runs after it reuse. Prints the median of
each and the goal it is held to (issue 12: llama-8b on wse2 <= 30 s cold and <= 5 s warm, a
70B-class run <= 60 s cold, a 3-model x 6-context sweep <= 120 s cold); on a loaded machine the
figures are only upper bounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP_SEQS = "128,1024,4096,16384,65536,131072"
# name: (wafersim arguments, cold goal s, warm goal s or None)
CASES = {
    "llama-8b wse2": (["run", "llama-8b", "--target", "wse2"], 30.0, 5.0),
    "llama-70b wse3": (["run", "llama-70b", "--target", "wse3"], 60.0, None),
    "sweep 3 x 6": (
        ["sweep", "gpt2-small", "mamba-130m", "hybrid-1b", "--seq", SWEEP_SEQS, "--workers", "2"],
        120.0,
        None,
    ),
}


def wall(argv: list[str], cache: Path) -> float:
    """Seconds one `wafersim` process takes, its output discarded."""
    clock = time.perf_counter()
    command = [sys.executable, "-m", "simulator", *argv, "--cache-dir", str(cache)]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - clock


def measure(argv: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Cold and warm wall times, `repeat` of each."""
    cold, warm = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="wafer-speed-") as tmp:
            cache = Path(tmp) / "cache"
            cold.append(wall(argv, cache))
            warm.append(wall(argv, cache))
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument("--only", nargs="*", choices=list(CASES), help="these cases only")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    for name in args.only or CASES:
        argv, cold_goal, warm_goal = CASES[name]
        cold, warm = measure(argv, args.repeat)
        warm_text = f"{statistics.median(warm):6.1f} s" + (
            f" (goal <= {warm_goal:g} s)" if warm_goal else ""
        )
        print(
            f"{name:16} cold {statistics.median(cold):6.1f} s (goal <= {cold_goal:g} s)   "
            f"warm {warm_text}",
            flush=True,
        )


if __name__ == "__main__":
    main()
