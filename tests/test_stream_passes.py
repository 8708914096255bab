"""Streaming placement holds every weight finely enough for any model size: an experts weight
streams in passes of a few experts (`stream_passes`), and Cannon's square is chosen only where
the weight's tile stays within `STREAM_SHARE` of a PE (DeepSeek-V3 at its default size streams
on one wse3 thanks to both: before, 101,198 B on a PE of 40,960)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import transformers

import compiler
from compiler.mlir import new_context, parse_module
from compiler.passes import place_program
from compiler.passes.common import STREAM_SHARE, body_ops, get_int, get_ints, has, kind, tile_bytes
from compiler.passes.pipeline import PlacementOptions
from compiler.passes.tile_weights import TileWeightsOptions
from core.target import load_target

MESH = load_target("mesh-8x8")


def _tiles(text: str) -> list[dict]:
    """Every `wse.weight_tiles` of a placed module: its attributes and held bytes per PE."""
    with new_context() as ctx:
        module = parse_module(text, ctx)
        return [
            {
                "shape": get_ints(op, "tile_shape"),
                "passes": get_int(op, "stream_passes") if has(op, "stream_passes") else 1,
                "held": tile_bytes(op),
                "pes": math.prod(get_ints(op, "tile_grid")),
            }
            for op in body_ops(module)
            if kind(op) == "weight_tiles"
        ]


@pytest.fixture(scope="module")
def mixtral():
    config = transformers.MixtralConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    return model, ids, compiler.compile(model, (ids,), {"use_cache": False}, target=None)


@torch.no_grad()
def test_experts_stream_in_passes_tile_by_tile(mixtral):
    model, ids, compiled = mixtral
    options = PlacementOptions(tiles=TileWeightsOptions(stream_share=0.02))  # 819 B
    placed = place_program(compiled.mlir, MESH, mode="streaming", options=options)
    experts = [t for t in _tiles(placed.mlir) if len(t["shape"]) == 3]
    assert len(experts) == 2  # gate_up and down, 4 experts each, one per pass
    for t in experts:
        per_expert = math.prod(t["shape"][1:]) * 4
        assert t["passes"] == 4 and t["held"] == 2 * per_expert < 4 * per_expert
    plain = place_program(compiled.mlir, MESH, mode="streaming")
    whole = [t for t in _tiles(plain.mlir) if len(t["shape"]) == 3]
    assert [t["passes"] for t in whole] == [1, 1]  # within the default share: whole tiles
    assert [t["held"] for t in experts] == [t["held"] // 2 for t in whole]
    run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
    want = model(ids, use_cache=False).logits
    torch.testing.assert_close(run(ids, use_cache=False).logits, want, rtol=0, atol=1e-5)


class _SmallThenBig(torch.nn.Module):
    """One layer: a 64 KiB weight beside a 1 MiB one (fp32)."""

    def __init__(self):
        super().__init__()
        self.small = torch.nn.Linear(64, 256, bias=False)
        self.big = torch.nn.Linear(256, 1024, bias=False)

    def forward(self, x):
        return self.big(self.small(x))


def _layered() -> torch.nn.Module:
    model = torch.nn.Sequential()
    model.blocks = torch.nn.ModuleList([_SmallThenBig()])
    model.forward = model.blocks[0].forward  # type: ignore[method-assign]
    return model


def test_a_small_weight_beside_a_big_one_stays_within_its_share_when_streamed():
    torch.manual_seed(0)
    model, x = _layered().eval(), torch.randn(4, 64)
    compiled = compiler.compile(model, (x,), target=None)
    placed = place_program(compiled.mlir, MESH, mode="streaming")
    small, big = sorted(_tiles(placed.mlir), key=lambda t: t["held"] * t["pes"])
    cap = STREAM_SHARE * MESH.usable_sram_bytes_per_pe
    assert small["held"] * small["pes"] >= 64 * 256 * 4
    assert small["held"] <= cap < 64 * 256 * 4 / 4
    assert big["held"] * big["pes"] >= 256 * 1024 * 4
    assert small["pes"] + big["pes"] <= MESH.num_pes
