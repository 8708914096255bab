"""Source rewrites applied to Hugging Face models before ``torch.export``.

Some Hugging Face modules are written in ways that export badly (e.g. a Python loop over time
that is unrolled into thousands of nodes). A :class:`Rewrite` names such a module class and gives
an export-friendly replacement ``forward``. :func:`apply_rewrites` patches matching submodules at
the instance level for the duration of a ``with`` block; the model is restored on exit.

Registered rewrites (:data:`REWRITES`):

* ``mamba-selective-scan``: ``transformers`` ``MambaMixer`` -> one ``wafer::selective_scan`` node.
* ``moe-router`` / ``moe-experts``: MoE routers and experts modules -> ``wafer::moe_*`` ops
  (``compiler.hf_moe``; static-shape forms of data-dependent ones in ``compiler.hf_moe_static``).
* ``mamba2-ssd-scan``: the Mamba-2 mixers (Mamba-2, Bamba, Zamba-2, Nemotron-H,
  Granite-MoE-hybrid) -> one ``wafer::ssd_scan`` node; ``falcon-jamba-selective-scan``:
  FalconMamba's, Jamba's and Zamba's mixers -> one ``wafer::selective_scan`` node
  (``compiler.hf_ssd``).
* ``qsa-indexer``: Qwen4-Exp's sparse-attention indexer in fixed-size ops (``compiler.hf_indexer``).
* ``rwkv-wkv``: RWKV's WKV recurrence in closed form per chunk of tokens (``compiler.hf_rwkv``).
* ``relative-bias``: Inkling's relative-position bias over the distances the keys reach
  (``compiler.hf_relative``).
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from compiler.hf_indexer import INDEXERS
from compiler.hf_moe import EXPERTS, ROUTERS, experts_forward
from compiler.hf_moe_static import STATIC_MOE
from compiler.hf_relative import RELATIVE_BIASES
from compiler.hf_rwkv import RWKV_ATTENTION, rwkv_attention_forward
from compiler.hf_ssd import SSD_MIXERS, mamba_mixer_forward
from core.custom_ops import selective_scan
from models import hf_state


@dataclass(frozen=True)
class Rewrite:
    """Replace ``method`` (``forward`` unless named) of every module whose class is exactly
    ``target`` (``module.Qualname``).

    ``forward(module, original_forward, *args, **kwargs)`` computes the same result as
    ``original_forward(*args, **kwargs)`` and may call it for cases it does not handle.
    """

    name: str
    target: str
    forward: Callable[..., object]
    method: str = "forward"

    @property
    def doc(self) -> str:
        """What the rewrite does (the replacement's docstring)."""
        return self.forward.__doc__ or ""


def _mamba_mixer_forward(
    mixer: Any,  # transformers' MambaMixer: its submodules are attributes mypy cannot see
    original: Callable[..., Tensor],
    hidden_states: Tensor,
    cache: object | None = None,
    attention_mask: Tensor | None = None,
    **kwargs,
) -> Tensor:
    """Run ``MambaMixer``'s no-cache inference path with one ``wafer::selective_scan`` call.

    HF's torch fallback loops over the sequence in Python, so export unrolls it into O(L) nodes per
    layer. The math here is the same: in_proj, causal depthwise conv + act, x_proj/dt_proj, scan
    with D skip and SiLU(gate), out_proj. With a cache (``cache`` or the deprecated
    ``cache_params``) HF's forward runs with its scan as the op (``compiler.hf_ssd``); in
    training mode (the op has no autograd) the original forward runs.
    """
    if cache is not None or kwargs.get("cache_params") is not None or mixer.training:
        args = (hidden_states, cache, attention_mask)
        return mamba_mixer_forward(mixer, original, *args, **kwargs)
    from transformers.models.mamba.modeling_mamba import apply_mask_to_padding_states

    dtype, length = hidden_states.dtype, hidden_states.shape[1]
    hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
    u, gate = mixer.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)
    u = mixer.act(mixer.conv1d(u.to(mixer.conv1d.weight.dtype))[:, :, :length]).to(dtype)
    u = apply_mask_to_padding_states(u.transpose(1, 2), attention_mask)  # (b, L, d_inner)
    n, rank = mixer.ssm_state_size, mixer.time_step_rank
    dt, B, C = torch.split(mixer.x_proj(u), [rank, n, n], dim=-1)
    delta = mixer.dt_proj.weight @ dt.transpose(1, 2)
    bias = mixer.dt_proj.bias.float() if mixer.dt_proj.bias is not None else None
    A = -torch.exp(mixer.A_log.float())
    y, _ = selective_scan(
        u.transpose(1, 2),
        delta,
        A,
        B.transpose(1, 2),
        C.transpose(1, 2),
        D=mixer.D.float(),
        z=gate,
        delta_bias=bias,
        delta_softplus=True,
    )
    return mixer.out_proj(y.transpose(1, 2).to(dtype))


REWRITES: tuple[Rewrite, ...] = (
    Rewrite(
        name="mamba-selective-scan",
        target="transformers.models.mamba.modeling_mamba.MambaMixer",
        forward=_mamba_mixer_forward,
    ),
    *(Rewrite("moe-experts", target, experts_forward) for target in EXPERTS),
    *(Rewrite("moe-router", target, forward) for target, forward in ROUTERS.items()),
    *(Rewrite(n, t, f, m) for n, t, m, f in (*STATIC_MOE, *INDEXERS, *RELATIVE_BIASES)),
    *(Rewrite(n, t, f) for n, (f, targets) in SSD_MIXERS.items() for t in targets),
    Rewrite("rwkv-wkv", RWKV_ATTENTION, rwkv_attention_forward),
)


def _qualname(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


@contextlib.contextmanager
def apply_rewrites(
    model: nn.Module, rewrites: tuple[Rewrite, ...] = REWRITES
) -> Iterator[nn.Module]:
    """Patch matching submodules of ``model`` (instance-level methods) inside the block.

    Yields ``model``. On exit every patched module gets its previous methods back.
    """
    by_target: dict[str, dict[str, Rewrite]] = {}
    for r in rewrites:  # the last rewrite of a method wins
        by_target.setdefault(r.target, {})[r.method] = r
    patched: list[tuple[nn.Module, str, Callable | None]] = []
    try:
        for module in model.modules():
            for method, rewrite in by_target.get(_qualname(module), {}).items():
                patched.append((module, method, module.__dict__.get(method)))
                replacement = functools.partial(rewrite.forward, module, getattr(module, method))
                setattr(module, method, replacement)
        yield model
    finally:
        for module, method, previous in reversed(patched):
            if previous is None:
                delattr(module, method)
            else:
                setattr(module, method, previous)


hf_state.PROBE_CONTEXTS.append(apply_rewrites)  # HF decode state probed through the rewrites
