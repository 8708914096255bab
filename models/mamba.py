"""Mamba-1 decoder: RMSNorm pre-norm residual blocks around the selective-SSM mixer."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.custom_ops import selective_scan, selective_scan_step
from models.base import CausalLM
from models.layers import RMSNorm


@dataclass(frozen=True)
class MambaConfig:
    """Mamba-1 shapes: ``d_inner = expand * hidden_size``, ``dt_rank`` defaults to ceil(D / 16)."""

    vocab_size: int = 50280
    hidden_size: int = 768
    num_layers: int = 24
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    norm_eps: float = 1e-5

    @property
    def d_inner(self) -> int:
        """Width of the SSM branch."""
        return self.expand * self.hidden_size

    @property
    def time_step_rank(self) -> int:
        """Resolved rank of the ``dt`` projection."""
        return self.dt_rank or math.ceil(self.hidden_size / 16)


class MambaMixer(nn.Module):
    """Selective SSM mixer; state is ``(conv_state (b, d_inner, d_conv), ssm_state (b, d_inner, N))``.

    ``conv_state`` holds the last ``d_conv`` conv inputs (oldest first, zeros before the start).
    """

    num_states = 2

    def __init__(self, config: MambaConfig):
        super().__init__()
        d, di, n, r = config.hidden_size, config.d_inner, config.d_state, config.time_step_rank
        self.d_state, self.d_conv, self.dt_rank = n, config.d_conv, r
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, config.d_conv, groups=di, padding=config.d_conv - 1)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1)
        )
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d, bias=False)

    def init_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero conv and SSM states."""
        w = self.in_proj.weight
        di = self.D.shape[0]
        return w.new_zeros(batch_size, di, self.d_conv), w.new_zeros(batch_size, di, self.d_state)

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(delta without bias, B, C)`` from the conv output ``x`` (..., d_inner)."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def prefill(self, x: Tensor, pos: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Whole-prompt mixer using one ``wafer::selective_scan``; returns the final states."""
        length = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, L) each
        b, di, _ = u.shape
        conv_state = torch.cat([u.new_zeros(b, di, self.d_conv), u], dim=-1)[:, :, length:]
        u = F.silu(self.conv1d(u)[:, :, :length])
        y, ssm_state = self._scan(u, z, None)
        return y, (conv_state, ssm_state)

    def chunk(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """A chunk of the prompt continuing from ``state``: the conv sees the last ``d_conv - 1``
        inputs before the chunk, the scan starts from the SSM state."""
        conv_state, ssm_state = state
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, L) each
        u = torch.cat([conv_state[:, :, 1:], u], dim=-1)
        conv_state = u[:, :, -self.d_conv :]
        u = F.silu(F.conv1d(u, self.conv1d.weight, self.conv1d.bias, groups=u.shape[1]))
        y, ssm_state = self._scan(u, z, ssm_state)
        return y, (conv_state, ssm_state)

    def _scan(self, u: Tensor, z: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
        """Output projection of the scan of the conv output ``u`` (b, d_inner, L), started from
        ``h0`` (zeros when None), and the final SSM state."""
        delta, B, C = self._ssm_inputs(u.transpose(1, 2))
        A = -torch.exp(self.A_log.float())
        init = {} if h0 is None else {"h0": h0}
        y, ssm_state = selective_scan(
            u,
            delta.transpose(1, 2),
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            D=self.D,
            z=z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            **init,
        )
        return self.out_proj(y.transpose(1, 2)), ssm_state

    def decode(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One-token recurrence written with elementwise ops; ``x`` is (b, 1, D)."""
        conv_state, ssm_state = state
        u, z = self.in_proj(x[:, 0]).chunk(2, dim=-1)  # (b, d_inner) each
        conv_state = torch.cat([conv_state[:, :, 1:], u[:, :, None]], dim=-1)
        u = F.silu((conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        delta, B, C = self._ssm_inputs(u)
        A = -torch.exp(self.A_log.float())
        y, h = selective_scan_step(
            ssm_state,
            u,
            delta,
            A,
            B,
            C,
            D=self.D,
            z=z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
        )
        y = self.out_proj(y.to(x.dtype))[:, None]
        return y, (conv_state, h.to(ssm_state.dtype))


class MambaBlock(nn.Module):
    """Pre-norm residual block ``x + mixer(norm(x))``."""

    num_states = MambaMixer.num_states

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mixer = MambaMixer(config)

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        """Zero mixer state."""
        return self.mixer.init_state(batch_size)

    def prefill(self, x: Tensor, pos: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Process a prompt; returns hidden states and the mixer state after it."""
        h, state = self.mixer.prefill(self.norm(x), pos)
        return x + h, state

    def decode(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Process one token; returns hidden states and the new mixer state."""
        h, state = self.mixer.decode(self.norm(x), pos, state)
        return x + h, state

    def chunk(
        self, x: Tensor, pos: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Process a chunk of the prompt; returns hidden states and the new mixer state."""
        h, state = self.mixer.chunk(self.norm(x), pos, state)
        return x + h, state


class MambaModel(CausalLM):
    """Mamba-1 language model with tied LM head; state is ``(conv_state, ssm_state)`` per layer."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(MambaBlock(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight
