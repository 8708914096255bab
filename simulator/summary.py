"""One simulated program summarised from its events: per stage, per op class, and the pass.

Pipelines: a pipelined prefill runs over `chunks` pieces of the sequence, each assumed to cost
1/chunks of a stage's whole-sequence time: one pass / chunks to fill, then (chunks - 1) times
the busiest stage's share. The bubble is the idle fraction of the stages' time. In streaming
mode the stages share the grid; the bubble is the time nothing but the weight stream runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.target import Target
from simulator.engine import Event, Timeline
from simulator.trace import Breakdown, LinkLoad, breakdown, busiest_links, critical_path


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
class WaferLinks:
    """Transfers between the wafers of a cluster: how many, their bytes, and their summed
    cycles (each: the links' latency plus its bytes at their bandwidth)."""

    transfers: int
    bytes: int
    cycles: int

    @staticmethod
    def of(events: Sequence[Event], repeats: int = 1) -> WaferLinks:
        """The transfers among `events`, made `repeats` times (once per chunk)."""
        links = [e for e in events if e.kind == "link"]
        return WaferLinks(
            len(links) * repeats,
            sum(int(e.label("bytes", "0")) for e in links) * repeats,
            sum(e.duration_cycles for e in links) * repeats,
        )


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
    wafer_links: WaferLinks = field(default_factory=lambda: WaferLinks(0, 0, 0))

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


def _union_cycles(events: Sequence[Event]) -> int:
    """Cycles during which at least one of `events` runs."""
    total, end = 0, 0
    for e in sorted(events, key=lambda e: e.start_cycles):
        if e.end_cycles > end:
            total += e.end_cycles - max(e.start_cycles, end)
            end = e.end_cycles
    return total


def layer_and_op_times(
    events: Sequence[Event], stage_names: Sequence[str]
) -> tuple[tuple[LayerTime, ...], tuple[OpClassTime, ...]]:
    """Per stage (in stage order) and per op class (busiest first), from the events' `layer`
    and `op` labels; a stage without a name in `stage_names` is called "stage <n>"."""
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


def summarize(
    timeline: Timeline,
    target: Target,
    *,
    dtype: str,
    streaming: bool,
    chunks: int = 1,
    stage_names: Sequence[str] = (),
    per_chunk: bool = False,
) -> SimResult:
    """The `SimResult` of one simulated pass: per-stage and per-op-class times, the pipelined
    cycles over `chunks` pieces, the bubble, the critical-path breakdown, the busiest links.
    `per_chunk`: the pass is one chunk (a chunked prefill's chunk step), not the whole input."""
    events, makespan = timeline.events, timeline.makespan_cycles
    layers, classes = layer_and_op_times(events, stage_names)
    slowest = max((layer.busy_cycles for layer in layers), default=makespan)
    cycles = makespan if chunks == 1 else round((makespan + (chunks - 1) * slowest) / chunks)
    if per_chunk:
        cycles = makespan + (chunks - 1) * slowest
    if streaming:
        working = _union_cycles([e for e in events if e.kind != "stream"])
        bubble = 1 - working / max(makespan, 1)
    else:  # busy over every chunk: a chunk step's layers ran once, the pass `chunks` times
        busy = sum(layer.busy_cycles for layer in layers) * (chunks if per_chunk else 1)
        bubble = 1 - busy / max(len(layers) * cycles, 1)
    return SimResult(
        target=target,
        dtype=dtype,
        mode="streaming" if streaming else "pipelined",
        chunks=chunks,
        makespan_cycles=makespan,
        cycles=cycles,
        flops=sum(e.flops for e in events if e.kind == "compute") * (chunks if per_chunk else 1),
        bubble_fraction=max(0.0, bubble),
        breakdown=breakdown(events),
        layers=layers,
        op_classes=classes,
        busiest_links=busiest_links(
            events, target.grid_width_pes, target.grid_height_pes, makespan
        ),
        events=events,
        wafer_links=WaferLinks.of(events, chunks if per_chunk else 1),
    )
