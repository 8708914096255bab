"""Rewrites of Hugging Face modules before export (compiler.hf_rewrites)."""

import pytest
import torch
import transformers

from compiler.hf_rewrites import REWRITES, apply_rewrites
from models import hf_state

SCAN = torch.ops.wafer.selective_scan.default


@pytest.fixture(scope="module")
def hf_mamba() -> transformers.MambaForCausalLM:
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=3)
    return transformers.MambaForCausalLM(config).eval()


def _ids(seq: int = 10) -> torch.Tensor:
    return torch.randint(0, 128, (2, seq), generator=torch.Generator().manual_seed(1))


def test_registry_is_documented():
    assert REWRITES[0].name == "mamba-selective-scan"
    assert {"moe-router", "moe-experts"} <= {r.name for r in REWRITES}
    assert all(r.doc for r in REWRITES)


@torch.no_grad()
def test_rewritten_mixer_matches_original(hf_mamba):
    mixer = hf_mamba.backbone.layers[0].mixer
    x = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(2))
    want = mixer(x)
    with apply_rewrites(hf_mamba):
        assert "forward" in mixer.__dict__
        got = mixer(x)
        logits = hf_mamba(_ids(), use_cache=False).logits
    assert "forward" not in mixer.__dict__  # restored
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, hf_mamba(_ids(), use_cache=False).logits, rtol=0, atol=1e-5)


@torch.no_grad()
def test_cached_path_scans_as_one_op(hf_mamba):
    """With a cache HF's forward runs with its scan as the op, which also gives the state
    a decode step continues from."""
    want = hf_mamba(_ids(), use_cache=True)
    with apply_rewrites(hf_mamba):
        got = hf_mamba(_ids(), use_cache=True)
        prefill = hf_state.HFPrefill(hf_mamba, 12)  # the cache as explicit outputs
        ep = torch.export.export(prefill, (_ids(),), strict=False)
    assert sum(n.target == SCAN for n in ep.graph.nodes) == 3
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-5)
    for layer in range(3):
        torch.testing.assert_close(
            got.cache.layers[layer].recurrent_states[0],
            want.cache.layers[layer].recurrent_states[0],
            rtol=0,
            atol=1e-5,
        )


def test_restored_after_exception(hf_mamba):
    mixers = [layer.mixer for layer in hf_mamba.backbone.layers]
    with pytest.raises(RuntimeError), apply_rewrites(hf_mamba):
        raise RuntimeError
    assert not any("forward" in m.__dict__ for m in mixers)


def test_export_has_one_scan_per_layer(hf_mamba):
    with apply_rewrites(hf_mamba):
        ep = torch.export.export(hf_mamba, (_ids(),), {"use_cache": False}, strict=False)
    assert sum(n.target == SCAN for n in ep.graph.nodes) == 3
    ep = ep.run_decompositions()
    assert sum(n.target == SCAN for n in ep.graph.nodes) == 3
    with torch.no_grad():
        want = hf_mamba(_ids(), use_cache=False).logits
        torch.testing.assert_close(
            ep.module()(_ids(), use_cache=False).logits, want, rtol=0, atol=1e-5
        )
