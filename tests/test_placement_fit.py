"""Placement of shapes that crowded one PE at default sizes: a narrow weight on a region with
few rows (a router's, Aria: 76,168 B on a PE), a streamed weight its reader slices or converts
(LongCat-Flash's experts and fp32 router: 63,789 B), and a weight tile cut the wrong way round
for its rectangle (Inkling's decode: 51,848 B). Each is checked tile by tile against eager."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import compiler
import models
from compiler.mlir import new_context, parse_module, shape_of
from compiler.passes import PlacementOptions, place_program
from compiler.passes.common import (
    WEIGHT_VIEWS as VIEWS,
)
from compiler.passes.common import (
    body_ops,
    ceil_div,
    get_int,
    get_ints,
    has,
    kind,
    tile_bytes,
    tile_rect,
    users,
)
from compiler.passes.split_matmuls import SplitMatmulsOptions
from compiler.passes.tile_weights import TileWeightsOptions
from core.geometry import Rect
from core.target import load_target

MESH = load_target("mesh-8x8")
SHARE = SplitMatmulsOptions().broadcast_share


class _Layer(torch.nn.Module):
    """A wide weight beside a narrow router (as Aria's), in one layer: the router's rectangle
    is a few PEs."""

    def __init__(self, hidden: int):
        super().__init__()
        self.wide = torch.nn.Linear(hidden, 256, bias=False)
        self.router = torch.nn.Linear(hidden, 8, bias=False)

    def forward(self, x):
        return self.wide(x), self.router(x)


class _Router(torch.nn.Module):
    """`_Layer`, an fp32 gate over a bf16 weight (as DeepSeek's and LongCat's), and the first
    `kept` rows of an experts-like bank (as LongCat slices its routed experts out of one that
    also has slots for its zero-compute ones)."""

    def __init__(self, hidden: int = 1024, kept: int = 4):
        super().__init__()
        self.layers = torch.nn.ModuleList([_Layer(hidden)])  # one stage: "layers.0"
        self.gate = torch.nn.Parameter(torch.randn(8, hidden) / hidden**0.5)
        self.bank = torch.nn.Parameter(torch.randn(2 * kept, hidden) / hidden**0.5)
        self.kept = kept

    def forward(self, x):
        gate = F.linear(x.float(), self.gate.float()).to(x.dtype)
        return *self.layers[0](x), gate, x @ self.bank[: self.kept].t()


def _ops(text: str) -> list[dict]:
    with new_context() as ctx:
        module = parse_module(text, ctx)
        return [
            {
                "kind": kind(op),
                "sram": get_ints(op, "sram") if has(op, "sram") else None,
                "rows": get_int(op, "rows_per_pass") if has(op, "rows_per_pass") else None,
                "parts": get_int(op, "parts") if has(op, "parts") else None,
                "k": shape_of(op.operands[0])[-1] if op.operands else None,
                "source": shape_of(op.operands[0]) if op.operands else None,
                "held": tile_bytes(op) if kind(op) == "weight_tiles" else None,
                "tile": get_ints(op, "tile_shape") if kind(op) == "weight_tiles" else None,
            }
            for op in body_ops(module)
        ]


@pytest.fixture(scope="module")
def router():
    torch.manual_seed(0)
    model = _Router().to(torch.bfloat16).eval()
    x = torch.randn(2, 8, 1024, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    return model, x, compiler.compile(model, (x,), target=None)


@torch.no_grad()
@pytest.mark.parametrize("share", [SHARE, 0.01])
def test_broadcast_slices_stay_within_their_share(router, share):
    """A broadcast matmul sends as many activation rows per pass as keep a pass's K slices
    within `broadcast_share` of a PE (at 1 %, 409 B: one row of 128 bf16 values, not 8); the
    results are eager's."""
    model, x, compiled = router
    options = PlacementOptions(matmuls=SplitMatmulsOptions(broadcast_share=share))
    placed = place_program(compiled.mlir, MESH, mode="streaming", options=options)
    sent = [op for op in _ops(placed.mlir) if op["kind"] == "fabric_broadcast"]
    budget = share * MESH.usable_sram_bytes_per_pe
    assert len(sent) == 2  # the wide weight's and the router's
    assert all(op["rows"] * ceil_div(op["k"], op["parts"]) * 2 <= budget for op in sent)
    assert all(op["rows"] == (8 if share == SHARE else 1) for op in sent)
    run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
    for got, want in zip(run(x), model(x), strict=True):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@torch.no_grad()
def test_streamed_views_take_no_sram_and_converted_tiles_count_wide(router):
    """Streaming, the router's convert and the bank's slice read the streamed tiles in place
    (no `sram` of their own); the converted router weight's tiles are held at fp32 width."""
    model, x, compiled = router
    placed = place_program(compiled.mlir, MESH, mode="streaming")
    ops = _ops(placed.mlir)
    views = [op for op in ops if op["kind"] in ("convert", "slice") and op["source"] == (8, 1024)]
    assert len(views) >= 2 and all(op["sram"] is None for op in views)
    small = [op for op in ops if op["kind"] == "weight_tiles" and op["source"] == (8, 1024)]
    widths = sorted(op["held"] // math.prod(op["tile"]) for op in small)
    assert widths == [2, 2, 4]  # the gate's tiles arrive as fp32; the router's and bank's bf16
    run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
    for got, want in zip(run(x), model(x), strict=True):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@torch.no_grad()
def test_a_big_tile_is_cut_the_other_way_round():
    """A weight whose tile would take more than `stream_share` of a PE is cut the other way
    round where that makes its tile smaller (Inkling's short-convolution channels in decode,
    on a rectangle one PE high: 24,576 B a PE, then 6,144): Mamba's conv weight (128, 1, 4) on
    a rectangle 8 PEs wide and 2 high puts its channels across the 8 columns, tile by tile as
    eager computes."""
    model = models.build("tiny-mamba")
    ids = models.example_inputs("tiny-mamba", seq=16)
    compiled = compiler.compile(model, ids, target=None)
    options = PlacementOptions(tiles=TileWeightsOptions(stream_share=0.001))
    placed = place_program(compiled.mlir, MESH, mode="pipelined", options=options)
    with new_context() as ctx:
        module = parse_module(placed.mlir, ctx)
        convs = [
            (get_ints(op, "tile_dims"), get_ints(op, "tile_shape"))
            for op in body_ops(module)
            if kind(op) == "weight_tiles" and len(shape_of(op.result)) == 3
        ]
    assert ([2, 0], [16, 1, 2]) in convs  # 32 elements a tile; 64 the usual way round
    run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
    torch.testing.assert_close(run(*ids), model(*ids), rtol=1e-5, atol=1e-5)


class _Expanded(torch.nn.Module):
    """A learned table repeated over the batch (`expand`): a broadcast that adds elements."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(1, 64, 256))

    def forward(self, x):
        return x * self.table.expand(x.shape[0], -1, -1)


@torch.no_grad()
def test_a_streamed_weight_repeated_by_a_broadcast_is_held_as_itself():
    """Streaming, a view that repeats a weight is no view of its tiles: the broadcast holds its
    4 copies in SRAM (4,096 B a PE on mesh-8x8), as pipelined."""
    model = _Expanded().eval()
    x = torch.randn(4, 64, 256, generator=torch.Generator().manual_seed(1))
    compiled = compiler.compile(model, (x,), target=None)
    for mode in ("pipelined", "streaming"):
        placed = place_program(compiled.mlir, MESH, mode=mode)
        expanded = [op for op in _ops(placed.mlir) if op["kind"] == "broadcast"]
        assert [op["sram"][1] for op in expanded] == [4 * 64 * 256 * 4 // MESH.num_pes]
        run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
        torch.testing.assert_close(run(x), model(x), rtol=0, atol=0)


def _buffers(text: str) -> list[tuple[Rect, int, int, int, int]]:
    """Every SRAM buffer of a streamed placement: (PEs, first op, last op, first byte, end),
    live from its op (a weight's tiles: from the previous weight's, as they stream in while it
    is used) to its last reader (through views of a weight)."""
    with new_context() as ctx:
        module = parse_module(text, ctx)
        ops, readers = body_ops(module), users(module)
        index = {op: i for i, op in enumerate(ops)}

        def last(op) -> int:
            ends = [index[op]]
            for user in (u for r in op.results for u in readers.get(r, ())):
                ends.append(index.get(user, len(ops)))
                if user in index and kind(user) in VIEWS and not has(user, "sram"):
                    ends.append(last(user))
            return max(ends)

        found, previous = [], None
        for op in ops:
            if kind(op) == "weight_tiles":
                offset = get_int(op, "sram_offset")
                start = index[op] if previous is None else index[previous]
                found.append((tile_rect(op), start, last(op), offset, offset + tile_bytes(op)))
                previous = op
            elif has(op, "sram"):
                offset, size = get_ints(op, "sram")
                rect = Rect(*get_ints(op, "region"))
                found.append((rect, index[op], last(op), offset, offset + size))
    return found


def _clashes(buffers) -> list:
    """Pairs of buffers live at once on a common PE whose bytes overlap."""
    return [
        (a, b)
        for i, a in enumerate(buffers)
        for b in buffers[i + 1 :]
        if a[0].overlaps(b[0]) and a[1] <= b[2] and b[1] <= a[2] and a[3] < b[4] and b[3] < a[4]
    ]


@torch.no_grad()
def test_streamed_buffers_share_bytes_only_where_they_share_no_pe(router):
    """Streaming, a buffer reuses bytes that a live buffer holds only on other PEs (the wide
    weight's results beside the router's partial sums): one pool for the whole grid charged
    every PE with a buffer on a few (Inkling-2's decode: 55,201 B on every PE, DeepSeek-V3.2's
    prefill 41,481 B). No two live buffers clash on a PE, and the results are eager's."""
    model, x, compiled = router
    placed = place_program(compiled.mlir, MESH, mode="streaming")
    buffers = _buffers(placed.mlir)
    assert _clashes(buffers) == []
    shared = [
        (a, b)
        for i, a in enumerate(buffers)
        for b in buffers[i + 1 :]
        if not a[0].overlaps(b[0]) and a[1] <= b[2] and b[1] <= a[2] and a[3] < b[4] and b[3] < a[4]
    ]
    assert shared  # live at once, the same bytes, on different PEs
    report = placed.report  # its figures count the bytes each PE spans, no more than in use
    spanned = sum(report.bytes_by_kind.get(k, 0) for k in ("weight_buffers", "activations"))
    assert 0 < spanned <= report.usage.sum()
    run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
    for got, want in zip(run(x), model(x), strict=True):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


class _TapsLayer(torch.nn.Module):
    """A decode step's short convolution (as Inkling-2's): static taps widened to fp32 plus
    per-token ones, beside a projection whose weight takes nearly all of the layer's bytes."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(256, 1024, bias=False)
        self.taps = torch.nn.Parameter(torch.randn(4, 256))

    def forward(self, x):
        dynamic = self.proj(x).float().view(*x.shape[:-1], 256, 4)
        return (self.taps.float().t() * dynamic).sum(-1)


class _OneStage(torch.nn.Module):
    """`layer` as the model's one stage ("layers.0"), so its weights share one layer's bytes."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layers = torch.nn.ModuleList([layer])

    def forward(self, x):
        return self.layers[0](x)


@torch.no_grad()
def test_a_streamed_weight_for_elementwise_work_spreads_over_the_stage():
    """Streaming, a weight that no matmul reads runs on the whole stage, not on the few PEs
    its share of the layer's bytes would give it (Inkling-2's taps in decode: 16 kB on one
    PE); pipelined, it keeps a rectangle of its size."""
    model = _OneStage(_TapsLayer()).to(torch.bfloat16).eval()
    x = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    compiled = compiler.compile(model, (x,), target=None)
    for mode in ("pipelined", "streaming"):
        placed = place_program(compiled.mlir, MESH, mode=mode)
        with new_context() as ctx:
            module = parse_module(placed.mlir, ctx)
            taps = [
                tile_rect(op)
                for op in body_ops(module)
                if kind(op) == "weight_tiles" and shape_of(op.result) == (4, 256)
            ]
        spread = [rect.num_pes == MESH.num_pes // 2 for rect in taps]  # 4 x 8 tiles
        assert spread == [mode == "streaming"]
        run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
        torch.testing.assert_close(run(x).float(), model(x).float(), rtol=2e-2, atol=2e-2)


class _QueriesLayer(torch.nn.Module):
    """Learned queries expanded over every token for a batched matmul with the token's
    states (as Inkling-2-Loop's), beside a projection with most of the layer's bytes."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(64, 512, bias=False)
        self.query = torch.nn.Parameter(torch.randn(3, 256) / 16)

    def forward(self, x):  # (batch, tokens, 3, 2): fewer elements than the queries
        states = self.proj(x).view(*x.shape[:-1], 2, 256)
        queries = self.query.expand(*x.shape[:-1], -1, -1)
        return queries @ states.transpose(-1, -2)


@torch.no_grad()
def test_a_weight_repeated_over_the_tokens_runs_on_the_whole_stage():
    """A weight that a view repeats over the tokens before a batched matmul reads it runs on
    its whole stage, not on the rectangle of the weight's size (Inkling-2-Loop's queries:
    3.5 MB on 20 PEs, 176,948 B a PE; here 56,208 B on a PE of mesh-8x8); tile by tile as
    eager computes."""
    model = _OneStage(_QueriesLayer()).eval()
    x = torch.randn(2, 32, 64, generator=torch.Generator().manual_seed(1))
    compiled = compiler.compile(model, (x,), target=None)
    placed = place_program(compiled.mlir, MESH, mode="pipelined")
    with new_context() as ctx:
        module = parse_module(placed.mlir, ctx)
        ops = body_ops(module)
        stage = max(Rect(*get_ints(op, "region")).num_pes for op in ops if has(op, "region"))
        repeated = [
            Rect(*get_ints(op, "region")).num_pes
            for op in ops
            if kind(op) == "broadcast" and shape_of(op.result) == (2, 32, 3, 256)
        ]
    assert repeated == [stage]
    run = dataclasses.replace(compiled, placed=placed, target=MESH).using("simulator")
    torch.testing.assert_close(run(x), model(x), rtol=1e-5, atol=1e-5)
