"""Shared test set-up: deterministic seeds and dtype-aware comparison against eager."""

from __future__ import annotations

import pytest
import torch

from core.numerics import check_output


def assert_matches(
    actual: torch.Tensor,
    expected: torch.Tensor,
    atol: float | None = None,
    compute_dtype: torch.dtype | None = None,
):
    """Assert equal shape and dtype, and values within `core.numerics.OUTPUT_TOLERANCES` of
    `compute_dtype` (the dtype the model computes in; default: the expected tensor's dtype);
    `atol` replaces the float32 tolerance."""
    problem = check_output(actual, expected, compute_dtype=compute_dtype, atol=atol)
    assert problem is None, problem


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
