"""How a `Program` is split over devices, and the plan you can read before running it.

A layout is a (stages x tensor) grid of devices. The program's instructions are cut into
`stages` contiguous segments (pipeline stages), each holding about the same weight bytes and
cut where the fewest activation bytes cross (between layers, where only the residual stream
is live). Within a stage, the `tensor` devices split the big matmuls Megatron-style, read from
the dataflow: a matmul reading a weight whose activation input is not yet split is
column-parallel (the weight's output dimension is split, and so is its result), and one whose
input is split is row-parallel (the input dimension is split; XLA all-reduces the partial
sums). An embedding table is split along its width, and its rows are all-gathered. A weight
whose preferred dimension the tensor size does not divide is split along its other one; one
that divides neither is an error. Every other weight is replicated.

`plan` gives, per device, the weight, activation and KV/state bytes and the collectives of one
call (one prefill or one decode step), from shapes alone: meta-device programs work. KV/state
are the outputs after the first (the models' prefill and decode modules return the logits,
then the caches). It needs neither JAX nor weights; `runtime.jax_sharded` runs the partition
on JAX.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from core import dtypes
from core.errors import ShardingError
from runtime.program import Program, TensorSpec

STAGE, TENSOR = "stage", "tensor"
MAX_DEVICES = 1 << 16  # no layout, and no search for one that fits, goes beyond this


@dataclass(frozen=True)
class Layout:
    """`stages` pipeline stages of `tensor` devices each."""

    stages: int
    tensor: int

    @property
    def devices(self) -> int:
        return self.stages * self.tensor

    def describe(self) -> str:
        return f"{self.stages} stage(s) x {self.tensor} tensor-parallel device(s)"


@dataclass(frozen=True)
class Partition:
    """Where everything goes: `weight_dims[name]` is the dimension split over the tensor
    devices (None: replicated); `matmuls` maps the position of each weight matmul to
    "column" or "row"; `gathers` are the embeddings whose split rows are all-gathered;
    `split` the values split over the tensor devices; `cuts` the first position of each
    stage after the first; `state` the outputs that are KV caches or recurrent state."""

    layout: Layout
    weight_dims: dict[str, int | None]
    matmuls: dict[int, str]
    gathers: frozenset[int]
    split: frozenset[int]
    cuts: tuple[int, ...]
    state: frozenset[int]

    def stage_ranges(self, program: Program) -> list[range]:
        """The instruction positions of each stage, in order."""
        bounds = (0, *self.cuts, len(program.instructions))
        return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def nbytes(spec: TensorSpec) -> int:
    """Bytes of a tensor of `spec`."""
    return math.prod(spec.shape) * dtypes.element_bytes(spec.dtype)


def _specs(program: Program) -> dict[int, TensorSpec]:
    """Value id -> spec, for the inputs and every result."""
    specs = dict(enumerate(program.input_specs))
    for ins in program.instructions:
        specs.update(zip(ins.results, ins.result_specs, strict=True))
    return specs


# ---------------------------------------------------------------------- tensor parallelism


def _weight_operands(program: Program) -> dict[int | None, tuple[str, bool]]:
    """Value -> (weight name, transposed) for params, their 2-D transposes, and those
    broadcast over leading (batch) dimensions."""
    found: dict[int | None, tuple[str, bool]] = {}
    params = program.params()
    for ins in program.instructions:
        source = found.get(ins.operands[0]) if ins.operands else None
        if ins.op == "param":
            found[ins.results[0]] = (ins.attrs["sym_name"], False)
        elif source and ins.op == "transpose" and list(ins.attrs["permutation"]) == [1, 0]:
            found[ins.results[0]] = (source[0], not source[1])
        elif source and ins.op == "broadcast":
            if ins.result_specs[0].shape[-2:] == params[source[0]].shape[:: -1 if source[1] else 1]:
                found[ins.results[0]] = source
    return found


def tensor_weights(program: Program) -> dict[str, tuple[int, ...]]:
    """The weights a tensor split applies to (matmul weights and embedding tables): name ->
    shape."""
    weights = _weight_operands(program)
    params = program.params()
    out = {}
    for ins in program.instructions:
        operand = {"matmul": 1, "embedding": 0}.get(ins.op)
        if operand is not None and ins.operands[operand] in weights:
            name = weights[ins.operands[operand]][0]
            if len(params[name].shape) == 2:
                out[name] = params[name].shape
    return out


def tensor_sizes(program: Program, limit: int = 64) -> list[int]:
    """The tensor-parallel sizes up to `limit` that divide a dimension of every split weight."""
    shapes = tensor_weights(program).values()
    return [t for t in range(1, limit + 1) if all(s[0] % t == 0 or s[1] % t == 0 for s in shapes)]


def _check_tensor_size(program: Program, tensor: int) -> None:
    """`ShardingError` unless `tensor` divides a dimension of every split weight."""
    for name, shape in tensor_weights(program).items():
        if shape[0] % tensor and shape[1] % tensor:
            sizes = ", ".join(map(str, tensor_sizes(program)))
            raise ShardingError(
                f"a tensor-parallel size of {tensor} divides neither dimension of weight "
                f"{name!r} {list(shape)}, so the mesh does not divide the model; use a tensor "
                f"size (devices per stage) of one of: {sizes}"
            )


def _matmul_kind(
    dims: dict[str, int | None], name: str, transposed: bool, wanted: str, shape, tensor: int
) -> str | None:
    """Decide (or read back, for a weight used twice) how a matmul weight is split."""
    if name not in dims:
        for kind in (wanted, "row" if wanted == "column" else "column"):
            rhs_dim = 1 if kind == "column" else 0
            dim = 1 - rhs_dim if transposed else rhs_dim
            if shape[dim] % tensor == 0:
                dims[name] = dim
                return kind
        dims[name] = None
    chosen = dims[name]
    if chosen is None:
        return None
    return "column" if (1 - chosen if transposed else chosen) == 1 else "row"


def _tensor_split(program: Program, tensor: int):
    """(weight dims, matmul kinds, gathered embeddings, split values) for `tensor` devices."""
    weights = _weight_operands(program)
    params = program.params()
    dims: dict[str, int | None] = {}
    matmuls: dict[int, str] = {}
    gathers: set[int] = set()
    split: set[int] = set()
    if tensor == 1:
        return {n: None for n in params}, matmuls, frozenset(), frozenset()
    for position, ins in enumerate(program.instructions):
        result_split = any(v in split for v in ins.operands if v is not None)
        operand = ins.operands[1] if ins.op == "matmul" else None
        if operand in weights and len(params[weights[operand][0]].shape) == 2:
            name, transposed = weights[operand]
            wanted = "row" if ins.operands[0] in split else "column"
            kind = _matmul_kind(dims, name, transposed, wanted, params[name].shape, tensor)
            if kind is not None:
                matmuls[position] = kind
            result_split = kind == "column" or (kind is None and result_split)
        elif ins.op == "embedding" and ins.operands[0] in weights:
            name = weights[ins.operands[0]][0]
            shape = params[name].shape
            if name not in dims:
                dims[name] = next((d for d in (1, 0) if shape[d] % tensor == 0), None)
            if dims[name] is not None:
                gathers.add(position)
            result_split = False
        elif ins.op in ("param", "transpose") and ins.results[0] in weights:
            result_split = False
        if result_split:
            split.update(ins.results)
    dims.update({n: None for n in params if n not in dims})
    return dims, matmuls, frozenset(gathers), frozenset(split)


# ---------------------------------------------------------------------- pipeline stages


def _live_bytes(program: Program, specs: dict[int, TensorSpec]) -> list[int]:
    """Bytes of the non-weight values live just before each position (and after the end)."""
    n = len(program.instructions)
    params = {ins.results[0] for ins in program.instructions if ins.op == "param"}
    last = program.last_uses()
    first_use: dict[int, int] = {}
    defined: dict[int, int] = {}
    for position, ins in enumerate(program.instructions):
        for v in ins.operands:
            if v is not None:
                first_use.setdefault(v, position)
        defined.update((v, position) for v in ins.results)
    outputs = set(program.outputs)
    diff = [0] * (n + 2)
    for v, spec in specs.items():
        if v in params:
            continue
        start = defined[v] + 1 if v in defined else first_use.get(v, n)
        end = n if v in outputs else last.get(v, start - 1)
        if end >= start:
            diff[start] += nbytes(spec)
            diff[end + 1] -= nbytes(spec)
    live, total = [], 0
    for position in range(n + 1):
        total += diff[position]
        live.append(total)
    return live


def _cuts(program: Program, specs: dict[int, TensorSpec], stages: int) -> tuple[int, ...]:
    """The first position of stages 2..S: each near an equal share of the weight bytes, where
    the fewest activation bytes are live."""
    if stages == 1:
        return ()
    params = {
        ins.results[0]: nbytes(ins.result_specs[0])
        for ins in program.instructions
        if ins.op == "param"
    }
    before = [0]  # weight bytes first read before each position
    seen: set[int] = set()
    for ins in program.instructions:
        fresh = {v for v in ins.operands if v in params and v not in seen}
        seen |= fresh
        before.append(before[-1] + sum(params[v] for v in fresh))
    total = before[-1]
    live = _live_bytes(program, specs)
    compute = [p for p, ins in enumerate(program.instructions) if ins.op != "param"]
    cuts: list[int] = []
    for k in range(1, stages):
        target = total * k / stages
        low = cuts[-1] if cuts else 0
        candidates = [
            p
            for p in compute
            if p > low and before[low] < before[p] < total
            and abs(before[p] - target) <= total / (2 * stages)
        ]  # fmt: skip
        if not candidates:
            raise ShardingError(
                f"the program cannot be cut into {stages} pipeline stages that each hold "
                "weights (it has too few layers); use fewer stages and more tensor-parallel "
                "devices per stage"
            )
        cuts.append(min(candidates, key=lambda p: (live[p], abs(before[p] - target))))
    return tuple(cuts)


def partition(program: Program, layout: Layout) -> Partition:
    """Split `program` over `layout`; `ShardingError` if the layout does not divide it."""
    if layout.stages < 1 or layout.tensor < 1 or layout.devices > MAX_DEVICES:
        raise ShardingError(
            f"{layout.describe()} is not a layout; give 1 to {MAX_DEVICES} devices in all"
        )
    _check_tensor_size(program, layout.tensor)
    specs = _specs(program)
    dims, matmuls, gathers, split = _tensor_split(program, layout.tensor)
    return Partition(
        layout,
        dims,
        matmuls,
        gathers,
        split,
        _cuts(program, specs, layout.stages),
        frozenset(program.outputs[1:]),
    )


def choose_layout(program: Program, devices: int) -> Layout:
    """The layout of `devices` devices: as many tensor-parallel devices per stage as divide
    the model, and pipeline stages for the rest."""
    if not 1 <= devices <= MAX_DEVICES:
        raise ShardingError(f"devices must be from 1 to {MAX_DEVICES}, got {devices}")
    sizes = set(tensor_sizes(program, devices))
    tensor = max(t for t in range(1, devices + 1) if devices % t == 0 and t in sizes)
    return Layout(devices // tensor, tensor)


def layout_of(program: Program | None, devices) -> Layout:
    """The layout `devices` gives: a `Layout`; a count, laid out for `program` by
    `choose_layout`; or a mesh, read from its axis sizes ("stage", "tensor")."""
    if isinstance(devices, Layout):
        return devices
    if isinstance(devices, int) and not isinstance(devices, bool) and program is not None:
        return choose_layout(program, devices)
    shape = getattr(devices, "shape", None)
    axes = dict(shape) if isinstance(shape, Mapping) else {}
    if not axes or set(axes) - {STAGE, TENSOR}:
        raise ShardingError(
            f"devices must be a device count or a jax.sharding.Mesh with axes '{STAGE}' and/or "
            f"'{TENSOR}', not {type(devices).__name__} {devices!r:.80}"
        )
    return Layout(axes.get(STAGE, 1), axes.get(TENSOR, 1))


# ---------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Collective:
    """`count` collectives of `kind` per call, each moving a `bytes`-byte tensor."""

    kind: str
    bytes: int
    count: int


@dataclass(frozen=True)
class StagePlan:
    """Per-device bytes of one pipeline stage."""

    weight_bytes: int
    activation_bytes: int
    state_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes + self.state_bytes


@dataclass(frozen=True)
class ShardingPlan:
    """What each device holds and what moves between devices in one call."""

    layout: Layout
    stages: tuple[StagePlan, ...]
    collectives: tuple[Collective, ...]
    replicated_weight_bytes: int
    device_bytes: int | None = None

    @property
    def per_device_bytes(self) -> int:
        """The fullest device's bytes."""
        return max(s.total_bytes for s in self.stages)

    def to_dict(self) -> dict:
        return {
            "stages": self.layout.stages,
            "tensor": self.layout.tensor,
            "devices": self.layout.devices,
            "device_bytes": self.device_bytes,
            "per_device_bytes": self.per_device_bytes,
            "replicated_weight_bytes": self.replicated_weight_bytes,
            "per_stage": [
                {
                    "weight_bytes": s.weight_bytes,
                    "activation_bytes": s.activation_bytes,
                    "state_bytes": s.state_bytes,
                }
                for s in self.stages
            ],
            "collectives": [
                {"kind": c.kind, "bytes": c.bytes, "count": c.count} for c in self.collectives
            ],
        }


def _stage_plans(program: Program, part: Partition, specs: dict[int, TensorSpec]):
    """Per-device bytes of each stage: the weights it reads (split ones divided by the tensor
    size), the state it produces, and the peak of the activations live within it."""
    tensor = part.layout.tensor
    defined = {v: p for p, ins in enumerate(program.instructions) for v in ins.results}
    params = {ins.results[0]: ins for ins in program.instructions if ins.op == "param"}
    views = _weight_operands(program)  # transposes XLA folds into the matmul: no bytes
    skip = part.state | views.keys()
    outputs = set(program.outputs)
    last = program.last_uses()

    def share(v: int) -> int:
        return nbytes(specs[v]) // (tensor if v in part.split else 1)

    plans = []
    for stage in part.stage_ranges(program):
        read = {v for p in stage for v in program.instructions[p].operands if v in params}
        weights = sum(
            nbytes(specs[v])
            // (1 if part.weight_dims[params[v].attrs["sym_name"]] is None else tensor)
            for v in read
        )
        state = sum(share(v) for v in part.state if defined.get(v, -1) in stage)
        live: dict[int, int] = {}
        peak = 0
        for position in stage:
            ins = program.instructions[position]
            if ins.op == "param":
                continue
            for v in ins.operands:  # program inputs and values sent from earlier stages
                if v is not None and v not in params and defined.get(v, -1) not in stage:
                    live.setdefault(v, share(v))
            live.update((v, share(v)) for v in ins.results if v not in skip)
            peak = max(peak, sum(live.values()))
            for v in (*ins.operands, *ins.results):
                if v in live and v not in outputs and last.get(v, position) <= position:
                    del live[v]
        plans.append(StagePlan(weights, peak, state))
    return tuple(plans)


def _collectives(program: Program, part: Partition, specs: dict[int, TensorSpec]):
    """The collectives of one call, grouped by kind and size: an all-reduce per row-parallel
    matmul, an all-gather per split embedding and per split output or value sent to the next
    stage, and a send per value crossing a stage boundary."""
    found: Counter[tuple[str, int]] = Counter()
    for position, kind in part.matmuls.items():
        if kind == "row":
            found["all-reduce", nbytes(program.instructions[position].result_specs[0])] += 1
    for position in part.gathers:
        found["all-gather", nbytes(program.instructions[position].result_specs[0])] += 1
    defined = {v: p for p, ins in enumerate(program.instructions) for v in ins.results}
    ranges = part.stage_ranges(program)
    crossing = set(program.outputs) & part.split
    for stage, later in zip(ranges, ranges[1:], strict=False):
        for v in {v for p in later for v in program.instructions[p].operands if v is not None}:
            if defined.get(v, -1) in stage and program.instructions[defined[v]].op != "param":
                found["send", nbytes(specs[v])] += 1
                crossing |= {v} & part.split
    for v in crossing:
        found["all-gather", nbytes(specs[v])] += 1
    return tuple(Collective(k, b, c) for (k, b), c in sorted(found.items()))


def plan(
    program: Program,
    devices: int = 8,
    device_bytes: float | None = None,
    *,
    layout: Layout | None = None,
) -> ShardingPlan:
    """The sharding plan of `program` on `devices` devices (or the given `layout`) from its
    shapes alone. With `device_bytes`, `ShardingError` if the fullest device would need more,
    giving the bytes needed and available and how many devices it would take."""
    result = _plan(program, layout or choose_layout(program, devices), device_bytes)
    if device_bytes is not None and result.per_device_bytes > device_bytes:
        raise ShardingError(_does_not_fit(program, result, int(device_bytes)))
    return result


def _plan(program: Program, layout: Layout, device_bytes: float | None) -> ShardingPlan:
    specs = _specs(program)
    part = partition(program, layout)
    replicated = sum(
        nbytes(spec) for name, spec in program.params().items() if part.weight_dims[name] is None
    )
    return ShardingPlan(
        layout,
        _stage_plans(program, part, specs),
        _collectives(program, part, specs),
        replicated,
        None if device_bytes is None else int(device_bytes),
    )


def _does_not_fit(program: Program, result: ShardingPlan, device_bytes: int) -> str:
    """Why `result` does not fit, and the fewest devices on which it would."""
    total = sum(s.total_bytes for s in result.stages) * result.layout.tensor
    start = max(result.layout.devices + 1, math.ceil(total / device_bytes))
    needed = None
    for devices in range(start, min(MAX_DEVICES, start + 64) + 1):
        try:
            fits = _plan(program, choose_layout(program, devices), None).per_device_bytes
        except ShardingError:
            continue
        if fits <= device_bytes:
            needed = f"it would fit on {devices} such devices"
            break
    return (
        f"the program does not fit {result.layout.describe()} of {show_bytes(device_bytes)}: the "
        f"fullest device needs {show_bytes(result.per_device_bytes)} ({show_bytes(device_bytes)} "
        f"available); {needed or 'give more devices, or devices with more memory'}"
    )


def show_bytes(count: float) -> str:
    """A byte count for people, in decimal units: "17.62 GB", "427.26 kB"."""
    scale, unit = next(
        ((s, u) for s, u in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")) if count >= s),
        (1, "B"),
    )
    return f"{count / scale:,.2f} {unit}"
