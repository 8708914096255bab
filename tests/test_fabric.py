"""Data movement the fabric pays for: permutes across PEs, stream colours and relays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
from compiler.mlir import new_context, parse_module
from compiler.passes.common import PassContext
from compiler.passes.fabric_permutes import crosses_pes
from compiler.passes.pipeline import run_passes
from compiler.passes.route_colors import RouteColors, RouteColorsOptions, _take_colours
from core.geometry import Rect
from core.target import load_target
from simulator.cost import load_calibration
from simulator.permutes import busiest_link_bytes
from simulator.phases import simulate_placed
from simulator.tasks import Translation, Value

MESH = load_target("mesh-8x8")
TAU = load_calibration().task_start_cycles


class Heads(torch.nn.Module):
    def forward(self, x, y):
        q = x.reshape(1, 16, 4, 8).transpose(1, 2)  # heads to the front: crosses PEs
        return torch.tanh(q), torch.tanh(y.transpose(1, 2))  # (64, 4, 8) on 64 PEs: local


def test_which_transposes_cross_pes():
    assert crosses_pes((1, 16, 4, 8), (0, 2, 1, 3), 64)
    assert crosses_pes((4, 64), (1, 0), 4)  # rows over PEs become columns
    assert not crosses_pes((64, 4, 8), (0, 2, 1), 64)  # each PE keeps its 4 x 8 block
    assert not crosses_pes((1, 8), (1, 0), 64)  # only a size-1 dim moves: a relabelling
    assert not crosses_pes((4, 64), (1, 0), 1)  # one PE holds it all


def test_a_permute_across_pes_is_an_all_to_all_and_computes_the_transpose():
    x, y = torch.randn(1, 16, 32), torch.randn(64, 4, 8)
    compiled = compiler.compile(Heads(), (x, y), target=MESH, runtime="simulator")
    ops = [i.op for i in compiled.placed.program.instructions]
    assert ops.count("fabric_permute") == 1 and ops.count("transpose") == 1
    got = compiled(x, y)
    want = Heads()(x, y)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)

    sim = simulate_placed(compiled.placed.program, MESH, dtype="fp32")
    (move,) = [e for e in sim.events if e.name.endswith(".all_to_all")]
    # 512 fp32 over 8 x 8 PEs: 32 B each; busiest link 4 x 4 x 8 x 32 / 63 B -> 17 wavelets
    assert move.region == Rect(0, 0, 8, 8)
    assert busiest_link_bytes(move.region, 32) == 66
    assert move.link_busy_cycles == 17
    assert move.duration_cycles == TAU + 2 * MESH.ramp_latency_cycles + 14 + 17


def test_all_to_all_load_on_a_square_a_row_and_a_row_through_a_region():
    assert busiest_link_bytes(Rect(0, 0, 16, 16), 1020) == 8 * 8 * 16 * 1020 // 255
    assert busiest_link_bytes(Rect(0, 0, 16, 1), 60) == 8 * 8 * 60 // 15
    # the same row through 16 rows of routers: a 16th of the load, but each ramp carries 60 B
    assert busiest_link_bytes(Rect(0, 0, 16, 1), 60, Rect(0, 0, 16, 16)) == 60
    assert busiest_link_bytes(Rect(3, 3, 1, 1), 60) == 0


def test_the_fabric_permute_verifier_refuses_a_relabelling():
    text = (
        'module {{ func.func @f(%x: tensor<{a}xf32>) -> tensor<{b}xf32> {{ %0 = "wse.fabric_'
        'permute"(%x) {{permutation = [{p}], region = [0, 0, 2, 2]}} : (tensor<{a}xf32>) -> '
        "tensor<{b}xf32> return %0 : tensor<{b}xf32> }} }}"
    )
    parse_module(text.format(a="4x8", b="8x4", p="1, 0"), new_context())
    with pytest.raises(Exception, match="relabelling"):
        parse_module(text.format(a="1x8", b="8x1", p="1, 0"), new_context())


def test_a_route_relays_where_no_colour_is_free_along_it():
    """Two colours left: the first half of the row has colour 0 taken, the second colour 1;
    a route along it takes colour 1, then relays to colour 0."""
    used = np.zeros((8, 8), dtype=np.uint64)
    used[0, 0:4], used[0, 4:7] = 0b01, 0b10
    assert _take_colours(used, [("E", Rect(0, 0, 7, 1))], 2) == 1
    assert used[0, :7].tolist() == [0b11] * 7


def _streams(count: int) -> str:
    ops = "".join(
        f'%s{i} = "wse.fabric_stream"(%x) {{hops = 7 : i64, region = [7, 0, 1, 1], '
        f"src_region = [0, 0, 1, 1], stage = 0 : i64}} : (tensor<4xf32>) -> tensor<4xf32> "
        for i in range(count)
    )
    return (
        'module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = '
        '"mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}} { func.func @f(%x: '
        f"tensor<4xf32>) -> tensor<4xf32> {{ {ops}return %s0 : tensor<4xf32> }} }}"
    )


def test_streams_beyond_the_colour_limit_get_relays_and_pay_their_latency():
    """24 colours, 4 kept for the regions' kernels: 20 streams along the same row fit; the
    next ones find no colour on any of the 7 PEs they cross."""
    context = new_context()
    module = parse_module(_streams(22), context)
    with context:
        run_passes(module, [RouteColors(RouteColorsOptions())], PassContext(MESH, "pipelined"))
        ops = list(module.body.operations[0].regions[0].blocks[0].operations)[:-1]
        relays = [op.attributes["relays"].value if "relays" in op.attributes else 0 for op in ops]
    assert relays == [0] * 20 + [7, 7]

    t = Translation((), MESH, "fp16", load_calibration(), streaming=False, resident_weights=False)
    value = Value((), Rect(0, 0, 1, 1), 400, "act")
    plain = t.move_cost(value, Rect(7, 0, 1, 1), 7)
    assert t.move_cost(value, Rect(7, 0, 1, 1), 7, relays=2).cycles == plain.cycles + 2 * 30
    assert MESH.relay_latency_cycles == 30
