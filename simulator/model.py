"""Model-level simulation: a placed program translated into one engine task graph.

`simulate_placed(program, target, dtype=...)` walks the placed instructions in order with one
`GraphBuilder` (the rules of `simulator/engine.py`, "Translating a placed program"):

- a compute op becomes one compute task, costed by op class (`simulator.cost`: elementwise,
  reduction, softmax, norm, matmul, scan) from its global shapes split over the PEs it uses;
  the task holds that block of PEs. An op runs on the PEs that hold its largest activation or
  state operand (when they lie in its region), or spread over its whole region when that is
  estimated faster, moves of the other operands included. A task that only waits for PE-local
  work on the same PEs continues it (the wafer program fuses them) and pays no task start;
- reductions (`reduce`, softmax, norms) and activation x activation matmuls split the reduced
  dim along a row of PEs when there are fewer outputs than PEs and all-reduce the partials
  (`kernels.allreduce`, tree); a matmul also multicasts (`kernels.broadcast`) the operand tiles
  several PEs share. The KV cache and the SSM state stay where they are (resident);
- `fabric_broadcast` and the Cannon pair `fabric_shift` + `tile_matmul` use the `kernels`
  builders `broadcast` and `gemm` ("cannon"); `fabric_reduce` is `kernels.allreduce` with its
  algorithm, less the final multicast: the sum stays on the region's first row;
- `fabric_stream`, and a read of an activation held by other PEs, become `cost.transfer` over
  the hops between the centres (the stream's own `hops`), the bytes split over as many parallel
  routes as the longer sides of the two rectangles allow;
- `weight_tiles` with home "external" become stream tasks on the external channel with two
  weight buffers: weight j streams once the readers of weight j-2 are done, so the next layer
  streams in while the current one computes; in streaming mode a layer's tasks without inputs
  wait for the previous layer (one layer at a time on the grid). "sram" weights and "state"
  host transfers are free; "data" host transfers use the external channel (host I/O);
- `reshape`, `broadcast`, `constant`, `param` and transposes that only move size-1 dims are
  free: the value stays where it was.

Labels `op`, `node`, `location` and `layer` (the stage) are on every task.

Pipelines: a pipelined prefill runs over `chunks` pieces of the sequence, each assumed to cost
1/chunks of a stage's whole-sequence time: one pass / chunks to fill, then (chunks - 1) times
the busiest stage's share. The bubble is the idle fraction of the stages' time. In streaming
mode the stages share the grid; the bubble is the time nothing but the weight stream runs.
`simulate_model` and `simulate_phase` compile and place registered models and simulate them.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

import compiler
import models
from compiler.placement_report import PlacementReport
from core import dtypes
from core.errors import ModelSimError, TargetError
from core.geometry import Rect
from core.target import Target, load_target
from runtime.program import Instruction, Program, TensorSpec
from simulator import cost, kernels
from simulator.cost import Calibration, CostModel, load_calibration
from simulator.engine import Event, GraphBuilder, LinkSpan, simulate
from simulator.kernels import Line
from simulator.trace import Breakdown, LinkLoad, breakdown, busiest_links, critical_path

FREE_OPS = frozenset({"param", "constant", "reshape", "broadcast"})
TRANSCENDENTAL = frozenset(
    {"exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "div", "pow", "sin", "cos", "tanh"}
    | {"erf", "sigmoid", "silu", "gelu", "softplus"}
)
ELEMENTWISE = TRANSCENDENTAL | frozenset(
    {"neg", "abs", "relu", "not", "add", "sub", "mul", "maximum", "minimum", "and", "or"}
    | {"cmp", "where", "convert", "iota", "slice", "concat", "transpose", "index"}
)
REDUCE_ALGORITHM = "tree"


@dataclass(frozen=True)
class LayerTime:
    """One stage: when its first task started and its last ended, the cycles at least one of
    its tasks ran, and its share of the critical path (compute, communication, waiting)."""

    stage: int
    name: str
    start_cycles: int
    end_cycles: int
    busy_cycles: int
    compute_cycles: int
    comm_cycles: int
    wait_cycles: int

    @property
    def span_cycles(self) -> int:
        return self.end_cycles - self.start_cycles


@dataclass(frozen=True)
class OpClassTime:
    """One op class (`tile_matmul`, `softmax`, ...): its tasks, their summed busy cycles, and its
    share of the critical path."""

    op: str
    tasks: int
    busy_cycles: int
    compute_cycles: int
    comm_cycles: int
    wait_cycles: int


@dataclass(frozen=True)
class SimResult:
    """One placed program simulated: `cycles` is the pass (pipelined over `chunks` when > 1),
    `makespan_cycles` the single pass through the task graph."""

    target: Target
    dtype: str
    mode: str
    chunks: int
    makespan_cycles: int
    cycles: int
    flops: float
    bubble_fraction: float
    breakdown: Breakdown
    layers: tuple[LayerTime, ...]
    op_classes: tuple[OpClassTime, ...]
    busiest_links: tuple[LinkLoad, ...]
    events: tuple[Event, ...] = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.cycles / self.target.clock_hz

    @property
    def peak_flops(self) -> float:
        """Dense peak of the target grid, FLOP/s, for the element width simulated."""
        return self.target.peak_flops(32 if self.dtype == "fp32" else 16)

    @property
    def utilization(self) -> float:
        return self.flops / (self.peak_flops * max(self.seconds, 1e-30))

    @property
    def slowest_stage_cycles(self) -> int:
        """The busiest stage's busy cycles: what bounds a pipeline's throughput."""
        return max((layer.busy_cycles for layer in self.layers), default=self.makespan_cycles)


@dataclass(frozen=True)
class _Value:
    """A value: the tasks that make it, the PEs that hold it, its bytes and what it is
    ("act", "weight", "state", "const", "input")."""

    frontier: tuple[int, ...]
    where: Rect | None
    nbytes: int
    kind: str


def _nbytes(spec: TensorSpec) -> int:
    return math.prod(spec.shape) * dtypes.element_bytes(spec.dtype)


def _numel(shape: Sequence[int]) -> int:
    return max(1, math.prod(shape))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _block(region: Rect, pes: int) -> Rect:
    """The PEs a value of `pes` parts occupies: row-major from the region's corner (the last
    dim along the rows, as the placed GEMVs leave their results)."""
    width = min(region.width, pes)
    return Rect(region.x, region.y, width, min(region.height, _ceil(pes, width)))


def _group_lines(used: Rect, group: int) -> list[Line]:
    """The lines that join every block of `group` PEs tiling `used`: along x, then along y."""
    block = _block(used, group)
    lines = [Line(used, "x", block.width)] if block.width > 1 else []
    return lines + ([Line(used, "y", block.height)] if block.height > 1 else [])


def _free_transpose(ins: Instruction, shape: Sequence[int]) -> bool:
    """A transpose that only moves size-1 dims keeps the element order: a relabelling."""
    perm = ins.attrs["permutation"]
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


class _Translator:
    """One pass over a placed program, building the task graph."""

    def __init__(
        self,
        program: Program,
        target: Target,
        dtype: str,
        calibration: Calibration,
        *,
        streaming: bool,
        resident_weights: bool,
    ):
        self.program = program
        self.dtype = dtype
        self.cms = {d: CostModel(target, calibration, d) for d in dtypes.COMPUTE_LABELS}
        self.streaming = streaming
        self.resident_weights = resident_weights
        self.b = GraphBuilder()
        self.values: dict[int, _Value] = {
            i: _Value((), None, _nbytes(s), "input") for i, s in enumerate(program.input_specs)
        }
        self.specs: dict[int, TensorSpec] = dict(enumerate(program.input_specs))
        self.tiles: dict[int, dict] = {}
        self.readers: dict[int, list[int]] = defaultdict(list)
        self.streamed: list[int] = []
        self.moves: dict[tuple[int, Rect], tuple[int, ...]] = {}
        self.stage_tasks: dict[int, list[int]] = defaultdict(list)
        self.fusable: dict[int, Rect] = {}
        self.stage = 0

    # -- helpers ---------------------------------------------------------------------------

    def cm(self, spec: TensorSpec) -> CostModel:
        return self.cms[dtypes.by_name(spec.dtype).compute or self.dtype]

    def add(self, name: str, kind: str, c: cost.Cost, deps, region, labels, links=()) -> int:
        """A task of the current op; in streaming mode one without inputs waits for the
        previous layer (layers run one at a time on the grid)."""
        if not deps and kind != "stream" and self.streaming and self.stage > 0:
            deps = self.stage_tasks[self.stage - 1]
        task = self.b.add(f"{labels['op']}:{name}", kind, c, deps, region, links, **labels)
        self.stage_tasks[self.stage].append(task)
        return task

    def home(self, ins: Instruction, region: Rect, cycles_on: Callable[[Rect], int]) -> Rect:
        """Where an op runs: on the PEs holding its largest activation or state operand (when
        they lie in its region) or spread over its whole region, whichever is estimated
        faster: `cycles_on(rect)` for the op plus the moves of the operands held elsewhere."""
        operands = [self.values[v] for v in ins.operands if v is not None]
        held = [v for v in operands if v.kind in ("act", "state") and _contains(region, v.where)]
        if not held:
            return region

        def estimate(rect: Rect) -> int:
            moves = sum(
                self.move_cost(v, rect).cycles
                for v in operands
                if v.kind == "act" and v.where is not None and v.where != rect
            )
            return cycles_on(rect) + moves

        where = max(held, key=lambda v: v.nbytes).where
        return where if estimate(where) <= estimate(region) else region

    def operand(self, vid: int, home: Rect, labels: dict) -> tuple[int, ...]:
        """The tasks a reader running on `home` waits for: the value's makers, plus a move
        when an activation is held by other PEs."""
        value = self.values[vid]
        if value.kind != "act" or value.where is None or value.where == home:
            return value.frontier
        key = (vid, home)
        if key not in self.moves:
            self.moves[key] = self.move(value, home, 0, "move", labels)
        return self.moves[key]

    def move_cost(self, value: _Value, dst: Rect, hops: int = 0) -> cost.Cost:
        """`value` streamed from its PEs to `dst` over `hops` hops (default: between the
        centres), split over parallel minimal routes: as many lanes as the longer sides of
        both rectangles allow."""
        src = value.where or dst
        lanes = min(max(src.width, src.height), max(dst.width, dst.height))
        hops = hops or max(1, _hops(src, dst))
        return cost.transfer(self.cms[self.dtype], max(1, _ceil(value.nbytes, lanes)), hops)

    def move(self, value: _Value, dst: Rect, hops: int, name: str, labels) -> tuple[int, ...]:
        c = self.move_cost(value, dst, hops)
        route = _route(value.where or dst, dst)
        return (self.add(name, "fabric", c, value.frontier, None, labels, route),)

    def deps(self, ins: Instruction, home: Rect, labels: dict) -> tuple[int, ...]:
        out: list[int] = []
        for vid in ins.operands:
            if vid is not None:
                out += self.operand(vid, home, labels)
        return tuple(out)

    def allreduce(self, cm, used: Rect, group: int, elements: int, front, what, labels):
        """Sum `elements` values over every block of `group` PEs tiling `used`."""
        name = f"{labels['op']}:{labels['node']}.{what}"
        for line in _group_lines(used, group):
            front = kernels.allreduce(
                self.b, cm, line, elements, REDUCE_ALGORITHM, front, name=name, **labels
            )
        return tuple(front)

    def spread(self, cm, used: Rect, group: int, nbytes: int, front, what, labels):
        """Multicast a tile to every PE of each block of `group` PEs tiling `used`."""
        name = f"{labels['op']}:{labels['node']}.{what}"
        for line in _group_lines(used, group):
            front = kernels.broadcast(self.b, cm, line, nbytes, 0, front, name=name, **labels)
        return tuple(front)

    def compute(self, ins, home: Rect, c: cost.Cost, pes: int, labels, deps=None) -> _Value:
        """One compute task on a block of `pes` PEs of `home`; the result is held by `home`
        (results smaller than it are computed redundantly on every PE that needs them). A task
        that only waits for PE-local work on the same PEs continues that task (the program
        fuses them): it pays no task start of its own."""
        if deps is None:
            deps = self.deps(ins, home, labels)
        if deps and all(self.fusable.get(d) == home for d in deps):
            c = replace(c, cycles=c.cycles - self.cms[self.dtype].calibration.task_start_cycles)
        task = self.add(ins.node or ins.op, "compute", c, deps, _block(home, pes), labels)
        self.fusable[task] = home
        return _Value((task,), home, 0, "act")

    # -- the walk --------------------------------------------------------------------------

    def run(self) -> GraphBuilder:
        for ins in self.program.instructions:
            self.specs.update(zip(ins.results, ins.result_specs, strict=True))
            self.stage = ins.attrs.get("stage", 0)
            labels = {
                "op": ins.op,
                "node": ins.node,
                "location": ins.location,
                "layer": str(self.stage),
            }
            v = self.translate(ins, labels)
            for vid, spec in zip(ins.results, ins.result_specs, strict=True):
                self.values[vid] = _Value(v.frontier, v.where, _nbytes(spec), v.kind)
            for vid in ins.operands:
                if vid is not None:
                    self.readers[vid] += v.frontier
        return self.b

    def translate(self, ins: Instruction, labels: dict) -> _Value:
        op = ins.op
        region = Rect(*ins.attrs["region"]) if "region" in ins.attrs else None
        if op in ("param", "constant"):
            return _Value((), region, 0, "const")
        if op in FREE_OPS or (
            op == "transpose" and _free_transpose(ins, self.specs[ins.operands[0]].shape)
        ):
            return self.values[ins.operands[0]]
        handler = getattr(self, f"_{op}", None)
        if handler is None:
            if op not in ELEMENTWISE:
                raise ModelSimError(f"no cost rule for op {op!r} ({ins.node or 'no node'})")
            handler = self._elementwise
        if region is None:
            raise ModelSimError(f"op {op!r} ({ins.node}) has no region: is the program placed?")
        return handler(ins, region, ins.result_specs[0], labels)

    # -- compute ops -----------------------------------------------------------------------

    def local(self, ins, region, out, labels, inputs: int, ops: int) -> _Value:
        """A PE-local op over the result's elements."""
        numel, cm = _numel(out.shape), self.cm(out)

        def on(rect: Rect) -> cost.Cost:
            pes = min(numel, rect.num_pes)
            return cost.elementwise(cm, numel, parts=pes, inputs=inputs, ops_per_element=ops)

        home = self.home(ins, region, lambda r: on(r).cycles)
        return self.compute(ins, home, on(home), min(numel, home.num_pes), labels)

    def _elementwise(self, ins, region, out, labels) -> _Value:
        exp_ops = self.cms[self.dtype].calibration.exp_ops_per_element
        ops = exp_ops if ins.op in TRANSCENDENTAL else 1
        inputs = sum(1 for v in ins.operands if v is not None)
        return self.local(ins, region, out, labels, inputs, ops)

    def _depthwise_conv1d(self, ins, region, out, labels) -> _Value:
        width = self.specs[ins.operands[1]].shape[-1]
        return self.local(ins, region, out, labels, 2, 2 * width)

    def rowwise(self, ins, region, kind: str, rows: int, cols: int, labels) -> _Value:
        """A reduction of `cols` elements into each of `rows` outputs (reduce, softmax, norm):
        the reduced dim along a row of up to the region's width, the outputs over the rows;
        the local pass, then an all-reduce of the partials along each row."""
        cm = self.cm(self.specs[ins.operands[0]])

        def on(rect: Rect) -> tuple[cost.Cost, int, int]:
            per_row = min(cols, rect.width, max(1, rect.num_pes // rows))
            groups = min(rows, rect.num_pes // per_row)
            if kind == "softmax":
                c = cost.softmax(cm, rows, cols, parts_rows=groups, parts_cols=per_row)
            elif kind == "norm":
                c = cost.norm(cm, rows, cols, parts_rows=groups, parts_cols=per_row)
            else:
                parts, outputs = groups * per_row, _ceil(rows, groups)
                c = cost.reduction(cm, rows * cols, parts=parts, outputs=outputs)
            return c, per_row, groups

        home = self.home(ins, region, lambda r: on(r)[0].cycles)
        c, per_row, groups = on(home)
        front = self.compute(ins, home, c, groups * per_row, labels).frontier
        stats = {"softmax": ("max", "sum"), "norm": ("stats",), "reduce": ("sum",)}[kind]
        elements = (2 if ins.op == "layer_norm" else 1) * _ceil(rows, groups)
        used = _block(home, groups * per_row)
        for stat in stats:
            front = self.allreduce(cm, used, per_row, elements, front, stat, labels)
        return _Value(front, home, 0, "act")

    def _reduce(self, ins, region, out, labels) -> _Value:
        shape = self.specs[ins.operands[0]].shape
        cols = _numel([shape[d] for d in ins.attrs["dims"]])
        return self.rowwise(ins, region, "reduce", _numel(shape) // cols, cols, labels)

    def _argmax(self, ins, region, out, labels) -> _Value:
        shape = self.specs[ins.operands[0]].shape
        cols = shape[ins.attrs["dim"]]
        return self.rowwise(ins, region, "reduce", _numel(shape) // cols, cols, labels)

    _cumsum = _argmax

    def _softmax(self, ins, region, out, labels) -> _Value:
        cols = out.shape[ins.attrs["dim"]]
        return self.rowwise(ins, region, "softmax", _numel(out.shape) // cols, cols, labels)

    def _layer_norm(self, ins, region, out, labels) -> _Value:
        cols = _numel(out.shape[len(out.shape) - ins.attrs["axes"] :])
        return self.rowwise(ins, region, "norm", _numel(out.shape) // cols, cols, labels)

    def _rms_norm(self, ins, region, out, labels) -> _Value:
        cols = out.shape[-1]
        return self.rowwise(ins, region, "norm", _numel(out.shape) // cols, cols, labels)

    def matmul_tasks(self, ins, region, shapes, operands, labels) -> _Value:
        """(batch, M, K, N) on the region: K split over a row of PEs when there are fewer
        outputs than PEs, lhs tiles multicast to the PEs splitting N, rhs tiles to those
        splitting M (and the batch, when rhs has none), partial sums all-reduced."""
        batch, m, k, n, lhs_batched, rhs_batched = shapes
        cm = self.cm(self.specs[ins.operands[0]])

        def split(rect: Rect) -> tuple[int, int, int, int]:
            g = min(k, rect.width, max(1, rect.num_pes // (batch * m * n)))
            q = rect.num_pes // g
            pn = min(n, q)
            pb = min(batch, q // pn)
            return g, pn, pb, min(m, q // (pn * pb))

        def mac_on(rect: Rect) -> cost.Cost:
            g, pn, pb, pm = split(rect)
            return cost.matmul(cm, batch * m, k, n, parts_m=pb * pm, parts_k=g, parts_n=pn)

        home = self.home(ins, region, lambda r: mac_on(r).cycles)
        g, pn, pb, pm = split(home)
        used = _block(home, pb * pm * pn * g)
        bt, mt, kt, nt = _ceil(batch, pb), _ceil(m, pm), _ceil(k, g), _ceil(n, pn)
        lhs, rhs = (o if isinstance(o, tuple) else self.operand(o, home, labels) for o in operands)
        element = cm.element_bytes
        lhs_share = pn * (1 if lhs_batched else pb)
        rhs_share = pm * (1 if rhs_batched else pb)
        if lhs_share > 1:
            lhs = self.spread(cm, used, lhs_share, bt * mt * kt * element, lhs, "lhs", labels)
        if rhs_share > 1:
            rhs = self.spread(cm, used, rhs_share, bt * kt * nt * element, rhs, "rhs", labels)
        front = (self.add(ins.node or "mac", "compute", mac_on(home), lhs + rhs, used, labels),)
        if g > 1:
            front = self.allreduce(cm, used, g, bt * mt * nt, front, "partials", labels)
        return _Value(tuple(front), home, 0, "act")

    def _matmul(self, ins, region, out, labels) -> _Value:
        a = self.specs[ins.operands[0]].shape
        b = self.specs[ins.operands[1]].shape
        batched = (_numel(a[:-2]) > 1, _numel(b[:-2]) > 1)
        shapes = (_numel(out.shape[:-2]), a[-2], a[-1], b[-1], *batched)
        return self.matmul_tasks(ins, region, shapes, ins.operands[:2], labels)

    def _attention(self, ins, region, out, labels) -> _Value:
        q, k, v = (self.specs[i].shape for i in ins.operands[:3])
        rows, keys = _numel(q[:-1]), k[-2]
        heads = _numel(q[:-2])
        scores = self.matmul_tasks(
            ins, region, (heads, q[-2], q[-1], keys, True, True), ins.operands[:2], labels
        )
        cm, home = self.cm(out), scores.where
        per_row = min(keys, home.width, max(1, home.num_pes // rows))
        groups = min(rows, home.num_pes // per_row)
        c = cost.softmax(cm, rows, keys, parts_rows=groups, parts_cols=per_row)
        front = self.compute(ins, home, c, groups * per_row, labels, scores.frontier)
        used = _block(home, groups * per_row)
        for stat in ("max", "sum"):
            front = self.allreduce(cm, used, per_row, _ceil(rows, groups), front, stat, labels)
        operands = (front, ins.operands[2])
        shapes = (heads, q[-2], keys, v[-1], True, True)
        return self.matmul_tasks(ins, region, shapes, operands, labels)

    def _selective_scan(self, ins, region, out, labels) -> _Value:
        """The scan over channels split across PEs, and the multicast of B_t and C_t to them,
        streamed alongside (the scan consumes them step by step)."""
        batch, channels, length = self.specs[ins.operands[0]].shape
        state = self.specs[ins.operands[2]].shape[-1]
        cm = self.cm(self.specs[ins.operands[0]])

        def on(rect: Rect) -> cost.Cost:
            return cost.scan(cm, length, batch * channels, state, parts=min(pes, rect.num_pes))

        pes = batch * channels
        home = self.home(ins, region, lambda r: on(r).cycles)
        pes = min(pes, home.num_pes)
        scan = self.compute(ins, home, on(home), pes, labels)
        bc_deps = tuple(t for i in ins.operands[3:5] for t in self.operand(i, home, labels))
        nbytes = 2 * state * length * cm.element_bytes
        bc = self.spread(cm, _block(home, pes), pes, nbytes, bc_deps, "bc", labels)
        return _Value(scan.frontier + bc, home, 0, "act")

    def _embedding(self, ins, region, out, labels) -> _Value:
        """Rows gathered from the table's PEs to the op's, then copied into place."""
        table = self.values[ins.operands[0]]
        numel = _numel(out.shape)
        pes = min(numel, region.num_pes)
        src = table.where or region
        ids = self.operand(ins.operands[1], region, labels)
        rows = _Value(ids + table.frontier, src, _nbytes(out), "act")
        hops = _hops(src, region) + (src.width + src.height) // 2
        front = self.move(rows, region, max(1, hops), "gather", labels)
        c = cost.elementwise(self.cm(out), numel, parts=pes)
        return self.compute(ins, region, c, pes, labels, front)

    # -- placement ops ---------------------------------------------------------------------

    def _weight_tiles(self, ins, region, out, labels) -> _Value:
        self.tiles[ins.results[0]] = ins.attrs
        rows, cols = ins.attrs["tile_grid"]
        tiles = Rect(region.x, region.y, cols, rows)
        if ins.attrs["home"] == "sram" or self.resident_weights:
            return _Value((), tiles, 0, "weight")
        deps = self.readers[self.streamed[-2]] if len(self.streamed) >= 2 else ()
        self.streamed.append(ins.results[0])
        c = cost.stream(self.cms[self.dtype], _nbytes(out))
        task = self.add("stream", "stream", c, deps, None, labels)
        return _Value((task,), tiles, 0, "weight")

    def _host_transfer(self, ins, region, out, labels) -> _Value:
        source = self.values[ins.operands[0]]
        if ins.attrs["kind"] == "state":
            if ins.attrs["direction"] == "out":
                return source
            return _Value((), region, 0, "state")
        c = cost.stream(self.cms[self.dtype], max(1, _nbytes(out)))
        deps = source.frontier
        task = self.add(f"host_{ins.attrs['direction']}", "stream", c, deps, None, labels)
        return _Value((task,), source.where or region, 0, "act")

    def _fabric_stream(self, ins, region, out, labels) -> _Value:
        source = self.values[ins.operands[0]]
        src = Rect(*ins.attrs["src_region"])
        moving = _Value(source.frontier, source.where or src, _nbytes(out), "act")
        front = self.move(moving, region, ins.attrs["hops"], ins.node or "stream", labels)
        return _Value(front, region, 0, "act")

    def _fabric_broadcast(self, ins, region, out, labels) -> _Value:
        parts, cm = ins.attrs["parts"], self.cm(out)
        rows = _numel(out.shape[:-1])
        nbytes = rows * _ceil(out.shape[ins.attrs["dim"]], parts) * cm.element_bytes
        if ins.attrs["axis"] == "row":
            line = Line(Rect(region.x, region.y, region.width, parts), "x")
        else:
            line = Line(Rect(region.x, region.y, parts, region.height), "y")
        deps = self.operand(ins.operands[0], region, labels)
        name = f"{ins.op}:{ins.node}"
        front = kernels.broadcast(self.b, cm, line, nbytes, 0, deps, name=name, **labels)
        self.stage_tasks[self.stage] += front
        return _Value(tuple(front), region, 0, "act")

    def _fabric_shift(self, ins, region, out, labels) -> _Value:
        """Folded into its Cannon `tile_matmul` (`kernels.gemm` makes the skew and the shifts)."""
        return _Value(self.operand(ins.operands[0], region, labels), region, 0, "act")

    def _tile_matmul(self, ins, region, out, labels) -> _Value:
        lhs = self.specs[ins.operands[0]].shape
        m, k, n = _numel(lhs[:-1]), lhs[-1], out.shape[-1]
        cm = self.cm(out)
        deps = tuple(v for i in ins.operands if i is not None for v in self.values[i].frontier)
        if ins.attrs["dataflow"] == "cannon":
            front = kernels.gemm(self.b, cm, region, m, k, n, "cannon", deps, **labels)
            self.stage_tasks[self.stage] += front
            return _Value(tuple(front), region, 0, "act")
        rows, cols = self.tiles[ins.operands[1]]["tile_grid"]
        mac = cost.matmul(cm, m, k, n, parts_k=rows, parts_n=cols)
        used = Rect(region.x, region.y, cols, rows)
        return _Value((self.add(ins.node, "compute", mac, deps, used, labels),), used, 0, "act")

    def _fabric_reduce(self, ins, region, out, labels) -> _Value:
        """`kernels.allreduce` with the op's algorithm, less its final multicast: the placed
        reduce leaves the sum on the region's first row (or column), where readers fetch it."""
        shape = self.specs[ins.operands[0]].shape
        parts, n = shape[0], out.shape[-1]
        if ins.attrs["axis"] == "col":
            line = Line(Rect(region.x, region.y, region.width, parts), "y")
            elements = _numel(shape[1:-1]) * _ceil(n, min(n, region.width))
            where = Rect(region.x, region.y, region.width, 1)
        else:
            line = Line(Rect(region.x, region.y, parts, region.height), "x")
            elements = _numel(shape[1:-1]) * _ceil(n, min(n, region.height))
            where = Rect(region.x, region.y, 1, region.height)
        algorithm = ins.attrs["algorithm"]
        group = ins.attrs["group"] if algorithm == "two_phase" else 0
        scratch = GraphBuilder()
        kernels.allreduce(
            scratch, self.cm(out), line, elements, algorithm, (), group, name="reduce", **labels
        )
        phases = [t for t in scratch.tasks if t.name != "reduce.broadcast"]  # one chain of tasks
        front = self.values[ins.operands[0]].frontier
        for task in phases:
            front = (
                self.b.add(
                    f"{ins.op}:{ins.node}.{task.name.removeprefix('reduce.')}",
                    task.kind,
                    task.cost,
                    front,
                    task.region,
                    task.links,
                    **dict(task.labels),
                ),
            )
            self.stage_tasks[self.stage] += front
        return _Value(front, where, 0, "act")


def _hops(src: Rect, dst: Rect) -> int:
    """Manhattan distance between the centres (as placement's `Rect.hops_to`)."""
    return round(abs(2 * (src.x - dst.x) + src.width - dst.width) / 2) + round(
        abs(2 * (src.y - dst.y) + src.height - dst.height) / 2
    )


def _contains(outer: Rect, inner: Rect | None) -> bool:
    return (
        inner is not None
        and outer.x <= inner.x
        and outer.y <= inner.y
        and inner.x + inner.width <= outer.x + outer.width
        and inner.y + inner.height <= outer.y + outer.height
    )


def _route(src: Rect, dst: Rect) -> tuple[LinkSpan, ...]:
    """The links of an L-shaped route between the regions' centres: along the source's rows,
    then along the destination's columns."""
    sx, sy = src.x + src.width // 2, src.y + src.height // 2
    dx, dy = dst.x + dst.width // 2, dst.y + dst.height // 2
    spans = []
    if sx != dx:
        rect = Rect(min(sx, dx), src.y, abs(dx - sx), src.height)
        spans.append(LinkSpan("E" if dx > sx else "W", rect))
    if sy != dy:
        rect = Rect(dst.x, min(sy, dy), dst.width, abs(dy - sy))
        spans.append(LinkSpan("S" if dy > sy else "N", rect))
    return tuple(spans)


def _union_cycles(events: Sequence[Event]) -> int:
    """Cycles during which at least one of `events` runs."""
    total, end = 0, 0
    for e in sorted(events, key=lambda e: e.start_cycles):
        if e.end_cycles > end:
            total += e.end_cycles - max(e.start_cycles, end)
            end = e.end_cycles
    return total


def _summaries(events, stage_names) -> tuple[tuple[LayerTime, ...], tuple[OpClassTime, ...]]:
    path = {e.task_id for e in critical_path(events)}
    spans: dict[int, list[int]] = {}
    by_stage: dict[int, list[Event]] = defaultdict(list)
    split: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    ops: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        stage, op = int(e.label("layer", "0")), e.label("op", e.op_class)
        span = spans.setdefault(stage, [e.start_cycles, e.end_cycles])
        span[0], span[1] = min(span[0], e.start_cycles), max(span[1], e.end_cycles)
        by_stage[stage].append(e)
        ops[op][0] += 1
        ops[op][1] += e.duration_cycles
        if e.task_id in path:
            part = 0 if e.kind == "compute" else 1
            for key in (("layer", str(stage)), ("op", op)):
                split[key][part] += e.duration_cycles
                split[key][2] += e.wait_cycles
    layers = tuple(
        LayerTime(
            s,
            stage_names[s] if s < len(stage_names) else f"stage {s}",
            start,
            end,
            _union_cycles(by_stage[s]),
            *split[("layer", str(s))],
        )
        for s, (start, end) in sorted(spans.items())
    )
    classes = tuple(
        OpClassTime(op, count, busy, *split[("op", op)])
        for op, (count, busy) in sorted(ops.items(), key=lambda kv: -kv[1][1])
    )
    return layers, classes


def simulate_placed(
    program: Program,
    target: Target,
    *,
    dtype: str,
    calibration: Calibration | None = None,
    chunks: int = 1,
    stage_names: Sequence[str] = (),
    resident_weights: bool = False,
) -> SimResult:
    """Simulate one run of a placed program on `target` (the target it was placed for).

    `chunks` > 1: a pipelined pass over that many pieces of the input (prefill). With
    `resident_weights` streamed weights count as already in SRAM (no external traffic).
    """
    if dtype not in dtypes.COMPUTE_LABELS:
        raise ModelSimError(f"dtype must be one of {list(dtypes.COMPUTE_LABELS)}, got {dtype!r}")
    if chunks < 1:
        raise ModelSimError(f"chunks must be >= 1, got {chunks}")
    streaming = any(
        i.op == "weight_tiles" and i.attrs.get("home") == "external" for i in program.instructions
    )
    translator = _Translator(
        program,
        target,
        dtype,
        calibration or load_calibration(),
        streaming=streaming,
        resident_weights=resident_weights,
    )
    timeline = simulate(translator.run().tasks)
    events, makespan = timeline.events, timeline.makespan_cycles
    layers, classes = _summaries(events, stage_names)
    slowest = max((layer.busy_cycles for layer in layers), default=makespan)
    cycles = makespan if chunks == 1 else round((makespan + (chunks - 1) * slowest) / chunks)
    if streaming:
        working = _union_cycles([e for e in events if e.kind != "stream"])
        bubble = 1 - working / max(makespan, 1)
    else:
        busy = sum(layer.busy_cycles for layer in layers)
        bubble = 1 - busy / max(len(layers) * cycles, 1)
    return SimResult(
        target=target,
        dtype=dtype,
        mode="streaming" if streaming else "pipelined",
        chunks=chunks,
        makespan_cycles=makespan,
        cycles=cycles,
        flops=sum(e.flops for e in events if e.kind == "compute"),
        bubble_fraction=max(0.0, bubble),
        breakdown=breakdown(events),
        layers=layers,
        op_classes=classes,
        busiest_links=busiest_links(
            events, target.grid_width_pes, target.grid_height_pes, makespan
        ),
        events=events,
    )


# ---------------------------------------------------------------------------- whole models

CHUNK_TOKENS = 64


@dataclass(frozen=True)
class Phase:
    """Prefill or decode of a model: one simulated pass and what it means per token.

    Prefill: `tokens` = batch x prompt length, `cycles` the time to first token. Decode: one
    step of `tokens` = batch tokens, repeated `steps` times at the same cost (averages)."""

    name: str
    tokens: int
    steps: int
    context_tokens: int
    sim: SimResult
    report: PlacementReport
    compile_seconds: float
    simulate_seconds: float
    notes: tuple[str, ...]

    @property
    def cycles(self) -> int:
        return self.sim.cycles

    @property
    def seconds(self) -> float:
        return self.sim.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-30)

    @property
    def sequences_in_flight(self) -> int:
        """Decode, pipelined: sequences that can share the pipeline, one per stage at most,
        as many as the free SRAM holds state for (streaming: one)."""
        if self.sim.mode != "pipelined" or self.name != "decode":
            return 1
        data = self.report.to_dict()
        free = data["sram_bytes_capacity"] - data["sram_bytes_total"]
        state = self.report.bytes_by_kind.get("state", 0)
        fits = 1 + free // state if state else len(self.sim.layers)
        return max(1, min(len(self.sim.layers), fits))

    @property
    def throughput_tokens_per_second(self) -> float:
        """Tokens/s with `sequences_in_flight` sequences: latency-bound until the slowest stage
        is always busy."""
        clock = self.sim.target.clock_hz
        latency_bound = self.sequences_in_flight * self.tokens_per_second
        return min(latency_bound, self.tokens * clock / max(self.sim.slowest_stage_cycles, 1))


@dataclass(frozen=True)
class ModelSim:
    """A model's prefill (time to first token) and decode (per-token) simulation."""

    model: str
    target: Target
    dtype: str
    batch: int
    seq: int
    prefill: Phase
    decode: Phase | None
    notes: tuple[str, ...]


def confine(target: str | Target, grid: tuple[int, int] | None) -> Target:
    """The target, or a copy whose program rectangle is `grid` (w, h) of its PEs."""
    base = load_target(target)
    if grid is None:
        return base
    w, h = grid
    if not (0 < w <= base.grid_width_pes and 0 < h <= base.grid_height_pes):
        raise TargetError(
            f"grid {w}x{h} does not fit target {base.name}'s "
            f"{base.grid_width_pes}x{base.grid_height_pes} PEs"
        )
    return replace(base, name=f"{base.name}[{w}x{h}]", grid_width_pes=w, grid_height_pes=h)


def load_factory(spec: str) -> tuple[torch.nn.Module, tuple]:
    """`path/to/file.py:factory` -> the factory's (module, example_inputs)."""
    path, _, name = spec.rpartition(":")
    if not path.endswith(".py") or not name:
        raise ModelSimError(f"expected a registered model or path/to/file.py:factory, got {spec!r}")
    source = Path(path)
    if not source.is_file():
        raise ModelSimError(f"no such file: {path}")
    module_spec = importlib.util.spec_from_file_location(source.stem, source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelSimError(f"{path} has no callable {name!r}")
    built = factory()
    if not (isinstance(built, tuple) and len(built) == 2):
        raise ModelSimError(f"{spec} must return (module, example_inputs)")
    model, inputs = built
    return model, inputs if isinstance(inputs, tuple) else (inputs,)


def _place(module, inputs, target: Target, mode: str):
    """Compile and place; returns (program, placement report, seconds)."""
    clock = time.perf_counter()
    compiled = compiler.compile(module, inputs, target=target, mode=mode)
    return compiled.placed.program, compiled.report, time.perf_counter() - clock


@functools.lru_cache(maxsize=32)
def place_registered(
    name: str, phase: str, seq: int, cache: int, batch: int, target: Target, mode: str, dtype: str
):
    """A registered model's prefill of `seq` tokens or its decode step at position `seq`, with
    a `cache`-token KV cache, compiled and placed (cached within one process)."""
    config = models.config(name)
    overrides = {"max_seq_len": cache} if hasattr(config, "max_seq_len") else {}
    model = models.build(name, device="meta", dtype=dtypes.by_label(dtype).torch, **overrides)
    if phase == "prefill":
        return _place(model.prefill_module(), models.example_inputs(name, batch, seq), target, mode)
    ids = torch.zeros((batch, 1), dtype=torch.int64)
    inputs = (ids, torch.tensor([seq], dtype=torch.int64), *model.init_state(batch))
    return _place(model.decode_module(), inputs, target, mode)


def _phase(name, placed, target, dtype, calibration, counts, notes, chunks, resident) -> Phase:
    program, report, compile_seconds = placed
    tokens, steps, context = counts
    clock = time.perf_counter()
    sim = simulate_placed(
        program,
        target,
        dtype=dtype,
        calibration=calibration,
        chunks=chunks,
        stage_names=[layer.name for layer in report.layers],
        resident_weights=resident,
    )
    elapsed = time.perf_counter() - clock
    return Phase(name, tokens, steps, context, sim, report, compile_seconds, elapsed, notes)


def simulate_phase(
    name: str,
    phase: str,
    target: Target,
    *,
    seq: int,
    cache: int,
    batch: int = 1,
    steps: int = 1,
    dtype: str = "fp16",
    mode: str = "auto",
    calibration: Calibration | None = None,
    resident_weights: bool = False,
) -> Phase:
    """Registered model `name`: the prefill of `seq` tokens, or ("decode") one decode step at
    position `seq` standing for `steps` steps, with a KV cache of `cache` tokens in SRAM.

    A pipelined prefill runs over min(stages, seq / CHUNK_TOKENS) chunks of the prompt. With
    `resident_weights` streamed weights count as already in SRAM (WaferLLM's setting)."""
    if phase not in ("prefill", "decode"):
        raise ModelSimError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    has_cache = hasattr(models.config(name), "max_seq_len")
    # without a KV cache the decode program is the same at every position: compile it once
    key = (seq, cache) if has_cache else (seq if phase == "prefill" else 0, 0)
    placed = place_registered(name, phase, *key, batch, target, mode, dtype)
    report = placed[1]
    cal = calibration or load_calibration()
    if phase == "decode":
        state = (
            f"KV cache of {cache} slots in SRAM, read whole (masked) every step"
            if has_cache
            else "fixed recurrent state in SRAM: cost independent of the context"
        )
        note = f"decode compiled once for position {seq}; {state}"
        if steps > 1:
            note += f"; per-token figures are averages over {steps} steps"
        notes = (note, report.mode_reason)
        return _phase(
            phase, placed, target, dtype, cal, (batch, steps, cache), notes, 1, resident_weights
        )
    chunks = 1
    if report.mode == "streaming":
        note = (
            "streaming: one layer at a time on the whole grid, weights streamed in at "
            f"{target.external_memory_bytes_per_second / 1e9:g} GB/s while the previous "
            "layer computes"
        )
    else:
        chunks = max(1, min(len(report.layers), seq // CHUNK_TOKENS))
        note = (
            f"pipelined over {chunks} chunks of ~{seq // chunks} tokens; a chunk costs "
            f"1/{chunks} of each stage's whole-prompt time"
            if chunks > 1
            else f"pipelined, one pass: prompts under {2 * CHUNK_TOKENS} tokens are not chunked"
        )
    counts = (batch * seq, 1, seq)
    return _phase(
        phase,
        placed,
        target,
        dtype,
        cal,
        counts,
        (note, report.mode_reason),
        chunks,
        resident_weights,
    )


def simulate_model(
    name_or_module: str | tuple[torch.nn.Module, tuple],
    target: str | Target = "wse3",
    *,
    seq: int = 128,
    batch: int = 1,
    decode_steps: int = 16,
    dtype: str = "fp16",
    mode: str = "auto",
    grid: tuple[int, int] | None = None,
    calibration: Calibration | None = None,
    resident_weights: bool = False,
    progress: Callable[[str], None] = lambda step: None,
) -> ModelSim:
    """Prefill of `seq` tokens and `decode_steps` decode steps of a registered model, or the
    prefill (one forward pass) of a `(module, example_inputs)` pair, placed on `target`
    (confined to `grid` = (w, h) PEs when given) in `mode`.

    The KV cache (or Mamba state) stays in SRAM and holds `seq + decode_steps` tokens; the
    decode program is compiled once, for the token at position `seq + decode_steps // 2`, and
    every step costs the same (it reads the whole cache, masked)."""
    if dtype not in dtypes.COMPUTE_LABELS:
        raise ModelSimError(f"dtype must be one of {list(dtypes.COMPUTE_LABELS)}, got {dtype!r}")
    if seq < 1 or batch < 1 or decode_steps < 0:
        raise ModelSimError(
            f"need seq >= 1, batch >= 1 and decode steps >= 0, got {seq}, {batch}, {decode_steps}"
        )
    tgt = confine(target, grid)
    cal = calibration or load_calibration()
    if not isinstance(name_or_module, str):
        module, inputs = name_or_module
        progress("compile, place and simulate the module")
        placed = _place(module, inputs, tgt, mode)
        tokens = math.prod(inputs[0].shape) if inputs and hasattr(inputs[0], "shape") else 1
        note = "custom module: only its prefill (one forward pass on the factory's inputs)"
        counts = (tokens, 1, tokens)
        phase = _phase("prefill", placed, tgt, dtype, cal, counts, (note,), 1, resident_weights)
        return ModelSim(type(module).__name__, tgt, dtype, batch, tokens, phase, None, (note,))
    cache = seq + max(decode_steps, 1)
    common = dict(
        cache=cache,
        batch=batch,
        dtype=dtype,
        mode=mode,
        calibration=cal,
        resident_weights=resident_weights,
    )
    progress(f"{name_or_module}: prefill of {seq} tokens")
    prefill = simulate_phase(name_or_module, "prefill", tgt, seq=seq, **common)
    decode = None
    if decode_steps:
        progress(f"{name_or_module}: decode at {seq + decode_steps // 2} tokens")
        position = seq + decode_steps // 2
        decode = simulate_phase(
            name_or_module, "decode", tgt, seq=position, steps=decode_steps, **common
        )
    return ModelSim(name_or_module, tgt, dtype, batch, seq, prefill, decode, ())
