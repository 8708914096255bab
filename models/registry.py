"""Named model configurations used by the CLI, the benchmarks and the tests."""

import dataclasses

import torch
from torch import Tensor

from core.errors import CommandLineError
from models.base import CausalLM
from models.gpt2 import GPT2Config, GPT2Model
from models.hybrid import HybridConfig, HybridModel
from models.llama import LlamaConfig, LlamaModel
from models.mamba import MambaConfig, MambaModel

Config = GPT2Config | LlamaConfig | MambaConfig | HybridConfig

_MODEL_CLASSES: dict[type, type[CausalLM]] = {
    GPT2Config: GPT2Model,
    LlamaConfig: LlamaModel,
    MambaConfig: MambaModel,
    HybridConfig: HybridModel,
}


def _llama3(**shapes) -> LlamaConfig:
    return LlamaConfig(vocab_size=128256, num_kv_heads=8, rope_theta=500000.0, **shapes)


_CONFIGS: dict[str, Config] = {
    # Tiny configurations for tests.
    "tiny-gpt2": GPT2Config(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, max_seq_len=64),
    "tiny-llama": LlamaConfig(
        vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=128, max_seq_len=64,
    ),
    "tiny-mamba": MambaConfig(vocab_size=256, hidden_size=64, num_layers=2),
    "tiny-hybrid": HybridConfig(
        vocab_size=256, hidden_size=64, num_layers=4, attn_every=2, attn_offset=1, num_heads=4,
        num_kv_heads=2, intermediate_size=128, max_seq_len=64,
    ),
    # Published shapes (random weights); KV caches are max_seq_len long.
    "gpt2-small": GPT2Config(),
    "llama-1b": _llama3(  # Llama-3.2-1B
        hidden_size=2048, num_layers=16, num_heads=32, intermediate_size=8192, tie_embeddings=True,
    ),
    "llama-8b": _llama3(  # Llama-3-8B
        hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=14336,
    ),
    "llama-13b": LlamaConfig(  # Llama-2-13B
        vocab_size=32000, hidden_size=5120, num_layers=40, num_heads=40, num_kv_heads=40,
        intermediate_size=13824,
    ),
    "llama-70b": _llama3(  # Llama-3-70B
        hidden_size=8192, num_layers=80, num_heads=64, intermediate_size=28672,
    ),
    "mamba-130m": MambaConfig(hidden_size=768, num_layers=24),
    "mamba-370m": MambaConfig(hidden_size=1024, num_layers=48),
    "mamba-1.4b": MambaConfig(hidden_size=2048, num_layers=48),
    "mamba-2.8b": MambaConfig(hidden_size=2560, num_layers=64),
    # 4 attention + 28 Mamba layers at width 2048: about 1.1B parameters.
    "hybrid-1b": HybridConfig(),
}  # fmt: skip


def names() -> list[str]:
    """All registered model names."""
    return list(_CONFIGS)


def config(name: str, **overrides) -> Config:
    """The configuration registered as ``name``, with dataclass fields replaced by ``overrides``."""
    if name not in _CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(_CONFIGS)}")
    return dataclasses.replace(_CONFIGS[name], **overrides)


def build(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **overrides,
) -> CausalLM:
    """Build ``name`` with seeded random weights (see ``CausalLM.init_weights``), in eval mode.

    ``device="meta"`` allocates nothing. The CPU RNG state is restored afterwards. ``overrides``
    replace config fields (e.g. ``max_seq_len``).
    """
    cfg = config(name, **overrides)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = _MODEL_CLASSES[type(cfg)](cfg)
        model.init_weights()
    return model.to(dtype).eval()


def example_inputs(
    name: str,
    batch: int = 1,
    seq: int = 16,
    *,
    phase: str = "prefill",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[Tensor, ...]:
    """Example arguments for ``prefill_module()`` or ``decode_module()`` of model ``name``.

    ``phase="prefill"``: ``(input_ids (batch, seq),)``. ``phase="decode"``: ``(input_ids (batch, 1),
    position, *zero_state)`` for the token at position ``seq - 1``; ``dtype`` is the state dtype.
    """
    cfg = config(name)
    gen = torch.Generator().manual_seed(seed)
    if phase == "prefill":
        return (torch.randint(cfg.vocab_size, (batch, seq), generator=gen).to(device),)
    if phase == "decode":
        ids = torch.randint(cfg.vocab_size, (batch, 1), generator=gen).to(device)
        position = torch.tensor([seq - 1], dtype=torch.int64, device=device)
        shapes = build(name, device="meta", dtype=dtype).init_state(batch)
        state = tuple(torch.zeros(s.shape, dtype=s.dtype, device=device) for s in shapes)
        return (ids, position, *state)
    raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")


def check_context(name: str, seq: int) -> None:
    """`seq` tokens fit registered model `name`'s position table or KV cache (`max_seq_len`)."""
    limit = getattr(config(name), "max_seq_len", None)
    if limit is not None and seq > limit:
        raise CommandLineError(
            f"--seq {seq} is beyond {name}'s maximum context of {limit} tokens; "
            f"use --seq {limit} or less"
        )
