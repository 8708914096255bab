"""GPT-2-style decoder: learned positions, LayerNorm, GELU (tanh) MLP, tied embeddings."""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CausalLM
from models.layers import CachedAttention, TransformerBlock


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2 shapes; ``max_seq_len`` is both the position table and the KV cache length."""

    vocab_size: int = 50257
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    max_seq_len: int = 1024
    norm_eps: float = 1e-5


class GPT2Attention(CachedAttention):
    """Causal MHA with a fused ``qkv`` projection (with bias)."""

    def __init__(self, config: GPT2Config):
        head_dim = config.hidden_size // config.num_heads
        super().__init__(config.num_heads, head_dim, config.max_seq_len)
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def qkv(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split the fused projection into heads (positions enter via the embedding)."""
        b, length, _ = x.shape
        qkv = self.qkv_proj(x).view(b, length, 3, self.num_kv_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return q, k, v

    def out(self, y: Tensor) -> Tensor:
        """Output projection."""
        return self.out_proj(y)


class GPT2MLP(nn.Module):
    """``proj(gelu_tanh(fc(x)))`` with a 4x hidden width."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.proj = nn.Linear(4 * config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP."""
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class GPT2Model(CausalLM):
    """GPT-2 language model; state is ``(k_cache, v_cache)`` per layer."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        self.pos_embed = nn.Embedding(config.max_seq_len, d)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                nn.LayerNorm(d, eps=config.norm_eps),
                GPT2Attention(config),
                nn.LayerNorm(d, eps=config.norm_eps),
                GPT2MLP(config),
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight

    def embed_tokens(self, input_ids: Tensor, pos: Tensor) -> Tensor:
        """Token plus learned position embeddings."""
        return self.embed(input_ids) + self.pos_embed(pos)
