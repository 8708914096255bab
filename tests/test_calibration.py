"""The calibration of the cost model (issue #14): only kernel-level figures are fitted, the fit
is least squares on log ratios with leave-one-out errors, and reports quote the held-out
error and an error bar, not the fit error."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from simulator import fitting
from simulator.cli import main
from simulator.cli.common import estimate_line
from simulator.cost import CALIBRATION_PATH, CostModel, load_calibration
from simulator.cost import achievable_flops_per_cycle_per_pe as achievable
from simulator.report import calibration_summary
from simulator.schema import load_schema, validate

DATA = json.loads(CALIBRATION_PATH.read_text())
DOC = (Path(__file__).resolve().parents[1] / "docs" / "calibration.md").read_text()


def test_fit_set_holds_only_kernel_level_figures():
    fit_ids = {p["id"] for p in DATA["fit_set"]}
    assert fit_ids and all(p["level"] == "kernel" for p in DATA["fit_set"])
    assert all(p["source"] for p in DATA["fit_set"] + DATA["validation_set"])
    levels = {p["level"] for p in DATA["validation_set"]}
    # Decoder layers, whole models and product figures validate; none is ever fitted.
    assert {"layer", "model", "product"} <= levels
    assert not fit_ids & {p["id"] for p in DATA["validation_set"]}


def test_benchmark_simulates_every_declared_figure():
    from benchmarks.calibration import MEASURES, load_points

    points = load_points()
    assert {p.id for p in points} == set(MEASURES)
    assert [p.id for p in points if p.fitted] == [p["id"] for p in DATA["fit_set"]]


def test_least_squares_fit_and_leave_one_out_on_known_residuals():
    # Figure "a" pins x0 = 10; "b" is a range satisfied for any x0 in [4, 16] ("flat valley");
    # "c" pins x1 = 3. Left out, "a" is predicted only as well as the valley allows.
    def residuals(x):
        b = 0.0 if 4 <= x[0] <= 16 else math.log((x[0] + 1) / (17 if x[0] > 16 else 5))
        return {"a": math.log((x[0] + 1) / 11), "b": b, "c": math.log((x[1] + 1) / 4)}

    bounds, steps = ((0, 40), (0, 8)), (8, 2)
    params, best = fitting.fit(residuals, ["a", "b", "c"], (30, 0), bounds, steps)
    assert params == (10, 3) and best == pytest.approx(0.0)
    loo = fitting.leave_one_out(residuals, ["a", "b", "c"], (30, 0), bounds, steps)
    worst_a, residual_a = loo["a"]
    assert worst_a[0] == 4 and residual_a == pytest.approx(math.log(5 / 11))
    assert loo["b"][1] == pytest.approx(0.0)
    assert fitting.error_bar_pct([math.log(1.1), -math.log(1.1)]) == pytest.approx(10.0)


def test_leave_one_out_errors_are_stored_and_printed():
    fit_ids = [p["id"] for p in DATA["fit_set"]]
    assert sorted(DATA["leave_one_out"]) == sorted(fit_ids)
    result = DATA["last_result"]
    expected = max(abs(v["error_pct"]) for v in DATA["leave_one_out"].values())
    assert result["loo_max_abs_error_pct"] == pytest.approx(expected, abs=0.01)
    assert "leave-one-out error" in DOC
    for p in DATA["fit_set"]:
        line = next(row for row in DOC.splitlines() if row.startswith(f"| {p['name']} |"))
        assert f"{DATA['leave_one_out'][p['id']]['error_pct']:+.1f} %" in line
    assert "## Sensitivity" in DOC and "## Known blind spots" in DOC


def test_estimate_line_quotes_validation_error_and_error_bar():
    result = DATA["last_result"]
    summary = calibration_summary(load_calibration(), "wse3")
    assert summary["validation_error_pct"] == result["validation_max_abs_error_pct"]
    line = estimate_line(summary)
    assert f"±{result['error_bar_pct']:.0f} %" in line
    assert f"within {result['validation_max_abs_error_pct']:.1f} %" in line
    assert "held out of the fit" in line and "WSE-3 is not calibrated" in line
    assert "WSE-3" not in estimate_line(calibration_summary(load_calibration(), "wse2"))


def test_run_report_puts_error_bars_on_headline_figures():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(["run", "tiny-gpt2", "--target", "mesh-8x8", "--decode", "2", "--no-cache"])
    assert status == 0
    text = " ".join(out.getvalue().split())
    bar = f"± {DATA['last_result']['error_bar_pct']:.0f} %"
    for label in ("time to first token", "per-token latency", "decode throughput"):
        row = text[text.index(label) :][:160]
        assert bar in row, row
    assert "achievable" in text and "held out of the fit" in text


def test_calibration_summary_follows_the_schema():
    run = load_schema("run")
    schema = {**run["$root"]["$defs"]["calibration"], "$root": run["$root"]}
    summary = calibration_summary(load_calibration(), "wse3")
    assert validate(summary, schema) == []
    assert validate({**summary, "error_bar_pct": "12"}, schema) != []


def test_wse3_sram_ports_match_its_simd_width():
    from core.target import load_target

    cal = load_calibration()
    for name in ("wse2", "wse3"):
        t = load_target(name)
        # One FMAC lane reads a weight and an accumulator and writes the accumulator.
        lanes = t.fp16_flops_per_cycle_per_pe // 2
        assert t.sram_read_bytes_per_cycle == 2 * 2 * lanes
        assert t.sram_write_bytes_per_cycle == 2 * lanes
        rate = achievable(CostModel(t, cal, "fp16"))
        assert 0.95 * t.fp16_flops_per_cycle_per_pe <= rate <= t.fp16_flops_per_cycle_per_pe
