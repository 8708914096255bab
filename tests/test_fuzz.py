"""Differential fuzzing: random small models compile and match eager on every runtime."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import compiler
from core.numerics import check_conditioned_output
from models.random_models import float64_output, random_recipe
from runtime.execution import RUNTIMES

# Hypothesis draws every choice of `random_recipe`, so failures shrink to a minimal model.
recipes = st.randoms(use_true_random=False).map(random_recipe)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
def test_random_models_match_eager(recipe):
    note(recipe.to_code())
    model, x = recipe.build()
    with torch.no_grad():
        expected = model(x)
    exact = float64_output(model, x)
    compiled = compiler.compile(model, (x,), target="mesh-8x8")
    for runtime in RUNTIMES:
        problem = check_conditioned_output(compiled.using(runtime)(x), expected, exact)
        assert problem is None, f"{runtime}: {problem}"


@pytest.mark.parametrize("mode", ["hostile-artifact", "bad-argument"])
def test_the_fuzzer_modes_run_clean(mode):
    """A few seconds of each `benchmarks/fuzz.py` mode: every corruption or bad argument is
    refused or gives the original outputs, never a wrong one."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
    done = subprocess.run(
        [sys.executable, str(script), "--mode", mode, "--minutes", "0.05"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r" 0 mismatches", done.stdout), done.stdout
