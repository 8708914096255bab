"""`wafersim verify` and `wafersim ops`."""

from __future__ import annotations

import json

from simulator.cli import main


def test_verify_cli_passes_and_reports_json(capsys):
    assert main(["verify", "tiny-gpt2", "--seq", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["first_divergence"] is None
    assert len(report["isolated"]) > 50


def test_verify_cli_rejects_unknown_model(capsys):
    assert main(["verify", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err.lower()


def test_ops_lists_models_and_runtimes(capsys):
    assert main(["ops", "--json"]) == 0
    rows = {r["op"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["aten.mm.default"]["runtimes"] == ["reference", "jax"]
    assert "tiny-llama" in rows["aten.mm.default"]["models"]
    assert rows["wafer.selective_scan.default"]["wse_ops"] == ["selective_scan"]
    assert {"tiny-mamba", "tiny-hybrid"} <= set(rows["wafer.selective_scan.default"]["models"])
