"""Kernel task graphs against closed forms, their orderings, and the wafersim CLI."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.errors import KernelSpecError
from core.geometry import Rect
from core.target import load_target
from simulator.cli import main
from simulator.cost import CostModel, load_calibration
from simulator.engine import GraphBuilder, roofline_violations, simulate
from simulator.kernels import LLAMA3_8B, decode_layer, simulate_kernel
from simulator.report import SCHEMA_VERSION
from simulator.schema import REPORTS, load_schema, validate

CAL = load_calibration()
T4 = load_target("mesh-4x4")
TAU, OVERHEAD, ADD = CAL.task_start_cycles, CAL.vector_op_overhead_cycles, CAL.reduce_add_cycles
RAMP, HOP = T4.ramp_latency_cycles, T4.hop_latency_cycles
LANES, LINK_BYTES = T4.fp16_flops_per_cycle_per_pe // 2, T4.link_bits_per_cycle // 8


def _fmac(kt: int, nt: int, mt: int = 1) -> int:
    """Local FP16 FMACs of an [mt,kt] x [kt,nt] tile: vector ops or the SRAM ports, whichever
    is slower."""
    return TAU + max(
        mt * kt * (math.ceil(nt / LANES) + OVERHEAD),
        math.ceil((2 * mt * kt * nt + mt * kt) * 2 / T4.sram_read_bytes_per_cycle),
        math.ceil(mt * kt * nt * 2 / T4.sram_write_bytes_per_cycle),
    )


def _stream(nbytes: int, hops: int) -> int:
    return TAU + 2 * RAMP + hops * HOP + math.ceil(nbytes / LINK_BYTES)


def _chain(nbytes: int, steps: int, hops: int) -> int:
    return TAU + steps * (2 * RAMP + ADD) + hops * HOP + math.ceil(nbytes / LINK_BYTES)


def test_gemv_on_a_4x4_mesh_matches_its_closed_form():
    k, n = 64, 96
    kt, nt = k // 4, n // 4
    y_bytes = nt * 2
    # L = 4 rows: chain reduces over 3 hops then multicasts back; the tree (groups of 2, roots at
    # rows 0 and 2) and the two-phase reduce both take 1 hop, then 1 step over 2 hops, then
    # multicast from row 0 over 3 hops.
    allreduce = {
        "chain": _chain(y_bytes, 3, 3) + _stream(y_bytes, 3),
        "tree": _chain(y_bytes, 1, 1) + _chain(y_bytes, 1, 2) + _stream(y_bytes, 3),
        "two_phase": _chain(y_bytes, 1, 1) + _chain(y_bytes, 1, 2) + _stream(y_bytes, 3),
    }
    for algo, reduce_cycles in allreduce.items():
        resident = simulate_kernel("gemv", 1, k, n, (4, 4), algo, T4, x_resident=True)
        assert resident.cycles == _fmac(kt, nt) + reduce_cycles, algo
        assert resident.breakdown.wait_cycles == 0
        full = simulate_kernel("gemv", 1, k, n, (4, 4), algo, T4)
        assert full.cycles == _stream(kt * 2, 3) + _fmac(kt, nt) + reduce_cycles, algo
        alone = simulate_kernel("allreduce", n=nt, grid=(4, 4), algo=algo, target=T4)
        assert alone.cycles == reduce_cycles, algo


def test_cannon_and_summa_on_a_4x4_mesh_match_their_closed_forms():
    m = k = n = 32
    t = 8
    tile_bytes = t * t * 2
    fmac, shift = _fmac(t, t, t), _stream(tile_bytes, 2)
    skew = TAU + 2 * (2 * RAMP + 2 * HOP + math.ceil(tile_bytes / LINK_BYTES))
    # Compute and the next shift start together; each step lasts the longer of the two.
    cannon = simulate_kernel("gemm", m, k, n, (4, 4), "cannon", T4)
    assert cannon.cycles == skew + 3 * max(fmac, shift) + fmac
    # SUMMA: step s multicasts from column/row s, hops max(s, 3 - s), then computes.
    summa = simulate_kernel("gemm", m, k, n, (4, 4), "summa", T4)
    assert summa.cycles == sum(_stream(tile_bytes, max(s, 3 - s)) + fmac for s in range(4))
    assert cannon.cycles < summa.cycles


def test_algorithm_orderings_on_a_64x64_mesh():
    gemv = {
        a: simulate_kernel("gemv", 1, 4096, 4096, (64, 64), a, "mesh-64x64").cycles
        for a in ("tree", "two_phase", "chain")
    }
    assert gemv["tree"] < gemv["two_phase"] < gemv["chain"]
    cannon = simulate_kernel("gemm", 512, 512, 512, (64, 64), "cannon", "mesh-64x64")
    summa = simulate_kernel("gemm", 512, 512, 512, (64, 64), "summa", "mesh-64x64")
    assert cannon.cycles < summa.cycles and cannon.utilization > summa.utilization


def test_kernels_are_deterministic_and_respect_rooflines():
    first = simulate_kernel("gemm", 256, 256, 256, (16, 16), "cannon", "mesh-16x16")
    second = simulate_kernel("gemm", 256, 256, 256, (16, 16), "cannon", "mesh-16x16")
    assert first.events == second.events and first.cycles == second.cycles
    assert roofline_violations(first.events) == []


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["gemv", "gemm-cannon", "gemm-summa", "allreduce"]),
    w=st.integers(1, 16),
    h=st.integers(1, 16),
    m=st.integers(1, 64),
    k=st.integers(1, 2048),
    n=st.integers(1, 2048),
    algo=st.sampled_from(["chain", "tree", "two_phase"]),
)
def test_random_kernels_never_beat_their_rooflines(kind, w, h, m, k, n, algo):
    grid = (min(w, h),) * 2 if kind == "gemm-cannon" else (w, h)
    try:
        if kind == "gemv":
            result = simulate_kernel("gemv", 1, k, n, grid, algo, "mesh-16x16")
        elif kind == "allreduce":
            result = simulate_kernel("allreduce", n=n, grid=grid, algo=algo, target="mesh-16x16")
        else:
            result = simulate_kernel("gemm", m, k, n, grid, kind[5:], "mesh-16x16")
    except KernelSpecError as exc:
        assume("usable SRAM" not in str(exc))
        raise
    assert roofline_violations(result.events) == []
    b = result.breakdown
    assert b.compute_cycles + b.comm_cycles + b.wait_cycles == result.cycles


def test_decode_layer_runs_on_a_region():
    g = GraphBuilder()
    cm = CostModel(load_target("wse2"), CAL)
    decode_layer(g, cm, Rect(0, 0, 420, 420), LLAMA3_8B, 4096)
    timeline = simulate(g.tasks)
    names = {e.name.split(".")[0] for e in timeline.events}
    assert {"q", "k", "v", "o", "gate", "up", "down", "attn"} <= names
    assert roofline_violations(timeline.events) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (dict(kind="gemv", k=64, n=64, algo="cannon"), "unknown algorithm 'cannon' for gemv"),
        (dict(kind="gemv", k=64, n=64, grid=(5, 4)), "larger than target mesh-4x4"),
        (dict(kind="gemv", k=0, n=64), "k must be positive"),
        (dict(kind="gemm", m=8, k=8, n=8, grid=(4, 2), algo="cannon"), "square grid"),
        (dict(kind="gemv", k=1 << 16, n=1 << 16), "usable SRAM"),
        (dict(kind="conv", k=1, n=1), "unknown kernel"),
    ],
)
def test_bad_kernel_requests_name_the_problem(args, message):
    with pytest.raises(KernelSpecError, match=message):
        simulate_kernel(target=T4, **args)


def test_cli_json_validates_against_the_schema(capsys, tmp_path):
    trace = tmp_path / "trace.json"
    argv = ["kernel", "gemv", "--k", "256", "--n", "256", "--grid", "8x8", "--algo", "tree"]
    assert main(argv + ["--target", "mesh-8x8", "--json", "--trace", str(trace)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert validate(report, load_schema()) == []
    assert report["algo"] == "tree" and report["target"] == "mesh-8x8"
    assert (
        report["cycles"] == simulate_kernel("gemv", 1, 256, 256, (8, 8), "tree", "mesh-8x8").cycles
    )
    assert report["seconds"] == pytest.approx(report["cycles"] / 1.1e9)
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" and e["args"].get("algo") == "tree" for e in events)

    broken = dict(report, cycles=-1, extra=True)
    del broken["breakdown"]
    problems = validate(broken, load_schema())
    assert any("cycles" in p for p in problems) and any("breakdown" in p for p in problems)
    assert any("extra" in p for p in problems)


def test_every_report_schema_pins_the_one_schema_version():
    for report in REPORTS:
        assert load_schema(report)["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_cli_terminal_output_and_targets(capsys):
    argv = ["kernel", "gemm", "--m", "64", "--k", "64", "--n", "64", "--grid", "4x4"]
    assert main(argv + ["--target", "mesh-4x4"]) == 0
    out = capsys.readouterr().out
    assert "cycles" in out and "cannon" in out
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "wse2" in out and "750 x 994" in out and "6.56" in out
    assert main(["targets", "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)]
    assert "wse3" in names and "mesh-4x4" in names


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kernel", "gemv", "--k", "8", "--n", "8", "--algo", "bogus"], "unknown algorithm"),
        (["kernel", "gemv", "--k", "8", "--n", "8", "--grid", "800x800"], "larger than target"),
        (["kernel", "gemv", "--k", "-8", "--n", "8"], "k must be positive"),
        (["kernel", "gemv", "--k", "8", "--n", "8", "--grid", "4by4"], "WxH"),
        (["kernel", "gemv", "--k", "8", "--target", "nope"], "unknown target"),
        (["kernel", "gemx"], "invalid choice"),
        ([], "required"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wafersim: error: ") and message in lines[0]
