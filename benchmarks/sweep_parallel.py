"""Wall time of one `wafersim sweep` grid run serially, in worker processes and on a local Dask
cluster (`simulator/distribute.py`): medians of a few runs, each a fresh `wafersim` process
with `--no-cache` (every point compiles its placements, as on a cold cache).

    python benchmarks/sweep_parallel.py [--repeat 3] [--workers 2] [--quick] [--no-dask]

Every run's JSON report must equal the serial one (the merged report does not depend on the
engine); exit status 1 when one differs or a run fails.
"""

from __future__ import annotations

import argparse
import difflib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRIDS = {
    False: ["gpt2-small", "mamba-130m", "--seq", "128,1024"],
    True: ["tiny-gpt2", "tiny-mamba", "--target", "mesh-16x16", "--seq", "8,32"],
}


def sweep(grid: list[str], engine: list[str]) -> tuple[float, str]:
    """Seconds and stdout of one `wafersim sweep --json` process."""
    argv = [sys.executable, "-m", "simulator", "sweep", *grid, "--json", "--no-cache", *engine]
    clock = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=3600)
    seconds = time.perf_counter() - clock
    if done.returncode:
        sys.exit(f"{' '.join(argv[2:])} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine (median)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny models on a small mesh")
    parser.add_argument("--no-dask", action="store_true", help="skip the local Dask cluster")
    opts = parser.parse_args()
    grid = GRIDS[opts.quick]
    workers = ["--workers", str(opts.workers)]
    engines = {"serial": [], f"processes x{opts.workers}": workers}
    if not opts.no_dask:
        engines[f"dask local x{opts.workers}"] = ["--engine", "dask", *workers]
    print(f"wafersim sweep {' '.join(grid)}; {os.cpu_count()} CPUs, {opts.repeat} runs each")
    reference, serial_s, status = None, None, 0
    for name, engine in engines.items():
        times = []
        for _ in range(opts.repeat):
            seconds, report = sweep(grid, engine)
            times.append(seconds)
            reference = reference or report
            if report != reference:
                diff = difflib.unified_diff(reference.splitlines(), report.splitlines(), n=0)
                print(f"  {name}: the report differs from the serial one:", *list(diff)[2:8])
                status = 1
        median = statistics.median(times)
        serial_s = serial_s or median
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"{name:16} median {median:7.1f} s  ({runs})  speed-up {serial_s / median:.2f}x")
    return status


if __name__ == "__main__":
    sys.exit(main())
