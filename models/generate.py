"""Greedy generation over prefill/decode callables, and a full-recompute reference."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

StepFn = Callable[..., Sequence[Tensor]]


def _position(t: int, device: torch.device) -> Tensor:
    return torch.tensor([t], dtype=torch.int64, device=device)


@torch.no_grad()
def generate(
    prefill: StepFn | None,
    decode: StepFn,
    input_ids: Tensor,
    max_new_tokens: int,
    init_state: Sequence[Tensor] | None = None,
) -> Tensor:
    """Greedy decoding; returns ``input_ids`` (b, L) extended to (b, L + max_new_tokens).

    ``prefill(input_ids) -> (logits, *state)`` and ``decode(ids (b, 1), position (1,), *state) ->
    (logits, *state)`` may be eager modules or compiled callables. With ``prefill=None`` the prompt
    is fed token by token through ``decode``, starting from ``init_state``.
    """
    if prefill is not None:
        logits, *state = prefill(input_ids)
    elif init_state is None:
        raise ValueError("generate needs either prefill or init_state")
    else:
        state = list(init_state)
        for t in range(input_ids.shape[1]):
            position = _position(t, input_ids.device)
            logits, *state = decode(input_ids[:, t : t + 1], position, *state)
    out = input_ids
    for step in range(max_new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, token], dim=1)
        if step + 1 < max_new_tokens:
            position = _position(out.shape[1] - 1, input_ids.device)
            logits, *state = decode(token, position, *state)
    return out


@torch.no_grad()
def greedy_reference(model: nn.Module, input_ids: Tensor, max_new_tokens: int) -> Tensor:
    """Greedy decoding that recomputes ``model(ids)`` on the whole sequence at every step."""
    out = input_ids
    for _ in range(max_new_tokens):
        token = model(out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, token], dim=1)
    return out
