"""Building blocks shared by the reference models: RMSNorm, cached attention, transformer block.

Every block (attention, transformer, Mamba) follows the same stateful protocol used by
:class:`models.base.CausalLM`:

* ``init_state(batch_size) -> tuple[Tensor, ...]``: zero state, ``num_states`` tensors;
* ``prefill(x, pos) -> (x, state)``: process a whole prompt starting at position 0;
* ``decode(x, pos, state) -> (x, state)``: process one token at position ``pos`` (shape (1,));
* ``chunk(x, pos, state) -> (x, state)``: process ``L`` tokens at positions ``pos`` (L,),
  ``pos[0]`` a multiple of ``L``, continuing from ``state`` (chunked prefill).

``pos`` holds the absolute positions of the tokens in ``x`` (``arange(L)`` in prefill). State is
never mutated in place: decode returns new tensors.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (the Llama / Mamba convention)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize over the last dimension and scale by ``weight``."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def attend(q: Tensor, k: Tensor, v: Tensor, visible: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention with grouped key/value heads: one
    ``scaled_dot_product_attention``, exported whole (the compiler tiles it flash-style).

    ``q`` is (b, hq, lq, hd); ``k``, ``v`` are (b, hkv, lk, hd) with ``hq % hkv == 0``; query head
    ``i`` uses kv head ``i // (hq // hkv)``. ``visible`` (lq, lk) bool says which keys each query
    sees; None means causal over equal positions (prefill). Returns (b, hq, lq, hd).
    """
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=visible, is_causal=visible is None, enable_gqa=q.shape[1] != k.shape[1]
    )


class CachedAttention(nn.Module):
    """Multi-head causal self-attention with a fixed-length KV cache.

    Subclasses define the projections: ``qkv(x, pos)`` returning q (b, hq, L, hd) and k, v
    (b, hkv, L, hd), and ``out(y)`` mapping (b, L, hq * hd) back to the model width. The state is
    ``(k_cache, v_cache)``, each (b, hkv, max_len, hd).
    """

    num_states = 2

    def __init__(self, num_kv_heads: int, head_dim: int, max_len: int):
        super().__init__()
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_len = max_len

    def qkv(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project ``x`` (b, L, D) at positions ``pos`` to per-head q, k, v."""
        raise NotImplementedError

    def out(self, y: Tensor) -> Tensor:
        """Output projection of the concatenated heads."""
        raise NotImplementedError

    def init_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Empty KV cache."""
        w = next(self.parameters())
        shape = (batch_size, self.num_kv_heads, self.max_len, self.head_dim)
        return w.new_zeros(shape), w.new_zeros(shape)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, visible: Tensor | None) -> Tensor:
        b, _, length, _ = q.shape
        return self.out(attend(q, k, v, visible).transpose(1, 2).reshape(b, length, -1))

    def prefill(self, x: Tensor, pos: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend within the prompt; the cache holds its keys/values at positions 0..L-1."""
        q, k, v = self.qkv(x, pos)
        b, h, length, d = k.shape
        pad = k.new_zeros(b, h, self.max_len - length, d)
        cache = (torch.cat([k, pad], dim=2), torch.cat([v, pad], dim=2))
        return self._attend(q, k, v, None), cache

    def decode(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Write this token's key/value at ``pos`` (by mask) and attend to positions <= ``pos``."""
        k_cache, v_cache = state
        q, k, v = self.qkv(x, pos)
        slots = torch.arange(self.max_len, device=pos.device)
        hit = (slots == pos)[None, None, :, None]
        k_cache = torch.where(hit, k, k_cache)
        v_cache = torch.where(hit, v, v_cache)
        return self._attend(q, k_cache, v_cache, (slots <= pos)[None, :]), (k_cache, v_cache)

    def chunk(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Write ``L`` keys/values at slots ``pos`` and attend causally over the cache.

        ``pos[0]`` must be a multiple of ``L``: slot ``s`` then takes row ``s % L`` of the chunk
        tiled along the cache, an elementwise select like :meth:`decode`'s, not a scatter.
        """
        k_cache, v_cache = state
        q, k, v = self.qkv(x, pos)
        slots = torch.arange(self.max_len, device=pos.device)
        hit = ((slots >= pos[0]) & (slots <= pos[-1]))[None, None, :, None]
        k_cache = torch.where(hit, self._tile(k), k_cache)
        v_cache = torch.where(hit, self._tile(v), v_cache)
        visible = slots[None, :] <= pos[:, None]
        return self._attend(q, k_cache, v_cache, visible), (k_cache, v_cache)

    def _tile(self, x: Tensor) -> Tensor:
        """(b, h, L, d) repeated along the cache: (b, h, max_len, d), row ``s`` is ``x[s % L]``."""
        b, h, length, d = x.shape
        tiles = -(-self.max_len // length)
        x = x[:, :, None].expand(b, h, tiles, length, d).reshape(b, h, tiles * length, d)
        return x[:, :, : self.max_len]


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    num_states = CachedAttention.num_states

    def __init__(self, norm1: nn.Module, attn: CachedAttention, norm2: nn.Module, mlp: nn.Module):
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.norm2 = norm2
        self.mlp = mlp

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        """Empty KV cache of the attention."""
        return self.attn.init_state(batch_size)

    def prefill(self, x: Tensor, pos: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Process a prompt; returns the new hidden states and the KV cache."""
        h, state = self.attn.prefill(self.norm1(x), pos)
        return self._mlp(x + h), state

    def decode(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Process one token with the KV cache; returns the updated cache."""
        h, state = self.attn.decode(self.norm1(x), pos, state)
        return self._mlp(x + h), state

    def chunk(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Process a chunk of the prompt with the KV cache; returns the updated cache."""
        h, state = self.attn.chunk(self.norm1(x), pos, state)
        return self._mlp(x + h), state

    def _mlp(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm2(x))
