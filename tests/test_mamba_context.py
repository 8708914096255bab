"""Mamba at long context: layout sizes a weight's rectangle by its consumer's results too (the
depthwise convolution runs on the whole stage, a GEMM with a large output gets a rectangle for
it and broadcasts), so a prompt that overflowed a small target fits and still runs right."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import assert_matches

import compiler
import models
from compiler.passes import PlacementOptions, layout_regions, place_program
from compiler.passes.layout_regions import LayoutRegionsOptions
from core.errors import PlacementError
from core.target import load_target
from runtime import tiled


@torch.no_grad()
def test_tiny_mamba_prompt_that_overflowed_a_small_mesh_now_fits_and_runs(monkeypatch):
    seq, target = 512, load_target("mesh-16x16")
    model = models.build("tiny-mamba")
    ids = models.example_inputs("tiny-mamba", 1, seq)
    compiled = compiler.compile(model.prefill_module(), ids, target=None)
    with monkeypatch.context() as patch:  # the old layout: rectangles by weight bytes alone
        patch.setattr(layout_regions, "_on_whole_stage", lambda *_: False)
        inf = float("inf")
        old = PlacementOptions(layout=LayoutRegionsOptions(result_share=inf, cannon_share=inf))
        with pytest.raises(PlacementError) as failed:
            place_program(compiled.mlir, target, mode="pipelined", options=old)
    peak = int(re.search(r"needs ([\d,]+) B of SRAM on PE", str(failed.value))[1].replace(",", ""))
    assert peak > 3 * target.usable_sram_bytes_per_pe  # the convolution's output on few PEs
    placed = place_program(compiled.mlir, target, mode="pipelined")
    fullest = placed.report.sram_bytes_per_pe_max
    assert 0.6 * target.usable_sram_bytes_per_pe < fullest <= target.usable_sram_bytes_per_pe
    assert fullest < peak / 4
    convs = [i for i in placed.program.instructions if i.op == "depthwise_conv1d"]
    stages = placed.report.layers
    assert [tuple(i.attrs["region"]) for i in convs] == [tuple(s.region) for s in stages[1:3]]
    outputs = tiled.execute(placed.program, compiled.weights, list(ids), target)
    for got, want in zip(outputs, model.prefill_module()(*ids), strict=True):
        assert_matches(got, want)
