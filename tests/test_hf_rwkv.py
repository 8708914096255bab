"""RWKV's WKV in closed form per chunk (`compiler.hf_rwkv`): the same outputs and state as
transformers' loop over tokens, and an exported graph that does not grow with the prompt."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_matches
from families import tiny_inputs, tiny_model
from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

import compiler
from compiler.hf_rwkv import wkv
from models import hf_state


def _state(gen: torch.Generator, batch: int, channels: int) -> list[torch.Tensor]:
    """A (num, den, max) state as a prefill leaves it: den > 0, any max."""
    num = torch.randn(batch, channels, generator=gen)
    den = torch.rand(batch, channels, generator=gen) + 0.1
    return [num, den, torch.randn(batch, channels, generator=gen) * 3]


@pytest.mark.parametrize("chunk", [64, 5])
@pytest.mark.parametrize("key_scale", [1.0, 30.0, 200.0])
@pytest.mark.parametrize("with_state", [False, True])
def test_wkv_matches_hf_loop(chunk, key_scale, with_state):
    """Outputs and final state against HF's loop: decays from exp(-5) to exp(3) per step,
    keys far apart (HF's max trick), a state carried in or none, one chunk or several."""
    gen = torch.Generator().manual_seed(0)
    batch, length, channels = 2, 16, 8
    time_decay = torch.linspace(-5, 3, channels)
    time_first = torch.randn(channels, generator=gen)
    key = torch.randn(batch, length, channels, generator=gen) * key_scale
    value = torch.randn(batch, length, channels, generator=gen)
    state = _state(gen, batch, channels) if with_state else None
    copy = None if state is None else [s.clone() for s in state]
    want, want_state = rwkv_linear_attention_cpu(
        time_decay, time_first, key, value, copy, return_state=True
    )
    got, got_state = wkv(time_decay, time_first, key, value, state, True, chunk=chunk)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got_part, want_part in zip(got_state, want_state, strict=True):
        torch.testing.assert_close(got_part, want_part, rtol=1e-5, atol=1e-5)


def _exported_nodes(model, ids: torch.Tensor) -> int:
    return len(compiler.compile(model, (ids,), target=None).exported.graph.nodes)


def test_tiny_rwkv_compiles_to_eager_logits_and_state():
    """The tiny config (batch 2, seq 16): logits without state, and a prefill's logits and
    five state tensors, compiled on the reference runtime against eager; the exported
    prefill has as many nodes for 16 tokens as for 4 (no loop unrolled over tokens: the graph
    grows by one chunk's nodes per 64 tokens)."""
    model = tiny_model("rwkv")
    ids = tiny_inputs(model)
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
        prefill = hf_state.HFPrefill(model, ids.shape[1])
        eager_logits, *eager_state = prefill(ids)
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
    assert_matches(compiled.using("reference")(ids, use_cache=False).logits, expected)
    compiled_prefill = compiler.compile(prefill, (ids,), target=None)
    logits, *state = compiled_prefill.using("reference")(ids)
    assert_matches(logits, eager_logits)
    assert len(state) == 5
    for got, want in zip(state, eager_state, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert _exported_nodes(prefill, ids) == _exported_nodes(prefill, ids[:, :4])
