"""The Mamba selective scan as a single PyTorch custom op, ``wafer::selective_scan``.

Shapes follow ``mamba_ssm.selective_scan_fn``: ``u``, ``delta``, ``z`` are (b, d, l); ``A`` is
(d, n); ``B``, ``C`` are (b, n, l); ``D`` and ``delta_bias`` are (d,). The op returns
``(y, last_state)`` with shapes (b, d, l) and (b, d, n), both in ``u.dtype``; the optional ``h0``
(b, d, n) is the state before the first step (zeros when absent). All arithmetic is
float32. Because the scan is one op, ``torch.export`` records one node per Mamba layer instead of a
loop unrolled over time.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan_step(
    h: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor]:
    """Advance the recurrence one time step, in float32.

    ``h`` is the state (b, d, n); ``u``, ``delta``, ``z`` are (b, d); ``B``, ``C`` are (b, n).
    Returns ``(y (b, d), new_h (b, d, n))``, both float32.
    """
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    if delta_softplus:
        delta = F.softplus(delta)
    h = torch.exp(delta[..., None] * A.float()) * h.float() + (
        delta[..., None] * B.float()[:, None, :] * u[..., None]
    )
    y = (h * C.float()[:, None, :]).sum(-1)
    if D is not None:
        y = y + D.float() * u
    if z is not None:
        y = y * F.silu(z.float())
    return y, h


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    h0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Numerical ground truth of ``wafer::selective_scan``: a sequential loop over time."""
    b, d, length = u.shape
    h = u.new_zeros(b, d, A.shape[1], dtype=torch.float32) if h0 is None else h0.float()
    ys = []
    for t in range(length):
        y, h = selective_scan_step(
            h,
            u[:, :, t],
            delta[:, :, t],
            A,
            B[:, :, t],
            C[:, :, t],
            D,
            None if z is None else z[:, :, t],
            delta_bias,
            delta_softplus,
        )
        ys.append(y)
    return torch.stack(ys, dim=-1).to(u.dtype), h.to(u.dtype)


@torch.library.custom_op("wafer::selective_scan", mutates_args=())
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    h0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Selective scan (see module docstring); returns ``(y, last_state)`` in ``u.dtype``."""
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0)


@selective_scan.register_fake
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0=None):
    b, d, _ = u.shape
    return torch.empty_like(u), u.new_empty(b, d, A.shape[1])
