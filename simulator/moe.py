"""Mixture of experts on the fabric: the router, token routing as all-to-all traffic, and the
experts' matmuls on their own regions (`expert_regions`, set by placement).

Expert load: a dispatch's `expert_load` when it has one (`with_routed_load`: the tokens per
expert that routing the example inputs gives), else uniform (`expert_load`: the T x k routed
rows spread evenly over the E experts, at most `capacity` each). On the wafer a PE computes on
the rows that arrive (dataflow), so an expert costs its routed rows, not its capacity; the
static shapes of the reference and JAX runtimes compute every slot (`moe_notes` says so).

- `moe_router`: a softmax over each token's E logits (the k max-passes of top-k ride along);
- `moe_dispatch`: one fabric transfer per expert (per run of neighbouring experts beyond
  `GROUPS` of them), of its rows from the tokens' PEs to its region along an L-shaped route;
  the transfers start together and contend for the links they share (the engine's link
  model): this is the all-to-all;
- `grouped_matmul`: one matmul per expert (or run) of its routed rows on its region
  (`Translation.matmul_tasks`), all in parallel;
- `moe_combine`: the reverse all-to-all, then the gate-weighted sum on the tokens' PEs.

The traffic tasks carry the op label `all_to_all`, so reports show it as a row of its own.
"""

from __future__ import annotations

from dataclasses import replace
from weakref import WeakKeyDictionary

import torch

from core.geometry import Rect
from runtime.program import Instruction, Program
from runtime.reference import execute
from simulator import cost
from simulator.tasks import MatmulShape, PlacedOp, Translation, Value
from simulator.translate import TRANSLATE

ALL_TO_ALL = "all_to_all"
GROUPS = 16


def expert_load(tokens: int, top_k: int, experts: int, capacity: int) -> list[int]:
    """Rows per expert under uniform routing: T x k spread evenly (the first T x k mod E
    experts take one more), at most `capacity` each."""
    base, extra = divmod(tokens * top_k, experts)
    return [min(capacity, base + (e < extra)) for e in range(experts)]


def _groups(op: PlacedOp, load: list[int]) -> list[tuple[Rect, list[int]]]:
    """The experts in at most `GROUPS` runs of neighbours (placement cuts consecutive experts
    side by side), each as its bounding rectangle and its experts' loads: a layer of 128
    experts costs 16 flows each way, not 128 (the engine's link model is quadratic in them)."""
    flat = op.ins.attrs.get("expert_regions")
    rects = [
        op.region if flat is None else Rect(*flat[4 * e : 4 * e + 4]) for e in range(len(load))
    ]
    size = -(-len(load) // GROUPS)
    groups = []
    for first in range(0, len(load), size):
        part = rects[first : first + size]
        x0, y0 = min(r.x for r in part), min(r.y for r in part)
        x1 = max(r.x + r.width for r in part)
        y1 = max(r.y + r.height for r in part)
        groups.append((Rect(x0, y0, x1 - x0, y1 - y0), load[first : first + size]))
    return groups


def _load(t: Translation, ins: Instruction) -> list[int]:
    """The load of the dispatch `ins`: routed from the example inputs (`with_routed_load`)
    or uniform."""
    if "expert_load" in ins.attrs:
        return list(ins.attrs["expert_load"])
    tokens = t.specs[ins.operands[0]].shape[0]  # type: ignore[index]
    top_k = t.specs[ins.operands[1]].shape[1]  # type: ignore[index]
    experts, capacity = ins.result_specs[0].shape[:2]
    return expert_load(tokens, top_k, experts, capacity)


def with_routed_load(program: Program, compiled, inputs: tuple, kwargs: dict | None = None):
    """`program` (placed from `compiled`) with each dispatch's `expert_load`: the tokens per
    expert that routing the example `inputs` (and `kwargs`) gives, on the reference runtime.
    Unchanged when it has no MoE layer or its weights are on the meta device."""
    dispatches = [i for i in program.instructions if i.op == "moe_dispatch"]
    if not dispatches or any(w.is_meta for w in compiled.weights.values()):
        return program
    loads: dict[str, list[int]] = {}
    specs = _specs(compiled.program)

    def record(ins: Instruction, results: tuple) -> tuple:
        if ins.op == "moe_dispatch":
            tokens = specs[ins.operands[0]].shape[0]
            loads[ins.node] = (results[2] < tokens).sum(1).tolist()  # empty slots hold T
        return results

    with torch.no_grad():
        flat = compiled.flat_inputs(inputs, kwargs or {})
        execute(compiled.program, compiled.weights, flat, hook=record)
    instructions = tuple(
        replace(i, attrs={**i.attrs, "expert_load": loads[i.node]}) if i.node in loads else i
        for i in program.instructions
    )
    return replace(program, instructions=instructions)


# Per translation: the load of the latest dispatch, the layer the expert ops that follow it
# belong to.
_LOADS: WeakKeyDictionary[Translation, list[int]] = WeakKeyDictionary()


def _layer_load(t: Translation, experts: int, slots: int) -> list[int]:
    """The load of the layer's dispatch, or every slot full when there is none for E."""
    load = _LOADS.get(t)
    return load if load is not None and len(load) == experts else [slots] * experts


@TRANSLATE("moe_router")
def _moe_router(t: Translation, op: PlacedOp) -> Value:
    tokens, experts = t.specs[op.arg(0)].shape
    return t.rowwise(op, "softmax", tokens, experts)


@TRANSLATE("moe_all_to_all")
def _moe_all_to_all(t: Translation, op: PlacedOp) -> Value:
    return _dispatch(t, op) if op.ins.op == "moe_dispatch" else _combine(t, op)


def _traffic(t: Translation, op: PlacedOp, moves: list[tuple[Rect, Rect, int]], deps) -> tuple:
    """One transfer per (source, destination, bytes), started together: they contend for
    the links their routes share."""
    labels = {**op.labels, "op": ALL_TO_ALL}
    front: list[int] = []
    for src, dst, nbytes in moves:
        if nbytes > 0:
            front += t.move(Value(deps, src, nbytes, "act"), dst, 0, op.ins.op, labels)
    return tuple(front) or tuple(deps)


def _dispatch(t: Translation, op: PlacedOp) -> Value:
    x = t.specs[op.arg(0)]
    load = _load(t, op.ins)
    _LOADS[t] = load
    src = t.values[op.arg(0)].where or op.region
    deps = t.deps(op.ins, src, op.labels)
    row = x.shape[1] * t.cm(x).element_bytes
    moves = [(src, rect, sum(rows) * row) for rect, rows in _groups(op, load)]
    return Value(_traffic(t, op, moves, deps), None, 0, "act")


@TRANSLATE("grouped_matmul")
def _grouped_matmul(t: Translation, op: PlacedOp) -> Value:
    """Each expert's routed rows times its weight, on its region, all experts in parallel (a
    run of neighbours as one batched matmul on their rectangles)."""
    experts, slots, k = t.specs[op.arg(0)].shape
    n = op.out.shape[-1]
    load = _layer_load(t, experts, slots)
    lhs = t.deps(op.ins, op.region, op.labels)
    front: list[int] = []
    for rect, rows in _groups(op, load):
        if max(rows):
            one = PlacedOp(replace(op.ins, attrs={**op.ins.attrs, "region": list(rect)}), op.labels)
            shape = MatmulShape(len(rows), max(rows), k, n, True, True)
            front += t.matmul_tasks(one, shape, (lhs, ())).frontier
    return Value(tuple(front) or lhs, None, 0, "act")


def _combine(t: Translation, op: PlacedOp) -> Value:
    ys = t.specs[op.arg(0)]
    experts, slots, hidden = ys.shape
    load = _layer_load(t, experts, slots)
    home, cm = op.region, t.cm(ys)
    deps = t.values[op.arg(0)].frontier
    row = hidden * cm.element_bytes
    front = _traffic(t, op, [(r, home, sum(rows) * row) for r, rows in _groups(op, load)], deps)
    rows = sum(load)
    numel = max(1, rows * hidden)
    pes = min(numel, home.num_pes)
    c = cost.elementwise(cm, numel, parts=pes, inputs=2, ops_per_element=2)
    return t.compute(op, home, c, pes, front + t.values[op.arg(1)].frontier)


def _specs(program: Program) -> dict:
    """Value id -> its spec, for the program's inputs and every result."""
    specs = dict(enumerate(program.input_specs))
    for ins in program.instructions:
        specs.update(zip(ins.results, ins.result_specs, strict=True))
    return specs


def moe_notes(program: Program) -> tuple[str, ...]:
    """A line per kind of MoE layer in a placed program (how many, experts, top-k, capacity,
    expert load, the all-to-all volume, what the static shapes cost), then, for routed loads
    (`with_routed_load`), each layer's tokens per expert."""
    specs = _specs(program)
    kinds: dict[tuple, list[list[int]]] = {}
    layers = []
    for ins in program.instructions:
        if ins.op == "moe_dispatch":
            tokens, hidden = specs[ins.operands[0]].shape
            top_k = specs[ins.operands[1]].shape[1]
            experts, capacity = ins.result_specs[0].shape[:2]
            load = ins.attrs.get("expert_load") or expert_load(tokens, top_k, experts, capacity)
            key = (tokens, hidden, top_k, experts, capacity, "expert_load" in ins.attrs)
            kinds.setdefault(key, []).append(list(load))
            if "expert_load" in ins.attrs:
                layers.append(f"MoE {ins.node}: tokens per expert {_spread(load)}")
    return tuple(_note(loads, *key) for key, loads in kinds.items()) + tuple(layers)


def _spread(load: list[int]) -> str:
    """A load as its list (16 experts or fewer) or its range and mean."""
    if len(load) <= 16:
        return str(list(load))
    return f"{min(load)}-{max(load)}, mean {sum(load) / len(load):.1f}"


def _note(
    loads: list[list[int]],
    tokens: int,
    hidden: int,
    top_k: int,
    experts: int,
    capacity: int,
    routed: bool,
) -> str:
    low, high = min(min(x) for x in loads), max(max(x) for x in loads)
    spread = f"{low}" if low == high else f"{low}-{high}"
    source = "routed from the example inputs" if routed else "uniform routing assumed"
    drops = "none (capacity = tokens)" if capacity >= tokens else "possible (capacity < tokens)"
    rows = tokens * top_k
    return (
        f"MoE: {len(loads)} layer(s) of {experts} experts, top-{top_k}, {tokens} tokens, "
        f"capacity {capacity} per expert, drops {drops}; expert load {spread} tokens per expert "
        f"({source}); all-to-all {rows * hidden:,} elements to the experts and as many back "
        f"per layer; static shapes compute {experts * capacity} expert rows for {rows} routed "
        f"({experts * capacity / max(1, rows):.1f}x the expert FLOPs on the reference and JAX "
        "runtimes; the wafer computes the routed rows only)"
    )
