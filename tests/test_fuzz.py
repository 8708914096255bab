"""Differential fuzzing: random small models compile and match eager on every runtime."""

from __future__ import annotations

import torch
from conftest import assert_matches
from fuzz_models import recipes
from hypothesis import HealthCheck, given, note, settings

import compiler
from runtime.execution import RUNTIMES


def check_recipe(recipe) -> None:
    """Compile the recipe's model and compare every runtime's output with eager."""
    note(recipe.to_code())
    model, x = recipe.build()
    with torch.no_grad():
        expected = model(x)
    compiled = compiler.compile(model, (x,), target="mesh-8x8")
    for runtime in RUNTIMES:
        assert_matches(compiled.using(runtime)(x), expected, atol=1e-4)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes())
def test_random_models_match_eager(recipe):
    check_recipe(recipe)
