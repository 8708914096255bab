"""`wafersim verify` and `wafersim ops`; bad arguments and output paths fail before the work."""

from __future__ import annotations

import json

import pytest

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


def test_output_directories_are_created_before_the_run(tmp_path, monkeypatch, capsys):
    """The README's `--plot out/ --trace out/trace.json`, with `out/` not there yet."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", "tiny-mamba", "--target", "mesh-8x8", "--seq", "8", "--decode", "2"]
    assert main([*argv, "--plot", "out/", "--trace", "out/trace.json"]) == 0
    assert json.loads((tmp_path / "out" / "trace.json").read_text())["traceEvents"]
    assert (tmp_path / "out" / "sram_heatmap.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "tiny-gpt2", "--decode", "-1"], "argument --decode: expected a whole number"),
        (["run", "tiny-gpt2", "--batch", "1.5"], "argument --batch: expected a whole number"),
        (["run", "tiny-gpt2", "--grid", "9" * 5000 + "x1"], "grid must look like WxH"),
        (["sweep", "tiny-gpt2", "--seq", "128,0"], "--seq takes positive whole numbers"),
        (["verify", "tiny-gpt2", "--seq", "0"], "argument --seq: expected a whole number"),
        (["kernel", "gemv", "--trace", "."], "is a directory; give a file name in it"),
    ],
)
def test_bad_arguments_fail_in_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("wafersim: error: ") and err.count("\n") == 1
    assert message in err
