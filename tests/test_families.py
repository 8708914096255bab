"""The family matrix (tests/families.py): the enumeration of transformers' causal-LM families,
a representative subset through the cheap stages, and (slow) every family through every stage.
`benchmarks/families.py` prints the whole table."""

from __future__ import annotations

import families
import pytest
import torch

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


def test_a_bf16_expert_choice_that_weight_rounding_flips_passes():
    """AFMoE's tiny config in bf16 on JAX: one token's expert choice flips (its float64 router
    margin is 0.0019, under bf16's rounding), beyond the bf16 tolerance of eager; float64 runs
    whose weights carry bf16 rounding flip it too, so the cell passes, saying so."""
    cell = families.run_family("afmoe", ("jax-bf16",))["jax-bf16"]
    assert cell.ok, cell.error
    assert cell.note.startswith("ill-conditioned, passes on float64: max scaled error")


@torch.no_grad()
def test_xlstm_in_bf16_runs_from_zero_state_as_its_prefill_does():
    """transformers' xLSTM without a cache fails in bf16 (float32 state times bf16 keys); the
    bf16 stage runs its forward from zero state in the model's dtype, which in float32 is the
    forward without a cache bit for bit, and matches eager on JAX in bf16."""
    from models.hf_own_state import XLSTMFromZeroState

    model = families.tiny_model("xlstm")
    ids = families.tiny_inputs(model)
    assert torch.equal(XLSTMFromZeroState(model)(ids), model(ids, use_cache=False).logits)
    bf16 = families.tiny_model("xlstm", torch.bfloat16)
    with pytest.raises(RuntimeError):
        bf16(ids, use_cache=False)
    cell = families.run_family("xlstm", ("jax-bf16",))["jax-bf16"]
    assert cell.ok, cell.error


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


def test_configs_fill_what_the_family_leaves_unset():
    """Default configs get the fields transformers leaves None by the family's rule, nested
    configs (DBRX) are tiny and get their RoPE theta, and a field's alias gives way to it."""
    ministral = families.default_config("ministral")
    assert ministral.head_dim == ministral.hidden_size // ministral.num_attention_heads == 128
    nemotron = families.default_config("nemotron")
    assert nemotron.num_key_value_heads == nemotron.num_attention_heads == 48
    dbrx = families.default_config("dbrx")
    assert dbrx.attn_config.rope_theta == dbrx.rope_parameters["rope_theta"] == 10000.0
    tiny = families.tiny_config("dbrx")
    assert (tiny.attn_config.kv_n_heads, tiny.num_key_value_heads, tiny.d_model) == (2, 2, 64)
    assert (tiny.ffn_config.ffn_hidden_size, tiny.ffn_config.hidden_size) == (32, 64)
    assert (tiny.ffn_config.moe_num_experts, tiny.ffn_config.moe_top_k) == (4, 2)
    inkling = families.tiny_config("inkling2_text")
    assert (inkling.moe_intermediate_size, inkling.swa_num_attention_heads) == (32, 4)
    loop = families.tiny_config("inkling2_loop_text")
    assert (loop.loop_layer_index_start, loop.loop_layer_index_end) == (1, 2)


def test_bf16_model_keeps_the_family_float32_parameters():
    """As HF builds it in bf16: Inkling-2's router stays float32, with the float32 model's
    seeded values; the rest is bf16."""
    fp32 = families.tiny_model("inkling2_text")
    bf16 = families.tiny_model("inkling2_text", torch.bfloat16)
    router = "model.layers.0.mlp.gate.weight"
    params = dict(bf16.named_parameters())
    assert params[router].dtype == torch.float32
    assert torch.equal(params[router], dict(fp32.named_parameters())[router])
    assert params["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert not families._float32_parameters(families.tiny_config("llama"), torch.bfloat16)


@pytest.mark.parametrize("family", ["dbrx", "inkling2_text"])
def test_nested_config_and_unfold_families_match_eager(family):
    """DBRX's nested configs and Inkling-2's sliding windows (`aten.unfold`) on reference."""
    cells = families.run_family(family, ("reference",))
    assert cells["reference"].ok, cells["reference"].error


@torch.no_grad()
def test_looped_family_prefills_and_decodes_over_explicit_state():
    """Inkling-2-Loop's cache has a layer per pass over its looped layers (made up front, as
    its forward would append them): prefill and a decode step match eager's logits."""
    from models import hf_state

    model = families.tiny_model("inkling2_loop_text")
    ids = families.tiny_inputs(model)[:1]
    out = hf_state.HFPrefill(model, 32)(ids)
    want = model(ids, use_cache=False).logits[:, -1:]
    torch.testing.assert_close(out[0], want)
    # layers 0, 1 and the loop's copy of 1: keys, values and 4 conv states each
    assert len(out) - 1 == len(hf_state.init_state(model, 1, 32)) == 3 * 6
    step = hf_state.HFDecode(model)(torch.tensor([[5]]), torch.tensor([16]), *out[1:])
    want = model(torch.cat([ids, torch.tensor([[5]])], 1), use_cache=False).logits[:, -1:]
    torch.testing.assert_close(step[0], want)
