"""Hugging Face state dicts loaded into the reference models give the same logits, and the
Hugging Face twins of registered models have their shapes."""

import pytest
import torch
import transformers

import models
from models import (
    GPT2Config,
    GPT2Model,
    HybridConfig,
    LlamaModel,
    MambaModel,
    build_hf,
    config_from_hf,
    config_to_hf,
    from_hf_state_dict,
)


def _randomized(hf_model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace every HF parameter with seeded N(0, 0.2) noise so no mapping bug can hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return hf_model.eval()


CASES = {
    "gpt2": (
        transformers.GPT2Config(
            vocab_size=128,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
        ),
        GPT2Model,
    ),
    "llama-gqa": (
        transformers.LlamaConfig(
            vocab_size=128,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=96,
            max_position_embeddings=32,
            rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        ),
        LlamaModel,
    ),
    "mamba": (
        transformers.MambaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2),
        MambaModel,
    ),
}


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_logits_match_hugging_face(case):
    hf_config, model_cls = CASES[case]
    hf = _randomized(build_hf(hf_config))
    model = from_hf_state_dict(model_cls(config_from_hf(hf_config)).eval(), hf.state_dict())
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    want = hf(ids, use_cache=False).logits
    assert want.std() > 0.1
    torch.testing.assert_close(model(ids), want, rtol=0, atol=1e-4)


def test_config_from_hf():
    gpt2 = config_from_hf(CASES["gpt2"][0])
    assert gpt2 == GPT2Config(
        vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, max_seq_len=32
    )
    llama = config_from_hf(CASES["llama-gqa"][0])
    assert (llama.num_heads, llama.num_kv_heads, llama.rope_theta) == (4, 2, 5000.0)
    mamba = config_from_hf(CASES["mamba"][0])
    assert (mamba.d_inner, mamba.d_state, mamba.time_step_rank) == (128, 16, 4)
    scaled = transformers.LlamaConfig(
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 5e5,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    with pytest.raises(ValueError, match="RoPE"):
        config_from_hf(scaled)


def test_state_dict_without_tied_head_and_unknown_keys():
    hf_config, model_cls = CASES["gpt2"]
    hf = _randomized(build_hf(hf_config))
    state = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    model = from_hf_state_dict(model_cls(config_from_hf(hf_config)), state)
    assert torch.equal(model.lm_head.weight, hf.transformer.wte.weight)
    with pytest.raises(ValueError, match="unexpected"):
        from_hf_state_dict(model, {**state, "transformer.h.0.attn.rotary.weight": torch.zeros(1)})


# Each tiny model's config with the defaults the Hugging Face config spells out.
TWINS = {"tiny-gpt2": {}, "tiny-llama": {"head_dim": 16}, "tiny-mamba": {"dt_rank": 4}}


@pytest.mark.parametrize("name", TWINS)
@torch.no_grad()
def test_hugging_face_twin_of_a_registered_model(name):
    hf = build_hf(name)
    assert config_from_hf(hf.config) == models.config(name, **TWINS[name])
    again = build_hf(name)
    assert all(torch.equal(a, b) for a, b in zip(hf.parameters(), again.parameters(), strict=True))
    assert not torch.equal(build_hf(name, seed=1).lm_head.weight, hf.lm_head.weight)
    hf = _randomized(hf)
    model = from_hf_state_dict(models.build(name), hf.state_dict())
    ids = models.example_inputs(name, batch=2, seq=12)[0]
    want = hf(ids, use_cache=False).logits
    assert want.std() > 0.1
    torch.testing.assert_close(model(ids), want, rtol=0, atol=1e-4)


def test_no_hugging_face_twin_of_a_hybrid():
    with pytest.raises(ValueError, match="HybridConfig"):
        config_to_hf(HybridConfig())
