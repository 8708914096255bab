"""The family matrix's configs (tests/family_configs.py): published checkpoints' values where a
default config leaves fields None, and tiny configs that fit `TEST_MESH`."""

from __future__ import annotations

import families
import family_configs
import pytest

from core.target import load_target

# Families whose tiny config's weights `OVERRIDES` shrinks to fit mesh-8x8
SHRUNK = ("axk2", "deepseek_v32", "glm_moe_dsa", "hy_v4", "ctrl", "kimi_linear", "deepseek_v4",
          "minimax_m3_vl_text", "zaya")  # fmt: skip


def test_default_configs_take_the_published_checkpoint_values():
    dots1 = families.default_config("dots1")
    experts = (dots1.n_routed_experts, dots1.num_experts_per_tok, dots1.n_shared_experts)
    assert experts == (128, 6, 2)
    lfm2 = families.default_config("lfm2_moe")
    assert len(lfm2.layer_types) == lfm2.num_hidden_layers == 32
    assert lfm2.layer_types[:4] == ["conv", "conv", "full_attention", "conv"]
    qwen4 = families.default_config("qwen4_exp_text")
    indexer = (qwen4.indexer_n_heads, qwen4.indexer_kv_heads, qwen4.indexer_head_dim)
    assert indexer == (4, 1, 128) and qwen4.indexer_budget == 2048
    assert qwen4.rope_parameters["partial_rotary_factor"] == 0.25
    assert (
        qwen4.rope_parameters is not family_configs.PUBLISHED["qwen4_exp_text"]["rope_parameters"]
    )
    assert families.default_config("deepseek_v2").num_experts_per_tok == 6


@pytest.mark.parametrize("family", ["dots1", "lfm2_moe", "qwen4_exp_text"])
def test_filled_default_config_builds_on_meta(family):
    """Each failed with a TypeError on a field left None before."""
    model = families.default_model(family)
    params = sum(p.numel() for p in model.parameters())
    assert params > 1e9, params


def _weight_bytes(family: str) -> int:
    return sum(p.numel() * p.element_size() for p in families.tiny_model(family).parameters())


def test_shrunk_tiny_models_fit_the_test_mesh(monkeypatch):
    """Weights of half of mesh-8x8's SRAM at most (at most half what they were without their
    overrides), leaving the rest to activations."""
    mesh = load_target(families.TEST_MESH)
    budget = mesh.usable_sram_bytes_per_pe * mesh.num_pes // 2
    shrunk = {family: _weight_bytes(family) for family in SHRUNK}
    unshrunk = {"zaya": {"num_experts_per_tok": 1}}  # ZAYA's config allows top-1 routing only
    for family in SHRUNK:
        monkeypatch.setitem(family_configs.OVERRIDES, family, unshrunk.get(family, {}))
    for family, weights in shrunk.items():
        assert weights < min(budget, _weight_bytes(family) // 2), (family, weights)


def test_shrunk_tiny_configs_keep_every_layer_kind():
    """DeepSeek-V4's two MoE kinds and two compressed attentions, Kimi's delta-rule and full
    attention layers, one layer each."""
    v4 = families.tiny_config("deepseek_v4")
    assert v4.mlp_layer_types == ["hash_moe", "moe"]
    assert len(set(v4.layer_types)) == 2
    assert families.tiny_config("kimi_linear").layer_types == ["linear_attention", "full_attention"]


def test_ctrl_tiny_model_placed_on_the_test_mesh_matches_eager():
    """CTRL's tiny feed-forward (`dff` 128, not 8,192) places pipelined on mesh-8x8 and its
    simulated logits match eager's."""
    cells = families.run_family("ctrl", ("tiled",))
    assert cells["tiled"].ok, cells["tiled"].error
