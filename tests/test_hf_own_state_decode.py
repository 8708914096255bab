"""Decode over state transformers keeps no cache for (`models.hf_own_state`): OpenAI GPT
(GPT-1: no cache at all; its keys and values) and MiniMax (its lightning-attention layers'
(K^T V) state, and its full-attention layers' keys and values under a sliding window).
Prefill and decode, compiled by Wafer on the reference runtime, give eager Hugging Face's
logits of the whole sequence over several steps."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_matches
from families import tiny_inputs, tiny_model

import compiler
from models import hf_state

PROMPT, TOTAL = 8, 13  # MiniMax's tiny window is 8 tokens: decode steps go past it


def _steps(prefill, decode, ids: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """Last-position logits of prefilling `PROMPT` tokens, then of each decode step up to
    `TOTAL`, stacked; and the state after them."""
    logits, *state = prefill(ids[:, :PROMPT])
    out = [logits[:, -1]]
    for position in range(PROMPT, TOTAL):
        logits, *state = decode(ids[:, position : position + 1], torch.tensor([position]), *state)
        out.append(logits[:, -1])
    return torch.stack(out, 1), tuple(state)


@pytest.mark.parametrize(
    ("family", "shapes"),
    [
        # per layer: keys and values (batch, heads, slots, head dim)
        ("openai-gpt", [(2, 4, TOTAL, 16)] * 4),
        # a full-attention layer (2 kv heads), then a lightning layer's (K^T V) per head
        ("minimax", [(2, 2, TOTAL, 16), (2, 2, TOTAL, 16), (2, 4, 16, 16)]),
    ],
)
def test_compiled_decode_matches_eager(family, shapes):
    model = tiny_model(family)
    ids = tiny_inputs(model)[:, :TOTAL]
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits[:, PROMPT - 1 :]
        eager, eager_state = _steps(hf_state.HFPrefill(model, TOTAL), hf_state.HFDecode(model), ids)
        state = hf_state.HFPrefill(model, TOTAL)(ids[:, :PROMPT])[1:]
    assert [tuple(t.shape) for t in state] == shapes
    assert_matches(eager, expected)
    prefill = compiler.compile(hf_state.HFPrefill(model, TOTAL), (ids[:, :PROMPT],), target=None)
    step = (ids[:, PROMPT : PROMPT + 1], torch.tensor([PROMPT]), *state)
    decode = compiler.compile(hf_state.HFDecode(model), step, target=None)
    compiled, compiled_state = _steps(prefill.using("reference"), decode.using("reference"), ids)
    assert_matches(compiled, expected)
    for got, want in zip(compiled_state, eager_state, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    zeros = hf_state.init_state(model, 2, TOTAL)
    assert [tuple(z.shape) for z in zeros] == shapes and not any(z.any() for z in zeros)
