"""Chunked prefill: the scan from an initial state, and every model's chunk step (issue 12)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import assert_matches

import compiler
import models
from core.custom_ops import selective_scan, selective_scan_step
from core.errors import PlacementError
from runtime import tiled
from simulator import phases
from simulator.phases import (
    SimOptions,
    prefill_key,
    simulate_placed,
    simulate_prefill,
)
from simulator.placements import PlacementCache


@torch.no_grad()
def test_scan_from_a_random_state_equals_the_step_recurrence():
    b, d, n, length = 2, 6, 4, 9
    u, delta, z = (torch.randn(b, d, length) for _ in range(3))
    a, bb, c = -torch.rand(d, n), torch.randn(b, n, length), torch.randn(b, n, length)
    d_skip, bias, h0 = torch.randn(d), torch.randn(d), torch.randn(b, d, n)
    y, h = selective_scan(u, delta, a, bb, c, d_skip, z, bias, True, h0)
    state, ys = h0, []
    for t in range(length):
        y_t, state = selective_scan_step(
            state, u[..., t], delta[..., t], a, bb[..., t], c[..., t], d_skip, z[..., t], bias, True
        )
        ys.append(y_t)
    torch.testing.assert_close(y, torch.stack(ys, -1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h, state, rtol=1e-6, atol=1e-6)
    assert (h - selective_scan(u, delta, a, bb, c, d_skip, z, bias, True)[1]).abs().max() > 0.1
    # the placed PEs' chunked scan and the JAX rule start from h0 too
    ins = tiled.Instruction("selective_scan", (), (), (), {"delta_softplus": True})
    got = tiled.chunked_scan(ins, u, delta, a, bb, c, d_skip, z, bias, 4, h0)
    torch.testing.assert_close(got[0], y, rtol=1e-6, atol=1e-6)


def _chunked(model: models.CausalLM, ids: torch.Tensor, chunk: int):
    """Run `ids` through `prefill_chunk` `chunk` tokens at a time from the zero state."""
    state = model.init_state(ids.shape[0])
    for start in range(0, ids.shape[1], chunk):
        at = torch.tensor([start])
        logits, state = model.prefill_chunk(ids[:, start : start + chunk], at, state)
    return logits, state


@torch.no_grad()
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-mamba", "tiny-hybrid"])
def test_chunks_equal_the_whole_prompt(name):
    model = models.build(name)
    (ids,) = models.example_inputs(name, 2, 32)
    want_logits, want_state = model.prefill(ids, all_logits=False)
    got_logits, got_state = _chunked(model, ids, 8)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    assert want_logits.abs().max() > 0.1
    for got, want in zip(got_state, want_state, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # decoding on from the chunked state equals decoding on from the whole-prompt state
    nxt, at = ids[:, :1], torch.tensor([32])
    got = model.decode(nxt, at, got_state)[0]
    torch.testing.assert_close(got, model.decode(nxt, at, want_state)[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-mamba"])
def test_compiled_chunk_step_matches_eager_on_the_reference_runtime(name):
    model = models.build(name)
    (ids,) = models.example_inputs(name, 1, 32)
    _, state = _chunked(model, ids[:, :16], 8)  # a non-zero state: 16 tokens in
    args = (ids[:, 16:24], torch.tensor([16]), *state)
    compiled = compiler.compile(model.prefill_chunk_module(), args, target=None)
    scans = [i for i in compiled.program.instructions if i.op == "selective_scan"]
    assert len(scans) == (2 if name == "tiny-mamba" else 0)
    assert all(i.operands[8] is not None for i in scans)  # started from the carried state
    want = model.prefill_chunk_module()(*args)
    for runtime in ("reference", "jax") if scans else ("reference",):
        for got, expected in zip(compiled.using(runtime)(*args), want, strict=True):
            assert_matches(got, expected)


CHUNK = 64  # tokens per chunk for the tiny models; prompts of 2 chunks or more are chunked


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(phases, "PREFILL_CHUNK_TOKENS", CHUNK)
    monkeypatch.setattr(phases, "CHUNKED_PREFILL_MIN_CHUNKS", 2)


def _prefill(name: str, seq: int, chunk: bool):
    """Tiny model `name`'s pipelined prefill of `seq` tokens on mesh-16x16: the simulated
    phase placed per chunk, or the whole-prompt placement (`chunk=False`)."""
    options = SimOptions(target="mesh-16x16", seq=seq, mode="pipelined", decode_steps=0)
    placements = PlacementCache()
    if chunk:
        return simulate_prefill(name, options, placements)
    return placements.place(replace(prefill_key(name, options), chunk=0))


@pytest.mark.parametrize("name, fullest", [("tiny-mamba", 14_160), ("tiny-gpt2", 26_392)])
def test_a_prompt_that_overflows_whole_fits_placed_per_chunk(name, fullest):
    with pytest.raises(PlacementError, match="mesh-16x16 has"):
        _prefill(name, 4096, chunk=False)
    phase = _prefill(name, 4096, chunk=True)
    assert phase.report.sram_bytes_per_pe_max == fullest  # of 40,960 usable
    assert phase.sim.mode == "pipelined" and phase.sim.chunks == 4096 // CHUNK
    assert f"placed per chunk: the chunk step of {CHUNK} tokens" in phase.notes[0]
    slowest = max(layer.busy_cycles for layer in phase.sim.layers)
    assert phase.cycles == phase.sim.makespan_cycles + 63 * slowest


@pytest.mark.parametrize("name", ["tiny-mamba", "tiny-gpt2"])
def test_chunked_prefill_time_is_close_to_the_whole_prompts_where_both_fit(name):
    """512 tokens, 8 chunks, within 10%: Mamba 412,552 vs 428,301 cycles whole; GPT-2 671,879
    (timed at the middle chunk) vs 720,146 (with the fabric model of docs/fabric.md)."""
    chunked = _prefill(name, 512, chunk=True)
    whole = simulate_placed(
        _prefill(name, 512, chunk=False).program,
        chunked.sim.target,
        dtype="fp16",
        chunks=min(len(chunked.sim.layers), 512 // CHUNK),
    )
    assert 0.9 < chunked.cycles / whole.cycles < 1.1
    assert chunked.cycles == {"tiny-mamba": 412_552, "tiny-gpt2": 671_879}[name]
