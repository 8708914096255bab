"""Differential fuzzing: random small models compile and match eager on every runtime."""

from __future__ import annotations

import torch
from conftest import assert_matches
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import compiler
from models.random_models import random_recipe
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
    compiled = compiler.compile(model, (x,), target="mesh-8x8")
    for runtime in RUNTIMES:
        assert_matches(compiled.using(runtime)(x), expected)
