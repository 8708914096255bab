"""Model-level simulation (`simulator/phases.py`) and the `wafersim run` / `sweep` commands."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from core.target import load_target
from runtime.program import Instruction, Program, TensorSpec
from simulator import cost
from simulator.cli import main
from simulator.cost import CostModel, load_calibration
from simulator.engine import roofline_violations
from simulator.phases import (
    PlacementCache,
    PlacementKey,
    SimOptions,
    simulate_model,
    simulate_placed,
)
from simulator.schema import load_schema, validate

MESH = "mesh-16x16"
SPEC = TensorSpec((1, 64), "f16")
A, B = [0, 0, 4, 4], [4, 0, 4, 4]


def _ins(op, operands, result, stage, **attrs) -> Instruction:
    return Instruction(
        op, operands, (result,), (SPEC,), {"stage": stage, **attrs}, node=f"n{result}"
    )


def _two_regions() -> Program:
    """Host -> neg on A -> stream to B (4 hops) -> neg on B -> host."""
    return Program(
        input_specs=(SPEC,),
        instructions=(
            _ins("host_transfer", (0,), 1, 0, region=A, direction="in", kind="data"),
            _ins("neg", (1,), 2, 0, region=A),
            _ins("fabric_stream", (2,), 3, 1, region=B, src_region=A, hops=4),
            _ins("neg", (3,), 4, 1, region=B),
            _ins("host_transfer", (4,), 5, 1, region=B, direction="out", kind="data"),
        ),
        outputs=(5,),
    )


def test_two_region_pipeline_matches_closed_form():
    target = load_target("mesh-8x8")
    cm = CostModel(target, load_calibration(), "fp16")
    nbytes = 64 * 2
    host = cost.stream(cm, nbytes).cycles
    neg = cost.elementwise(cm, 64, parts=16).cycles
    stream = cost.transfer(cm, nbytes // 4, 4).cycles  # 4 parallel lanes of a 4x4 region
    stages = (host + neg, stream + neg + host)

    one = simulate_placed(_two_regions(), target, dtype="fp16", stage_names=("a", "b"))
    assert one.cycles == one.makespan_cycles == sum(stages)
    assert [layer.busy_cycles for layer in one.layers] == list(stages)
    assert [layer.name for layer in one.layers] == ["a", "b"]
    assert one.mode == "pipelined"
    assert one.bubble_fraction == pytest.approx(1 - sum(stages) / (2 * sum(stages)))

    four = simulate_placed(_two_regions(), target, dtype="fp16", chunks=4)
    assert four.cycles == round((sum(stages) + 3 * max(stages)) / 4)
    assert four.bubble_fraction == pytest.approx(1 - sum(stages) / (2 * four.cycles))


@pytest.fixture(scope="module")
def tiny_gpt2():
    options = SimOptions(MESH, seq=16, decode_steps=2)
    return simulate_model("tiny-gpt2", options, PlacementCache())


def test_no_op_beats_its_roofline(tiny_gpt2):
    for phase in (tiny_gpt2.prefill, tiny_gpt2.decode):
        assert phase.sim.events
        assert roofline_violations(phase.sim.events) == []
        labels = [dict(e.labels) for e in phase.sim.events]
        assert all({"op", "node", "location", "layer"} <= set(lab) for lab in labels)


def test_same_program_same_cycles(tiny_gpt2):
    target = load_target(MESH)
    key = PlacementKey("tiny-gpt2", "prefill", 16, 18, 1, target, "auto", "fp16")
    program = PlacementCache().place(key).program
    chunks = tiny_gpt2.prefill.sim.chunks
    runs = [simulate_placed(program, target, dtype="fp16", chunks=chunks) for _ in range(2)]
    assert runs[0].cycles == runs[1].cycles == tiny_gpt2.prefill.cycles
    assert runs[0].events == runs[1].events


def test_decode_cost_vs_context_mamba_flat_attention_grows():
    target = load_target(MESH)
    placements = PlacementCache()

    def decode_cycles(model: str, context: int) -> int:
        """The decode step at the end of `context` tokens, compiled for that context."""
        key = PlacementKey(model, "decode", context - 1, context, 1, target, "auto", "fp16")
        return simulate_placed(placements.place(key).program, target, dtype="fp16").cycles

    assert decode_cycles("tiny-mamba", 16) == decode_cycles("tiny-mamba", 64)
    assert decode_cycles("tiny-gpt2", 64) > decode_cycles("tiny-gpt2", 16)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_outputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    argv = ["run", "tiny-gpt2", "--target", MESH, "--json"]
    argv += ["--trace", str(directory / "trace.json"), "--plot", str(directory / "plots")]
    status, out, _ = _cli(argv)
    assert status == 0
    return json.loads(out), directory


def test_run_json_follows_the_schema(run_outputs):
    report, _ = run_outputs
    assert validate(report, load_schema("run")) == []
    for key in ("schema_version", "fits", "utilization", "calibration"):
        assert key in report
    for phase in ("prefill", "decode"):
        assert {"cycles", "seconds", "tokens_per_second"} <= set(report[phase])
        assert report[phase]["cycles"] > 0
    assert report["decode"]["tokens"] == 1 and report["decode"]["steps"] == 16
    assert report["prefill"]["tokens_per_second"] == pytest.approx(
        128 / report["prefill"]["seconds"]
    )


def test_run_trace_names_op_node_and_source_line(run_outputs):
    _, directory = run_outputs
    events = json.loads((directory / "trace.json").read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all({"op", "node", "location"} <= set(e["args"]) for e in spans)
    assert any(".py:" in e["args"]["location"] for e in spans)
    names = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert any(n.startswith("prefill: ") for n in names)
    assert any(n.startswith("decode: ") for n in names)


def test_run_plot_writes_three_pngs(run_outputs):
    _, directory = run_outputs
    for name in ("sram_heatmap.png", "link_utilization.png", "layer_times.png"):
        data = (directory / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000


FACTORY = """
import torch

def make():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU()).eval()
    return model, (torch.randn(4, 64),)
"""


def test_run_factory_module_simulates_its_prefill_only(tmp_path):
    source = tmp_path / "tiny_module.py"
    source.write_text(FACTORY)
    status, out, _ = _cli(["run", f"{source}:make", "--target", MESH, "--json"])
    assert status == 0
    report = json.loads(out)
    assert validate(report, load_schema("run")) == []
    assert report["decode"] is None and report["prefill"]["cycles"] > 0
    assert any("only its prefill" in note for note in report["notes"])


def test_sweep_json_side_by_side():
    argv = ["sweep", "tiny-gpt2", "tiny-mamba", "--target", MESH, "--seq", "8,32", "--json"]
    status, out, _ = _cli(argv)
    assert status == 0
    report = json.loads(out)
    assert validate(report, load_schema("sweep")) == []
    rows = {(r["model"], r["seq"]): r for r in report["rows"]}
    assert rows["tiny-mamba", 8]["decode"]["cycles"] == rows["tiny-mamba", 32]["decode"]["cycles"]
    assert rows["tiny-gpt2", 32]["decode"]["cycles"] > rows["tiny-gpt2", 8]["decode"]["cycles"]


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["run", "no-such-model", "--target", MESH], "unknown model"),
        (["run", "tiny-gpt2", "--target", MESH, "--grid", "12by3"], "grid must look like WxH"),
        (["run", "tiny-gpt2", "--target", MESH, "--grid", "64x64"], "does not fit target"),
        (["sweep", "tiny-gpt2", "--target", MESH, "--seq", "8,abc"], "--seq takes positive"),
        (["sweep", "tiny-gpt2", "nope", "--target", MESH], "unknown model"),
        (["run", "missing.py:factory", "--target", MESH], "no such file"),
    ],
)
def test_bad_input_exits_with_one_line(argv, reason):
    status, out, err = _cli(argv)
    assert status == 2 and not out
    assert err.startswith("wafersim: error: ") and reason in err
    assert err.count("\n") == 1
