"""Tile-by-tile functional simulation of placed models against eager PyTorch, and proof that it
reads the placement: a wrong tile offset, a missing partial sum or a wrong shift breaks it."""

from __future__ import annotations

import functools
import re

import pytest
import torch
from conftest import assert_matches

import compiler
import models
from compiler.mlir import new_context, parse_module
from compiler.passes import PlacementOptions, place_program
from compiler.passes.layout_regions import LayoutRegionsOptions
from compiler.passes.split_matmuls import SplitMatmulsOptions
from compiler.serialize import to_program
from core.errors import SimulationError
from runtime import tiled

MODELS = ["tiny-gpt2", "tiny-llama", "tiny-mamba"]


def compiled_model(name: str, phase: str, target: str):
    model = models.build(name)
    inputs = models.example_inputs(name, seq=8, phase=phase)
    module = model.prefill_module() if phase == "prefill" else model.decode_module()
    with torch.no_grad():
        expected = module(*inputs)
    return compiler.compile(module, inputs, target=target), inputs, expected


def run_text(text: str, compiled, inputs, wafer=None) -> list[torch.Tensor]:
    """Parse placed module text and run it tile by tile (on `wafer` if given)."""
    program = to_program(parse_module(text, new_context()))
    if wafer is None:
        wafer = tiled.load(program, compiled.weights, compiled.target)
    return tiled.run(program, wafer, list(inputs))


@pytest.mark.parametrize("target", ["mesh-8x8", "mesh-12x6"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", MODELS)
def test_tile_by_tile_execution_matches_eager(name, phase, target):
    compiled, inputs, expected = compiled_model(name, phase, target)
    placed = place_program(compiled.mlir, compiled.target)
    assert placed.mode == "pipelined"
    outputs = tiled.execute(placed.program, compiled.weights, list(inputs), compiled.target)
    assert len(outputs) == len(expected)
    for actual, want in zip(outputs, expected, strict=True):
        assert_matches(actual, want)


@pytest.mark.parametrize("algorithm", ["chain", "tree", "two_phase"])
def test_every_reduction_algorithm_matches_eager(algorithm):
    compiled, inputs, expected = compiled_model("tiny-gpt2", "decode", "mesh-8x8")
    options = PlacementOptions(matmuls=SplitMatmulsOptions(reduce_algorithm=algorithm))
    placed = place_program(compiled.mlir, compiled.target, options=options)
    assert f'algorithm = "{algorithm}"' in placed.mlir
    outputs = tiled.execute(placed.program, compiled.weights, list(inputs), compiled.target)
    assert_matches(outputs[0], expected[0])


def test_streaming_mode_streams_weights_in_and_matches_eager():
    compiled, inputs, expected = compiled_model("tiny-llama", "prefill", "mesh-12x6")
    placed = place_program(compiled.mlir, compiled.target, mode="streaming")
    assert 'home = "external"' in placed.mlir and 'home = "sram"' not in placed.mlir
    wafer = tiled.load(placed.program, compiled.weights, compiled.target)
    assert not wafer.sram.any(), "nothing is resident before the run"
    outputs = tiled.run(placed.program, wafer, list(inputs))
    for actual, want in zip(outputs, expected, strict=True):
        assert_matches(actual, want)


@functools.cache
def gpt2_prefill(dataflow: str):
    """tiny-gpt2 prefill placed with one GEMM dataflow, and its wafer loaded from that plan."""
    compiled, inputs, expected = compiled_model("tiny-gpt2", "prefill", "mesh-8x8")
    options = PlacementOptions(layout=LayoutRegionsOptions(gemm_dataflow=dataflow))
    placed = place_program(compiled.mlir, compiled.target, options=options)
    wafer = tiled.load(placed.program, compiled.weights, compiled.target)
    return compiled, inputs, expected, placed, wafer


def corrupt(text: str, pattern: str, change) -> str:
    """`text` with the first match of `pattern` replaced by `change(match)`."""
    bad = re.sub(pattern, change, text, count=1)
    assert bad != text, f"no match for {pattern}"
    return bad


def test_the_placed_text_runs_on_the_loaded_wafer():
    compiled, inputs, expected, placed, wafer = gpt2_prefill("cannon")
    assert_matches(run_text(placed.mlir, compiled, inputs, wafer)[0], expected[0])


def test_a_wrong_tile_offset_breaks_the_result():
    compiled, inputs, expected, placed, wafer = gpt2_prefill("broadcast")
    bad = corrupt(
        placed.mlir,
        r"(sram_offset = )(\d+)( : i64, stage = \d+ : i64, tile_dims = \[1, 0\])",
        lambda m: f"{m[1]}{int(m[2]) + 4}{m[3]}",
    )
    actual = run_text(bad, compiled, inputs, wafer)[0]
    assert (actual - expected[0]).abs().max() > 1e-3


def test_a_missing_partial_sum_breaks_the_result():
    compiled, inputs, expected, placed, wafer = gpt2_prefill("broadcast")
    bad = corrupt(
        placed.mlir,
        r'(fabric_reduce"\(%\d+\) \{algorithm = "\w+", axis = "col", group = \d+ : i64, '
        r"region = \[\d+, \d+, \d+, )([2-9]|\d\d+)\]",
        lambda m: f"{m[1]}{int(m[2]) - 1}]",
    )
    actual = run_text(bad, compiled, inputs, wafer)[0]
    assert (actual - expected[0]).abs().max() > 1e-3


def test_a_wrong_cannon_skew_breaks_the_result():
    compiled, inputs, expected, placed, wafer = gpt2_prefill("cannon")
    bad = corrupt(placed.mlir, r"(fabric_shift.*?skew = )1", lambda m: f"{m[1]}0")
    actual = run_text(bad, compiled, inputs, wafer)[0]
    assert (actual - expected[0]).abs().max() > 1e-3


def test_overlapping_tiles_are_refused_when_loading():
    compiled, _, _, placed, _ = gpt2_prefill("broadcast")
    lines = placed.mlir.splitlines()
    tiles = re.compile(r'home = "sram", region = \[(\d+), (\d+), \d+, \d+\], sram_offset = (\d+)')
    first: dict[tuple[str, str], str] = {}
    for i, line in enumerate(lines):
        found = tiles.search(line)
        if found and found.group(1, 2) in first:
            corner = found.group(1, 2)
            lines[i] = line.replace(f"sram_offset = {found[3]}", f"sram_offset = {first[corner]}")
            break
        if found:
            first[found.group(1, 2)] = found[3]
    program = to_program(parse_module("\n".join(lines), new_context()))
    with pytest.raises(SimulationError, match="overlaps"):
        tiled.load(program, compiled.weights, compiled.target)


def test_weights_are_only_read_through_their_tiles():
    compiled, inputs, _ = compiled_model("tiny-llama", "decode", "mesh-8x8")
    with pytest.raises(SimulationError, match="not through its tiles"):
        tiled.execute(compiled.program, compiled.weights, list(inputs), compiled.target)


@pytest.mark.parametrize("algorithm", ["chain", "tree", "two_phase"])
@pytest.mark.parametrize("count", [1, 2, 5, 8, 13])
def test_reduction_schedules_add_every_partial_once(algorithm, count):
    rows = list(range(10, 10 + count))
    steps = tiled.reduction_schedule(algorithm, rows, group=3)
    values = {r: 2.0**i for i, r in enumerate(rows)}
    for dst, src in steps:
        values[dst] += values[src]
    assert values[rows[0]] == 2.0**count - 1
    if steps:
        values = {r: 2.0**i for i, r in enumerate(rows)}
        for dst, src in steps[:-1]:
            values[dst] += values[src]
        assert values[rows[0]] != 2.0**count - 1, "dropping the last add loses a partial sum"
