"""Long context: the KV cache counted once, last-position logits, flash-style tiled attention
(IR, SRAM, tile-by-tile execution, simulation), the scan in chunks, and a context that now fits
a small target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_matches

import compiler
import models
from compiler.mlir import new_context, parse_module
from compiler.passes import PlacementOptions, place_program
from compiler.passes.chunk_scan import ChunkScanOptions
from core.custom_ops import selective_scan_reference
from core.errors import PlacementError
from core.target import load_target
from models import layers
from runtime import tiled
from runtime.program import Instruction, TensorSpec
from simulator.phases import simulate_placed


def _attention(shape, causal: bool, scale: float) -> Instruction:
    return Instruction(
        "attention",
        (0, 1, 2, 3),
        (4,),
        (TensorSpec(shape, "f32"),),
        {"is_causal": causal, "scale": scale},
    )


@pytest.mark.parametrize(
    ("q_block", "kv_block", "kv_parts"), [(1, 1, 1), (3, 5, 1), (4, 2, 3), (16, 32, 1), (2, 7, 4)]
)
@pytest.mark.parametrize("masking", ["none", "causal", "bool", "float"])
def test_flash_attention_matches_eager_sdpa(q_block, kv_block, kv_parts, masking):
    q, k, v = torch.randn(2, 4, 16, 8), torch.randn(2, 2, 32, 8), torch.randn(2, 2, 32, 6)
    mask = None
    if masking == "bool":
        mask = torch.rand(16, 32) < 0.7
        mask[:, 0] = True  # every query sees a key
    elif masking == "float":
        mask = torch.randn(2, 1, 16, 32)
    causal = masking == "causal"
    ins = _attention((2, 4, 16, 6), causal, 0.3)
    got = tiled.flash_attention(ins, q, k, v, mask, q_block, kv_block, kv_parts)
    want = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=0.3, enable_gqa=True
    )
    assert_matches(got, want)


def test_flash_attention_gives_zeros_for_a_row_that_sees_no_key():
    q, k, v = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2] = False
    got = tiled.flash_attention(_attention((1, 1, 4, 8), False, 0.5), q, k, v, mask, 2, 4, 2)
    assert not got[0, 0, 2].any()  # as eager PyTorch on the CPU
    assert_matches(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5))


def test_verifier_refuses_partial_or_out_of_range_tiling():
    base = (
        "module {{ func.func @f(%q: tensor<1x1x4x8xf32>, %k: tensor<1x1x6x8xf32>) -> "
        'tensor<1x1x4x8xf32> {{ %0 = "wse.attention"(%q, %k, %k) {{is_causal = false, {attrs}'
        "operandSegmentSizes = array<i32: 1, 1, 1, 0>, scale = 1.0 : f64}} : (tensor<1x1x4x8xf32>, "
        "tensor<1x1x6x8xf32>, tensor<1x1x6x8xf32>) -> tensor<1x1x4x8xf32> return %0 : "
        "tensor<1x1x4x8xf32> }} }}"
    )
    good = "kv_block = 4 : i64, kv_parts = 2 : i64, q_block = 4 : i64, "
    parse_module(base.format(attrs=good), new_context())
    for bad in (
        "kv_block = 4 : i64, ",
        "kv_block = 7 : i64, kv_parts = 1 : i64, q_block = 4 : i64, ",
        "kv_block = 4 : i64, kv_parts = 3 : i64, q_block = 4 : i64, ",
        "kv_block = 4 : i64, kv_parts = 1 : i64, q_block = 0 : i64, ",
    ):
        with pytest.raises(Exception, match="tiling|q_block|kv_parts"):
            parse_module(base.format(attrs=bad), new_context())


def test_decode_kv_cache_is_counted_once():
    name, cache = "tiny-llama", 64
    config = models.config(name)
    model = models.build(name)
    inputs = models.example_inputs(name, 1, 10, phase="decode")
    report = compiler.compile(model.decode_module(), inputs, target="mesh-16x16").placed.report
    head_dim = config.hidden_size // config.num_heads
    buffer = 1 * config.num_kv_heads * cache * head_dim * 4  # batch x heads x slots x dim x fp32
    expected = config.num_layers * 2 * buffer
    assert expected == 32_768
    # Each of the 4 buffers rounds up to whole bytes on every PE of its region (< 256 PEs).
    assert expected <= report.bytes_by_kind["state"] < expected + 4 * 256
    assert sum(layer.state_bytes for layer in report.layers) == report.bytes_by_kind["state"]


@torch.no_grad()
def test_prefill_returns_last_position_logits_matching_eager():
    model = models.build("tiny-gpt2")
    ids = models.example_inputs("tiny-gpt2", 2, 12)
    compiled = compiler.compile(model.prefill_module(), ids, target="mesh-12x6")
    logits, *state = compiled(*ids)
    assert logits.shape == (2, 1, 256)
    assert_matches(logits, model(ids[0])[:, -1:])
    eager_state = model.prefill_module(all_logits=True)(*ids)[1:]
    for got, want in zip(state, eager_state, strict=True):
        assert_matches(got, want)


def _explicit_attend(q, k, v, visible=None):
    """Attention as separate matmuls and softmax: the whole score matrix is a tensor."""
    b, hq, lq, hd = q.shape
    hkv = k.shape[1]
    q = q.reshape(b, hkv, hq // hkv, lq, hd)
    scores = (q @ k.unsqueeze(2).transpose(-1, -2)) * hd**-0.5
    if visible is None:
        visible = torch.ones(lq, k.shape[2], dtype=torch.bool).tril()
    scores = torch.where(visible, scores, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v.unsqueeze(2)).reshape(b, hq, lq, hd)


@torch.no_grad()
def test_context_that_overflowed_a_small_target_now_fits_and_runs_tile_by_tile(monkeypatch):
    name, seq, target = "tiny-llama", 384, "mesh-16x16"
    model = models.build(name, max_seq_len=seq)
    ids = models.example_inputs(name, 1, seq)
    with monkeypatch.context() as patch:
        patch.setattr(layers, "attend", _explicit_attend)
        with pytest.raises(PlacementError):
            compiler.compile(
                model.prefill_module(all_logits=True), ids, target=target, mode="pipelined"
            )
    compiled = compiler.compile(model.prefill_module(), ids, target=target, mode="pipelined")
    report = compiled.placed.report
    assert report.fits
    tiling = [i.attrs for i in compiled.placed.program.instructions if i.op == "attention"]
    assert len(tiling) == 2 and all(a["kv_block"] < seq for a in tiling)
    logits, *state = compiled.using("simulator")(*ids)
    assert_matches(logits, model(ids[0])[:, -1:])
    for got, want in zip(state, model.prefill_module()(*ids)[1:], strict=True):
        assert_matches(got, want)


def test_simulated_tiled_attention_charges_the_block_loop():
    """Prefill attention cycles grow about as context squared; K/V blocks move over the fabric."""
    cycles = {}
    for seq in (128, 256):
        model = models.build("tiny-gpt2", device="meta", max_seq_len=seq)
        ids = models.example_inputs("tiny-gpt2", 1, seq)
        placed = compiler.compile(model.prefill_module(), ids, target="mesh-16x16").placed
        sim = simulate_placed(placed.program, placed.report.target, dtype="fp32")
        ops = {row.op: row for row in sim.op_classes}
        cycles[seq] = ops["attention"].busy_cycles
        assert any(event.name.endswith(".kv_blocks") for event in sim.events)
    assert 3.0 < cycles[256] / cycles[128] < 4.5, cycles


@pytest.mark.parametrize("chunk", [1, 7, 40])
def test_chunked_scan_matches_the_reference(chunk):
    b, d, n, length = 2, 6, 4, 40
    u, delta, z = (torch.randn(b, d, length) for _ in range(3))
    a, bs, cs = -torch.rand(d, n), torch.randn(b, n, length), torch.randn(b, n, length)
    skip, bias = torch.randn(d), torch.randn(d)
    ins = Instruction("selective_scan", (), (0, 1), (), {"delta_softplus": True})
    got = tiled.chunked_scan(ins, u, delta, a, bs, cs, skip, z, bias, chunk)
    want = selective_scan_reference(u, delta, a, bs, cs, skip, z, bias, True)
    for g, w in zip(got, want, strict=True):
        assert_matches(g, w)


@torch.no_grad()
def test_mamba_prefill_runs_its_scan_in_chunks_tile_by_tile():
    model = models.build("tiny-mamba")
    ids = models.example_inputs("tiny-mamba", 1, 40)
    compiled = compiler.compile(model.prefill_module(), ids, target=None)
    options = PlacementOptions(scan=ChunkScanOptions(chunk_steps=12))
    placed = place_program(compiled.mlir, load_target("mesh-8x8"), options=options)
    scans = [i.attrs["chunk"] for i in placed.program.instructions if i.op == "selective_scan"]
    assert scans == [12, 12]
    outputs = tiled.execute(placed.program, compiled.weights, list(ids), load_target("mesh-8x8"))
    for got, want in zip(outputs, model.prefill_module()(*ids), strict=True):
        assert_matches(got, want)
