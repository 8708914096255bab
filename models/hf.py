"""Hugging Face GPT-2 / Llama / Mamba configs and state dicts <-> the reference models.

Parameter names are translated by per-family regex rules; GPT-2's ``Conv1D`` weights are stored
(in, out) and are transposed to ``nn.Linear``'s (out, in). Llama q/k weights need no permutation:
the reference RoPE uses the same rotate-half layout as Hugging Face. Configs are read by
attribute; transformers itself is imported only to build a Hugging Face model (``build_hf``):
the Hugging Face twin of a registered model, or any config, with seeded random weights.
"""

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from models.base import CausalLM
from models.gpt2 import GPT2Config, GPT2Model
from models.llama import LlamaConfig, LlamaModel
from models.mamba import MambaConfig, MambaModel
from models.registry import Config, config

# (model class, HF key prefix, [(regex on the unprefixed key, replacement or None to drop)])
_RULES: list[tuple[type[CausalLM], str, list[tuple[str, str | None]]]] = [
    (GPT2Model, "transformer.", [
        (r"wte\.weight", "embed.weight"),
        (r"wpe\.weight", "pos_embed.weight"),
        (r"h\.(\d+)\.ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
        (r"h\.(\d+)\.ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
        (r"h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"blocks.\1.attn.qkv_proj.\2"),
        (r"h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"blocks.\1.attn.out_proj.\2"),
        (r"h\.(\d+)\.attn\.(bias|masked_bias)", None),  # causal-mask buffers of old checkpoints
        (r"h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc.\2"),
        (r"h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.proj.\2"),
        (r"ln_f\.(weight|bias)", r"norm.\1"),
        (r"lm_head\.weight", "lm_head.weight"),
    ]),
    (LlamaModel, "model.", [
        (r"embed_tokens\.weight", "embed.weight"),
        (r"layers\.(\d+)\.self_attn\.([qkvo]_proj)\.weight", r"blocks.\1.attn.\2.weight"),
        (r"layers\.(\d+)\.self_attn\.rotary_emb\.inv_freq", None),
        (r"rotary_emb\.inv_freq", None),
        (r"layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.norm1.weight"),
        (r"layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.norm2.weight"),
        (r"layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight", r"blocks.\1.mlp.\2.weight"),
        (r"norm\.weight", "norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
    ]),
    (MambaModel, "backbone.", [
        (r"embeddings?\.weight", "embed.weight"),
        (r"layers\.(\d+)\.norm\.weight", r"blocks.\1.norm.weight"),
        (r"layers\.(\d+)\.mixer\.(.+)", r"blocks.\1.mixer.\2"),
        (r"norm_f\.weight", "norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
    ]),
]  # fmt: skip

_GPT2_CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")


def _translate(key: str, rules: list[tuple[str, str | None]]) -> str | None:
    """Reference name of the (unprefixed) HF ``key``, or None for keys that are dropped."""
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return None if replacement is None else match.expand(replacement)
    raise ValueError(f"unexpected Hugging Face parameter {key!r}")


def from_hf_state_dict(model: CausalLM, state_dict: Mapping[str, Tensor]) -> CausalLM:
    """Load a Hugging Face ``state_dict`` (GPT-2, Llama or Mamba) into ``model``; returns it.

    Keys may carry the HF base-model prefix or not. Unknown keys or missing parameters raise.
    For tied models the LM head is taken from the embedding.
    """
    family = next(((p, r) for cls, p, r in _RULES if isinstance(model, cls)), None)
    if family is None:
        raise TypeError(f"no Hugging Face mapping for {type(model).__name__}")
    prefix, rules = family
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = _translate(key.removeprefix(prefix), rules)
        if name is None:
            continue
        if isinstance(model, GPT2Model) and _GPT2_CONV1D.search(key):
            value = value.t()
        converted[name] = value
    if model.lm_head.weight is model.embed.weight and "embed.weight" in converted:
        converted["lm_head.weight"] = converted["embed.weight"]
    model.load_state_dict(converted, strict=True)
    return model


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"unsupported Hugging Face config: {what}")


def config_from_hf(hf_config) -> GPT2Config | LlamaConfig | MambaConfig:
    """Reference config equivalent to a Hugging Face GPT-2, Llama or Mamba config."""
    c = hf_config
    if c.model_type == "gpt2":
        _require(c.activation_function == "gelu_new", "GPT-2 activation must be gelu_new")
        _require(c.n_inner in (None, 4 * c.n_embd), "GPT-2 n_inner must be 4 * n_embd")
        return GPT2Config(
            vocab_size=c.vocab_size,
            hidden_size=c.n_embd,
            num_layers=c.n_layer,
            num_heads=c.n_head,
            max_seq_len=c.n_positions,
            norm_eps=c.layer_norm_epsilon,
        )
    if c.model_type == "llama":
        rope = getattr(c, "rope_parameters", None) or {}
        _require(rope.get("rope_type", "default") == "default", "only default RoPE is supported")
        _require(c.hidden_act == "silu", "Llama activation must be silu")
        _require(not c.attention_bias and not c.mlp_bias, "Llama biases are not supported")
        return LlamaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            num_layers=c.num_hidden_layers,
            num_heads=c.num_attention_heads,
            num_kv_heads=c.num_key_value_heads,
            intermediate_size=c.intermediate_size,
            head_dim=getattr(c, "head_dim", None),
            rope_theta=rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)),
            norm_eps=c.rms_norm_eps,
            max_seq_len=c.max_position_embeddings,
            tie_embeddings=c.tie_word_embeddings,
        )
    if c.model_type == "mamba":
        _require(c.hidden_act == "silu", "Mamba activation must be silu")
        _require(not c.use_bias and c.use_conv_bias, "Mamba needs use_bias=False, use_conv_bias")
        _require(c.tie_word_embeddings, "Mamba LM head must be tied")
        return MambaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            num_layers=c.num_hidden_layers,
            d_state=c.state_size,
            d_conv=c.conv_kernel,
            expand=c.expand,
            dt_rank=c.time_step_rank,
            norm_eps=c.layer_norm_epsilon,
        )
    raise ValueError(f"unsupported Hugging Face model_type {c.model_type!r}")


def config_to_hf(cfg: Config):
    """The Hugging Face config of a reference GPT-2, Llama or Mamba config (the inverse of
    ``config_from_hf``). GPT-2's bos/eos token is its last one, as in the published vocabulary."""
    import transformers

    if isinstance(cfg, GPT2Config):
        return transformers.GPT2Config(
            vocab_size=cfg.vocab_size,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            n_positions=cfg.max_seq_len,
            layer_norm_epsilon=cfg.norm_eps,
            bos_token_id=cfg.vocab_size - 1,
            eos_token_id=cfg.vocab_size - 1,
        )
    if isinstance(cfg, LlamaConfig):
        return transformers.LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            intermediate_size=cfg.intermediate_size,
            head_dim=cfg.attn_head_dim,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
            rms_norm_eps=cfg.norm_eps,
            max_position_embeddings=cfg.max_seq_len,
            tie_word_embeddings=cfg.tie_embeddings,
        )
    if isinstance(cfg, MambaConfig):
        return transformers.MambaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            state_size=cfg.d_state,
            conv_kernel=cfg.d_conv,
            expand=cfg.expand,
            time_step_rank=cfg.time_step_rank,
            layer_norm_epsilon=cfg.norm_eps,
        )
    raise ValueError(f"no Hugging Face equivalent of {type(cfg).__name__}")


def build_hf(hf_config, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A Hugging Face causal LM with seeded random weights, in eval mode; nothing is downloaded.

    ``hf_config`` is a transformers config, or the name of a registered GPT-2, Llama or Mamba
    model (e.g. ``"tiny-gpt2"``, ``"mamba-130m"``) for its Hugging Face twin, whose
    ``example_inputs`` fit it. The CPU RNG state is restored afterwards.
    """
    from transformers import AutoModelForCausalLM

    if isinstance(hf_config, str):
        hf_config = config_to_hf(config(hf_config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_config)
    return model.to(dtype).eval()
