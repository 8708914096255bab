"""Shared causal-LM skeleton with explicit state, and its exportable prefill/decode wrappers."""

import torch
from torch import Tensor, nn


class CausalLM(nn.Module):
    """Embedding, a stack of stateful blocks (see :mod:`models.layers`), final norm, LM head.

    Subclasses set ``self.embed`` (token embedding), ``self.blocks`` (``nn.ModuleList``),
    ``self.norm`` and ``self.lm_head``, and may override :meth:`embed_tokens` (e.g. to add learned
    positions). The model state is the concatenation of every block's state, in block order.
    """

    embed: nn.Embedding
    blocks: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Linear

    def embed_tokens(self, input_ids: Tensor, pos: Tensor) -> Tensor:
        """Token embeddings of ``input_ids`` at positions ``pos``."""
        return self.embed(input_ids)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Embeddings ~ N(0, std) (GPT-2 style) and zero linear biases; other weights keep their
        PyTorch / Mamba defaults. Keeps random tied-embedding models from just echoing the input."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
            elif isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        """Zero state for ``batch_size`` sequences (all blocks' states, flattened)."""
        return tuple(t for block in self.blocks for t in block.init_state(batch_size))

    def prefill(self, input_ids: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run a prompt (b, L) from position 0; returns logits (b, L, V) and the state after it."""
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed_tokens(input_ids, pos)
        state: list[Tensor] = []
        for block in self.blocks:
            x, block_state = block.prefill(x, pos)
            state.extend(block_state)
        return self.lm_head(self.norm(x)), tuple(state)

    def decode(
        self, input_ids: Tensor, position: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run one token (b, 1) at ``position`` (int64, shape (1,)); returns logits and new state."""
        x = self.embed_tokens(input_ids, position)
        new_state: list[Tensor] = []
        i = 0
        for block in self.blocks:
            x, block_state = block.decode(x, position, tuple(state[i : i + block.num_states]))
            new_state.extend(block_state)
            i += block.num_states
        return self.lm_head(self.norm(x)), tuple(new_state)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Logits (b, L, V) for ``input_ids`` (b, L)."""
        return self.prefill(input_ids)[0]

    def prefill_module(self) -> "Prefill":
        """Exportable module: ``forward(input_ids) -> (logits, *state)``."""
        return Prefill(self)

    def decode_module(self) -> "Decode":
        """Exportable module: ``forward(input_ids, position, *state) -> (logits, *new_state)``."""
        return Decode(self)


class Prefill(nn.Module):
    """Prefill graph of a :class:`CausalLM`, returning a flat tuple ``(logits, *state)``."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        """See :meth:`CausalLM.prefill`."""
        logits, state = self.model.prefill(input_ids)
        return (logits, *state)


class Decode(nn.Module):
    """Decode graph of a :class:`CausalLM`, returning a flat tuple ``(logits, *new_state)``."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, position: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """See :meth:`CausalLM.decode`."""
        logits, new_state = self.model.decode(input_ids, position, state)
        return (logits, *new_state)
