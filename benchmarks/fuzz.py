"""Long differential fuzzing run: `benchmarks/fuzz.py --minutes N` (CI runs a bounded number).

Prints how many random models were checked against eager on every runtime, and on failure the
minimal model as runnable code.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fuzz_models import recipes  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from test_fuzz import RUNTIMES, check_recipe  # noqa: E402

BATCH = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    opts = parser.parse_args()
    deadline = time.monotonic() + 60 * opts.minutes
    checked = 0

    @settings(
        max_examples=BATCH, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(recipes())
    def batch(recipe):
        nonlocal checked
        check_recipe(recipe)
        checked += 1

    try:
        while time.monotonic() < deadline:
            batch()  # each batch draws fresh random examples
    except Exception as exc:  # hypothesis has already printed the minimal failing recipe
        print(f"FAILED after {checked} models: {exc}")
        return 1
    print(f"{checked} random models matched eager on runtimes {', '.join(RUNTIMES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
