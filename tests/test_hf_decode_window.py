"""Hugging Face decode past a sliding window, and BLOOM's ALiBi decode: a prompt longer than the
window, then decode steps, compiled by Wafer on the reference runtime over the explicit KV
cache (`models.hf_state`), give eager Hugging Face's logits of the
whole sequence."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_matches
from families import tiny_config

import compiler
import models
from models import hf_state
from simulator.cli import main as wafersim_main

PROMPT, TOTAL, WINDOW = 6, 11, 4  # prompt and prompt + decode both longer than the window
IDS = torch.randint(0, 64, (2, TOTAL), generator=torch.Generator().manual_seed(1))


def _model(family: str) -> torch.nn.Module:
    config = tiny_config(family)
    if family != "bloom":
        config.sliding_window = WINDOW
    return models.build_hf(config, dtype=torch.float32, seed=0)


def _steps(prefill, decode) -> list[torch.Tensor]:
    """Last-position logits of prefilling `PROMPT` tokens, then of each decode step."""
    logits, *state = prefill(IDS[:, :PROMPT])
    out = [logits[:, -1]]
    for position in range(PROMPT, TOTAL):
        logits, *state = decode(IDS[:, position : position + 1], torch.tensor([position]), *state)
        out.append(logits[:, -1])
    return out


# mistral: every layer slides (one mask, SDPA); gemma2 and gpt_oss: sliding and full layers
# (a mask per layer type, eager attention; gpt_oss with sinks and experts); gemma3_text: the
# same with SDPA; bloom: ALiBi.
@pytest.mark.parametrize("family", ["mistral", "gemma2", "gemma3_text", "gpt_oss", "bloom"])
def test_compiled_decode_matches_eager_past_the_window(family):
    _assert_compiled_decode_matches_eager(_model(family))


def _assert_compiled_decode_matches_eager(model: torch.nn.Module) -> None:
    """Prefill and decode compiled once (decode at `PROMPT`), run over every step, against
    eager's logits of the whole sequence."""
    with torch.no_grad():
        expected = model(IDS, use_cache=False).logits[:, PROMPT - 1 :]
        state = hf_state.HFPrefill(model, TOTAL)(IDS[:, :PROMPT])[1:]
    prefill = compiler.compile(hf_state.HFPrefill(model, TOTAL), (IDS[:, :PROMPT],))
    step = (IDS[:, PROMPT:][:, :1], torch.tensor([PROMPT]), *state)
    decode = compiler.compile(hf_state.HFDecode(model), step)
    assert_matches(torch.stack(_steps(prefill, decode), 1), expected)


# biogpt and mpt do shape arithmetic on the cache's query offset: they decode under one
# explicit 4-D mask (no offset), as every family without sliding-window layers does.
@pytest.mark.parametrize("family", ["biogpt", "mpt", "llama"])
def test_compiled_decode_matches_eager_under_an_explicit_mask(family):
    model = models.build_hf(tiny_config(family), dtype=torch.float32, seed=0)
    assert hf_state.HFDecode(model).masked
    _assert_compiled_decode_matches_eager(model)


def test_the_window_matters():
    """Past the window, gemma2's eager logits differ from those of the same weights with a
    window longer than the sequence: the decode test above checks the window is kept."""
    with torch.no_grad():
        windowed = _model("gemma2")(IDS, use_cache=False).logits
        config = tiny_config("gemma2")
        config.sliding_window = 64
        unwindowed = models.build_hf(config, dtype=torch.float32, seed=0)(IDS, use_cache=False)
    torch.testing.assert_close(windowed[:, :WINDOW], unwindowed.logits[:, :WINDOW])
    assert (windowed[:, PROMPT:] - unwindowed.logits[:, PROMPT:]).abs().max() > 0.05


def test_config_longer_than_its_window_simulates_decode(tmp_path, capsys):
    """`wafersim run` on a Mistral config of window 8 with 16 + 4 tokens: prefill and decode
    over a 20-slot cache simulate (once refused: slots beyond the window)."""
    config = {"model_type": "mistral", "vocab_size": 256, "hidden_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "max_position_embeddings": 64, "sliding_window": 8}  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    args = ["run", str(path), "--seq", "16", "--decode", "4", "--no-cache", "--json"]
    assert wafersim_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prefill"]["cycles"] > 0 and report["decode"]["cycles"] > 0
