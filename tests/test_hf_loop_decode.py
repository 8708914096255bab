"""Hugging Face decode of a family that loops over its recurrent layers (Dory,
`models.hf_loop_state`): the explicit state holds a cache layer per (layer, loop) that keeps
keys and values, and the compiled prefill and decode steps give eager transformers' cached
generation, in both of Dory's recurrent cache modes. And DeepSeek-V4's compressed attention
(`models.hf_compressed_state`): fixed-shape compressed entries, windows and overlaps."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_matches
from families import tiny_config, tiny_inputs
from test_hf_decode_window import IDS, PROMPT, TOTAL

import compiler
import models
from models import hf_state

WINDOW = 4  # the sliding-window layers' window: shorter than the prompt


def _dory(mode: str) -> torch.nn.Module:
    """Dory with an input, two recurrent (a sliding-window and a full-attention layer, run
    twice) and an output layer."""
    config = tiny_config("dory")
    config.num_hidden_layers, config.layer_types = 4, ["sliding_attention", "full_attention"] * 2
    config.n_input_layers, config.n_recurrent_layers, config.n_output_layers = 1, 2, 1
    config.recurrent_kv_cache_mode, config.sliding_window = mode, WINDOW
    return models.build_hf(config, dtype=torch.float32, seed=0)


def _cached_generation(model: torch.nn.Module, ids=IDS, prompt=PROMPT) -> torch.Tensor:
    """Last-position logits of eager transformers' prefill of `prompt` tokens and of each
    one-token step over its own cache."""
    with torch.no_grad():
        out = model(ids[:, :prompt], use_cache=True)
        logits = [out.logits[:, -1]]
        for position in range(prompt, ids.shape[1]):
            step = model(ids[:, position : position + 1], cache=out.cache, use_cache=True)
            logits.append(step.logits[:, -1])
    return torch.stack(logits, 1)


def _steps(prefill, decode, ids=IDS, prompt=PROMPT) -> torch.Tensor:
    logits, *state = prefill(ids[:, :prompt])
    out = [logits[:, -1]]
    for position in range(prompt, ids.shape[1]):
        logits, *state = decode(ids[:, position : position + 1], torch.tensor([position]), *state)
        out.append(logits[:, -1])
    return torch.stack(out, 1)


@pytest.mark.parametrize(("mode", "layers"), [("per_loop", 6), ("last_loop", 4)])
def test_compiled_looped_decode_matches_cached_generation(mode, layers):
    """per_loop: a cache layer per layer and further loop over the recurrent ones (4 + 2);
    last_loop: one per layer, the first loop reading the last's past."""
    model = _dory(mode)
    expected = _cached_generation(model)
    with torch.no_grad():
        state = hf_state.HFPrefill(model, TOTAL)(IDS[:, :PROMPT])[1:]
        eager = _steps(hf_state.HFPrefill(model, TOTAL), hf_state.HFDecode(model))
    assert len(state) == 2 * layers
    torch.testing.assert_close(eager, expected)
    prefill = compiler.compile(hf_state.HFPrefill(model, TOTAL), (IDS[:, :PROMPT],))
    step = (IDS[:, PROMPT : PROMPT + 1], torch.tensor([PROMPT]), *state)
    decode = compiler.compile(hf_state.HFDecode(model), step)
    assert_matches(_steps(prefill, decode), expected)


def test_last_loop_cache_reads_the_last_loops_past():
    """With the last loop's cache read by the first, cached generation is not one forward over
    the whole sequence (per_loop's is): the test above checks the former."""
    model = _dory("last_loop")
    with torch.no_grad():
        whole = model(IDS, use_cache=False).logits[:, PROMPT - 1 :]
    assert (whole - _cached_generation(model)).abs().max() > 1e-5


RATE = 4  # tokens per compressed entry, CSA and HCA


def _deepseek_v4(top_k: int = 2) -> torch.nn.Module:
    """DeepSeek-V4 with an HCA and a CSA layer, each compressing windows of `RATE` tokens; the
    CSA indexer keeps `top_k` of the up to 4 entries of 16 tokens."""
    config = tiny_config("deepseek_v4")
    config.compress_rates = dict.fromkeys(("compressed_sparse_attention",
                                           "heavily_compressed_attention"), RATE)  # fmt: skip
    config.index_topk = top_k
    return models.build_hf(config, dtype=torch.float32, seed=0)


# 3: no window complete in the prefill (no overlap yet); 6: one, and a part-filled window
@pytest.mark.parametrize("prompt", [3, 6])
def test_compiled_compressed_attention_decode_matches_cached_generation(prompt):
    model = _deepseek_v4()
    ids = tiny_inputs(model)
    expected = _cached_generation(model, ids, prompt)
    with torch.no_grad():
        state = hf_state.HFPrefill(model, ids.shape[1])(ids[:, :prompt])[1:]
        full = model(ids, use_cache=False).logits[:, prompt - 1 :]
    torch.testing.assert_close(expected, full)  # V4's cached generation: one forward's
    layout = hf_state.HFDecode(model).layout
    assert layout[0] == ("keys", "compressor:entries", "compressor:buffer_kv",
                         "compressor:buffer_gate")  # fmt: skip
    assert len(layout[1]) == 1 + 2 * 5  # CSA: overlaps, and the indexer's own
    assert state[1].shape == (ids.shape[0], ids.shape[1] // RATE, model.config.head_dim)
    prefill = compiler.compile(hf_state.HFPrefill(model, ids.shape[1]), (ids[:, :prompt],))
    step = (ids[:, prompt : prompt + 1], torch.tensor([prompt]), *state)
    decode = compiler.compile(hf_state.HFDecode(model), step)
    assert_matches(_steps(prefill, decode, ids, prompt), expected)


def test_compressed_attention_indexer_selects():
    """With 2 of up to 4 entries per query the logits differ from attending to every entry:
    the test above checks the indexer's selection is kept."""
    ids = tiny_inputs(_deepseek_v4())
    with torch.no_grad():
        sparse = _deepseek_v4()(ids, use_cache=False).logits
        dense = _deepseek_v4(top_k=64)(ids, use_cache=False).logits
    assert (sparse[:, 12:] - dense[:, 12:]).abs().max() > 1e-4
