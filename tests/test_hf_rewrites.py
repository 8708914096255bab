"""Rewrites of Hugging Face modules before export (compiler.hf_rewrites)."""

import pytest
import torch
import transformers

from compiler.hf_rewrites import REWRITES, apply_rewrites

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
def test_cached_path_falls_back_to_original(hf_mamba):
    want = hf_mamba(_ids(), use_cache=True).logits
    with apply_rewrites(hf_mamba):
        got = hf_mamba(_ids(), use_cache=True).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


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
