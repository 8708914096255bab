"""Reference models compiled end to end: prefill and decode graphs match eager, and greedy
generation through compiled modules reproduces eager generation token for token."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_matches

import compiler
import models
from models.generate import generate, greedy_reference

TINY = ["tiny-gpt2", "tiny-llama", "tiny-mamba", "tiny-hybrid"]


@pytest.mark.parametrize("name", TINY)
def test_prefill_and_decode_graphs_match_eager(name):
    model = models.build(name)
    for phase, graph in (("prefill", model.prefill_module()), ("decode", model.decode_module())):
        inputs = models.example_inputs(name, batch=2, seq=8, phase=phase)
        compiled = compiler.compile(graph, inputs)
        with torch.no_grad():
            expected = graph(*inputs)
        actual = compiled(*inputs)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_matches(a, e)
    scans = sum(i.op == "selective_scan" for i in compiled.program.instructions)
    assert scans == 0, "decode graphs advance the state with a single step, not a scan"


@pytest.mark.parametrize("name", TINY)
def test_compiled_generation_matches_eager_greedy(name):
    model = models.build(name)
    prompt = models.example_inputs(name, batch=1, seq=6)[0]
    prefill = compiler.compile(model.prefill_module(), (prompt,))
    decode_inputs = models.example_inputs(name, batch=1, seq=7, phase="decode")
    decode = compiler.compile(model.decode_module(), decode_inputs)
    tokens = generate(prefill, decode, prompt, max_new_tokens=16)
    assert torch.equal(tokens, greedy_reference(model, prompt, 16))


def test_prefill_has_one_scan_per_mamba_layer():
    model = models.build("tiny-hybrid")
    compiled = compiler.compile(model.prefill_module(), models.example_inputs("tiny-hybrid", seq=8))
    scans = sum(i.op == "selective_scan" for i in compiled.program.instructions)
    mamba_layers = model.config.layer_kinds.count("mamba")
    assert scans == mamba_layers > 0
