"""Clusters of wafers: placement across wafers, inter-wafer links in the simulator, the
deployment line, the weights-resident what-if, and the context study's points and plot."""

from __future__ import annotations

import json
import math
import re

import pytest

import compiler
import models
from compiler.passes.layout_regions import wafer_groups
from core.errors import PlacementError
from simulator.cli import main
from simulator.cli.sweep import _crossovers, _plot, outgrows_at
from simulator.cost import Cost, load_calibration
from simulator.engine import GraphBuilder, simulate
from simulator.phases import (
    DEFAULT_MAX_WAFERS,
    WHAT_IF_RESIDENT,
    PlacementCache,
    SimOptions,
    simulate_model,
)
from simulator.schema import load_schema, validate
from simulator.sweep_points import SweepPoint, state_bytes
from simulator.trace import chrome_trace
from simulator.translate import wafer_link_cost

# tiny-llama at 32 tokens needs about 2 x mesh-4x4 of SRAM: auto pipelines it on 2 wafers.
OPTIONS = SimOptions(target="mesh-4x4", seq=32, decode_steps=2)


@pytest.fixture(scope="module")
def on_two():
    return simulate_model("tiny-llama", OPTIONS, PlacementCache())


def test_wafer_groups_are_contiguous_and_balanced_by_bytes():
    assert wafer_groups([5, 1, 1, 1, 5, 1, 1, 1], 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert wafer_groups([1, 2, 3, 4, 5, 6, 7, 8, 9], 3) == [[0, 1, 2, 3, 4], [5, 6], [7, 8]]
    assert wafer_groups([1, 1, 1], 4) == [[0], [1], [2]]  # never more wafers than stages
    assert wafer_groups([3, 3], 1) == [[0, 1]]


def test_auto_pipelines_on_the_fewest_wafers_that_hold_the_weights(on_two):
    report = on_two.prefill.report
    target = report.target
    assert (target.name, target.wafers, report.mode) == ("mesh-4x4x2", 2, "pipelined")
    assert (
        report.deployment.endswith(
            "mesh-4x4 of SRAM: pipelined on 2 wafers, weights resident (fits; up to 16 allowed)"
        )
        or "x its SRAM): pipelined on 2 wafers, weights resident" in report.deployment
    )
    wafers = [layer.wafer for layer in report.layers]
    assert wafers == sorted(wafers) and set(wafers) == {0, 1}  # contiguous layer ranges
    for layer in report.layers:  # each stage inside its own wafer's rows
        x, y, w, h = layer.region
        assert layer.wafer * 4 <= y and y + h <= (layer.wafer + 1) * 4
    data = report.to_dict()
    assert data["wafers"] == 2 and [w["wafer"] for w in data["wafer_layers"]] == [0, 1]
    assert "wafer 1: stages" in report.summary()


def test_inter_wafer_transfers_are_charged_at_the_link_figures(on_two):
    sim = on_two.prefill.sim
    links = [e for e in sim.events if e.kind == "link"]
    assert links and sim.wafer_links.transfers == len(links)
    target, calibration = sim.target, load_calibration()
    for event in links:
        nbytes = int(event.label("bytes"))
        assert event.label("wafer_link") == "0->1"
        expected = calibration.task_start_cycles + math.ceil(5e-6 * 1.1e9 + nbytes * 1.1e9 / 150e9)
        assert event.duration_cycles == expected
        assert wafer_link_cost(target, calibration, nbytes).cycles == expected
    hidden = 32 * 64 * 2  # the residual stream of 32 tokens, 64 wide, fp16
    assert hidden in [int(e.label("bytes")) for e in links]
    assert sim.wafer_links.bytes == sum(int(e.label("bytes")) for e in links)
    crossings = {(e.label("value"), e.label("wafer_link")) for e in links}
    assert len(crossings) == len(links)  # each value crosses to a wafer once


def test_the_trace_shows_the_wafer_links(on_two):
    trace = chrome_trace(on_two.prefill.sim.events, 1.1e9)["traceEvents"]
    lanes = {e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    assert "wafer link 0->1" in lanes
    crossing = [e for e in trace if e.get("cat") == "link"]
    assert crossing and all(e["args"]["wafer_link"] == "0->1" for e in crossing)


def test_link_tasks_on_one_wafer_s_io_take_turns():
    b = GraphBuilder()
    c = Cost("wafer_link", 100, 100.0, link_busy_cycles=30)  # 30 to send, then 70 of latency
    b.add("a", "link", c, channel="wafer 0 out")
    b.add("b", "link", c, channel="wafer 0 out")
    b.add("c", "link", c, channel="wafer 1 out")
    ends = [e.end_cycles for e in simulate(b.tasks).events]
    assert ends == [100, 130, 100]  # b sends once a's bytes are out, not after a's latency
    with pytest.raises(ValueError, match="a link task, and only one, has a channel"):
        b.add("d", "link", c)


def test_streaming_is_an_explicit_mode_on_one_wafer():
    options = SimOptions(target="mesh-4x4", seq=32, decode_steps=0, mode="streaming")
    result = simulate_model("tiny-llama", options, PlacementCache())
    report = result.prefill.report
    assert (report.target.wafers, report.mode) == (1, "streaming")
    assert report.deployment == "weights streamed from external memory at 150 GB/s (requested)"


def test_a_model_no_allowed_cluster_holds_says_how_many_wafers_it_would_take():
    model = models.build("tiny-llama")
    ids = models.example_inputs("tiny-llama", seq=32)
    with pytest.raises(PlacementError) as info:
        compiler.compile(model, ids, target="mesh-4x4", mode="pipelined")
    message = str(info.value)
    assert re.search(
        r"it would take about [23] wafers of 655,360 B \(allow more with --wafers", message
    )
    assert info.value.available_bytes == 655_360
    assert info.value.needed_bytes > 655_360
    options = SimOptions(target="mesh-4x4", seq=32, decode_steps=0, wafers=1)
    result = simulate_model("tiny-llama", options, PlacementCache())  # auto: streams instead
    assert re.fullmatch(
        r"weights streamed from external memory at 150 GB/s \(needs [0-9.]+ x mesh-4x4 of "
        r"SRAM(, more than the 1 wafer allowed|; pipelined, a PE overflows on the 1 wafer "
        r"allowed)\)",
        result.prefill.report.deployment,
    )


def test_placement_target_limits():
    assert SimOptions(target="wse3").placement_target.wafers == DEFAULT_MAX_WAFERS
    assert SimOptions(target="wse3", mode="pipelined").placement_target.wafers == 1
    assert SimOptions(target="wse3x4", mode="pipelined").placement_target.wafers == 4
    assert SimOptions(target="wse3x4", wafers=2).placement_target.name == "wse3x2"
    confined = SimOptions(target="wse3x2", grid=(10, 20)).placement_target
    assert (confined.grid_width_pes, confined.grid_height_pes, confined.wafers) == (10, 40, 2)


@pytest.mark.parametrize("count", ["0", "-2", "two"])
def test_wafer_count_must_be_positive_on_the_command_line(count, capsys):
    assert main(["run", "tiny-llama", "--wafers", count]) == 2
    err = capsys.readouterr().err.strip()
    assert "--wafers" in err and len(err.splitlines()) == 1


def test_weights_resident_what_if_is_labelled_on_every_figure(capsys):
    argv = ["run", "tiny-llama", "--target", "mesh-4x4", "--seq", "32", "--decode", "0"]
    argv += ["--mode", "streaming", "--what-if", "weights-resident"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["what_if"] == WHAT_IF_RESIDENT == report["prefill"]["what_if"]
    assert WHAT_IF_RESIDENT in report["prefill"]["notes"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"tiny-llama, {WHAT_IF_RESIDENT}" in " ".join(out.split())
    assert "WHAT-IF" in out


def test_state_bytes_count_the_kv_cache_and_the_fixed_state():
    options = SimOptions(target="mesh-8x8", seq=32, decode_steps=1)
    # tiny-llama: 2 layers x (K, V) x 2 kv heads x 16 dims x 33 slots x 2 bytes.
    assert state_bytes("tiny-llama", options) == 2 * 2 * 2 * 16 * 33 * 2
    longer = SimOptions(target="mesh-8x8", seq=64, decode_steps=1)
    assert state_bytes("tiny-mamba", options) == state_bytes("tiny-mamba", longer)


def _point(model, family, seq, state, wafer=1000):
    return SweepPoint(model, family, seq, None, None, (), state, wafer)


def test_crossover_is_found_on_the_log_log_lines(tmp_path):
    lines = {
        "gpt (transformer)": [(1024, 1.0), (4096, 4.0)],
        "ssm (mamba)": [(1024, 2.0), (4096, 2.0)],
    }
    points = [_point("gpt", "transformer", 1024, 1), _point("ssm", "mamba", 1024, 1)]
    found = _crossovers(lines, points, ["gpt (transformer)", "ssm (mamba)"])
    assert len(found) == 1
    seq, us, text = found[0]
    assert seq == pytest.approx(2048) and us == pytest.approx(2.0)
    assert "crossover gpt / ssm" in text
    kv = [_point("gpt", "transformer", s, s) for s in (512, 1024, 2048)]
    _plot(kv, tmp_path, ["gpt (transformer)"] * 3)
    assert kv[-1].state_outgrows_wafer and not kv[0].state_outgrows_wafer
    assert outgrows_at(kv) == 1024  # the first context whose 1,024 B pass the 1,000
    short = [_point("gpt", "transformer", s, s, 3000) for s in (512, 1024)]
    assert outgrows_at(short) == pytest.approx(3000)  # extrapolated: 1 byte per token
    assert outgrows_at([_point("ssm", "mamba", s, 7) for s in (512, 1024)]) is None
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_sweep_rows_give_state_bytes_fit_and_wafers(capsys):
    argv = ["sweep", "tiny-llama", "tiny-mamba", "--target", "mesh-4x4", "--seq", "16,32"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert validate(report, load_schema("sweep")) == []
    rows = {(r["model"], r["seq"]): r for r in report["rows"]}
    llama = rows["tiny-llama", 32]
    assert llama["state_bytes"] == 2 * 2 * 2 * 16 * 33 * 2  # fp16 KV of 33 slots
    assert llama["wafer_sram_bytes"] == 16 * 40_960 and not llama["state_outgrows_wafer"]
    assert llama["fits"] and llama["wafers_used"] == max(
        llama["prefill"]["wafers"], llama["decode"]["wafers"]
    )
    assert rows["tiny-mamba", 16]["state_bytes"] == rows["tiny-mamba", 32]["state_bytes"]
