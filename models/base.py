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

    def prefill(
        self, input_ids: Tensor, *, all_logits: bool = True
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run a prompt (b, L) from position 0; returns logits (b, L, V), or (b, 1, V) for the
        last position only unless ``all_logits``, and the state after it."""
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed_tokens(input_ids, pos)
        state: list[Tensor] = []
        for block in self.blocks:
            x, block_state = block.prefill(x, pos)
            state.extend(block_state)
        if not all_logits:
            x = x[:, -1:]
        return self.lm_head(self.norm(x)), tuple(state)

    def decode(
        self, input_ids: Tensor, position: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run one token (b, 1) at ``position`` (int64, shape (1,)); returns logits and new state."""
        return self._step("decode", input_ids, position, state)

    def prefill_chunk(
        self, input_ids: Tensor, start: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run ``L`` prompt tokens (b, L) at positions ``start .. start + L - 1`` (``start``: int64,
        shape (1,), a multiple of ``L``) from ``state``; returns the last position's logits
        (b, 1, V) and the new state. Chunks in order from the zero state equal :meth:`prefill`."""
        pos = start + torch.arange(input_ids.shape[1], device=input_ids.device)
        return self._step("chunk", input_ids, pos, state, last=True)

    def _step(
        self,
        method: str,
        input_ids: Tensor,
        pos: Tensor,
        state: tuple[Tensor, ...],
        last: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Blocks' ``method`` (decode or chunk) over ``input_ids`` at ``pos`` from ``state``."""
        x = self.embed_tokens(input_ids, pos)
        new_state: list[Tensor] = []
        i = 0
        for block in self.blocks:
            step = getattr(block, method)
            x, block_state = step(x, pos, tuple(state[i : i + block.num_states]))
            new_state.extend(block_state)
            i += block.num_states
        if last:
            x = x[:, -1:]
        return self.lm_head(self.norm(x)), tuple(new_state)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Logits (b, L, V) for ``input_ids`` (b, L)."""
        return self.prefill(input_ids)[0]

    def prefill_module(self, *, all_logits: bool = False) -> "Prefill":
        """Exportable module: ``forward(input_ids) -> (logits, *state)``, the logits of the last
        position only (b, 1, V) unless ``all_logits`` (b, L, V): the graph slices the last
        position before the final norm and the LM head."""
        return Prefill(self, all_logits=all_logits)

    def decode_module(self) -> "Decode":
        """Exportable module: ``forward(input_ids, position, *state) -> (logits, *new_state)``."""
        return Decode(self)

    def prefill_chunk_module(self) -> "PrefillChunk":
        """Exportable module: ``forward(input_ids, start, *state) -> (logits, *new_state)``, one
        chunk of a prompt (see :meth:`prefill_chunk`)."""
        return PrefillChunk(self)


class Prefill(nn.Module):
    """Prefill graph of a :class:`CausalLM`, returning a flat tuple ``(logits, *state)``."""

    def __init__(self, model: CausalLM, *, all_logits: bool = False):
        super().__init__()
        self.model = model
        self.all_logits = all_logits

    def forward(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        """See :meth:`CausalLM.prefill`."""
        logits, state = self.model.prefill(input_ids, all_logits=self.all_logits)
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


class PrefillChunk(nn.Module):
    """One prefill chunk of a :class:`CausalLM`, returning a flat tuple ``(logits, *new_state)``."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, start: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """See :meth:`CausalLM.prefill_chunk`."""
        logits, new_state = self.model.prefill_chunk(input_ids, start, state)
        return (logits, *new_state)
