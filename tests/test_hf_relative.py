"""Inkling's relative-position bias over the distances the keys reach (`compiler.hf_relative`)."""

from __future__ import annotations

import families
import pytest
import torch

from compiler.hf_rewrites import apply_rewrites

INKLING = ["inkling_text", "inkling2_text", "inkling2_loop_text"]


def _bias_modules(model):
    return [m for m in model.modules() if type(m).__name__.endswith(("RelativeLogits", "Bias"))]


def _calls(module, q_len: int, offset: int, kv_len: int):
    """Arguments of one call: a prefill (offset 0) or a later query block (a decode step)."""
    gen = torch.Generator().manual_seed(kv_len + offset)
    heads = getattr(module, "num_heads", 4)
    d_rel = module.proj.shape[0]
    q_positions = torch.arange(q_len) + offset
    distance = q_positions[:, None] - torch.arange(kv_len)[None, :]
    if hasattr(module, "linear"):  # Inkling-2: hidden states, distances, positions
        hidden = torch.randn(2, q_len, module.linear.in_features, generator=gen)
        return hidden, distance[None, None], q_positions[None].expand(2, -1)
    states = torch.randn(2, q_len, heads, d_rel, generator=gen)
    return states, q_positions, torch.arange(kv_len)


@pytest.mark.parametrize("family", INKLING)
def test_bias_is_eagers_over_every_reachable_distance(family):
    """Sliding layers (extent 8 < 16 keys) and full ones (extent 64 > 16 keys), in a prefill
    and in a one-token step at the last position: the rewrite's bias is eager's, bit for bit."""
    model = families.tiny_model(family)
    modules = _bias_modules(model)
    assert {m.rel_extent for m in modules} >= {8}
    with torch.no_grad():
        calls = [(m, _calls(m, q, o, 16)) for m in modules for q, o in ((16, 0), (1, 15))]
        expected = [m(*args) for m, args in calls]
        with apply_rewrites(model):
            actual = [m(*args) for m, args in calls]
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert want.abs().max() > 0


@pytest.mark.parametrize("family", INKLING)
def test_family_matches_eager(family):
    actual, expected = families.tiny_logits(family)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.01  # logits that say something
