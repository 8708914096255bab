"""Jamba-style hybrid decoder: Mamba layers with a Llama attention layer every ``attn_every``."""

from dataclasses import dataclass

from torch import nn

from models.base import CausalLM
from models.layers import RMSNorm
from models.llama import LlamaBlock, LlamaConfig
from models.mamba import MambaBlock, MambaConfig


@dataclass(frozen=True)
class HybridConfig:
    """Hybrid shapes. Layer ``i`` is attention iff ``i % attn_every == attn_offset``, else Mamba."""

    vocab_size: int = 50280
    hidden_size: int = 2048
    num_layers: int = 32
    attn_every: int = 8
    attn_offset: int = 4
    num_heads: int = 32
    num_kv_heads: int = 8
    intermediate_size: int = 8192
    rope_theta: float = 10000.0
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tie_embeddings: bool = True

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """``"attention"`` or ``"mamba"`` for each layer."""
        return tuple(
            "attention" if i % self.attn_every == self.attn_offset else "mamba"
            for i in range(self.num_layers)
        )

    @property
    def attention(self) -> LlamaConfig:
        """Config of the attention (Llama) layers."""
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.layer_kinds.count("attention"),
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            rope_theta=self.rope_theta,
            norm_eps=self.norm_eps,
            max_seq_len=self.max_seq_len,
        )

    @property
    def mamba(self) -> MambaConfig:
        """Config of the Mamba layers."""
        return MambaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.layer_kinds.count("mamba"),
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            norm_eps=self.norm_eps,
        )


class HybridModel(CausalLM):
    """Hybrid language model; each layer contributes its own state (KV cache or conv/SSM state)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        self.blocks = nn.ModuleList(
            LlamaBlock(config.attention) if kind == "attention" else MambaBlock(config.mamba)
            for kind in config.layer_kinds
        )
        self.norm = RMSNorm(d, config.norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
