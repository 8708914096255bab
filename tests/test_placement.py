"""Placement: invariants over random matmul chains and grids, the passes' IR, the report, and
the large-model fits (Llama-8B pipelined on WSE-2; a 70B-shaped Llama refused, then streamed)."""

from __future__ import annotations

import dataclasses
import json
import re
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
import models
from compiler.mlir import new_context, parse_module, print_module, shape_of
from compiler.passes import PlacementOptions, place, place_program
from compiler.passes.common import (
    body_ops,
    get_int,
    get_ints,
    get_str,
    has,
    kind,
    region_of,
    stage_regions,
    tile_bytes,
    tile_rect,
)
from compiler.passes.layout_regions import LayoutRegionsOptions
from compiler.passes.split_matmuls import SplitMatmulsOptions
from compiler.serialize import to_program
from core.errors import PlacementError
from core.geometry import Rect
from core.target import load_target
from runtime import reference, tiled

MESH = load_target("mesh-8x8")


def mesh(width: int, height: int):
    return dataclasses.replace(
        MESH, name=f"mesh-{width}x{height}", grid_width_pes=width, grid_height_pes=height
    )


def chain_module(rows: int, dims: list[int], transposed: bool) -> str:
    """`x -> tanh(x @ W_i + b_i) -> ... -> * norm.weight`, like a stack of Linear layers."""
    body, x = [], "%arg0"
    for i, (k, n) in enumerate(pairwise(dims)):
        w = f"tensor<{n}x{k}xf32>" if transposed else f"tensor<{k}x{n}xf32>"
        body.append(f'%w{i} = "wse.param"() {{sym_name = "layers.{i}.weight"}} : () -> {w}')
        body.append(
            f'%b{i} = "wse.param"() {{sym_name = "layers.{i}.bias"}} : () -> tensor<{n}xf32>'
        )
        rhs = f"%w{i}"
        if transposed:
            body.append(
                f'%t{i} = "wse.transpose"(%w{i}) {{permutation = [1, 0]}} : ({w}) -> tensor<{k}x{n}xf32>'
            )
            rhs = f"%t{i}"
        body.append(
            f'%y{i} = "wse.matmul"({x}, {rhs}, %b{i}) {{operandSegmentSizes = array<i32: 1, 1, 1>}}'
            f" : (tensor<{rows}x{k}xf32>, tensor<{k}x{n}xf32>, tensor<{n}xf32>) -> tensor<{rows}x{n}xf32>"
        )
        body.append(
            f'%r{i} = "wse.tanh"(%y{i}) : (tensor<{rows}x{n}xf32>) -> tensor<{rows}x{n}xf32>'
        )
        x = f"%r{i}"
    n = dims[-1]
    body.append(f'%g = "wse.param"() {{sym_name = "norm.weight"}} : () -> tensor<{n}xf32>')
    body.append(
        f'%out = "wse.mul"({x}, %g) : (tensor<{rows}x{n}xf32>, tensor<{n}xf32>) -> tensor<{rows}x{n}xf32>'
    )
    lines = "\n    ".join(body)
    return (
        f"module {{\n  func.func @forward(%arg0: tensor<{rows}x{dims[0]}xf32>) -> "
        f"tensor<{rows}x{n}xf32> {{\n    {lines}\n    return %out : tensor<{rows}x{n}xf32>\n  }}\n}}\n"
    )


def chain_weights(dims: list[int], transposed: bool) -> dict[str, torch.Tensor]:
    weights = {"norm.weight": torch.randn(dims[-1])}
    for i, (k, n) in enumerate(pairwise(dims)):
        weights[f"layers.{i}.weight"] = torch.randn((n, k) if transposed else (k, n)) / k**0.5
        weights[f"layers.{i}.bias"] = torch.randn(n)
    return weights


def check_placement(plan) -> None:
    """Every op placed inside the grid (and its stage); stages disjoint when pipelined; every
    weight element stored exactly once; no PE's byte ranges overlap or exceed usable SRAM."""
    target = plan.target
    usable = target.usable_sram_bytes_per_pe
    with plan.context:
        ops = body_ops(plan.module)
        _check_regions(plan, ops, Rect(0, 0, target.grid_width_pes, target.grid_height_pes))
        used = {op.result for op in ops if kind(op) == "param" and list(op.result.uses)}
        tiles = [op for op in ops if kind(op) == "weight_tiles"]
        assert {t.operands[0] for t in tiles} == used, "every used weight is tiled"
        if plan.mode == "pipelined":
            assert len(tiles) == len(used), "pipelined weights are stored once"
        ranges: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for t in tiles:
            _check_tiles_cover_once(t)
            if get_str(t, "home") == "sram":
                start = get_int(t, "sram_offset")
                _claim(ranges, tile_rect(t), start, start + tile_bytes(t))
        for op in ops:
            if kind(op) == "host_transfer" and get_str(op, "kind") == "state":
                offset, size = get_ints(op, "sram")
                _claim(ranges, region_of(op), offset, offset + size)
        for pe, spans in ranges.items():
            spans.sort()
            assert spans[-1][1] <= usable, f"PE {pe} overflows"
            assert all(a[1] <= b[0] for a, b in pairwise(spans)), f"overlap on PE {pe}"
    assert plan.report.sram_bytes_per_pe_max <= usable


def _check_regions(plan, ops, grid: Rect) -> None:
    stages = stage_regions(plan.module)
    if plan.mode == "pipelined":
        for i, a in enumerate(stages):
            assert grid.contains(a)
            assert not any(a.overlaps(b) for b in stages[i + 1 :]), "stages overlap"
    for op in ops:
        if kind(op) == "param":
            continue
        assert has(op, "stage") and has(op, "region"), f"{op.name} is not placed"
        region = region_of(op)
        assert grid.contains(region)
        if plan.mode == "pipelined":
            assert stages[get_int(op, "stage")].contains(region), op.name


def _check_tiles_cover_once(tiles) -> None:
    shape = shape_of(tiles.operands[0])
    dims, tile_grid, tile = (get_ints(tiles, n) for n in ("tile_dims", "tile_grid", "tile_shape"))
    seen = np.zeros(shape, dtype=np.int64)
    for r in range(tile_grid[0]):
        for c in range(tile_grid[1]):
            index = []
            for d, size in enumerate(shape):
                k = r if d == dims[0] else c if d == dims[1] else 0
                index.append(slice(k * tile[d], min((k + 1) * tile[d], size)))
            seen[tuple(index)] += 1
    assert (seen == 1).all(), "each weight element lies in exactly one tile"


def _claim(ranges: dict, rect: Rect, start: int, end: int) -> None:
    """Record that every PE of `rect` holds bytes [start, end)."""
    for y in range(rect.y, rect.y + rect.height):
        for x in range(rect.x, rect.x + rect.width):
            ranges.setdefault((x, y), []).append((start, end))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(2, 9),
    height=st.integers(2, 9),
    rows=st.integers(1, 12),
    dims=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    transposed=st.booleans(),
    mode=st.sampled_from(["pipelined", "streaming"]),
    algorithm=st.sampled_from(["auto", "chain", "tree", "two_phase"]),
    dataflow=st.sampled_from(["auto", "broadcast", "cannon"]),
)
def test_random_chains_place_soundly_and_compute_the_same(
    width, height, rows, dims, transposed, mode, algorithm, dataflow
):
    text = chain_module(rows, dims, transposed)
    options = PlacementOptions(
        layout=LayoutRegionsOptions(gemm_dataflow=dataflow),
        matmuls=SplitMatmulsOptions(reduce_algorithm=algorithm, rows_per_pass=3),
    )
    target = mesh(width, height)
    plan = place(text, target, mode, options=options)
    check_placement(plan)
    weights = chain_weights(dims, transposed)
    x = torch.randn(rows, dims[0])
    with plan.context:
        placed = to_program(plan.module)
    expected = reference.execute(to_program(parse_module(text, new_context())), weights, [x])
    actual = tiled.execute(placed, weights, [x], target)
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-4, atol=1e-5)


def test_placed_module_verifies_prints_and_parses_back():
    model = models.build("tiny-llama")
    compiled = compiler.compile(
        model, models.example_inputs("tiny-llama", seq=8), target="mesh-8x8"
    )
    placed = place_program(compiled.mlir, compiled.target)
    module = parse_module(placed.mlir, new_context())
    assert module.operation.verify()
    assert print_module(module) == placed.mlir
    assert re.search(r'"wse.weight_tiles".*tile_grid = \[\d+, \d+\]', placed.mlir)
    assert re.search(r'"wse.fabric_reduce".*algorithm = "(chain|tree|two_phase)"', placed.mlir)
    assert re.search(r'"wse.embedding".*region = \[\d+, \d+, \d+, \d+\].*sram = \[', placed.mlir)
    assert 'wse.placement = {grid = [8, 8], mode = "pipelined"' in placed.mlir
    assert placed.program.instructions[-1].op == "host_transfer"


def test_placement_is_deterministic():
    text = chain_module(4, [32, 48, 32], True)
    assert place(text, mesh(6, 4)).text() == place(text, mesh(6, 4)).text()


def test_a_program_without_weights_is_one_stage():
    text = """module {
      func.func @forward(%arg0: tensor<4x8xf32>) -> tensor<4x8xf32> {
        %0 = "wse.tanh"(%arg0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
        return %0 : tensor<4x8xf32>
      }
    }"""
    plan = place(text, mesh(3, 3), "pipelined")
    check_placement(plan)
    assert plan.report.to_dict()["layers"][0]["name"] == "forward"
    with plan.context:
        program = to_program(plan.module)
    x = torch.randn(4, 8)
    torch.testing.assert_close(tiled.execute(program, {}, [x], plan.target)[0], x.tanh())


def test_verifier_rejects_a_tile_shape_that_does_not_cover_the_weight():
    plan = place(chain_module(2, [24, 40], True), mesh(4, 4), "pipelined")
    text = plan.text()
    bad = re.sub(
        r"tile_shape = \[(\d+), ", lambda m: f"tile_shape = [{int(m[1]) - 1}, ", text, count=1
    )
    assert bad != text
    with pytest.raises(Exception, match="tile_shape must be"):
        parse_module(bad, new_context())


def test_report_is_json_ready_and_draws_a_heatmap(tmp_path):
    plan = place(chain_module(4, [32, 48, 32], True), mesh(8, 6), "auto")
    data = plan.report.to_dict()
    json.dumps(data)
    for key in ("target", "mode", "fits", "sram_bytes_total", "sram_bytes_per_pe_max"):
        assert key in data
    assert data["mode"] == "pipelined" and data["fits"]
    assert "fit in SRAM" in data["mode_reason"]
    assert [layer["name"] for layer in data["layers"]] == ["layers.0", "layers.1+norm"]
    assert (
        data["sram_bytes_per_pe_min"]
        <= data["sram_bytes_per_pe_median"]
        <= data["sram_bytes_per_pe_max"]
    )
    assert data["fullest_pes"][0]["bytes"] == data["sram_bytes_per_pe_max"]
    assert "SRAM per PE" in plan.report.summary()
    path = tmp_path / "sram.png"
    plan.report.save_heatmap(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_big_for_pipelined_is_refused_with_numbers_and_streamed_in_auto():
    text = chain_module(4, [256, 256, 256, 256], True)  # 790 kB of weights, 655 kB of SRAM
    target = mesh(4, 4)
    with pytest.raises(PlacementError, match="streaming.*bigger target") as error:
        place(text, target, "pipelined")
    assert error.value.needed_bytes > error.value.available_bytes == 16 * 40960
    plan = place(text, target, "auto")
    assert plan.mode == "streaming"
    assert plan.mode_reason.startswith("streaming: pipelined placement needs")
    check_placement(plan)


@pytest.fixture(scope="module")
def llama_8b():
    model = models.build("llama-8b", device="meta", dtype=torch.bfloat16)
    return compiler.compile(model, models.example_inputs("llama-8b", seq=128), target="wse2")


def test_llama_8b_fits_pipelined_on_wse2(llama_8b):
    plan = place(llama_8b.mlir, "wse2", "auto")
    data = plan.report.to_dict()
    assert data["mode"] == "pipelined" and data["fits"]
    # Measured: about 35.7 kB on the fullest PE of 40,960 usable; 16 GB of bf16 weights.
    assert 30_000 < data["sram_bytes_per_pe_max"] <= 38_000
    assert data["bytes_by_kind"]["weights"] == sum(
        w.numel() * w.element_size() for w in llama_8b.weights.values()
    )
    assert len(data["layers"]) == 34 and data["stage_balance"] < 1.2
    assert data["communication"]["fabric_shift"] > 0 and data["communication"]["fabric_reduce"] > 0


def test_70b_shaped_llama_is_refused_pipelined_and_streamed():
    # Llama-3-70B's shapes with 20 of its 80 layers: 38 GB of bf16 weights, over WSE-2's 30.5.
    model = models.build("llama-70b", device="meta", dtype=torch.bfloat16, num_layers=20)
    compiled = compiler.compile(model, models.example_inputs("llama-70b", seq=32), target="wse2")
    with pytest.raises(
        PlacementError, match=r"needs 3\d\.\d\d GB .* has 30\.54 GB usable"
    ) as error:
        place(compiled.mlir, "wse2", "pipelined")
    assert error.value.needed_bytes > error.value.available_bytes
    plan = place(compiled.mlir, "wse2", "auto")
    data = plan.report.to_dict()
    assert data["mode"] == "streaming" and data["fits"]
    assert data["bytes_by_kind"]["weights_streamed"] > 38e9
    assert "pipelined placement needs" in data["mode_reason"]
