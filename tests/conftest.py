"""Shared test set-up: deterministic seeds and dtype-aware comparison against eager."""

from __future__ import annotations

import os

# Eight host devices for the sharded runtime's tests (tests/test_sharding.py); XLA reads this
# when JAX starts its CPU backend, so it must be set before any test touches JAX. Other tests
# use the first device, as before.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import pytest  # noqa: E402
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


@pytest.fixture(autouse=True, scope="session")
def _private_placement_cache(tmp_path_factory):
    """`wafersim` caches placed programs in a directory of the test session's, never in the
    user's cache (subprocesses inherit it)."""
    previous = os.environ.get("WAFER_CACHE_DIR")
    os.environ["WAFER_CACHE_DIR"] = str(tmp_path_factory.mktemp("wafer-cache"))
    yield
    if previous is None:
        del os.environ["WAFER_CACHE_DIR"]
    else:
        os.environ["WAFER_CACHE_DIR"] = previous
