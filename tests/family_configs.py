"""Family configs for the matrix (`families.py`): each decoder-only family of the installed
`transformers` at tiny sizes (`tiny_config`: `TINY`, `LAYER_PATTERNS`, `OVERRIDES`) and at its
default size with what the default leaves unusable filled (`default_config`: the family's own
rules, and `PUBLISHED` checkpoints' values)."""

from __future__ import annotations

import copy
from typing import cast

# Tiny sizes, each set only where the family's config has that field (batch 2, seq 16).
TINY: dict[str, object] = {
    "vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "head_dim": 16,
    "max_position_embeddings": 64, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0,
    "sliding_window": 8, "rotary_dim": 8,
    # mixture of experts
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
    "moe_shared_expert_intermediate_size": 32, "first_k_dense_replace": 1, "n_group": 1,
    "topk_group": 1,
    # multi-head latent attention
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16,
    "v_head_dim": 16,
    # state-space layers: hidden 64 x expand 2 = 128 = 4 heads x 32
    "state_size": 8, "ssm_state_size": 8, "mamba_d_state": 8, "mamba_dt_rank": 8,
    "time_step_rank": 8, "num_heads": 4, "mamba_n_heads": 4, "mamba_num_heads": 4,
    "n_mamba_heads": 4, "mamba_d_head": 32, "mamba_head_dim": 32, "mamba_headdim": 32,
    "n_groups": 1, "mamba_n_groups": 1, "mamba_ngroups": 1, "chunk_size": 8,
    "mamba_chunk_size": 8, "attention_head_dim": 16,
    # gated delta-rule (linear attention) layers
    "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    # OPT's and XGLM's feed-forward width, OPT's embedding projection
    "ffn_dim": 128, "word_embed_proj_dim": 64,
    # per-layer token embeddings and LAuReL blocks (Gemma-3n, Gemma-4)
    "vocab_size_per_layer_input": 128, "hidden_size_per_layer_input": 16, "laurel_rank": 8,
    # sliding-window layers' own heads, the unpadded LM head, relative-bias reach (Inkling-2)
    "swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "swa_head_dim": 16,
    "unpadded_vocab_size": 128, "rel_extent": 8,
    # DBRX's nested attention and expert configs
    "kv_n_heads": 2, "ffn_hidden_size": 32, "moe_num_experts": 4, "moe_top_k": 2,
}  # fmt: skip
# Per-layer pattern fields: their distinct values in order, one layer each (at least 2 layers).
LAYER_PATTERNS = ("layer_types", "layers_block_type", "attention_layers")
# Per-family fixes on top of `TINY`.
OVERRIDES: dict[str, dict[str, object]] = {
    "mamba2": {"head_dim": 32},
    "gpt_neo": {"num_layers": 2, "num_heads": 4},
    "bamba": {"attn_layer_indices": [1]},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2,
              "expert_layer_offset": 1},
    # two hybrid layers: Zamba ties its shared transformer block across them
    "zamba": {"num_hidden_layers": 4, "layer_types": ["linear_attention", "hybrid"] * 2},
    # too big for mesh-8x8 otherwise: a shared MLP of 1,024 and experts of 128 beside each
    # layer's Mamba-2 or attention (granitemoehybrid), experts and shared MLP of 128
    # (hunyuan_v1_moe), a 256-token lightning block's (4, 256, 256) decay buffer (minimax)
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"],
                         "shared_intermediate_size": 64, "intermediate_size": 64},
    "hunyuan_v1_moe": {"intermediate_size": 64},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    "minimax": {"block_size": 16},
    "falcon_h1": {"mamba_d_ssm": 128},
    # top-1, and a router MLP of 32 (256 wide otherwise: too big for mesh-8x8)
    "zaya": {"num_experts_per_tok": 1, "router_hidden_size": 32},
    "zamba2": {"hybrid_layer_ids": [1]},
    "cpmant": {"dim_ff": 128, "dim_head": 16, "prompt_length": 4, "prompt_types": 4,
               "segment_types": 4, "position_bias_num_buckets": 32, "position_bias_max_distance": 64},
    # MLA with one key per head (its check), sliding layers' heads of qk_nope + qk_rope, and a
    # small indexer and shared expert (64 x 128 indexer heads and 1,536 otherwise)
    "dots3_note_text": {"num_key_value_heads": 4, "head_dim": 24, "index_n_heads": 4,
                        "index_head_dim": 16, "shared_experts_intermediate_size": 32},
    # a tiny QSA indexer (16 heads: with 4, blocks whose every head's score is cut by its ReLU
    # tie at 0, and eager's topk breaks such ties by its own algorithm); hyper-connections of
    # rank 16 (320: too big for mesh-8x8) and experts of 16 (32: one layer's experts, 64 kB,
    # are one weight tile that overflows a PE)
    "qwen4_exp_text": {"indexer_n_heads": 16, "indexer_kv_heads": 1, "indexer_head_dim": 16,
                       "indexer_budget": 8, "indexer_compress_ratio": 4, "hc_lowrank": 16,
                       "moe_intermediate_size": 16},
    # too big for mesh-8x8 otherwise: indexers of 16 to 64 heads of 128 (DSA families), CTRL's
    # feed-forward of 8,192 (`dff`), Kimi's delta-rule layers of 32 heads of 128 and Bailing's of
    # 4 of 8 (its `head_dim`; a chunk's per-channel decay is 64 x 64 x head dim), DeepSeek-V4's
    # grouped output projection of rank 1,024 and MiniMax-M3's shared expert of 3,072; and
    # DeepSeek-V4's two MoE kinds, hash-routed then top-k, one layer each
    **dict.fromkeys(("axk2", "deepseek_v32", "glm_moe_dsa", "hy_v4"),
                    {"index_n_heads": 4, "index_head_dim": 16}),
    "ctrl": {"dff": 128},
    "kimi_linear": {"linear_num_heads": 4, "linear_head_dim": 4},
    "bailing_hybrid": {"head_dim": 4},
    "deepseek_v4": {"o_lora_rank": 16, "index_n_heads": 4, "index_head_dim": 16,
                    "mlp_layer_types": ["hash_moe", "moe"]},
    "minimax_m3_vl_text": {"shared_intermediate_size": 64},
    # sliding layers of 64 x 128 heads and a 1,024-wide relative-position table: too big for mesh-8x8
    "inkling_text": {"swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "swa_head_dim": 16,
                     "rel_extent": 64},
    # 256 zero-compute experts beside 4 routed ones leave the routed ones unchosen
    "longcat_flash": {"zero_expert_num": 4},
    # Gemma-4's full-attention layers keep wider heads than its sliding ones (as global_head_dim)
    "gemma4_text": {"per_layer_config": {1: {"head_dim": 32}}},
    "gemma4_unified_text": {"per_layer_config": {1: {"head_dim": 32}}},
    # one attention-residual block per layer, so that the second layer loops (twice); two
    # experts, top-1, to fit mesh-8x8 with the second pass (streamed)
    "inkling2_loop_text": {"n_layers_per_attn_res_block": 1, "loop_layer_index_start": 1,
                           "loop_layer_index_end": 2, "loop_num_passes": 2, "loop_gate_rank": 8,
                           "n_routed_experts": 2, "num_experts_per_tok": 1},
    # the last two layers reuse the first two's KV cache; activation sparsity on the first two
    "gemma3n_text": {"num_hidden_layers": 4, "layer_types": ["sliding_attention", "full_attention"] * 2,
                     "num_kv_shared_layers": 2, "activation_sparsity_pattern": [0.95, 0.95, 0.0, 0.0]},
    # every layer MoE, with a shared expert as wide as its 4 experts: too big for mesh-8x8 at 128
    "llama4_text": {"intermediate_size": 64},
    # one dense layer then experts (by default the first three, or two, layers are dense)
    "beam": {"mlp_layer_types": ["dense", "sparse"]},
    "flint": {"mlp_only_layers": [0]},
    # an input, a looped (recurrent) and an output layer (by default 8 input and 8 output
    # layers, which 2 tiny layers cannot hold)
    "dory": {"num_hidden_layers": 3, "n_input_layers": 1, "n_output_layers": 1,
             "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]},
}  # fmt: skip


def _config_class(model_type: str):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]


def _settable(config, name: str) -> bool:
    """`config` has field `name` and may be given it (not a read-only property, itself or
    through the config's `attribute_map`); a per-layer field of a heterogeneous config is."""
    if name in (getattr(config, "per_layer_attributes", None) or ()):
        return True
    prop = getattr(type(config), config.attribute_map.get(name, name), None)
    return hasattr(config, name) and not (isinstance(prop, property) and prop.fset is None)


# Published checkpoints' values (their config.json) of fields a family's default config leaves
# None, with what those values need
PUBLISHED: dict[str, dict[str, object]] = {
    # deepseek-ai/DeepSeek-V2: 6 routed experts per token
    "deepseek_v2": {"num_experts_per_tok": 6},
    # rednote-hilab/dots.llm1.base: 128 routed experts, 6 of them per token, and 2 shared
    "dots1": {"n_routed_experts": 128, "num_experts_per_tok": 6, "n_shared_experts": 2},
    # LiquidAI/LFM2-8B-A1B: an attention layer in four (6 of its 24), short convolutions
    # between; here every fourth of the default config's 32 layers, from the third
    "lfm2_moe": {"layer_types": ["conv", "conv", "full_attention", "conv"] * 8},
    # Qwen/Qwen4-Exp: the QSA indexer (4 query heads of 128, one key head, 2,048 tokens from
    # blocks of 4), which needs the checkpoint's partial RoPE (a quarter of the 256-wide head)
    "qwen4_exp_text": {
        "indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 128,
        "indexer_budget": 2048, "indexer_compress_ratio": 4,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0,
                            "partial_rotary_factor": 0.25},
    },
}  # fmt: skip


def _completed(default) -> dict[str, object]:
    """Fields a family's default config leaves unusable, filled by the family's own rules:
    RoPE keyed by layer type but left empty (cohere_compass_text) becomes default RoPE for each
    layer type; `_heads` and `_nested_attention` below; a family's `PUBLISHED` values, all of
    them, where the default config leaves one of their fields None."""
    out = _heads(default) | _nested_attention(default)
    published = PUBLISHED.get(default.model_type, {})
    if any(getattr(default, k) is None for k in published):
        out |= copy.deepcopy(published)  # configs may change their RoPE dict in place
    types = getattr(default, "layer_types", None)
    if getattr(default, "rope_parameters", None) == {} and types:
        rope = {"rope_type": "default", "rope_theta": 10000.0}
        out["rope_parameters"] = {t: dict(rope) for t in dict.fromkeys(types)}
    return out


def _heads(default) -> dict[str, object]:
    """`head_dim` left None is hidden_size // num_attention_heads (Ministral; what Mixtral's
    attention derives), `num_key_value_heads` left None is num_attention_heads (Nemotron:
    multi-head attention)."""
    if getattr(default, "is_heterogeneous", False):  # per-layer heads: `_per_layer`
        return {}
    heads = getattr(default, "num_attention_heads", 0)
    if not heads:
        return {}
    out: dict[str, object] = {}
    if _settable(default, "head_dim") and default.head_dim is None:
        out["head_dim"] = default.hidden_size // heads
    if _settable(default, "num_key_value_heads") and default.num_key_value_heads is None:
        out["num_key_value_heads"] = heads
    return out


def _nested_attention(default) -> dict[str, object]:
    """A RoPE model's nested attention config (DBRX's `attn_config`) as its checkpoints give
    it: the model's RoPE theta, which its attention reads there, and `clip_qkv` 8, as its
    attention clamps q, k and v with no bound otherwise (an error)."""
    theta = (getattr(default, "rope_parameters", None) or {}).get("rope_theta")
    if theta is None or "attn_config" not in getattr(default, "sub_configs", {}):
        return {}
    attention = default.attn_config
    out = {} if hasattr(attention, "rope_theta") else {"rope_theta": theta}
    out |= {"clip_qkv": 8.0} if getattr(attention, "clip_qkv", 0) is None else {}
    return {"attn_config": out} if out else {}


def _nested(default, kwargs: dict[str, object]) -> dict[str, object]:
    """Nested sub-configs of the text model (DBRX's `attn_config` and `ffn_config`) at tiny
    sizes too: `TINY`'s values of their fields, on top of what `kwargs` gives them."""
    out: dict[str, object] = {}
    for name in getattr(default, "sub_configs", {}):
        if fields := _tiny_fields(getattr(default, name)):
            out[name] = cast("dict", kwargs.get(name, {})) | fields
    return out


def _per_layer(default, kwargs: dict[str, object]) -> dict[str, object]:
    """A heterogeneous config's `per_layer_config` for the tiny layers: each takes the overrides
    of the family's first layer of its type, less the fields `kwargs` sets (the tiny model is
    uniform in those; `OVERRIDES` may give a family tiny per-layer values of its own)."""
    if not getattr(default, "is_heterogeneous", False):
        return {}
    types = cast("list[str]", kwargs.get("layer_types") or default.layer_types)
    layers: dict[int, dict[str, object]] = {}
    for i, layer_type in enumerate(types):
        source = default.per_layer_config[default.layer_types.index(layer_type)]
        values = {a: getattr(source, a) for a in sorted(default.per_layer_attributes)}
        if kept := {a: v for a, v in values.items() if a not in kwargs}:
            layers[i] = kept
    return {"per_layer_config": layers}


def _tiny_fields(default) -> dict[str, object]:
    """`TINY`'s values of the fields the config has; a name the config maps onto another field
    `TINY` also sets (Inkling-2's `intermediate_size` is its `moe_intermediate_size`) gives way
    to that field's own value. An alias's value goes under the field's own name too, which the
    config's `__post_init__` reads before aliases apply (DBRX sizes its experts by `d_model`)."""
    aliases = default.attribute_map
    fields = {k: v for k, v in TINY.items() if _settable(default, k)}
    fields = {k: v for k, v in fields.items() if aliases.get(k) not in fields}
    return fields | {aliases[k]: v for k, v in fields.items() if k in aliases}


def tiny_config(model_type: str):
    """The family's config at tiny sizes (`TINY`, `LAYER_PATTERNS`, `OVERRIDES`)."""
    cls = _config_class(model_type)
    default = cls()
    kwargs = _completed(default) | _tiny_fields(default)
    kwargs |= _nested(default, kwargs)
    for name in LAYER_PATTERNS:
        pattern = getattr(default, name, None) if _settable(default, name) else None
        if isinstance(pattern, list) and pattern:
            distinct = list(dict.fromkeys(pattern))
            layers = distinct if len(distinct) > 1 else distinct * 2
            kwargs[name] = layers
            if "num_hidden_layers" in kwargs:
                kwargs["num_hidden_layers"] = len(layers)
    kwargs |= _per_layer(default, kwargs)
    if _settable(default, "kv_lora_rank"):  # multi-head latent attention: every head has its
        # own keys, and some families read the rotary width (qk_rope_head_dim) from head_dim
        kwargs |= {"num_key_value_heads": TINY["num_attention_heads"]}
        kwargs |= {"head_dim": TINY["qk_rope_head_dim"]} if _settable(default, "head_dim") else {}
    kwargs.update(OVERRIDES.get(model_type, {}))
    return cls(**kwargs)


def default_config(model_type: str):
    """The family's default config, with what it leaves unusable filled (`_completed`)."""
    cls = _config_class(model_type)
    return cls(**_completed(cls()))
