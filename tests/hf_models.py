"""The tests' tiny Hugging Face models: the twins of the registry's `tiny-*` models."""

from __future__ import annotations

import torch

import models


def build(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """`gpt2`, `llama` (GQA, RoPE) or `mamba`, seeded, in eval mode, in `dtype`."""
    return models.build_hf(f"tiny-{name}", dtype=dtype)


def input_ids(batch: int = 2, seq: int = 8) -> torch.Tensor:
    """Token ids for any of them (the tiny models share one vocabulary size)."""
    return models.example_inputs("tiny-gpt2", batch, seq, seed=1)[0]
