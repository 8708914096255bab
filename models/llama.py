"""Llama-style decoder: RMSNorm, RoPE (Hugging Face rotate-half layout), SwiGLU, GQA."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CausalLM
from models.layers import CachedAttention, RMSNorm, TransformerBlock


@dataclass(frozen=True)
class LlamaConfig:
    """Llama shapes; ``max_seq_len`` is the KV cache length. ``head_dim`` defaults to D / heads."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    intermediate_size: int = 11008
    head_dim: int | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tie_embeddings: bool = False

    @property
    def attn_head_dim(self) -> int:
        """Resolved per-head width."""
        return self.head_dim or self.hidden_size // self.num_heads


def rotate_half(x: Tensor) -> Tensor:
    """``[-x2, x1]`` for ``x = [x1, x2]`` split along the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, pos: Tensor, theta: float) -> Tensor:
    """Rotary embedding of ``x`` (b, h, L, hd) at positions ``pos`` (L,), HF rotate-half layout."""
    hd = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    angles = pos.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin


class LlamaAttention(CachedAttention):
    """Grouped-query attention with RoPE on q and k; no biases."""

    def __init__(self, config: LlamaConfig):
        hd = config.attn_head_dim
        super().__init__(config.num_kv_heads, hd, config.max_seq_len)
        self.num_heads = config.num_heads
        self.rope_theta = config.rope_theta
        d = config.hidden_size
        self.q_proj = nn.Linear(d, config.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(config.num_heads * hd, d, bias=False)

    def qkv(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project to heads and rotate q, k by their positions."""
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, pos, self.rope_theta), apply_rope(k, pos, self.rope_theta), v

    def out(self, y: Tensor) -> Tensor:
        """Output projection."""
        return self.o_proj(y)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the gated MLP."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(TransformerBlock):
    """Llama decoder layer: RMSNorm, GQA attention, RMSNorm, SwiGLU (pre-norm residual)."""

    def __init__(self, config: LlamaConfig):
        d = config.hidden_size
        super().__init__(
            RMSNorm(d, config.norm_eps),
            LlamaAttention(config),
            RMSNorm(d, config.norm_eps),
            SwiGLU(d, config.intermediate_size),
        )


class LlamaModel(CausalLM):
    """Llama language model; state is ``(k_cache, v_cache)`` per layer."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        self.blocks = nn.ModuleList(LlamaBlock(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(d, config.norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
