"""The family matrix (tests/families.py): the enumeration of transformers' causal-LM families,
a representative subset through the cheap stages, and (slow) every family through every stage.
`benchmarks/families.py` prints the whole table."""

from __future__ import annotations

import families
import pytest

# Learned positions (GPT-2), RoPE with GQA and biases (Qwen2), SSM (Mamba), MoE (Mixtral).
REPRESENTATIVE = ("gpt2", "qwen2", "mamba", "mixtral")
CHEAP = ("reference", "tiled", "jax-fp32", "jax-bf16")


def test_every_causal_lm_family_is_kept_or_excluded_with_a_reason():
    mapping = families._mapping()
    kept, excluded = families.families(), families.exclusions()
    assert set(kept) | set(excluded) == set(mapping) and not set(kept) & set(excluded)
    assert set(families.EXCLUDED) <= set(mapping), "stale exclusions"
    assert all(len(reason) > 20 for reason in excluded.values())
    assert len(kept) >= 100  # transformers 5.24: 138 of 196
    for family in ("gpt2", "llama", "mamba", "mamba2", "jamba", "mixtral", "zamba2", "bamba"):
        assert family in kept
    # an alias leaves its class to the family that spells it
    assert excluded["exaone"] == "alias: same model class LlamaForCausalLM as llama"
    assert excluded["bert"].startswith("bidirectional encoder")
    assert excluded["bart"].startswith("decoder half of an encoder-decoder")


def test_tiny_configs_are_tiny():
    for family in (*REPRESENTATIVE, "jamba", "mamba2", "deepseek_v3", "zamba2"):
        config = families.tiny_config(family)
        text = config.get_text_config(decoder=True)
        assert text.vocab_size == 128 and text.num_hidden_layers <= 4, family
    deepseek = families.tiny_config("deepseek_v3")
    assert (deepseek.n_routed_experts, deepseek.num_experts_per_tok) == (4, 2)
    assert families.tiny_config("jamba").layers_block_type == ["mamba", "attention"]


@pytest.mark.parametrize("family", REPRESENTATIVE)
def test_representative_family_matches_eager_on_every_runtime(family):
    cells = families.run_family(family, CHEAP)
    failed = {stage: cell.error for stage, cell in cells.items() if not cell.ok}
    assert not failed, failed


@pytest.mark.parametrize("family", ["olmoe", "nemotron_h", "phimoe"])
def test_moe_family_with_its_own_router_matches_eager(family):
    """Experts classes added to the MoE rewrite by name, each with HF's own router (whose
    `torch.topk` lowers as a sort): reference and JAX against eager."""
    cells = families.run_family(family, ("reference", "jax-fp32"))
    failed = {stage: cell.error for stage, cell in cells.items() if not cell.ok}
    assert not failed, failed


def test_a_failure_is_a_short_cell_with_the_full_error():
    cells = families.run_family("no-such-family", ("reference", "jax-bf16"))
    assert [cell.ok for cell in cells.values()] == [False, False]
    assert cells["reference"].mark == "KeyError: 'no-such-family'"
    assert "no-such-family" in cells["reference"].error


@pytest.mark.slow  # minutes per family; the representative families above run the same code
@pytest.mark.parametrize("family", families.families())
def test_family_on_every_stage(family):
    cells = families.run_family(family)
    failed = {stage: cell.error for stage, cell in cells.items() if not cell.ok}
    assert not failed, failed


def test_tiny_configs_follow_the_family_rules():
    """Partial rotary stays within a tiny head, a heterogeneous config gets tiny per-layer
    values, and per-layer-type RoPE left empty gets default RoPE per type."""
    assert families.tiny_config("gptj").rotary_dim == 8
    gemma4 = families.tiny_config("gemma4_text")
    assert [gemma4.per_layer_config[i].head_dim for i in range(2)] == [16, 32]
    dots3 = families.tiny_config("dots3_note_text")
    assert {dots3.per_layer_config[i].num_attention_heads for i in range(2)} == {4}
    compass = families.tiny_config("cohere_compass_text")
    assert compass.rope_parameters["full_attention"]["rope_type"] == "default"
    assert "gemma4_assistant" in families.exclusions()
