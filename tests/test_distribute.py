"""Sweeps in worker processes and on Dask (`simulator/distribute.py`, `wafersim sweep
--workers/--engine`): the same merged report as the serial path, retries, failed points, bad
input."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pytest
from flaky_points import flaky

from simulator import distribute
from simulator.cli import main
from simulator.schema import load_schema, validate

MESH = "mesh-16x16"
GRID = ["sweep", "tiny-gpt2", "tiny-mamba", "--targets", f"{MESH},mesh-8x8", "--seq", "8,32"]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _report(argv: list[str]) -> dict:
    status, out, err = _cli([*argv, "--json"])
    assert status == 0, err
    report = json.loads(out)
    assert validate(report, load_schema("sweep")) == []
    return report


@pytest.fixture(scope="module")
def serial() -> dict:
    return _report(GRID)


def test_serial_grid_is_models_by_targets_by_contexts(serial):
    keys = [(r["model"], r["target"], r["seq"]) for r in serial["rows"]]
    assert keys == [
        (model, target, seq)
        for model in ("tiny-gpt2", "tiny-mamba")
        for target in (MESH, "mesh-8x8")
        for seq in (8, 32)
    ]
    assert serial["target"] == f"{MESH},mesh-8x8"
    assert all(r["prefill"]["cycles"] > 0 and "error" not in r for r in serial["rows"])
    by = {(r["model"], r["target"], r["seq"]): r for r in serial["rows"]}
    # The smaller mesh is slower; a Mamba decode step does not depend on the context.
    assert (
        by["tiny-gpt2", "mesh-8x8", 32]["prefill"]["cycles"]
        > by["tiny-gpt2", MESH, 32]["prefill"]["cycles"]
    )
    assert by["tiny-mamba", MESH, 8]["decode"] == by["tiny-mamba", MESH, 32]["decode"]


def test_worker_processes_give_the_serial_report(serial):
    assert _report([*GRID, "--workers", "2"]) == serial


def test_dask_cluster_gives_the_serial_report(serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as cluster:
        address = cluster.scheduler_address
        assert _report([*GRID, "--engine", "dask", "--scheduler", address]) == serial


@pytest.mark.slow  # starts a cluster of processes; the scheduler path above is the same code
def test_local_dask_cluster_of_processes_gives_the_serial_report(serial):
    pytest.importorskip("distributed")
    argv = ["sweep", "tiny-mamba", "--target", MESH, "--seq", "8,32", "--engine", "dask"]
    rows = _report([*argv, "--workers", "2"])["rows"]
    assert rows == [r for r in serial["rows"] if r["model"] == "tiny-mamba" and r["target"] == MESH]


@pytest.mark.parametrize("engine", ["serial", "processes"])
def test_failed_points_are_retried_then_reported_in_order(tmp_path, engine):
    specs = [
        (str(tmp_path / f"{i}.count"), i, failures, False)
        for i, failures in enumerate([0, 1, 9, 2])
    ]
    finished: list[str] = []
    outcomes = distribute.run(
        flaky, specs, engine=engine, workers=2, retries=2, progress=finished.append
    )
    assert [o.spec for o in outcomes] == specs
    assert [o.value for o in outcomes] == [0, 1, None, 9]
    assert [o.attempts for o in outcomes] == [1, 2, 3, 3]
    assert [o.failed for o in outcomes] == [False, False, True, False]
    assert outcomes[2].error == "RuntimeError: call 3 of 2 fails on purpose"
    assert sorted(finished) == sorted(str(s) + (" failed" if s[1] == 2 else "") for s in specs)


def test_a_dead_worker_process_is_replaced_and_its_point_retried(tmp_path):
    specs = [(str(tmp_path / "0.count"), 3, 0, False), (str(tmp_path / "1.count"), 4, 1, True)]
    outcomes = distribute.run(flaky, specs, engine="processes", workers=1, retries=1)
    assert [o.value for o in outcomes] == [9, 16] and outcomes[1].attempts == 2
    dies = (str(tmp_path / "2.count"), 4, 1, True)
    outcomes = distribute.run(flaky, [dies], engine="processes", retries=0)
    assert outcomes[0].failed and outcomes[0].error.startswith("BrokenProcessPool: ")


def test_a_failing_sweep_point_is_a_row_with_its_error(monkeypatch):
    real = distribute.sweep_point

    def fail_at_32(model, options, placements):
        if options.seq == 32:
            raise RuntimeError("lost the worker")
        return real(model, options, placements)

    monkeypatch.setattr(distribute, "sweep_point", fail_at_32)
    argv = ["sweep", "tiny-mamba", "--target", MESH, "--seq", "8,32", "--json"]
    status, out, err = _cli(argv)
    assert status == 0 and "1 of 2 points failed" in err
    report = json.loads(out)
    assert validate(report, load_schema("sweep")) == []
    ok, failed = report["rows"]
    assert ok["seq"] == 8 and ok["prefill"]["cycles"] > 0 and "error" not in ok
    assert failed["seq"] == 32 and failed["prefill"] is None and failed["decode"] is None
    assert failed["error"] == "RuntimeError: lost the worker" and failed["attempts"] == 2
    assert failed["notes"] == ["failed after 2 attempt(s): RuntimeError: lost the worker"]
    assert _cli([*argv, "--strict", "--retries", "0"])[0] == 1
    assert _cli(["sweep", "tiny-mamba", "--target", MESH, "--seq", "32"])[0] == 1


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--workers", "0"], "argument --workers: expected a whole number from 1"),
        (["--engine", "ray"], "argument --engine: invalid choice: 'ray'"),
        (["--retries", "-1"], "argument --retries: expected a whole number from 0"),
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler needs --engine dask"),
        (["--wafers", "1,0"], "--wafers takes positive whole numbers"),
        (["--targets", "mesh-8x8,nope"], "nope"),
        (
            ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", "1"],
            "cannot reach a Dask scheduler at 'tcp://127.0.0.1:9' within 1 s",
        ),
    ],
)
def test_bad_input_exits_with_one_line(args, reason):
    status, out, err = _cli(["sweep", "tiny-mamba", "--target", MESH, "--seq", "8", *args])
    assert status == 2 and not out
    assert err.startswith("wafersim: error: ") and reason in err
    assert err.count("\n") == 1


def test_run_checks_its_arguments():
    with pytest.raises(ValueError, match="engine must be one of"):
        distribute.run(abs, [1], engine="ray")
    with pytest.raises(ValueError, match="workers must be a whole number >= 1"):
        distribute.run(abs, [1], engine="processes", workers=0)
    assert [o.value for o in distribute.run(abs, [-2, 3])] == [2, 3]
