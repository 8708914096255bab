"""Hugging Face decode over explicit conv/SSM state (`models.hf_recurrent_state`), state
families keep outside transformers' cache (`models.hf_own_state`: RWKV, xLSTM,
RecurrentGemma) and shared-KV layers (Gemma-3n): they prefill and decode as pure functions
that match eager transformers, compile with Wafer, and simulate."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from conftest import assert_matches
from families import tiny_inputs, tiny_model

import compiler
from core.errors import NoKVCacheError
from models import hf_files, hf_own_state, hf_state
from simulator.hf_sim import simulate_hf
from simulator.phases import SimOptions

SLOTS = 12
FAMILIES = ["mamba", "mamba2", "falcon_mamba", "bamba", "jamba", "zamba2", "zamba", "nemotron_h",
            "falcon_h1", "granitemoehybrid", "rwkv", "xlstm", "recurrent_gemma",
            "gemma3n_text"]  # fmt: skip


def _setup(family: str):
    """The tiny seeded model, 9 token ids, eager logits of all 9, and the state of prefilling
    the first 8 and of prefilling all 9."""
    model = tiny_model(family)
    ids = tiny_inputs(model)[:, :9]
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
        after_8 = hf_state.HFPrefill(model, SLOTS)(ids[:, :8])
        after_9 = hf_state.HFPrefill(model, SLOTS)(ids)[1:]
    return model, ids, expected, after_8, after_9


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_step_matches_eager_and_round_trips(family):
    """Prefill 8 tokens, decode the 9th: eager HF's logits at positions 7 and 8; the step's
    new state is the state of prefilling all 9 tokens; a zero state has the same shapes."""
    model, ids, expected, (logits, *state), after_9 = _setup(family)
    with torch.no_grad():
        step, *new_state = hf_state.HFDecode(model)(ids[:, 8:], torch.tensor([8]), *state)
    assert_matches(logits[:, -1], expected[:, 7])
    assert_matches(step[:, -1], expected[:, 8])
    assert len(new_state) == len(state) >= 2
    for got, want in zip(new_state, after_9, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    zeros = hf_state.init_state(model, 2, SLOTS)
    assert [z.shape for z in zeros] == [s.shape for s in state]
    assert all(not z.any() for z in zeros)


def _compiled_decode(family: str, runtimes: tuple[str, ...]) -> None:
    model, ids, expected, (_, *state), after_9 = _setup(family)
    prefill = compiler.compile(hf_state.HFPrefill(model, SLOTS), (ids[:, :8],))
    decode = compiler.compile(hf_state.HFDecode(model), (ids[:, 8:], torch.tensor([8]), *state))
    for runtime in runtimes:
        logits, *got_state = prefill.using(runtime)(ids[:, :8])
        step, *new_state = decode.using(runtime)(ids[:, 8:], torch.tensor([8]), *got_state)
        assert_matches(logits[:, -1], expected[:, 7])
        assert_matches(step[:, -1], expected[:, 8])
        for got, want in zip(new_state, after_9, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["mamba", "bamba"])
def test_compiled_decode_matches_eager(family):
    """Prefill and decode compiled by Wafer, on the reference runtime and JAX."""
    _compiled_decode(family, ("reference", "jax"))


@pytest.mark.parametrize("family", ["rwkv", "recurrent_gemma"])
def test_compiled_decode_of_own_state_matches_eager(family):
    """RWKV (a batch of one-token steps under `vmap`) and RecurrentGemma (state on its
    modules, a local-attention KV cache) on the reference runtime."""
    _compiled_decode(family, ("reference",))


MORE = ["mamba2", "falcon_mamba", "jamba", "zamba2", "nemotron_h", "falcon_h1", "xlstm",
        "gemma3n_text"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("family", MORE)
def test_compiled_decode_matches_eager_more_families(family):
    _compiled_decode(family, ("reference",))


BAMBA = {"model_type": "bamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
         "mamba_n_heads": 4, "mamba_d_head": 32, "mamba_d_state": 8, "mamba_n_groups": 1,
         "mamba_chunk_size": 8, "attn_layer_indices": [1]}  # fmt: skip


XLSTM = {"model_type": "xlstm", "hidden_size": 64, "embedding_dim": 64, "num_hidden_layers": 2,
         "num_blocks": 2, "num_heads": 4, "vocab_size": 128, "chunk_size": 8}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "held"),
    [(BAMBA, "conv/SSM state of"), (XLSTM, "mLSTM state (C, n, m) of 2 layer(s)")],
    ids=["bamba", "xlstm"],
)
def test_config_simulates_prefill_and_decode_over_its_state(tmp_path, config, held):
    """A Bamba config (a Mamba-2 layer and an attention layer: conv/SSM state and a KV cache)
    and an xLSTM one (its own (C, n, m) state) on the meta device: the decode phase holds that
    state (tests/test_hf_sim.py: Mamba from the CLI)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    sim = simulate_hf(str(path), SimOptions(target="wse3", seq=16, decode_steps=4, dtype="bf16"))
    assert sim.prefill.sim.cycles > 0 and sim.decode is not None
    assert sim.decode.sim.cycles > 0 and sim.decode.steps == 4
    assert any(held in note for note in sim.decode.notes)


RECURRENT_GEMMA = {"model_type": "recurrent_gemma", "hidden_size": 64, "num_hidden_layers": 2,
                   "vocab_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "intermediate_size": 128, "lru_width": 64, "head_dim": 16,
                   "block_types": ["recurrent", "attention"]}  # fmt: skip


def _recurrent_gemma(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(RECURRENT_GEMMA))
    return hf_files.build(str(path), device="meta")


def test_state_kept_outside_the_cache_is_a_named_error(tmp_path, monkeypatch):
    """A family keeping recurrent state where no explicit state reaches it (RecurrentGemma's
    modules, were `hf_own_state` not to move it): decode is refused by name, saying what is
    missing; zero state is shaped as the one-token prefill leaves it otherwise."""
    model = _recurrent_gemma(tmp_path)
    shapes = [tuple(t.shape) for t in hf_state.init_state(model, 1, 8)]
    assert shapes == [(1, 64, 3), (1, 64), (1, 2, 8, 16), (1, 2, 8, 16)]
    monkeypatch.setattr(hf_own_state, "module_state", lambda *_: contextlib.nullcontext())
    with pytest.raises(
        NoKVCacheError, match="layer 0 keeps its recurrent state outside.*--decode 0"
    ):
        hf_state.init_state(model, 1, 8)


def test_other_errors_are_the_models_own(tmp_path, monkeypatch):
    """`init_state` names missing state only: an error in the model itself surfaces as is."""
    model = _recurrent_gemma(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(model.model, "forward", broken)
    with pytest.raises(RuntimeError, match="a bug in the model"):
        hf_state.init_state(model, 1, 8)
