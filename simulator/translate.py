"""A placed program translated into one engine task graph.

`translate(program, target, dtype, calibration)` walks the placed instructions in order with one
`Translation` (`simulator.tasks`; the rules of `simulator/engine.py`, "Translating a placed
program"). Each op is translated by the rule of its cost class (`core.ops.OPS[op].cost_class`),
registered in `TRANSLATE`:

- a compute op becomes one compute task, costed by its class (`simulator.cost`: elementwise,
  reduction, softmax, norm, matmul, scan) from its global shapes split over the PEs it uses, on
  the PEs `Translation.home` picks; the task holds that block of PEs. An "elementwise" op costs
  one operation per element, a "transcendental" one `exp_ops_per_element`. A task that only
  waits for PE-local work on the same PEs continues it (the wafer program fuses them) and pays
  no task start;
- reductions (`reduce`, softmax, norms) and activation x activation matmuls split the reduced
  dim over PEs and all-reduce the partials (`simulator.tasks`). The KV cache and the SSM state
  stay where they are (resident);
- `fabric_broadcast` and the Cannon pair `fabric_shift` + `tile_matmul` use
  `collectives.broadcast` and `kernels.gemm` ("cannon"); `fabric_reduce` is
  `collectives.allreduce` with its algorithm, less the final multicast: the sum stays on the
  region's first row;
- `fabric_stream`, and a read of an activation held by other PEs, become `cost.transfer` over
  the hops between the centres (the stream's own `hops`), the bytes split over as many parallel
  routes as the longer sides of the two rectangles allow;
- a `fabric_stream` between two wafers of a cluster becomes a "link" task: the links' latency
  plus the bytes at their bandwidth, holding the sending wafer's I/O (`wafer_link_cost`); a
  value crosses to each wafer once, and later readers there take it from where it landed;
- `weight_tiles` with home "external" become stream tasks on the external channel with two
  weight buffers: weight j streams once the readers of weight j-2 are done, so the next layer
  streams in while the current one computes; in streaming mode a layer's tasks without inputs
  wait for the previous layer (one layer at a time on the grid). "sram" weights and "state"
  host transfers are free; "data" host transfers use the external channel (host I/O);
- the "free" class (`param`, `constant`, `reshape`, `broadcast`) and transposes that only move
  size-1 dims cost nothing: the value stays where it was; other transposes are elementwise
  (PE-local). `fabric_permute` (one that crosses PEs) is an all-to-all: `simulator.permutes`.

Labels `op`, `node`, `location` and `layer` (the stage) are on every task.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from core.errors import ModelSimError
from core.geometry import Rect
from core.ops import OPS, OpTable
from core.target import Target
from runtime.program import Instruction, Program
from simulator import collectives, cost, kernels
from simulator.collectives import Line
from simulator.cost import Calibration
from simulator.engine import GraphBuilder
from simulator.tasks import (
    MatmulShape,
    PlacedOp,
    Translation,
    Value,
    ceil_div,
    hops_between,
    pe_block,
    size_of,
    spec_bytes,
)

Rule = Callable[[Translation, PlacedOp], Value]
TRANSLATE: OpTable[Rule] = OpTable("simulator", by="cost_class")


def streams_weights(program: Program) -> bool:
    """Whether the program streams weights from external memory (streaming mode)."""
    return any(
        i.op == "weight_tiles" and i.attrs.get("home") == "external" for i in program.instructions
    )


def _rule(ins: Instruction) -> Rule:
    info = OPS.get(ins.op)
    rule = TRANSLATE.get(info.cost_class) if info is not None else None
    if rule is None:
        raise ModelSimError(f"no cost rule for op {ins.op!r} ({ins.node or 'no node'})")
    return rule


def translate(
    program: Program,
    target: Target,
    dtype: str,
    calibration: Calibration,
    *,
    resident_weights: bool = False,
) -> GraphBuilder:
    """The task graph of one run of a placed program on `target`; with `resident_weights`
    streamed weights count as already in SRAM (no external traffic)."""
    t = Translation(
        program.input_specs,
        target,
        dtype,
        calibration,
        streaming=streams_weights(program),
        resident_weights=resident_weights,
    )
    for ins in program.instructions:
        t.specs.update(zip(ins.results, ins.result_specs, strict=True))
        t.stage = ins.attrs.get("stage", 0)
        labels = {"op": ins.op, "node": ins.node, "location": ins.location, "layer": str(t.stage)}
        v = _rule(ins)(t, PlacedOp(ins, labels))
        for vid, spec in zip(ins.results, ins.result_specs, strict=True):
            t.values[vid] = Value(v.frontier, v.where, spec_bytes(spec), v.kind)
        for operand in ins.operands:
            if operand is not None:
                t.readers[operand] += v.frontier
    return t.b


# -- rules, one per cost class -----------------------------------------------------------------


@TRANSLATE("free")
def _free(t: Translation, op: PlacedOp) -> Value:
    """Sources (`param`, `constant`) are constants held where placed; `reshape` and
    `broadcast` leave their operand's value as it is."""
    ins = op.ins
    if not ins.operands:
        return Value((), Rect(*ins.attrs["region"]) if "region" in ins.attrs else None, 0, "const")
    return t.values[op.arg(0)]


def _local_elementwise(t: Translation, op: PlacedOp, ops: int) -> Value:
    inputs = sum(1 for v in op.ins.operands if v is not None)
    return t.local(op, inputs, ops)


@TRANSLATE("elementwise")
def _elementwise(t: Translation, op: PlacedOp) -> Value:
    return _local_elementwise(t, op, 1)


@TRANSLATE("transcendental")
def _transcendental(t: Translation, op: PlacedOp) -> Value:
    return _local_elementwise(t, op, t.cms[t.dtype].calibration.exp_ops_per_element)


@TRANSLATE("transpose")
def _transpose(t: Translation, op: PlacedOp) -> Value:
    """Free when it only moves size-1 dims (the element order stays: a relabelling), else
    costed as an elementwise copy."""
    source = op.arg(0)
    kept = [p for p in op.ins.attrs["permutation"] if t.specs[source].shape[p] != 1]
    if kept == sorted(kept):
        return t.values[source]
    return _elementwise(t, op)


@TRANSLATE("depthwise_conv1d")
def _depthwise_conv1d(t: Translation, op: PlacedOp) -> Value:
    width = t.specs[op.arg(1)].shape[-1]
    return t.local(op, 2, 2 * width)


@TRANSLATE("reduce")
def _reduce(t: Translation, op: PlacedOp) -> Value:
    shape = t.specs[op.arg(0)].shape
    cols = size_of([shape[d] for d in op.ins.attrs["dims"]])
    return t.rowwise(op, "reduce", size_of(shape) // cols, cols)


@TRANSLATE("reduce_along_dim")
def _reduce_along_dim(t: Translation, op: PlacedOp) -> Value:
    shape = t.specs[op.arg(0)].shape
    cols = shape[op.ins.attrs["dim"]]
    return t.rowwise(op, "reduce", size_of(shape) // cols, cols)


@TRANSLATE("softmax")
def _softmax(t: Translation, op: PlacedOp) -> Value:
    cols = op.out.shape[op.ins.attrs["dim"]]
    return t.rowwise(op, "softmax", size_of(op.out.shape) // cols, cols)


@TRANSLATE("layer_norm")
def _layer_norm(t: Translation, op: PlacedOp) -> Value:
    shape = op.out.shape
    cols = size_of(shape[len(shape) - op.ins.attrs["axes"] :])
    return t.rowwise(op, "norm", size_of(shape) // cols, cols, stats=2)


@TRANSLATE("rms_norm")
def _rms_norm(t: Translation, op: PlacedOp) -> Value:
    cols = op.out.shape[-1]
    return t.rowwise(op, "norm", size_of(op.out.shape) // cols, cols)


@TRANSLATE("matmul")
def _matmul(t: Translation, op: PlacedOp) -> Value:
    a = t.specs[op.arg(0)].shape
    b = t.specs[op.arg(1)].shape
    batch = size_of(op.out.shape[:-2])
    shape = MatmulShape(batch, a[-2], a[-1], b[-1], size_of(a[:-2]) > 1, size_of(b[:-2]) > 1)
    return t.matmul_tasks(op, shape, (op.arg(0), op.arg(1)))


@TRANSLATE("attention")
def _attention(t: Translation, op: PlacedOp) -> Value:
    """Tiled (`kv_block`): `_flash_attention`. Untiled: scores as a matmul, the softmax where
    they landed, then p . V as a second matmul."""
    if "kv_block" in op.ins.attrs:
        return _flash_attention(t, op)
    q, k, v = (t.specs[op.arg(i)].shape for i in range(3))
    rows, keys = size_of(q[:-1]), k[-2]
    heads = size_of(q[:-2])
    scores = t.matmul_tasks(
        op, MatmulShape(heads, q[-2], q[-1], keys, True, True), (op.arg(0), op.arg(1))
    )
    cm, home = t.cm(op.out), scores.where
    if home is None:
        raise ModelSimError(f"attention {op.labels.get('node', '')}: its scores have no region")
    per_row = min(keys, home.width, max(1, home.num_pes // rows))
    groups = min(rows, home.num_pes // per_row)
    c = cost.softmax(cm, rows, keys, parts_rows=groups, parts_cols=per_row)
    front = t.compute(op, home, c, groups * per_row, scores.frontier).frontier
    used = pe_block(home, groups * per_row)
    for stat in ("max", "sum"):
        front = t.allreduce(cm, used, per_row, ceil_div(rows, groups), front, stat, op.labels)
    shape = MatmulShape(heads, q[-2], keys, v[-1], True, True)
    return t.matmul_tasks(op, shape, (front, op.arg(2)))


def _flash_attention(t: Translation, op: PlacedOp) -> Value:
    """Flash-style tiles over the region (several per PE in turn when there are more tiles than
    PEs): the block loop on each (`cost`), the K/V blocks multicast to the query tiles of each
    head as they are consumed (alongside, once per tile a PE runs), then the `kv_parts` partial
    (max, sum, accumulator) of each tile all-reduced."""
    q, k, v = (t.specs[op.arg(i)].shape for i in range(3))
    attrs, region = op.ins.attrs, op.region
    q_block, parts = attrs["q_block"], attrs["kv_parts"]
    per_head = ceil_div(q[-2], q_block)
    tiles = size_of(q[:-2]) * per_head * parts
    keys, cm = ceil_div(k[-2], parts), t.cm(t.specs[op.arg(0)])
    pes = min(tiles, region.num_pes)
    c = cost.flash_attention(cm, tiles, q_block, keys, attrs["kv_block"], q[-1], v[-1], pes=pes)
    deps = t.deps(op.ins, region, op.labels)
    front = t.compute(op, region, c, pes, deps).frontier
    used = pe_block(region, pes)
    if per_head > 1:
        nbytes = ceil_div(tiles, pes) * keys * (k[-1] + v[-1]) * cm.element_bytes
        front += t.spread(cm, used, per_head, nbytes, deps, "kv_blocks", op.labels)
    if parts > 1:
        merged = ceil_div(tiles, pes) * q_block * (2 + v[-1])  # every tile a PE ran in turn
        front = t.allreduce(cm, used, parts, merged, front, "merge", op.labels)
    return Value(front, region, 0, "act")


@TRANSLATE("selective_scan")
def _selective_scan(t: Translation, op: PlacedOp) -> Value:
    """The scan over channels split across PEs, and the multicast of B_t and C_t to them,
    streamed alongside (the scan consumes them step by step)."""
    batch, channels, length = t.specs[op.arg(0)].shape
    state = t.specs[op.arg(2)].shape[-1]
    cm = t.cm(t.specs[op.arg(0)])

    def on(rect: Rect) -> cost.Cost:
        return cost.scan(cm, length, batch * channels, state, parts=min(pes, rect.num_pes))

    pes = batch * channels
    home = t.home(op, lambda r: on(r).cycles)
    pes = min(pes, home.num_pes)
    scan = t.compute(op, home, on(home), pes)
    bc_deps = tuple(d for i in (3, 4) for d in t.operand(op.arg(i), home, op.labels))
    nbytes = 2 * state * length * cm.element_bytes
    bc = t.spread(cm, pe_block(home, pes), pes, nbytes, bc_deps, "bc", op.labels)
    return Value(scan.frontier + bc, home, 0, "act")


@TRANSLATE("embedding")
def _embedding(t: Translation, op: PlacedOp) -> Value:
    """Rows gathered from the table's PEs to the op's, then copied into place."""
    region, out = op.region, op.out
    table = t.values[op.arg(0)]
    numel = size_of(out.shape)
    pes = min(numel, region.num_pes)
    src = table.where or region
    ids = t.operand(op.arg(1), region, op.labels)
    rows = Value(ids + table.frontier, src, spec_bytes(out), "act")
    hops = hops_between(src, region) + (src.width + src.height) // 2
    front = t.move(rows, region, max(1, hops), "gather", op.labels)
    c = cost.elementwise(t.cm(out), numel, parts=pes)
    return t.compute(op, region, c, pes, front)


@TRANSLATE("weight_tiles")
def _weight_tiles(t: Translation, op: PlacedOp) -> Value:
    ins, region = op.ins, op.region
    t.tiles[ins.results[0]] = ins.attrs
    rows, cols = ins.attrs["tile_grid"]
    tiles = Rect(region.x, region.y, cols, rows)
    if ins.attrs["home"] == "sram" or t.resident_weights:
        return Value((), tiles, 0, "weight")
    deps = t.readers[t.streamed[-2]] if len(t.streamed) >= 2 else ()
    t.streamed.append(ins.results[0])
    c = cost.stream(t.cms[t.dtype], spec_bytes(op.out))
    task = t.add("stream", "stream", c, deps, None, op.labels)
    return Value((task,), tiles, 0, "weight")


@TRANSLATE("host_transfer")
def _host_transfer(t: Translation, op: PlacedOp) -> Value:
    ins, region = op.ins, op.region
    source = t.values[op.arg(0)]
    if ins.attrs["kind"] == "state":
        if ins.attrs["direction"] == "out":
            return source
        return Value((), region, 0, "state")
    c = cost.stream(t.cms[t.dtype], max(1, spec_bytes(op.out)))
    task = t.add(f"host_{ins.attrs['direction']}", "stream", c, source.frontier, None, op.labels)
    return Value((task,), source.where or region, 0, "act")


@TRANSLATE("fabric_stream")
def _fabric_stream(t: Translation, op: PlacedOp) -> Value:
    ins, region = op.ins, op.region
    source = t.values[op.arg(0)]
    src = Rect(*ins.attrs["src_region"])
    moving = Value(source.frontier, source.where or src, spec_bytes(op.out), "act")
    target = t.cms[t.dtype].target
    sender, receiver = target.wafer_of(src.y), target.wafer_of(region.y)
    hops = ins.attrs["hops"]
    if sender != receiver:
        key = (op.arg(0), receiver)
        if key not in t.landed:
            t.landed[key] = _wafer_link(t, op, moving, sender, receiver)
            return t.landed[key]
        first = t.landed[key]  # already on this wafer: on from where it landed
        moving, hops = Value(first.frontier, first.where, moving.nbytes, "act"), 0
    relays = ins.attrs.get("relays", 0)
    front = t.move(moving, region, hops, ins.node or "stream", op.labels, relays)
    return Value(front, region, 0, "act")


def wafer_link_cost(target: Target, calibration: Calibration, nbytes: int) -> cost.Cost:
    """`nbytes` from one wafer of a cluster to another over the links: their latency, then the
    bytes at their bandwidth (converted to the target's clock). The sender's I/O is busy only
    while it serialises the bytes (`link_busy_cycles`): transfers pipeline behind one latency."""
    clock = target.clock_hz
    serial = nbytes * clock / target.wafer_link_bytes_per_second
    latency = target.wafer_link_latency_seconds * clock
    return cost.Cost(
        "wafer_link",
        calibration.task_start_cycles + math.ceil(latency + serial),
        latency + serial,
        link_busy_cycles=calibration.task_start_cycles + math.ceil(serial),
    )


def _wafer_link(t: Translation, op: PlacedOp, moving: Value, sender: int, receiver: int) -> Value:
    """A value crossing wafers: one task for the link (its latency, then the bytes at its
    bandwidth, holding the sender's I/O while they are sent); the on-wafer legs to and from
    the I/O edge are not charged."""
    nbytes = max(1, moving.nbytes)
    cm = t.cms[t.dtype]
    c = wafer_link_cost(cm.target, cm.calibration, nbytes)
    labels = dict(op.labels, wafer_link=f"{sender}->{receiver}", bytes=str(nbytes))
    labels["value"] = str(op.arg(0))
    name = f"{op.labels['op']}:{op.ins.node or 'stream'}.wafer_link"
    task = t.b.add(name, "link", c, moving.frontier, channel=f"wafer {sender} out", **labels)
    t.stage_tasks[t.stage].append(task)
    return Value((task,), op.region, 0, "act")


@TRANSLATE("fabric_broadcast")
def _fabric_broadcast(t: Translation, op: PlacedOp) -> Value:
    ins, region, out = op.ins, op.region, op.out
    parts, cm = ins.attrs["parts"], t.cm(out)
    rows = size_of(out.shape[:-1])
    nbytes = rows * ceil_div(out.shape[ins.attrs["dim"]], parts) * cm.element_bytes
    if ins.attrs["axis"] == "row":
        line = Line(Rect(region.x, region.y, region.width, parts), "x")
    else:
        line = Line(Rect(region.x, region.y, parts, region.height), "y")
    deps = t.operand(op.arg(0), region, op.labels)
    name = f"{ins.op}:{ins.node}"
    front = collectives.broadcast(t.b, cm, line, nbytes, 0, deps, name=name, **op.labels)
    t.stage_tasks[t.stage] += front
    return Value(tuple(front), region, 0, "act")


@TRANSLATE("fabric_shift")
def _fabric_shift(t: Translation, op: PlacedOp) -> Value:
    """Folded into its Cannon `tile_matmul` (`kernels.gemm` makes the skew and the shifts)."""
    region = op.region
    return Value(t.operand(op.arg(0), region, op.labels), region, 0, "act")


@TRANSLATE("tile_matmul")
def _tile_matmul(t: Translation, op: PlacedOp) -> Value:
    ins, region, out = op.ins, op.region, op.out
    lhs = t.specs[op.arg(0)].shape
    m, k, n = size_of(lhs[:-1]), lhs[-1], out.shape[-1]
    cm = t.cm(out)
    deps = tuple(v for i in ins.operands if i is not None for v in t.values[i].frontier)
    if ins.attrs["dataflow"] == "cannon":
        front = kernels.gemm(t.b, cm, region, m, k, n, "cannon", deps, **op.labels)
        t.stage_tasks[t.stage] += front
        return Value(tuple(front), region, 0, "act")
    rows, cols = t.tiles[op.arg(1)]["tile_grid"]
    mac = cost.matmul(cm, m, k, n, parts_k=rows, parts_n=cols)
    used = Rect(region.x, region.y, cols, rows)
    return Value((t.add(ins.node, "compute", mac, deps, used, op.labels),), used, 0, "act")


@TRANSLATE("fabric_reduce")
def _fabric_reduce(t: Translation, op: PlacedOp) -> Value:
    """`collectives.allreduce` with the op's algorithm, less its final multicast: the placed
    reduce leaves the sum on the region's first row (or column), where readers fetch it."""
    ins, region, out = op.ins, op.region, op.out
    shape = t.specs[op.arg(0)].shape
    parts, n = shape[0], out.shape[-1]
    if ins.attrs["axis"] == "col":
        line = Line(Rect(region.x, region.y, region.width, parts), "y")
        elements = size_of(shape[1:-1]) * ceil_div(n, min(n, region.width))
        where = Rect(region.x, region.y, region.width, 1)
    else:
        line = Line(Rect(region.x, region.y, parts, region.height), "x")
        elements = size_of(shape[1:-1]) * ceil_div(n, min(n, region.height))
        where = Rect(region.x, region.y, 1, region.height)
    algorithm = ins.attrs["algorithm"]
    group = ins.attrs["group"] if algorithm == "two_phase" else 0
    scratch = GraphBuilder()
    collectives.allreduce(
        scratch, t.cm(out), line, elements, algorithm, (), group, name="reduce", **op.labels
    )
    phases = [task for task in scratch.tasks if task.name != "reduce.broadcast"]
    front = t.values[op.arg(0)].frontier
    for task in phases:
        front = (
            t.b.add(
                f"{ins.op}:{ins.node}.{task.name.removeprefix('reduce.')}",
                task.kind,
                task.cost,
                front,
                task.region,
                task.links,
                **dict(task.labels),
            ),
        )
        t.stage_tasks[t.stage] += front
    return Value(front, where, 0, "act")


import simulator.moe  # noqa: E402, F401  (registers the rules of the MoE cost classes)
import simulator.permutes  # noqa: E402, F401  (registers the rule of `fabric_permute`)
import simulator.translate_ssd  # noqa: E402, F401  (registers the rule of `ssd_scan`)
