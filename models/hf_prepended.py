"""Hugging Face families whose forward prepends tokens of its own to the prompt: CPM-Ant's
`prompt_length` prompt tokens (`models.hf_state`'s hook).

Their keys and values take cache slots too: `prepended` counts them, and the explicit cache
has that many slots more than the sequence's tokens, token ``p`` in slot ``prepended + p``.
CPM-Ant's own forward takes the whole sequence at every step and drops the cached prefix
itself; `cpmant_decode` computes the same for one token over the cache: its embedding with its
segment's, attention to the slots up to its own (CPM-Ant's attention is bidirectional, so a
decode step sees what transformers' cached generation sees, not a forward over the whole
sequence), and the segment-relative position bias of its row. Every earlier token is taken
to be a real one (id 0 is CPM-Ant's padding, which its forward masks and segments apart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_TEXT_SEGMENT = 2  # CPM-Ant's segment of a real token (the prompt's is 0, padding's 0)


def prepended(model: PreTrainedModel) -> int:
    """Tokens the model's forward puts before the prompt, each in a cache slot (0 for most);
    a family with any decodes by its own step (`cpmant_decode`)."""
    config = model.config
    return config.prompt_length if config.model_type == "cpmant" else 0


def cpmant_decode(model: PreTrainedModel, input_ids: Tensor, slot: Tensor, cache) -> Tensor:
    """Logits (batch, 1, vocab) of one token per sequence in cache slot `slot` (a (1,) tensor),
    its keys and values selected into `cache`'s layers (`hf_state`'s), of `slots` slots."""
    cpmant = model.cpmant
    slots = cache.layers[0].max_cache_len
    segment = torch.where(input_ids != 0, _TEXT_SEGMENT, 0).to(torch.int32)
    hidden = cpmant.input_embedding(input_ids) + cpmant.segment_embedding(segment)
    keys = torch.arange(slots, dtype=torch.int32, device=input_ids.device)
    visible = (keys <= slot)[None, None].expand(input_ids.shape[0], 1, slots)
    key_segment = torch.where(keys < cpmant.prompt_length, 0, _TEXT_SEGMENT).to(torch.int32)
    bias = _position_bias(cpmant.position_bias, keys - slot.to(torch.int32), key_segment, segment)
    hidden = cpmant.encoder(hidden, visible, bias, cache=cache, use_cache=True)[0]
    return model.lm_head(hidden)


def _position_bias(embedding, relative: Tensor, key_segment: Tensor, segment: Tensor) -> Tensor:
    """The query's row (batch, heads, 1, slots) of CPM-Ant's segment position bias: a bucket
    of the key's offset `relative` within a segment, else one per pair of segments."""
    across = embedding._segment_relative_position_bucket(segment, key_segment[None])
    within = embedding._position_bucket(
        relative, num_buckets=embedding.num_buckets, max_distance=embedding.max_distance
    )
    bucket = torch.where(key_segment[None] == segment, within[None], across + embedding.num_buckets)
    bias = F.embedding(bucket[:, None], embedding.relative_attention_bias)
    return bias.permute(0, 3, 1, 2)
