"""Export-friendly forwards for Hugging Face state-space mixers (`compiler.hf_rewrites`).

Every Mamba-2 mixer of ``transformers`` (Mamba-2, Bamba, Zamba-2, Nemotron-H,
Granite-MoE-hybrid) calls its module's ``mamba2_chunk_scan``, and FalconMamba's and Jamba's
call ``mamba_selective_scan``; the torch fallbacks of both export as many nodes per layer (a
Python loop over time, or pads and masks). On the inference path the rewrite runs the mixer's
own forward with that one function swapped, for the call, for one custom op: ``wafer::ssd_scan``
or ``wafer::selective_scan``. So each family's own projections, norms and gating stay exactly
HF's. With a cache the scan also returns its final state; a one-token decode step runs HF's own
state update (no scan).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from core.custom_ops import selective_scan
from core.ssd import ssd_scan


def chunk_scan(
    hidden_states: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    return_final_states: bool = False,
    **kwargs: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """HF's ``mamba2_chunk_scan`` as one ``wafer::ssd_scan`` (the step's bias, softplus and
    limits stay torch ops, in dt's dtype as HF computes them; the output is float32 as HF's)."""
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    low, high = dt_limit
    if not dt_softplus or low > 0.0:
        dt = torch.clamp(dt, min=low)
    if high != math.inf:
        dt = torch.clamp(dt, max=high)
    y, state = ssd_scan(hidden_states.float(), dt, A, B, C, D, int(chunk_size), initial_states)
    return (y, state) if return_final_states else y


def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    **kwargs: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """HF's ``mamba_selective_scan`` (mamba_ssm's ``selective_scan_fn``) as one
    ``wafer::selective_scan``."""
    y, state = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, state) if return_last_state else y


@contextlib.contextmanager
def _swapped(module: Any, name: str, replacement: Callable) -> Iterator[None]:
    previous = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, previous)


def _with_scan(name: str, replacement: Callable, mixer: Any, original: Callable, *args, **kwargs):
    if mixer.training:
        return original(*args, **kwargs)
    with _swapped(sys.modules[type(mixer).__module__], name, replacement):
        return original(*args, **kwargs)


def mamba2_mixer_forward(mixer: Any, original: Callable[..., Tensor], *args, **kwargs) -> Tensor:
    """Run a Mamba-2 mixer's inference path with one ``wafer::ssd_scan`` call.

    HF's torch ``mamba2_chunk_scan`` pads, reshapes into chunks and masks (and needs
    ``constant_pad_nd``); here the whole chunked scan is one op. In training mode the original
    forward runs unchanged.
    """
    return _with_scan("mamba2_chunk_scan", chunk_scan, mixer, original, *args, **kwargs)


def mamba_mixer_forward(mixer: Any, original: Callable[..., Tensor], *args, **kwargs) -> Tensor:
    """Run a FalconMamba, Jamba or Zamba mixer's inference path with one
    ``wafer::selective_scan`` call instead of HF's Python loop over time (which export unrolls).
    In training mode the original forward runs unchanged.
    """
    return _with_scan("mamba_selective_scan", selective_scan_fn, mixer, original, *args, **kwargs)


_MODELS = "transformers.models"
# Rewrite name -> (forward, the mixer classes it applies to).
SSD_MIXERS: dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]] = {
    "mamba2-ssd-scan": (
        mamba2_mixer_forward,
        (
            f"{_MODELS}.mamba2.modeling_mamba2.Mamba2Mixer",
            f"{_MODELS}.bamba.modeling_bamba.BambaMixer",
            f"{_MODELS}.zamba2.modeling_zamba2.Zamba2MambaMixer",
            f"{_MODELS}.nemotron_h.modeling_nemotron_h.NemotronHMamba2Mixer",
            f"{_MODELS}.granitemoehybrid.modeling_granitemoehybrid.GraniteMoeHybridMambaLayer",
        ),
    ),
    "falcon-jamba-selective-scan": (
        mamba_mixer_forward,
        (
            f"{_MODELS}.falcon_mamba.modeling_falcon_mamba.FalconMambaMixer",
            f"{_MODELS}.jamba.modeling_jamba.JambaMambaMixer",
            f"{_MODELS}.zamba.modeling_zamba.ZambaMambaMixer",
        ),
    ),
}
