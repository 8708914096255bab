"""Tiny Hugging Face models built from configs with seeded random weights (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

VOCAB = 128


def build(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """`gpt2`, `llama` (GQA, RoPE) or `mamba`, in eval mode, in `dtype`."""
    torch.manual_seed(0)
    if name == "gpt2":
        config = GPT2Config(
            n_layer=2,
            n_embd=64,
            n_head=4,
            vocab_size=VOCAB,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(config)
    elif name == "llama":
        config = LlamaConfig(
            num_hidden_layers=2,
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = LlamaForCausalLM(config)
    elif name == "mamba":
        config = MambaConfig(
            num_hidden_layers=2,
            hidden_size=64,
            vocab_size=VOCAB,
            state_size=8,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
        model = MambaForCausalLM(config)
    else:
        raise ValueError(name)
    return model.to(dtype).eval()


def input_ids(batch: int = 2, seq: int = 8) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))
