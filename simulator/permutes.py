"""Permutes that cross PEs: `wse.fabric_permute` as an all-to-all over its PEs.

A value of `pes` parts lies row-major over a block of PEs (`tasks.pe_block`); a transpose
whose PE-distributed dims change order sends each PE's elements to (nearly) every other PE of
the block. `all_to_all` is that traffic, aggregated: with XY routing (along x, then y) and
every PE sending c bytes spread evenly over the P PEs of a w x h block, the busiest link of a
row (the middle one) carries floor(w/2) ceil(w/2) h c / (P - 1) bytes, and of a column
floor(h/2) ceil(h/2) w c / (P - 1); the x and y legs use different links and pipeline, so the
task is one transfer of the larger load over w + h - 2 hops, on every link of the block
(`simulator.wavelets` checks it wavelet by wavelet). A PE-local transpose (no PE boundary
crossed) stays a `wse.transpose`: an elementwise copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from core.geometry import Rect
from simulator import cost
from simulator.collectives import Frontier, Line
from simulator.cost import CostModel
from simulator.engine import GraphBuilder
from simulator.tasks import PlacedOp, Translation, Value, ceil_div, pe_block, size_of, spec_bytes
from simulator.translate import TRANSLATE


def busiest_link_bytes(block: Rect, nbytes_per_pe: int, transit: Rect | None = None) -> int:
    """Bytes on the busiest link of an even all-to-all of `nbytes_per_pe` from every PE of
    `block`, the x leg spread over the rows of `transit` and the y leg over its columns (at
    least each PE's share, which its ramp carries)."""
    w, h, pes = block.width, block.height, block.num_pes
    if pes == 1:
        return 0
    rows, cols = (transit or block).height, (transit or block).width
    along_x = (w // 2) * ceil_div(w, 2) * h * h / max(rows, h)
    along_y = (h // 2) * ceil_div(h, 2) * w * w / max(cols, w)
    busiest = math.ceil(max(along_x, along_y) * nbytes_per_pe / (pes - 1))
    return max(busiest, nbytes_per_pe)  # every PE's ramp sends and receives its share


def all_to_all(
    b: GraphBuilder,
    cm: CostModel,
    block: Rect,
    nbytes_per_pe: int,
    deps: Sequence[int],
    transit: Rect | None = None,
    **labels: Any,
) -> Frontier:
    """Every PE of `block` sends `nbytes_per_pe` spread evenly over all of them, through the
    routers of `transit` (a rectangle holding `block`; default the block itself): one fabric
    task on every link of `transit`, holding the block's cores that send and receive. A
    detour out of the block adds the hops out and back."""
    transit = transit or block
    load = busiest_link_bytes(block, nbytes_per_pe, transit)
    if load == 0:
        return tuple(deps)
    rows, cols = Line(transit, "x"), Line(transit, "y")
    links = rows.spans(True, 0, transit.width - 2) + rows.spans(False, 1, transit.width - 1)
    links += cols.spans(True, 0, transit.height - 2) + cols.spans(False, 1, transit.height - 1)
    detour = 2 * (transit.width - block.width + transit.height - block.height)  # out, back
    c = cost.transfer(cm, load, block.width + block.height - 2 + detour)
    name = labels.pop("name", "all_to_all")
    return (b.add(name, "fabric", c, deps, block, links, **labels),)


@TRANSLATE("fabric_permute")
def _fabric_permute(t: Translation, op: PlacedOp) -> Value:
    """The elements copied into their new order on each PE, then the all-to-all of every PE's
    share over the PEs that hold the value."""
    numel = size_of(op.out.shape)
    local = t.local(op, 1, 1)
    block = pe_block(local.where or op.region, min(numel, (local.where or op.region).num_pes))
    per_pe = max(1, ceil_div(spec_bytes(op.out), block.num_pes))
    name = f"{op.ins.op}:{op.ins.node}.all_to_all"
    cm, deps = t.cm(op.out), local.frontier
    front = all_to_all(t.b, cm, block, per_pe, deps, op.region, name=name, **op.labels)
    t.stage_tasks[t.stage] += front
    return Value(front, local.where, 0, "act")
