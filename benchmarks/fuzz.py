"""Long differential fuzzing run: `benchmarks/fuzz.py --minutes N` (CI runs a bounded number).

Random models (`models.random_models`) are compiled and run on every runtime, and each output
is checked against eager with the model-output tolerances of `core.numerics`. Prints how many
models matched, and on failure the minimal model as runnable code.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import compiler
from core.numerics import check_output
from models.random_models import random_recipe
from runtime.execution import RUNTIMES

BATCH = 20
TARGET = "mesh-8x8"


def check(recipe) -> None:
    """Compile the recipe's model; raise AssertionError naming a runtime that differs from
    eager beyond tolerance."""
    note(recipe.to_code())
    model, x = recipe.build()
    with torch.no_grad():
        expected = model(x)
    compiled = compiler.compile(model, (x,), target=TARGET)
    for runtime in RUNTIMES:
        problem = check_output(compiled.using(runtime)(x), expected)
        if problem is not None:
            raise AssertionError(f"{runtime}: {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    opts = parser.parse_args()
    deadline = time.monotonic() + 60 * opts.minutes
    checked = 0

    @settings(
        max_examples=BATCH, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.randoms(use_true_random=False).map(random_recipe))
    def batch(recipe):
        nonlocal checked
        check(recipe)
        checked += 1

    try:
        while time.monotonic() < deadline:
            batch()  # each batch draws fresh random examples
    except Exception as exc:  # hypothesis notes the minimal failing recipe and its code
        print(*getattr(exc, "__notes__", ()), sep="\n")
        print(f"FAILED after {checked} models: {exc}")
        return 1
    print(f"{checked} random models matched eager on runtimes {', '.join(RUNTIMES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
