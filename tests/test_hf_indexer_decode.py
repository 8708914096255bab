"""Hugging Face decode with a sparse-attention indexer (DeepSeek-V3.2's DSA): the explicit state
(`models.hf_state`) carries each indexed layer's indexer keys beside its keys and values, and
the compiled prefill and decode steps give eager Hugging Face's logits of the whole sequence.
And CPM-Ant's decode, whose forward prepends prompt tokens (`models.hf_prepended`)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_matches
from families import tiny_config, tiny_model
from test_hf_decode_window import PROMPT, TOTAL

import compiler
import models
from models import hf_state

TOP_K = 2  # fewer than the prompt's tokens: the indexer picks which keys each query sees
# 16 indexer heads, and no token 0 (its embedding, the padding row, is zero): else some keys'
# index scores are all cut to 0 by the ReLU, and the compiled top-k may break their ties
# otherwise than eager's.
IDS = torch.randint(1, 64, (2, TOTAL), generator=torch.Generator().manual_seed(1))


def _model(family: str, top_k: int = TOP_K) -> torch.nn.Module:
    config = tiny_config(family)
    if family == "qwen4_exp_text":  # QSA: the top block of 2 tokens, and the tail
        config.indexer_budget, config.indexer_compress_ratio = 2, 2
    else:
        config.index_topk, config.index_n_heads = top_k, 16
    return models.build_hf(config, dtype=torch.float32, seed=0)


def _steps(prefill, decode) -> torch.Tensor:
    """Last-position logits of prefilling `PROMPT` tokens, then of each decode step."""
    logits, *state = prefill(IDS[:, :PROMPT])
    out = [logits[:, -1]]
    for position in range(PROMPT, TOTAL):
        logits, *state = decode(IDS[:, position : position + 1], torch.tensor([position]), *state)
        out.append(logits[:, -1])
    return torch.stack(out, 1)


# axk2: every layer indexed, one explicit mask; dots3_note_text: an indexed layer and a
# sliding-window one (masks from the query offset); qwen4_exp_text: a linear-attention layer
# and a QSA-indexed one, whose indexer reads every slot's rotary angle by its position
@pytest.mark.parametrize("family", ["axk2", "dots3_note_text", "qwen4_exp_text"])
def test_compiled_decode_with_indexer_matches_eager(family):
    model = _model(family)
    with torch.no_grad():
        state = hf_state.HFPrefill(model, TOTAL)(IDS[:, :PROMPT])[1:]
    names = [name for layer in hf_state.HFDecode(model).layout for name in layer]
    assert ("keys", "values", "indexer") in hf_state.HFDecode(model).layout
    indexer = state[names.index("indexer")]
    assert indexer.shape[:2] == (IDS.shape[0], TOTAL)
    prefill = compiler.compile(hf_state.HFPrefill(model, TOTAL), (IDS[:, :PROMPT],))
    step = (IDS[:, PROMPT:][:, :1], torch.tensor([PROMPT]), *state)
    decode = compiler.compile(hf_state.HFDecode(model), step)
    assert_matches(_steps(prefill, decode), _expected(model))


def _expected(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, use_cache=False).logits[:, PROMPT - 1 :]


@pytest.mark.parametrize("family", ["deepseek_v32", "glm_moe_dsa"])
def test_eager_decode_with_indexer_matches_the_whole_sequence(family):
    """The uncompiled prefill and decode steps over the explicit state, against eager."""
    model = _model(family)
    with torch.no_grad():
        steps = _steps(hf_state.HFPrefill(model, TOTAL), hf_state.HFDecode(model))
    torch.testing.assert_close(steps, _expected(model))


def test_the_indexer_selects():
    """With `TOP_K` keys per query the logits differ from those of the same weights attending
    to every key: the tests above check the indexer's selection is kept."""
    with torch.no_grad():
        sparse = _model("axk2")(IDS, use_cache=False).logits
        dense = _model("axk2", top_k=64)(IDS, use_cache=False).logits
    torch.testing.assert_close(sparse[:, :TOP_K], dense[:, :TOP_K])
    assert (sparse[:, PROMPT:] - dense[:, PROMPT:]).abs().max() > 0.01


def test_compiled_cpmant_decode_matches_cached_generation():
    """CPM-Ant's prompt tokens take cache slots before the sequence's; its attention is
    bidirectional, so the reference is transformers' own cached generation (which feeds the
    whole sequence each step), not one forward over the whole sequence."""
    model = tiny_model("cpmant")
    prompt = model.config.prompt_length
    with torch.no_grad():
        out = model(IDS[:, :PROMPT], use_cache=True)
        expected = [out.logits[:, -1]]
        for position in range(PROMPT, TOTAL):
            step = model(IDS[:, : position + 1], cache=out.cache, use_cache=True)
            expected.append(step.logits[:, -1])
        state = hf_state.HFPrefill(model, TOTAL)(IDS[:, :PROMPT])[1:]
        whole = model(IDS, use_cache=False).logits[:, -1]
    assert state[0].shape[-2] == TOTAL + prompt
    assert (whole - expected[-1]).abs().max() > 1  # not what a forward over it all gives
    prefill = compiler.compile(hf_state.HFPrefill(model, TOTAL), (IDS[:, :PROMPT],))
    step = (IDS[:, PROMPT:][:, :1], torch.tensor([PROMPT]), *state)
    decode = compiler.compile(hf_state.HFDecode(model), step)
    assert_matches(_steps(prefill, decode), torch.stack(expected, 1))
