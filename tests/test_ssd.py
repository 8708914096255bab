"""Mamba-2's SSD scan (`wafer::ssd_scan` -> `wse.ssd_scan`) and the Hugging Face state-space
families it and the Falcon/Jamba rewrites make compile: numbers against eager PyTorch on the
reference, tile-by-tile (`mesh-8x8`) and JAX runtimes, one scan op per layer, the verifier."""

from __future__ import annotations

import math
import sys

import families
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import assert_matches

import compiler
from compiler.hf_rewrites import apply_rewrites
from compiler.mlir import new_context, parse_module
from core.ssd import ssd_scan_reference
from core.target import load_target
from runtime.jax_runtime import RULES
from runtime.program import Instruction
from simulator import cost
from simulator.cost import CostModel, load_calibration
from simulator.phases import simulate_placed

TINY = dict(vocab_size=128, hidden_size=64, max_position_embeddings=64)
ATTENTION = dict(num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)
SSD = dict(mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16)


def _config(family: str) -> transformers.PretrainedConfig:
    """A tiny config per family: 8 heads of 16 channels in 2 groups, chunks shorter than the
    sequence."""
    t = transformers
    if family == "mamba2":
        return t.Mamba2Config(
            **TINY, num_hidden_layers=2, num_heads=8, head_dim=16, state_size=16, n_groups=2,
            chunk_size=32,
        )  # fmt: skip
    if family == "bamba":
        return t.BambaConfig(
            **TINY, **ATTENTION, **SSD, num_hidden_layers=2, attn_layer_indices=[1],
            mamba_chunk_size=8,
        )  # fmt: skip
    if family == "zamba2":
        return t.Zamba2Config(
            **TINY, num_hidden_layers=2, layers_block_type=["mamba", "hybrid"],
            hybrid_layer_ids=[1], mamba_d_state=16, mamba_ngroups=2, n_mamba_heads=8,
            mamba_headdim=16, chunk_size=8, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=4, attention_hidden_size=128, attention_head_dim=32, adapter_rank=8,
        )  # fmt: skip
    if family == "nemotron_h":
        return t.NemotronHConfig(
            **TINY, **ATTENTION, layers_block_type=["mamba", "attention", "mlp"], head_dim=16,
            ssm_state_size=16, mamba_num_heads=8, mamba_head_dim=16, n_groups=2, chunk_size=8,
        )  # fmt: skip
    if family == "granitemoehybrid":  # no experts: its Mamba-2 part (MoE is not this test's)
        return t.GraniteMoeHybridConfig(
            **TINY, **ATTENTION, **SSD, num_hidden_layers=2, layer_types=["mamba", "attention"],
            num_local_experts=0, shared_intermediate_size=128, mamba_chunk_size=8,
        )  # fmt: skip
    if family == "falcon_mamba":
        return t.FalconMambaConfig(**TINY, num_hidden_layers=2, state_size=8, intermediate_size=128)
    assert family == "jamba"  # one expert: a dense MLP
    return t.JambaConfig(
        **TINY, **ATTENTION, num_hidden_layers=2, num_experts=1, attn_layer_period=2,
        attn_layer_offset=1, mamba_d_state=8, mamba_dt_rank=8,
    )  # fmt: skip


# family -> (scan op, how many of its layers are state-space layers)
FAMILIES = {
    "mamba2": ("ssd_scan", 2),
    "bamba": ("ssd_scan", 1),
    "zamba2": ("ssd_scan", 2),
    "nemotron_h": ("ssd_scan", 1),
    "granitemoehybrid": ("ssd_scan", 1),
    "falcon_mamba": ("selective_scan", 2),
    "jamba": ("selective_scan", 1),
}


def _model(family: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    config = _config(family)
    return transformers.AutoModelForCausalLM.from_config(config).to(dtype).eval()


def _ids(seq: int = 20) -> torch.Tensor:
    return torch.randint(0, 128, (2, seq), generator=torch.Generator().manual_seed(1))


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out[0]


def _recurrence(x, dt, a, b, c, d, h0):
    """Mamba-2's recurrence, one step at a time, in float64."""
    heads = x.shape[2]
    b, c = (t.double().repeat_interleave(heads // t.shape[2], dim=2) for t in (b, c))
    x, dt, a, d, h = x.double(), dt.double(), a.double(), d.double(), h0.double()
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * a)[..., None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * b[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, c[:, t]) + d[:, None] * x[:, t])
    return torch.stack(ys, dim=1), h


def _inputs(length: int = 21):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, length, 4, 3, generator=g)
    dt = F.softplus(torch.randn(2, length, 4, generator=g))
    a = -torch.rand(4, generator=g) * 2
    b, c = (torch.randn(2, length, 2, 5, generator=g) for _ in range(2))
    return x, dt, a, b, c, torch.randn(4, generator=g), torch.randn(2, 4, 3, 5, generator=g)


@pytest.mark.parametrize("chunk", [1, 5, 21, 64])
def test_chunked_form_is_the_recurrence_for_any_chunk(chunk):
    x, dt, a, b, c, d, h0 = _inputs()
    want_y, want_h = _recurrence(x, dt, a, b, c, d, h0)
    y, h = ssd_scan_reference(x, dt, a, b, c, d, chunk, h0)
    torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.double(), want_h, rtol=1e-5, atol=1e-5)
    ins = Instruction("ssd_scan", (), (0, 1), (), {"chunk": chunk})
    got = RULES["ssd_scan"](ins, None, *(t.numpy() for t in (x, dt, a, b, c, d, h0)))
    for actual, expected in zip(got, (y, h), strict=True):
        torch.testing.assert_close(torch.tensor(np.array(actual)), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_rewrite_scans_the_cached_path_too_and_restores_hf_scan():
    """With a cache (a prefill that keeps its final state) the scan is the op as well."""
    model, ids = _model("mamba2"), _ids()
    hf_module = sys.modules[type(model.backbone.layers[0].mixer).__module__]
    hf_scan = hf_module.mamba2_chunk_scan
    want = model(ids, use_cache=True).logits
    with apply_rewrites(model):
        cached = model(ids, use_cache=True).logits
        uncached = model(ids, use_cache=False).logits
    assert hf_module.mamba2_chunk_scan is hf_scan
    assert_matches(cached, want)
    assert_matches(uncached, model(ids, use_cache=False).logits)


def _check_family(family: str, seq: int = 20, target: str | None = "mesh-8x8"):
    """One scan per state-space layer; reference, tile by tile on `target` (when placed), JAX."""
    model, ids = _model(family), _ids(seq)
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=target)
    op, layers = FAMILIES[family]
    assert compiled.mlir.count(f'"wse.{op}"') == layers
    runtimes = ["reference", "jax"]
    if target is not None:
        assert compiled.placed.mlir.count(f'"wse.{op}"') == layers
        runtimes.append("simulator")
    for runtime in runtimes:
        assert_matches(_logits(compiled.using(runtime)(ids, use_cache=False)), want)
    return compiled


def test_mamba2_one_ssd_scan_per_layer_matches_eager_placed_and_simulated():
    """Chunks of 32 over 40 steps; placed, `chunk-scan` re-chooses them per PE."""
    compiled = _check_family("mamba2", seq=40)
    program = compiled.placed.program
    for scan in (i for i in program.instructions if i.op == "ssd_scan"):
        _, _, width, height = scan.attrs["region"]
        channels = -(-16 // max(1, width * height // 16))  # 2 x 8 heads of 16 channels
        assert scan.attrs["chunk"] == round(math.sqrt(channels * 16 / (channels + 16)))
    sim = simulate_placed(program, compiled.placed.report.target, dtype="fp32")
    assert {row.op: row.busy_cycles for row in sim.op_classes}["ssd_scan"] > 0
    assert any(event.name.endswith(".bc") for event in sim.events)  # B and C multicast


def test_mamba2_bf16_matches_eager():
    model, ids = _model("mamba2", torch.bfloat16), _ids()
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target="mesh-8x8")
    for runtime in ("reference", "simulator", "jax"):
        got = _logits(compiled.using(runtime)(ids, use_cache=False))
        assert_matches(got, want, compute_dtype=torch.bfloat16)


def test_falcon_mamba_scans_once_per_layer():
    _check_family("falcon_mamba")


@pytest.mark.slow  # the same rewrites as Mamba-2's and FalconMamba's (the fast tests above)
@pytest.mark.parametrize("family", ["bamba", "nemotron_h", "granitemoehybrid", "jamba"])
def test_hybrids_match_eager(family):
    _check_family(family)


@pytest.mark.slow
def test_zamba2_matches_eager():
    """Unplaced: its shared attention block overflows a mesh-8x8 PE even streamed."""
    _check_family("zamba2", target=None)


def test_ssd_cost_grows_linearly_in_length_and_with_the_chunk():
    """Chunks run in order (linear in length); a chunk's scores grow as its square."""
    cm = CostModel(load_target("wse3"), load_calibration(), "bf16")

    def cycles(length: int, chunk: int, parts: int = 24) -> int:
        return cost.ssd_scan(cm, length, 24, 64, 128, chunk, parts=parts).cycles

    assert 1.9 < cycles(8192, 16) / cycles(4096, 16) < 2.1
    assert cycles(4096, 64) > cycles(4096, 16)
    assert cycles(4096, 16, parts=96) < cycles(4096, 16)  # a head's channels over 4 PEs
    with pytest.raises(ValueError, match="chunk"):
        cost.ssd_scan(cm, 16, 24, 64, 128, 0)


_MODULE = (
    "module {{ func.func @f(%x: tensor<2x8x4x3xf32>, %dt: tensor<2x8x4xf32>, %a: tensor<{a}xf32>, "
    '%b: tensor<2x8x{g}x5xf32>) -> tensor<2x8x4x3xf32> {{ %0:2 = "wse.ssd_scan"(%x, %dt, %a, %b, '
    "%b) {{chunk = {chunk} : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 0, 0>}} : "
    "(tensor<2x8x4x3xf32>, tensor<2x8x4xf32>, tensor<{a}xf32>, tensor<2x8x{g}x5xf32>, "
    "tensor<2x8x{g}x5xf32>) -> (tensor<2x8x4x3xf32>, tensor<2x4x3x5xf32>) "
    "return %0#0 : tensor<2x8x4x3xf32> }} }}"
)


def test_verifier_refuses_bad_ssd_scans():
    parse_module(_MODULE.format(a=4, g=2, chunk=4), new_context())
    for bad, message in (
        (dict(a=3, g=2, chunk=4), "a \\(H,\\)"),
        (dict(a=4, g=3, chunk=4), "split evenly"),
        (dict(a=4, g=2, chunk=0), "chunk must be at least 1"),
    ):
        with pytest.raises(Exception, match=message):
            parse_module(_MODULE.format(**bad), new_context())


def test_zamba_scans_once_per_mamba_head():
    """Zamba's mixer runs one selective scan per Mamba head (HF's loop over time, unrolled by
    export, made compiling its default size take over 600 s)."""
    model = families.tiny_model("zamba")
    ids = families.tiny_inputs(model)
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
        compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
        got = compiled.using("reference")(ids, use_cache=False).logits
    scans = [n for n in compiled.exported.graph.nodes if "selective_scan" in str(n.target)]
    config = model.config
    assert len(scans) == config.num_hidden_layers * config.n_mamba_heads
    assert_matches(got, want)
