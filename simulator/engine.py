"""Deterministic discrete-event engine: a task graph in, a timeline of events out.

Model
-----
A task is one step of a program, with a cost computed beforehand by `simulator.cost` (a closed
form in cycles). It holds resources while it runs:

- a compute task holds its PE region (a rectangle) for its whole duration;
- a fabric task holds the directed links of its footprint for `cost.link_busy_cycles` cycles from
  its start (the serialisation of its wavelets); the rest of its duration (ramps, hops, per-step
  adds) is pipelined latency that holds no link. It may also hold a region: the cores that drive
  a blocking collective;
- a stream task holds the single external-memory channel (weight streaming) for its duration;
- a link task (a transfer between two wafers of a cluster) holds its `channel`, the sending
  wafer's I/O, while it sends its bytes (`cost.link_busy_cycles`); the link's latency after
  that holds nothing.

A task is ready when every dependency has ended, and starts at the first cycle, at or after that,
when all its resources are free. Resources are granted in ready order (first come, first served;
ties by task id), and never pre-empted, so two transfers that share a link serialise their
wavelets: the second starts when the first's last wavelet has left the link. The event heap is
ordered by (time, priority, sequence): ends before readiness at the same cycle, then insertion
order, so the same graph always gives the same events.

Aggregation
-----------
The engine never iterates over PEs or links. One task stands for every PE and link that does the
same work in lockstep: a compute task covers the rectangle of PEs that each run one tile (costed
for the largest tile, which is the critical path), and a fabric task covers the union of the links
used by its parallel copies (the all-reduce of every column of a GEMV is one task whose footprint
is those columns' north/south links, as a few `LinkSpan` rectangles). Contention is decided by
intersecting rectangles of links with the same direction, which is exact because copies of one
task use disjoint links; a task's cost is the closed form of one copy, so a kernel whose tasks do
not contend ends at exactly the sum of the closed forms on its critical path. Per-link load stays
derivable from the events (footprint x busy cycles), for heat-maps, without per-link events.

Translating a placed program
----------------------------
Walk the placed ops in program order with one `GraphBuilder`. A compute op becomes one compute
task on its region, costed by its op class in `simulator.cost` from its global shape and how
many parts each dimension is tiled into. A fabric op becomes the builder in
`simulator.collectives` of the same name: `broadcast` (rows or columns: a `Line` along "x" or
"y"), `allreduce` with its algorithm attribute ("chain" | "tree" | "two_phase"), `shift`
(Cannon), `cost.stream` for weights from external memory, `cost.transfer` for a stream between
regions (footprint: the links of its route). Dependencies are the def-use edges (each builder
returns the ids to depend on); labels carry `op`, `node`, `location` and `layer` into every
event.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from core.geometry import Rect
from simulator.cost import Cost

DIRECTIONS = ("E", "W", "N", "S")
KINDS = ("compute", "fabric", "stream", "link")

# Event-heap priorities: at one cycle, ends are handled before tasks become ready.
_END, _READY = 0, 1


@dataclass(frozen=True)
class LinkSpan:
    """The directed links leaving every PE of `rect` towards `direction` (E: x+1, S: y+1)."""

    direction: str
    rect: Rect

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        _check_rect(self.rect)

    @property
    def num_links(self) -> int:
        return self.rect.num_pes

    def overlaps(self, other: LinkSpan) -> bool:
        return self.direction == other.direction and self.rect.overlaps(other.rect)


@dataclass(frozen=True)
class Task:
    """One schedulable step: its cost, its dependencies (earlier task ids) and its resources.

    `labels` carry free-form provenance into the events: `op`, `node` (FX node), `location`
    (user source line), `layer` (the trace groups by it), `algo`, `phase`, `step`.
    """

    name: str
    kind: str
    cost: Cost
    deps: tuple[int, ...] = ()
    region: Rect | None = None
    links: tuple[LinkSpan, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    channel: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "link") != bool(self.channel):
            raise ValueError(f"task {self.name!r}: a link task, and only one, has a channel")
        if self.kind == "compute" and self.region is None:
            raise ValueError(f"compute task {self.name!r} needs a region")
        if self.region is not None:
            _check_rect(self.region)


@dataclass(frozen=True)
class Event:
    """What one task did: when it was ready, started and ended, on what, and its cost figures."""

    task_id: int
    name: str
    kind: str
    op_class: str
    ready_cycles: int
    start_cycles: int
    end_cycles: int
    link_busy_cycles: int
    roofline_cycles: float
    flops: float
    sram_bytes: float
    external_bytes: float
    deps: tuple[int, ...]
    region: Rect | None
    links: tuple[LinkSpan, ...]
    labels: tuple[tuple[str, str], ...]

    @property
    def duration_cycles(self) -> int:
        return self.end_cycles - self.start_cycles

    @property
    def wait_cycles(self) -> int:
        return self.start_cycles - self.ready_cycles

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


@dataclass(frozen=True)
class Timeline:
    """The events of one simulation, in task-id order, and when the last one ended."""

    events: tuple[Event, ...]
    makespan_cycles: int


class GraphBuilder:
    """Collects tasks in dependency order; `add` returns the new task's id."""

    def __init__(self):
        self._tasks: list[Task] = []

    def add(
        self,
        name: str,
        kind: str,
        cost: Cost,
        deps: Sequence[int | None] = (),
        region: Rect | None = None,
        links: Sequence[LinkSpan] = (),
        channel: str = "",
        **labels: str,
    ) -> int:
        """Append a task; `None` entries in `deps` are skipped (an optional predecessor)."""
        task_deps = tuple(sorted({d for d in deps if d is not None}))
        if task_deps and (task_deps[0] < 0 or task_deps[-1] >= len(self._tasks)):
            raise ValueError(f"task {name!r}: dependencies {task_deps} must be earlier task ids")
        task = Task(
            name, kind, cost, task_deps, region, tuple(links), tuple(labels.items()), channel
        )
        self._tasks.append(task)
        return len(self._tasks) - 1

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks)


class _Reservations:
    """Busy-until boxes: (until, key, x0, y0, x1, y1), key "R" for a PE region, else a link
    direction. A request starts once every overlapping box with the same key has ended."""

    def __init__(self):
        self._held: list[tuple[int, str, int, int, int, int]] = []

    def free_at(self, boxes: Sequence[tuple[str, int, int, int, int]], now: int) -> int:
        self._held = held = [h for h in self._held if h[0] > now]
        start = now
        for until, key, x0, y0, x1, y1 in held:
            if until <= start:
                continue
            for k, a0, b0, a1, b1 in boxes:
                if k == key and x0 < a1 and a0 < x1 and y0 < b1 and b0 < y1:
                    start = until
                    break
        return start

    def hold(self, boxes: Sequence[tuple[str, int, int, int, int]], until: int) -> None:
        self._held.extend((until, *box) for box in boxes)


def _check_rect(rect: Rect) -> None:
    if not rect.is_valid():
        raise ValueError(f"bad rectangle {rect}: needs x, y >= 0 and width, height >= 1")


def _box(key: str, r: Rect) -> tuple[str, int, int, int, int]:
    return (key, r.x, r.y, r.x + r.width, r.y + r.height)


def simulate(tasks: Sequence[Task]) -> Timeline:
    """Run the task graph; every task id must only depend on earlier ids."""
    dependents: list[list[int]] = [[] for _ in tasks]
    missing = [len(t.deps) for t in tasks]
    for i, task in enumerate(tasks):
        for d in task.deps:
            if not 0 <= d < i:
                raise ValueError(f"task {i} ({task.name!r}) depends on {d}, not an earlier task")
            dependents[d].append(i)

    heap: list[tuple[int, int, int, int]] = []
    sequence = 0
    for i in range(len(tasks)):
        if not missing[i]:
            heap.append((0, _READY, sequence, i))
            sequence += 1
    heapq.heapify(heap)

    busy = _Reservations()
    channels: dict[str, int] = {}
    events: list[Event | None] = [None] * len(tasks)
    while heap:
        now, priority, _, i = heapq.heappop(heap)
        task = tasks[i]
        if priority == _END:
            for j in dependents[i]:
                missing[j] -= 1
                if not missing[j]:
                    heapq.heappush(heap, (now, _READY, sequence, j))
                    sequence += 1
            continue
        region = [_box("R", task.region)] if task.region is not None else []
        links = [_box(s.direction, s.rect) for s in task.links]
        start = busy.free_at(region + links, now)
        channel = "external" if task.kind == "stream" else task.channel
        if channel:
            start = max(start, channels.get(channel, 0))
        end = start + task.cost.cycles
        busy.hold(region, end)
        busy.hold(links, start + task.cost.link_busy_cycles)
        if channel:  # a wafer link is free again once its bytes are sent, not after latency
            channels[channel] = start + task.cost.link_busy_cycles if task.kind == "link" else end
        events[i] = _event(i, task, now, start, end)
        heapq.heappush(heap, (end, _END, sequence, i))
        sequence += 1

    done = tuple(e for e in events if e is not None)
    if len(done) != len(tasks):
        raise ValueError("task graph has unreachable tasks")
    return Timeline(done, max((e.end_cycles for e in done), default=0))


def _event(task_id: int, task: Task, ready: int, start: int, end: int) -> Event:
    cost = task.cost
    return Event(
        task_id=task_id,
        name=task.name,
        kind=task.kind,
        op_class=cost.op_class,
        ready_cycles=ready,
        start_cycles=start,
        end_cycles=end,
        link_busy_cycles=cost.link_busy_cycles if task.links else 0,
        roofline_cycles=cost.roofline_cycles,
        flops=cost.flops,
        sram_bytes=cost.sram_bytes,
        external_bytes=cost.external_bytes,
        deps=task.deps,
        region=task.region,
        links=task.links,
        labels=task.labels,
    )


def roofline_violations(events: Sequence[Event]) -> list[str]:
    """Events that ran faster than their roofline allows (an empty list when the model is sound)."""
    return [
        f"task {e.task_id} ({e.name}): {e.duration_cycles} cycles < roofline "
        f"{e.roofline_cycles:.1f}"
        for e in events
        if e.duration_cycles + 1e-9 < e.roofline_cycles
    ]
