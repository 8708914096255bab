"""Mamba-2's state-space duality (SSD) scan as one PyTorch custom op, ``wafer::ssd_scan``.

Shapes follow ``mamba_ssm``'s ``mamba_chunk_scan_combined``: ``x`` is (b, l, h, p) (heads of
``p`` channels), ``dt`` (b, l, h) the step per head, already discretised (bias, softplus and
limits applied), ``A`` (h,) one decay rate per head, ``B``, ``C`` (b, l, g, n) shared by the
``h // g`` heads of each group, ``D`` (h,) the skip. Per head, with ``a_t = exp(dt_t A)``:
``h_t = a_t h_{t-1} + dt_t x_t B_t^T`` (a (p, n) state), ``y_t = h_t C_t + D x_t``. The op
returns ``(y, last_state)``, (b, l, h, p) and (b, h, p, n), in ``x.dtype``; ``h0`` (b, h, p, n)
is the state before the first step (zeros when absent). All arithmetic is float32.

It is computed in the chunked-matmul form: within a chunk of ``chunk`` steps the output is a
masked (T, T) "attention" of C against B weighted by the decays; the state passes from chunk to
chunk. ``chunk`` changes only rounding, not the result.
"""

import torch
from torch import Tensor


def _heads(t: Tensor, heads: int) -> Tensor:
    """(b, l, g, n) shared by groups of heads -> (b, l, h, n), float32."""
    return t.float().repeat_interleave(heads // t.shape[2], dim=2)


def segment_sum(a: Tensor) -> Tensor:
    """(..., T) -> (..., T, T): entry [t, s] is a[s+1] + ... + a[t] for s <= t, else -inf."""
    steps = a.shape[-1]
    keep = torch.ones(steps, steps, dtype=torch.bool, device=a.device)
    below = a[..., None, :].expand(*a.shape, steps).transpose(-1, -2)
    summed = below.masked_fill(~keep.tril(-1), 0).cumsum(-2)
    return summed.masked_fill(~keep.tril(), -torch.inf)


def ssd_chunk(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, Tensor]:
    """One chunk of T steps from ``state`` (b, h, p, n): x (b, T, h, p), dt (b, T, h),
    B, C (b, T, h, n), all float32. Returns (y (b, T, h, p) without the D skip, new state)."""
    a = (dt * A).transpose(1, 2)  # (b, h, T)
    cum = a.cumsum(-1)
    decay = torch.exp(segment_sum(a))  # (b, h, T, S)
    scores = torch.einsum("bthn,bshn->bhts", C, B) * decay
    y = torch.einsum("bhts,bshp->bthp", scores, x * dt[..., None])
    y = y + torch.einsum("bthn,bhpn->bthp", C, state) * cum.exp().transpose(1, 2)[..., None]
    to_end = torch.exp(cum[..., -1:] - cum)  # (b, h, T): decay from each step to the chunk end
    weight = (to_end.transpose(1, 2) * dt)[..., None] * B  # (b, T, h, n)
    state = state * cum[..., -1].exp()[..., None, None] + torch.einsum("bthn,bthp->bhpn", weight, x)
    return y, state


def ssd_scan_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    chunk: int = 256,
    h0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Numerical ground truth of ``wafer::ssd_scan``: chunk by chunk, the state carried."""
    batch, length, heads, width = x.shape
    xf, dtf, Af = x.float(), dt.float(), A.float()
    Bf, Cf = _heads(B, heads), _heads(C, heads)
    state = x.new_zeros(batch, heads, width, B.shape[-1], dtype=torch.float32)
    state = state if h0 is None else h0.float()
    ys = []
    for start in range(0, length, chunk):
        steps = slice(start, start + chunk)
        y, state = ssd_chunk(state, xf[:, steps], dtf[:, steps], Af, Bf[:, steps], Cf[:, steps])
        ys.append(y)
    y = torch.cat(ys, dim=1) if ys else xf.clone()
    if D is not None:
        y = y + D.float()[:, None] * xf
    return y.to(x.dtype), state.to(x.dtype)


@torch.library.custom_op("wafer::ssd_scan", mutates_args=())
def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    chunk: int,
    h0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """SSD scan (see module docstring); returns ``(y, last_state)`` in ``x.dtype``."""
    return ssd_scan_reference(x, dt, A, B, C, D, chunk, h0)


@ssd_scan.register_fake
def _ssd_scan_fake(x, dt, A, B, C, D, chunk, h0=None):
    batch, _, heads, width = x.shape
    return torch.empty_like(x), x.new_empty(batch, heads, width, B.shape[-1])
