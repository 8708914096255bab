"""Shared test set-up: deterministic seeds and dtype-aware comparison against eager."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Max |actual - expected| allowed, relative to max(1, |expected|): fp32 is near-exact because
# the reference runtime uses eager's kernels; half types allow a few ulps of accumulated rounding.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-3}


def assert_matches(
    actual: torch.Tensor,
    expected: torch.Tensor,
    atol: float | None = None,
    compute_dtype: torch.dtype | None = None,
):
    """Assert equal shape and dtype, and values within the tolerance of `compute_dtype` (the
    dtype the model computes in; default: the expected tensor's dtype)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if not expected.dtype.is_floating_point:
        assert torch.equal(actual, expected)
        return
    dtype = compute_dtype or expected.dtype
    tol = atol if atol is not None and dtype == torch.float32 else TOLERANCE[dtype]
    a, e = actual.double(), expected.double()
    assert torch.equal(a.isnan(), e.isnan()), "NaN positions differ"
    finite = e.isfinite()
    assert torch.equal(a[~finite & ~e.isnan()], e[~finite & ~e.isnan()]), "infinities differ"
    err = ((a - e).abs() / e.abs().clamp(min=1.0))[finite]
    worst = err.max().item() if err.numel() else 0.0
    assert worst <= tol, f"max scaled error {worst:.3g} > {tol:.3g}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
