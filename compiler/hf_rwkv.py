"""An export-friendly WKV for Hugging Face RWKV (`compiler.hf_rewrites`).

transformers' CPU ``rwkv_linear_attention_cpu`` loops over the tokens in Python, so
``torch.export`` unrolls it (tokens x layers: minutes to export a 128-token prefill). Per channel
the WKV is a linear recurrence with a constant decay ``w = -exp(time_decay)``: the output at
``t`` weighs token ``i < t`` by ``exp((t-1-i) w + k_i)``, token ``t`` by ``exp(u + k_t)``
(``u = time_first``) and the state ``(num, den, max)`` carried in by ``exp(max + t w)``. `wkv`
computes that in closed form, chunk by chunk: within a chunk of `CHUNK` tokens the weights are a
masked (T, T) table, normalised by their maximum (HF's max trick, taken over the whole window),
and the state passes from one chunk to the next in HF's form. A one-token step (decode) runs
HF's own function, which has no loop then.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch
from torch import Tensor

CHUNK = 64  # tokens per closed-form chunk: (CHUNK x CHUNK) weights per channel
_EMPTY = -1e38  # HF's max of an empty state
_MODULE = "transformers.models.rwkv.modeling_rwkv"


def _chunk(
    decay: Tensor, bonus: Tensor, key: Tensor, value: Tensor, state: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """One chunk: ``key``, ``value`` (b, T, c) float32, ``state`` (num, den, max) (b, c) ->
    (output (b, T, c) float32, the state after the chunk)."""
    num, den, top = state
    steps = torch.arange(key.shape[1], dtype=torch.float32, device=key.device)
    lag = steps[:, None] - steps[None, :] - 1  # (t, i): decays between token i and output t
    past = (lag >= 0)[None, :, :, None]
    logits = torch.where(past, lag[None, :, :, None] * decay + key[:, None], _EMPTY)
    current = bonus + key  # (b, T, c): token t's own weight
    carried = top[:, None] + steps[:, None] * decay  # the incoming state's weight at t
    peak = torch.maximum(torch.maximum(logits.amax(2), current), carried)
    weights = torch.exp(logits - peak[:, :, None])
    own, old = torch.exp(current - peak), torch.exp(carried - peak)
    numerator = (weights * value[:, None]).sum(2) + own * value + old * num[:, None]
    denominator = weights.sum(2) + own + old * den[:, None]
    # the state after the last token: token i decayed (T-1-i) times, the old state T times
    last = (steps[-1] - steps)[:, None] * decay + key
    kept = top + key.shape[1] * decay
    new_top = torch.maximum(last.amax(1), kept)
    fresh, stale = torch.exp(last - new_top[:, None]), torch.exp(kept - new_top)
    new_num = (fresh * value).sum(1) + stale * num
    new_den = fresh.sum(1) + stale * den
    return numerator / denominator, (new_num, new_den, new_top)


def wkv(
    time_decay: Tensor,
    time_first: Tensor,
    key: Tensor,
    value: Tensor,
    state: list[Tensor] | tuple[Tensor, ...] | None = None,
    return_state: bool = False,
    chunk: int = CHUNK,
) -> tuple[Tensor, list[Tensor] | None]:
    """HF's ``rwkv_linear_attention`` without a loop over tokens: ``(output in key's dtype,
    [num, den, max] float32 or None)`` as HF returns them."""
    batch, length, channels = key.shape
    if length == 1:  # one step: HF's own update
        attention = sys.modules[_MODULE].rwkv_linear_attention_cpu
        return attention(time_decay, time_first, key, value, state, return_state)
    decay = (-torch.exp(time_decay)).float()  # in time_decay's dtype first, as HF
    bonus = time_first.float()
    if state is None:
        zeros = key.new_zeros(batch, channels, dtype=torch.float32)
        carry = (zeros, zeros, torch.full_like(zeros, _EMPTY))
    else:
        num, den, top = state
        carry = (num, den, top)
    outputs = []
    for start in range(0, length, chunk):
        part = slice(start, start + chunk)
        out, carry = _chunk(decay, bonus, key[:, part].float(), value[:, part].float(), carry)
        outputs.append(out)
    output = torch.cat(outputs, dim=1).to(key.dtype)
    return output, (list(carry) if return_state or state is not None else None)


def rwkv_attention_forward(attention: Any, original: Callable[..., Any], *args, **kwargs):
    """Run ``RwkvSelfAttention``'s forward with its WKV as `wkv` (closed form per chunk of
    tokens) instead of HF's Python loop over tokens, which export unrolls. In training mode
    the original forward runs unchanged."""
    if attention.training:
        return original(*args, **kwargs)
    with mock.patch.object(sys.modules[_MODULE], "rwkv_linear_attention", wkv):
        return original(*args, **kwargs)


RWKV_ATTENTION = f"{_MODULE}.RwkvSelfAttention"
