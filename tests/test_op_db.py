"""PyTorch's `op_db` float32 samples through the compiler (`tests/op_db_samples.py`): every
op Wafer claims (`CLAIMED`) matches eager on its samples, and an op Wafer does not support
fails with a named `WaferError`, never a crash. The fast test samples the ops transformers
and SSMs use; the slow one every claimed op, on both runtimes."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("expecttest", reason="torch's op_db needs expecttest (pip install '.[test]')")

from op_db_samples import CLAIMED, TRANSFORMER_OPS, float32_ops, run_op  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _check(names, samples: int, runtime: str) -> None:
    ops = float32_ops()
    failures = {}
    for name in names:
        worst, counts = run_op(ops[name], samples, runtime)
        if worst.status != "pass":
            failures[name] = f"{worst.status} {worst.detail} {dict(counts)}"
    assert not failures, f"claimed op_db ops that fail on {runtime}: {failures}"


@pytest.mark.parametrize("name", sorted(n for n in TRANSFORMER_OPS if n in CLAIMED))
def test_claimed_transformer_op_matches_eager(name):
    _check([name], 1, "reference")


def test_unsupported_ops_fail_with_a_named_error():
    ops = float32_ops()
    unclaimed = sorted(set(ops) - set(CLAIMED))
    crashes = {}
    for name in unclaimed[::40]:
        worst, _ = run_op(ops[name], 1, "reference")
        if worst.status == "crash":
            crashes[name] = worst.detail
    assert not crashes, f"op_db ops that crash instead of raising a WaferError: {crashes}"


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["reference", "jax"])
def test_every_claimed_op_matches_eager(runtime):
    _check(sorted(CLAIMED), 4, runtime)


@pytest.mark.slow
def test_no_op_db_op_crashes():
    ops = float32_ops()
    crashes = {}
    for name in sorted(ops):
        worst, _ = run_op(ops[name], 2, "reference")
        if worst.status == "crash":
            crashes[name] = worst.detail
    assert not crashes, f"op_db ops that crash instead of raising a WaferError: {crashes}"
