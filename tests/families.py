"""The family matrix: every decoder-only causal-LM family of the installed `transformers`.

Families come from transformers' causal-LM auto mapping (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`);
`exclusions()` says why each one left out is not a decoder-only transformer, SSM or hybrid
(`EXCLUDED`, plus aliases of a class already kept). Each kept family runs through `STAGES`:

- `reference`, `tiled`, `jax-fp32`: a tiny seeded config (`tiny_config`: batch 2, seq 16, fp32)
  compiled once and run on the reference runtime, tile by tile on `TEST_MESH`, and on JAX,
  against eager;
- `jax-bf16`: the same config in bf16 on JAX, at `core.numerics`' bf16 output tolerance;
- `place`: the default config on the meta device in bf16 placed on `wse3` (`auto`: up to 16
  wafers, else weights streamed), or why not, with the bytes;
- `prefill-sim`, `decode-sim`: that placement simulated, and an HF decode step with its cache.

`run_family` returns one `Cell` per stage; `benchmarks/families.py` prints the table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

import compiler
import models
from compiler.passes import place_program
from core.numerics import check_conditioned_output, check_output
from core.target import load_target
from models import hf_state
from simulator.phases import SimOptions, simulate_placed

if TYPE_CHECKING:
    from transformers import PreTrainedModel

STAGES = ("reference", "tiled", "jax-fp32", "jax-bf16", "place", "prefill-sim", "decode-sim")
TEST_MESH = "mesh-8x8"
BATCH, SEQ = 2, 16
DEFAULT_SEQ = 128  # tokens of the default-size prefill (batch 1), as `wafersim run`
SEED = 0

# Why each family of the mapping that is not kept is left out (aliases are found by class).
_ENCODER = "bidirectional encoder (masked-LM) with an optional causal mask, not a decoder-only LM"
_SEQ2SEQ = "decoder half of an encoder-decoder model (cross-attention to an encoder)"
_MULTIMODAL = "multimodal composite (vision/audio tower + text decoder)"
EXCLUDED: dict[str, str] = {
    **dict.fromkeys(
        ("bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra",
         "ernie", "megatron-bert", "rembert", "roberta", "roberta-prelayernorm", "roc_bert",
         "roformer", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod"),
        _ENCODER,
    ),
    "xlnet": "permutation-LM encoder with segment recurrence, no fixed sequence length",
    "reformer": "LSH / chunked attention encoder needing is_decoder, not a decoder-only LM",
    **dict.fromkeys(
        ("bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart", "mvp",
         "pegasus", "plbart", "prophetnet"),
        _SEQ2SEQ,
    ),
    "trocr": f"{_SEQ2SEQ}: the text decoder of an image-to-text model",
    "whisper": f"{_SEQ2SEQ}: the text decoder of a speech model",
    **dict.fromkeys(
        ("fuyu", "gemma3", "gemma4", "gemma4_unified", "git", "got_ocr2", "mllama",
         "moss_transcribe_diarize", "phi4_multimodal", "emu3"),
        _MULTIMODAL,
    ),
    "gemma3n": f"{_MULTIMODAL}; also needs timm (its text decoder is gemma3n_text)",
    "gemma4_unified_assistant": f"{_MULTIMODAL} draft model (gemma4_unified_text is kept)",
    "gemma4_assistant": "speculative-decoding draft head: its forward takes the target model's "
    "hidden states and shared KV states, not token ids (gemma4_text is kept)",
    "llama4": f"{_MULTIMODAL} config (its text decoder is llama4_text)",
    "qwen3_5": f"{_MULTIMODAL} config (its text decoder is qwen3_5_text)",
    "qwen3_5_moe": f"{_MULTIMODAL} config (its text decoder is qwen3_5_moe_text)",
    "qwen4_exp": f"{_MULTIMODAL} config (its text decoder is qwen4_exp_text)",
    "dots3_note": f"{_MULTIMODAL} config (its text decoder is dots3_note_text)",
    "musicgen": "audio-codebook decoder of a text-to-music model (several token streams)",
    "musicgen_melody": "audio-codebook decoder of a text-to-music model (several token streams)",
    "moshi": "audio-codebook speech decoder (several token streams)",
    "blt": "byte latent transformer: local byte encoder/decoder around a patcher, not one LM",
}  # fmt: skip

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
    "dots1": {"n_shared_experts": 1},  # None by default
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    "minimax": {"block_size": 16},
    "falcon_h1": {"mamba_d_ssm": 128},
    "zaya": {"num_experts_per_tok": 1},
    "zamba2": {"hybrid_layer_ids": [1]},
    "cpmant": {"dim_ff": 128, "dim_head": 16, "prompt_length": 4, "prompt_types": 4,
               "segment_types": 4, "position_bias_num_buckets": 32, "position_bias_max_distance": 64},
    # MLA with one key per head (its check), sliding layers' heads of qk_nope + qk_rope, and a
    # small indexer and shared expert (64 x 128 indexer heads and 1,536 otherwise)
    "dots3_note_text": {"num_key_value_heads": 4, "head_dim": 24, "index_n_heads": 4,
                        "index_head_dim": 16, "shared_experts_intermediate_size": 32},
    # its indexed-attention layers need the QSA indexer, which the default config leaves unset
    # (16 indexer heads: with 4, blocks whose every head's score is cut by its ReLU tie at 0,
    # and eager's topk breaks such ties by its own algorithm)
    "qwen4_exp_text": {"indexer_n_heads": 16, "indexer_kv_heads": 1, "indexer_head_dim": 16,
                       "indexer_budget": 8, "indexer_compress_ratio": 4},
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
}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One stage of one family: `ok`, or `reason` (short, for the table) and `error` (full)."""

    ok: bool
    reason: str = ""
    error: str = ""
    note: str = ""

    @property
    def mark(self) -> str:
        return "✔" if self.ok else self.reason


def _mapping() -> dict[str, str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def exclusions() -> dict[str, str]:
    """Every family of the mapping left out, with why: `EXCLUDED`, and aliases: a family whose
    model class another family owns (the one whose name the class spells, e.g. `llama` for
    `LlamaForCausalLM`, else the first)."""
    mapping = _mapping()
    order = {t: i for i, t in enumerate(mapping)}

    def rank(t: str) -> tuple[bool, int]:
        return t.replace("_", "").replace("-", "") not in mapping[t].lower(), order[t]

    owner: dict[str, str] = {}
    for model_type in sorted((t for t in mapping if t not in EXCLUDED), key=rank):
        owner.setdefault(mapping[model_type], model_type)
    out: dict[str, str] = {}
    for model_type, cls in mapping.items():
        if model_type in EXCLUDED:
            out[model_type] = EXCLUDED[model_type]
        elif owner[cls] != model_type:
            out[model_type] = f"alias: same model class {cls} as {owner[cls]}"
    return out


def families() -> list[str]:
    """The kept families (model types), in the mapping's order."""
    excluded = exclusions()
    return [t for t in _mapping() if t not in excluded]


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


# Published checkpoints' values of fields a family's default config leaves None
# (DeepSeek-V2: 6 routed experts per token, as deepseek-ai/DeepSeek-V2's config.json)
PUBLISHED: dict[str, dict[str, object]] = {"deepseek_v2": {"num_experts_per_tok": 6}}


def _completed(default) -> dict[str, object]:
    """Fields a family's default config leaves unusable, filled by the family's own rules:
    RoPE keyed by layer type but left empty (cohere_compass_text) becomes default RoPE for each
    layer type; `_heads` and `_nested_attention` below."""
    out = _heads(default) | _nested_attention(default)
    out |= {
        k: v
        for k, v in PUBLISHED.get(default.model_type, {}).items()
        if getattr(default, k) is None
    }
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


def tiny_model(model_type: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The family at tiny sizes with seeded random weights, in eval mode, in `dtype`."""
    config = tiny_config(model_type)
    if dtype == torch.float64:  # HF's grouped_mm has no float64: its eager expert loop
        config._experts_implementation = "eager"
    model = models.build_hf(config, seed=SEED)
    keep = _float32_parameters(config, dtype)
    kept = {n: p.detach().clone() for n, p in model.named_parameters() if n in keep}
    model.to(dtype)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():  # a router HF inits to 0 (AFMoE) ties every expert: seeded N(0, 0.2)
        for name, param in model.named_parameters():
            if name in kept:
                param.data = kept[name]
            if ".router." in name and param.dim() == 2 and not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return cast("PreTrainedModel", model)


def _float32_parameters(config, dtype: torch.dtype) -> set[str]:
    """The parameters a family creates in float32 whatever the model's dtype (routers, gates,
    decays of Inkling-2, DeepSeek, Zamba...), as `from_config(dtype=...)` builds a bf16 model:
    they stay float32 there (none for a float32 or float64 model)."""
    from transformers import AutoModelForCausalLM

    if dtype not in (torch.bfloat16, torch.float16):
        return set()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return {name for name, p in model.named_parameters() if p.dtype == torch.float32}


def tiny_inputs(model: PreTrainedModel) -> torch.Tensor:
    """Seeded token ids (batch 2, seq 16) within the model's vocabulary."""
    vocab = cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (BATCH, SEQ), generator=gen)


def default_model(model_type: str) -> PreTrainedModel:
    """The family's default config, on the meta device, in bf16."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(default_config(model_type), dtype=torch.bfloat16)
    return model.eval()


def default_config(model_type: str):
    """The family's default config, with what it leaves unusable filled (`_completed`)."""
    cls = _config_class(model_type)
    return cls(**_completed(cls()))


def short_reason(error: BaseException) -> str:
    """A table cell for `error`: its type and the start of its first line."""
    ops = sorted(set(re.findall(r"^ +(\S+) x\d+ at ", str(error), re.M)))  # unsupported ops
    if ops:
        return "unsupported: " + ", ".join(ops[:4]) + (" …" if len(ops) > 4 else "")
    first = (str(error).strip().splitlines() or [""])[0]
    text = f"{type(error).__name__}: {first}"
    return text if len(text) <= 70 else text[:69] + "…"


def _failed(error: BaseException) -> Cell:
    return Cell(False, short_reason(error), f"{type(error).__name__}: {error}")


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out[0]


@torch.no_grad()
def _tiny_stages(model_type: str, stages: tuple[str, ...]) -> dict[str, Cell]:
    """`reference`, `tiled`, `jax-fp32` (one compile) and `jax-bf16` (another)."""
    cells: dict[str, Cell] = {}
    fp32 = [s for s in ("reference", "tiled", "jax-fp32") if s in stages]
    if fp32:
        try:
            model = tiny_model(model_type)
            ids = tiny_inputs(model)
            expected = _logits(model(ids, use_cache=False))
            compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
        except Exception as error:  # noqa: BLE001  (every failure is a cell of the table)
            return dict.fromkeys(fp32, _failed(error)) | _bf16(model_type, stages)
        float64 = functools.partial(tiny_model, model_type, torch.float64)
        exact = functools.cache(lambda: _logits(float64()(ids, use_cache=False)))
        for stage in fp32:
            cells[stage] = _run_fp32(compiled, stage, ids, expected, exact)
    return cells | _bf16(model_type, stages)


def _run_fp32(
    compiled, stage: str, ids: torch.Tensor, expected: torch.Tensor, exact: Callable
) -> Cell:
    """One float32 stage against eager; beyond tolerance, within 4x eager's own distance
    from the float64 model (`exact()`) still passes, as for bf16."""
    try:
        if stage == "tiled":
            target = load_target(TEST_MESH)
            placed = place_program(compiled.mlir, target, mode="auto")
            compiled = dataclasses.replace(compiled, placed=placed, target=target)
        runtime = {"reference": "reference", "tiled": "simulator", "jax-fp32": "jax"}[stage]
        actual = _logits(compiled.using(runtime)(ids, use_cache=False))
        first = check_output(actual, expected)
        problem = None if first is None else check_conditioned_output(actual, expected, exact())
    except Exception as error:  # noqa: BLE001
        return _failed(error)
    if problem is not None:
        return Cell(False, f"mismatch: {problem}", problem)
    return Cell(True, note="" if first is None else f"ill-conditioned, passes on float64: {first}")


def _bf16(model_type: str, stages: tuple[str, ...]) -> dict[str, Cell]:
    if "jax-bf16" not in stages:
        return {}
    try:
        model = tiny_model(model_type, torch.bfloat16)
        ids = tiny_inputs(model)
        expected = _logits(model(ids, use_cache=False))
        compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
        actual = _logits(compiled.using("jax")(ids, use_cache=False))
        problem = check_output(actual, expected, compute_dtype=torch.bfloat16)
        if problem is not None:  # within 4x eager's own distance from float64 still passes
            exact = _logits(tiny_model(model_type, torch.float64)(ids, use_cache=False))
            problem = check_conditioned_output(
                actual, expected, exact, compute_dtype=torch.bfloat16
            )
    except Exception as error:  # noqa: BLE001
        return {"jax-bf16": _failed(error)}
    if problem is None:
        return {"jax-bf16": Cell(True)}
    return {"jax-bf16": Cell(False, f"mismatch: {problem}"[:70], problem)}


def _placed(module: torch.nn.Module, inputs: tuple, options: SimOptions):
    """`module` compiled and placed as `wafersim run` would (`auto`, up to 16 x wse3)."""
    compiled = compiler.compile(module, inputs, target=None)
    return place_program(compiled.mlir, options.placement_target, mode=options.mode)


def _simulated(placed, decode: bool = False) -> Cell:
    try:
        report = placed.report
        names = [layer.name for layer in report.layers]
        sim = simulate_placed(placed.program, report.target, dtype="bf16", stage_names=names)
    except Exception as error:  # noqa: BLE001
        return _failed(error)
    what = "per token" if decode else f"for {DEFAULT_SEQ} tokens"
    return Cell(True, note=f"{sim.cycles:,} cycles {what}")


def _default_stages(model_type: str, stages: tuple[str, ...]) -> dict[str, Cell]:
    """`place`, `prefill-sim` and `decode-sim` of the default config (meta, bf16): prefill
    and decode over an explicit KV cache (`models.hf_state`), or, for a family without a
    plain KV cache, the prefill as one forward pass (and decode says why not)."""
    wanted = [s for s in ("place", "prefill-sim", "decode-sim") if s in stages]
    if not wanted:
        return {}
    options = SimOptions(target="wse3", seq=DEFAULT_SEQ, decode_steps=16, dtype="bf16")
    ids = torch.zeros((1, DEFAULT_SEQ), dtype=torch.int64)
    decode: Cell | None = None
    try:
        model = default_model(model_type)
        try:
            state = hf_state.init_state(model, 1, options.cache_tokens)
            prefill: torch.nn.Module = hf_state.HFPrefill(model, options.cache_tokens)
        except Exception as error:  # noqa: BLE001  (no plain KV cache: the forward pass)
            decode, state = _failed(error), ()
            prefill = hf_state.HFForward(model)
        placed = _placed(prefill, (ids,), options)
    except Exception as error:  # noqa: BLE001
        return dict.fromkeys(wanted, _failed(error))
    report = placed.report
    cells = {"place": Cell(True, note=report.mode_reason)}  # it starts with the mode
    if "prefill-sim" in wanted:
        cells["prefill-sim"] = _simulated(placed)
    if "decode-sim" in wanted and decode is None:
        try:
            token = torch.zeros((1, 1), dtype=torch.int64)
            position = torch.tensor([options.decode_position], dtype=torch.int64)
            step = _placed(hf_state.HFDecode(model), (token, position, *state), options)
            decode = _simulated(step, decode=True)
        except Exception as error:  # noqa: BLE001
            decode = _failed(error)
    if decode is not None:
        cells["decode-sim"] = decode
    return {stage: cells[stage] for stage in wanted}


def run_family(model_type: str, stages: tuple[str, ...] = STAGES) -> dict[str, Cell]:
    """Every stage in `stages` for `model_type`, each a `Cell` (failures are caught)."""
    with _quiet():
        cells = _tiny_stages(model_type, stages) | _default_stages(model_type, stages)
    return {stage: cells[stage] for stage in stages}


@contextlib.contextmanager
def _quiet():
    """transformers' warnings off while a family runs."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
