"""The translation's building blocks: values and where they live, the placed op being
translated, and `Translation`, whose helpers make the tasks (`simulator.translate` holds the
rules that use them).

An op runs on the PEs that hold its largest activation or state operand (when they lie in its
region), or spread over its whole region when that is estimated faster, moves of the other
operands included (`Translation.home`). A read of an activation held by other PEs is a move:
`cost.transfer` over the hops between the centres, the bytes split over as many parallel routes
as the longer sides of the two rectangles allow. Reductions and matmuls split the reduced dim
along a row of PEs when there are fewer outputs than PEs and all-reduce the partials
(`collectives.allreduce`, tree); a matmul also multicasts (`collectives.broadcast`) the operand
tiles several PEs share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core import dtypes
from core.errors import ModelSimError
from core.geometry import Rect, l_route
from core.target import Target
from runtime.program import Instruction, TensorSpec
from simulator import collectives, cost
from simulator.collectives import Frontier, Line
from simulator.cost import Calibration, CostModel
from simulator.engine import GraphBuilder, LinkSpan

REDUCE_ALGORITHM = "tree"


@dataclass(frozen=True)
class Value:
    """A value: the tasks that make it, the PEs that hold it, its bytes and what it is
    ("act", "weight", "state", "const", "input")."""

    frontier: Frontier
    where: Rect | None
    nbytes: int
    kind: str


@dataclass(frozen=True)
class PlacedOp:
    """One placed instruction under translation, with the labels of its tasks."""

    ins: Instruction
    labels: dict[str, Any]

    @property
    def region(self) -> Rect:
        """The PEs placement gave the op."""
        if "region" not in self.ins.attrs:
            raise ModelSimError(
                f"op {self.ins.op!r} ({self.ins.node}) has no region: is the program placed?"
            )
        return Rect(*self.ins.attrs["region"])

    @property
    def out(self) -> TensorSpec:
        """The spec of the op's (first) result."""
        return self.ins.result_specs[0]

    def arg(self, i: int) -> int:
        """The value id of operand `i`, one the op cannot do without."""
        vid = self.ins.operands[i]
        if vid is None:
            raise ModelSimError(f"op {self.ins.op!r} ({self.ins.node}) lacks operand {i}")
        return vid


@dataclass(frozen=True)
class MatmulShape:
    """(batch, M, K, N) of a matmul, and whether each operand has the batch dims."""

    batch: int
    m: int
    k: int
    n: int
    lhs_batched: bool
    rhs_batched: bool


def spec_bytes(spec: TensorSpec) -> int:
    """Bytes of a tensor of `spec`."""
    return math.prod(spec.shape) * dtypes.element_bytes(spec.dtype)


def size_of(shape: Sequence[int]) -> int:
    """Elements of `shape`, at least 1."""
    return max(1, math.prod(shape))


def ceil_div(a: int, b: int) -> int:
    """a / b rounded up."""
    return -(-a // b)


def pe_block(region: Rect, pes: int) -> Rect:
    """The PEs a value of `pes` parts occupies: row-major from the region's corner (the last
    dim along the rows, as the placed GEMVs leave their results)."""
    width = min(region.width, pes)
    return Rect(region.x, region.y, width, min(region.height, ceil_div(pes, width)))


def _group_lines(used: Rect, group: int) -> list[Line]:
    """The lines that join every block of `group` PEs tiling `used`: along x, then along y."""
    block = pe_block(used, group)
    lines = [Line(used, "x", block.width)] if block.width > 1 else []
    return lines + ([Line(used, "y", block.height)] if block.height > 1 else [])


def hops_between(src: Rect, dst: Rect) -> int:
    """Manhattan distance between the centres (as placement's `Rect.hops_to`)."""
    return round(abs(2 * (src.x - dst.x) + src.width - dst.width) / 2) + round(
        abs(2 * (src.y - dst.y) + src.height - dst.height) / 2
    )


def _contains(outer: Rect, inner: Rect) -> bool:
    return (
        outer.x <= inner.x
        and outer.y <= inner.y
        and inner.x + inner.width <= outer.x + outer.width
        and inner.y + inner.height <= outer.y + outer.height
    )


def _route(src: Rect, dst: Rect) -> tuple[LinkSpan, ...]:
    """The links of an L-shaped route between the regions' centres (`geometry.l_route`)."""
    return tuple(LinkSpan(direction, rect) for direction, rect in l_route(src, dst))


class Translation:
    """One translation in progress: the task graph, every value made so far and where it
    lives, and the helpers the rules of `simulator.translate.TRANSLATE` build tasks with."""

    def __init__(
        self,
        input_specs: Sequence[TensorSpec],
        target: Target,
        dtype: str,
        calibration: Calibration,
        *,
        streaming: bool,
        resident_weights: bool,
    ):
        self.dtype = dtype
        self.cms = {d: CostModel(target, calibration, d) for d in dtypes.COMPUTE_LABELS}
        self.streaming = streaming
        self.resident_weights = resident_weights
        self.b = GraphBuilder()
        self.values: dict[int, Value] = {
            i: Value((), None, spec_bytes(s), "input") for i, s in enumerate(input_specs)
        }
        self.specs: dict[int, TensorSpec] = dict(enumerate(input_specs))
        self.tiles: dict[int, dict] = {}
        self.readers: dict[int, list[int]] = defaultdict(list)
        self.streamed: list[int] = []
        self.moves: dict[tuple[int, Rect], Frontier] = {}
        self.landed: dict[tuple[int, int], Value] = {}  # (value, wafer): its first arrival
        self.stage_tasks: dict[int, list[int]] = defaultdict(list)
        self.fusable: dict[int, Rect] = {}
        self.stage = 0

    def cm(self, spec: TensorSpec) -> CostModel:
        """The cost model for `spec`'s element type (the simulated dtype when it has no
        compute label of its own)."""
        return self.cms[dtypes.by_name(spec.dtype).compute or self.dtype]

    def add(self, name: str, kind: str, c: cost.Cost, deps, region, labels, links=()) -> int:
        """A task of the current op; in streaming mode one without inputs waits for the
        previous layer (layers run one at a time on the grid)."""
        if not deps and kind != "stream" and self.streaming and self.stage > 0:
            deps = self.stage_tasks[self.stage - 1]
        task = self.b.add(f"{labels['op']}:{name}", kind, c, deps, region, links, **labels)
        self.stage_tasks[self.stage].append(task)
        return task

    def home(self, op: PlacedOp, cycles_on: Callable[[Rect], int]) -> Rect:
        """Where an op runs: on the PEs holding its largest activation or state operand (when
        they lie in its region) or spread over its whole region, whichever is estimated
        faster: `cycles_on(rect)` for the op plus the moves of the operands held elsewhere."""
        region = op.region
        operands = [self.values[v] for v in op.ins.operands if v is not None]
        held = [
            (v.nbytes, v.where)
            for v in operands
            if v.kind in ("act", "state") and v.where is not None and _contains(region, v.where)
        ]
        if not held:
            return region

        def estimate(rect: Rect) -> int:
            moves = sum(
                self.move_cost(v, rect).cycles
                for v in operands
                if v.kind == "act" and v.where is not None and v.where != rect
            )
            return cycles_on(rect) + moves

        where = max(held, key=lambda h: h[0])[1]
        return where if estimate(where) <= estimate(region) else region

    def operand(self, vid: int, home: Rect, labels: dict) -> Frontier:
        """The tasks a reader running on `home` waits for: the value's makers, plus a move
        when an activation is held by other PEs."""
        value = self.values[vid]
        if value.kind != "act" or value.where is None or value.where == home:
            return value.frontier
        key = (vid, home)
        if key not in self.moves:
            self.moves[key] = self.move(value, home, 0, "move", labels)
        return self.moves[key]

    def move_cost(self, value: Value, dst: Rect, hops: int = 0, relays: int = 0) -> cost.Cost:
        """`value` streamed from its PEs to `dst` over `hops` hops (default: between the
        centres), split over parallel minimal routes: as many lanes as the longer sides of
        both rectangles allow; each of `relays` (placement's `route-colors`) adds the target's
        `relay_latency_cycles`."""
        src = value.where or dst
        lanes = min(max(src.width, src.height), max(dst.width, dst.height))
        hops = hops or max(1, hops_between(src, dst))
        cm = self.cms[self.dtype]
        c = cost.transfer(cm, max(1, ceil_div(value.nbytes, lanes)), hops)
        return replace(c, cycles=c.cycles + relays * cm.target.relay_latency_cycles)

    def move(
        self, value: Value, dst: Rect, hops: int, name: str, labels, relays: int = 0
    ) -> Frontier:
        """A fabric task moving `value` to `dst` along an L-shaped route."""
        c = self.move_cost(value, dst, hops, relays)
        route = _route(value.where or dst, dst)
        return (self.add(name, "fabric", c, value.frontier, None, labels, route),)

    def deps(self, ins: Instruction, home: Rect, labels: dict) -> Frontier:
        """What an op running on `home` waits for: every present operand (`operand`)."""
        out: list[int] = []
        for vid in ins.operands:
            if vid is not None:
                out += self.operand(vid, home, labels)
        return tuple(out)

    def allreduce(self, cm, used: Rect, group: int, elements: int, front, what, labels):
        """Sum `elements` values over every block of `group` PEs tiling `used`."""
        name = f"{labels['op']}:{labels['node']}.{what}"
        for line in _group_lines(used, group):
            front = collectives.allreduce(
                self.b, cm, line, elements, REDUCE_ALGORITHM, front, name=name, **labels
            )
        return tuple(front)

    def spread(self, cm, used: Rect, group: int, nbytes: int, front, what, labels):
        """Multicast a tile to every PE of each block of `group` PEs tiling `used`."""
        name = f"{labels['op']}:{labels['node']}.{what}"
        for line in _group_lines(used, group):
            front = collectives.broadcast(self.b, cm, line, nbytes, 0, front, name=name, **labels)
        return tuple(front)

    def compute(self, op: PlacedOp, home: Rect, c: cost.Cost, pes: int, deps=None) -> Value:
        """One compute task on a block of `pes` PEs of `home`; the result is held by `home`
        (results smaller than it are computed redundantly on every PE that needs them). A task
        that only waits for PE-local work on the same PEs continues that task (the program
        fuses them): it pays no task start of its own."""
        ins, labels = op.ins, op.labels
        if deps is None:
            deps = self.deps(ins, home, labels)
        if deps and all(self.fusable.get(d) == home for d in deps):
            c = replace(c, cycles=c.cycles - self.cms[self.dtype].calibration.task_start_cycles)
        task = self.add(ins.node or ins.op, "compute", c, deps, pe_block(home, pes), labels)
        self.fusable[task] = home
        return Value((task,), home, 0, "act")

    def local(self, op: PlacedOp, inputs: int, ops: int) -> Value:
        """A PE-local op over the result's elements."""
        numel, cm = size_of(op.out.shape), self.cm(op.out)

        def on(rect: Rect) -> cost.Cost:
            pes = min(numel, rect.num_pes)
            return cost.elementwise(cm, numel, parts=pes, inputs=inputs, ops_per_element=ops)

        home = self.home(op, lambda r: on(r).cycles)
        return self.compute(op, home, on(home), min(numel, home.num_pes))

    def rowwise(self, op: PlacedOp, kind: str, rows: int, cols: int, stats: int = 1) -> Value:
        """A reduction of `cols` elements into each of `rows` outputs (reduce, softmax, norm):
        the reduced dim along a row of up to the region's width, the outputs over the rows;
        the local pass, then an all-reduce of the partials along each row (`stats` values per
        output for a norm: layer norm sums two)."""
        cm = self.cm(self.specs[op.arg(0)])

        def on(rect: Rect) -> tuple[cost.Cost, int, int]:
            per_row = min(cols, rect.width, max(1, rect.num_pes // rows))
            groups = min(rows, rect.num_pes // per_row)
            if kind == "softmax":
                c = cost.softmax(cm, rows, cols, parts_rows=groups, parts_cols=per_row)
            elif kind == "norm":
                c = cost.norm(cm, rows, cols, parts_rows=groups, parts_cols=per_row)
            else:
                parts, outputs = groups * per_row, ceil_div(rows, groups)
                c = cost.reduction(cm, rows * cols, parts=parts, outputs=outputs)
            return c, per_row, groups

        home = self.home(op, lambda r: on(r)[0].cycles)
        c, per_row, groups = on(home)
        front = self.compute(op, home, c, groups * per_row).frontier
        names = {"softmax": ("max", "sum"), "norm": ("stats",), "reduce": ("sum",)}[kind]
        elements = stats * ceil_div(rows, groups)
        used = pe_block(home, groups * per_row)
        for stat in names:
            front = self.allreduce(cm, used, per_row, elements, front, stat, op.labels)
        return Value(front, home, 0, "act")

    def matmul_tasks(self, op: PlacedOp, shape: MatmulShape, operands) -> Value:
        """A matmul on the op's region: K split over a row of PEs when there are fewer outputs
        than PEs, lhs tiles multicast to the PEs splitting N, rhs tiles to those splitting M
        (and the batch, when rhs has none), partial sums all-reduced. Each of `operands` is a
        value id or the frontier of a value computed in place."""
        batch, m, k, n = shape.batch, shape.m, shape.k, shape.n
        ins, labels = op.ins, op.labels
        cm = self.cm(self.specs[op.arg(0)])

        def split(rect: Rect) -> tuple[int, int, int, int]:
            g = min(k, rect.width, max(1, rect.num_pes // (batch * m * n)))
            q = rect.num_pes // g
            pn = min(n, q)
            pb = min(batch, q // pn)
            return g, pn, pb, min(m, q // (pn * pb))

        def mac_on(rect: Rect) -> cost.Cost:
            g, pn, pb, pm = split(rect)
            return cost.matmul(cm, batch * m, k, n, parts_m=pb * pm, parts_k=g, parts_n=pn)

        home = self.home(op, lambda r: mac_on(r).cycles)
        g, pn, pb, pm = split(home)
        used = pe_block(home, pb * pm * pn * g)
        bt, mt, kt, nt = ceil_div(batch, pb), ceil_div(m, pm), ceil_div(k, g), ceil_div(n, pn)
        lhs, rhs = (o if isinstance(o, tuple) else self.operand(o, home, labels) for o in operands)
        element = cm.element_bytes
        lhs_share = pn * (1 if shape.lhs_batched else pb)
        rhs_share = pm * (1 if shape.rhs_batched else pb)
        if lhs_share > 1:
            lhs = self.spread(cm, used, lhs_share, bt * mt * kt * element, lhs, "lhs", labels)
        if rhs_share > 1:
            rhs = self.spread(cm, used, rhs_share, bt * kt * nt * element, rhs, "rhs", labels)
        front = (self.add(ins.node or "mac", "compute", mac_on(home), lhs + rhs, used, labels),)
        if g > 1:
            front = self.allreduce(cm, used, g, bt * mt * nt, front, "partials", labels)
        return Value(tuple(front), home, 0, "act")
