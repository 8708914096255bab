"""Deterministic discrete-event engine: a task graph in, a timeline of events out.

Model
-----
A task is one step of a program, with a cost computed beforehand by `simulator.cost` (a closed
form in cycles). It holds resources while it runs:

- a compute task holds its PE region (a rectangle) for its whole duration;
- a fabric task sends `cost.link_busy_cycles` wavelets over every directed link of its footprint
  (the rest of its duration, ramps, hops and per-step adds, is pipelined latency); it may also
  hold a region: the cores that drive a blocking collective. Each transfer on a link has a colour
  of its own (a virtual channel), and the colours share the link's one wavelet per cycle round
  robin (`_Links`); at most `colors` (the target's) transfers share a link at once, a further
  one waits for a colour to free up;
- a stream task holds the single external-memory channel (weight streaming) for its duration;
- a link task (a transfer between two wafers of a cluster) holds its `channel`, the sending
  wafer's I/O, while it sends its bytes (`cost.link_busy_cycles`); the link's latency after
  that holds nothing.

A task is ready when every dependency has ended, and starts at the first cycle, at or after that,
when its region (and a colour on each of its links) is free. Regions are granted in ready order
(first come, first served; ties by task id) and never pre-empted. Links are shared, not locked:
a transfer that starts while others use some of its links interleaves with them, each
processor-sharing fairly, so with remaining wavelets r_j on the others (service not yet given)
the newcomer of w wavelets is stretched by sum_j min(r_j, w) on its most shared link and each
other transfer j by min(r_j, w) (its end moves later; its cores are not held longer). A
one-wavelet message behind a 16,384-wavelet transfer so takes 2 cycles of link time, not 16,385;
two equal transfers both end after 2 w. The event heap is ordered by (time, priority, sequence):
ends before readiness at the same cycle, then insertion order, so the same graph always gives
the same events.

Aggregation
-----------
The engine never iterates over PEs or links. One task stands for every PE and link that does the
same work in lockstep: a compute task covers the rectangle of PEs that each run one tile (costed
for the largest tile, which is the critical path), and a fabric task covers the union of the links
used by its parallel copies (the all-reduce of every column of a GEMV is one task whose footprint
is those columns' north/south links, as a few `LinkSpan` rectangles). Contention is decided by
intersecting rectangles of links with the same direction (copies of one task use disjoint
links); the stretch of a newcomer counts, for each transfer it meets, those that also meet it
where the two overlap (an upper bound on the most shared link). A task's cost is the closed form
of one copy, so a kernel whose tasks do not contend ends at exactly the sum of the closed forms
on its critical path. `simulator.wavelets` checks this aggregated model against a wavelet-level
simulation of a 16x16 region (docs/fabric.md gives the bound). Per-link load stays
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
import math
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
    """Busy-until boxes of PE regions: (until, x0, y0, x1, y1). A request starts once every
    overlapping box has ended."""

    def __init__(self) -> None:
        self._held: list[tuple[int, int, int, int, int]] = []

    def free_at(self, box: tuple[int, int, int, int] | None, now: int) -> int:
        self._held = held = [h for h in self._held if h[0] > now]
        start = now
        if box is None:
            return start
        a0, b0, a1, b1 = box
        for until, x0, y0, x1, y1 in held:
            if until > start and x0 < a1 and a0 < x1 and y0 < b1 and b0 < y1:
                start = until
        return start

    def hold(self, box: tuple[int, int, int, int] | None, until: int) -> None:
        if box is not None:
            self._held.append((until, *box))


_Box = tuple[str, int, int, int, int]


def _meets(a: Sequence, b: Sequence) -> bool:
    """Whether two (direction, x0, y0, x1, y1) boxes share a link."""
    return a[0] == b[0] and a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]


def _clip(a: Sequence, b: Sequence) -> _Box:
    return (a[0], max(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]), min(a[4], b[4]))


class _Links:
    """Transfers on directed links, sharing them by colour: each hold is
    [until, start, task, wavelets, (direction, x0, y0, x1, y1)], `until` moving later when a
    newcomer takes a share of the link (`share`)."""

    def __init__(self, colors: int) -> None:
        if colors < 1:
            raise ValueError(f"a link needs at least one colour, got {colors}")
        self.colors = colors
        self._held: list[list] = []

    def prune(self, now: int) -> None:
        self._held = [h for h in self._held if h[0] > now]

    def _meeting(self, boxes: Sequence[_Box], start: int) -> list[list]:
        return [h for h in self._held if h[0] > start and any(_meets(h[4], b) for b in boxes)]

    def colour_free_at(self, boxes: Sequence[_Box], start: int) -> int:
        """The first cycle from `start` when fewer than `colors` transfers use its links."""
        while True:
            active = [h for h in self._meeting(boxes, start) if h[1] <= start]
            if len(active) < self.colors:
                return start
            start = min(h[0] for h in active)

    def share(
        self, task: int, boxes: Sequence[_Box], start: int, wavelets: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """Admit `wavelets` on `boxes` from `start`: the newcomer's stretch, and the (task,
        delay) of each transfer it slows down (round robin between colours)."""
        meeting = self._meeting(boxes, start)
        shares = []
        for h in meeting:
            until, begun, _, own, _ = h
            left = own * (until - max(start, begun)) / (until - begun)
            shares.append(min(left, wavelets))
        stretch = 0.0
        for h, mine in zip(meeting, shares, strict=True):
            where = next(_clip(h[4], b) for b in boxes if _meets(h[4], b))
            others = sum(
                s
                for k, s in zip(meeting, shares, strict=True)
                if k is not h and _meets(k[4], where)
            )
            stretch = max(stretch, mine + others)
        delays: dict[int, int] = {}
        for h, mine in zip(meeting, shares, strict=True):
            delays[h[2]] = max(delays.get(h[2], 0), math.ceil(mine))
        for h in self._held:  # a slowed transfer holds all its links longer
            h[0] += delays.get(h[2], 0)
        until = start + wavelets + math.ceil(stretch)
        self._held.extend([until, start, task, wavelets, b] for b in boxes)
        return math.ceil(stretch), [(j, d) for j, d in delays.items() if d]


def _check_rect(rect: Rect) -> None:
    if not rect.is_valid():
        raise ValueError(f"bad rectangle {rect}: needs x, y >= 0 and width, height >= 1")


def _corners(r: Rect) -> tuple[int, int, int, int]:
    return (r.x, r.y, r.x + r.width, r.y + r.height)


def _first_free(busy: _Reservations, links: _Links, region, boxes, now: int) -> int:
    """The first cycle from `now` when the region is free and every link has a colour free."""
    start = busy.free_at(region, now)
    while boxes and (later := links.colour_free_at(boxes, start)) != start:
        start = busy.free_at(region, later)
    return start


def _dependents(tasks: Sequence[Task]) -> list[list[int]]:
    dependents: list[list[int]] = [[] for _ in tasks]
    for i, task in enumerate(tasks):
        for d in task.deps:
            if not 0 <= d < i:
                raise ValueError(f"task {i} ({task.name!r}) depends on {d}, not an earlier task")
            dependents[d].append(i)
    return dependents


def simulate(tasks: Sequence[Task], colors: int = 24) -> Timeline:
    """Run the task graph; every task id must only depend on earlier ids. `colors`: how many
    transfers may share one link at once (the target's routable colours)."""
    dependents = _dependents(tasks)
    missing = [len(t.deps) for t in tasks]
    roots = [i for i in range(len(tasks)) if not missing[i]]
    heap = [(0, _READY, seq, i) for seq, i in enumerate(roots)]
    sequence = len(heap)
    heapq.heapify(heap)

    busy, links = _Reservations(), _Links(colors)
    channels: dict[str, int] = {}
    ready, start_at, end_at = [0] * len(tasks), [-1] * len(tasks), [-1] * len(tasks)
    while heap:
        now, priority, _, i = heapq.heappop(heap)
        task = tasks[i]
        if priority == _END:
            if now != end_at[i]:
                continue  # a stale end: the transfer was slowed down since
            for j in dependents[i]:
                missing[j] -= 1
                if not missing[j]:
                    heapq.heappush(heap, (now, _READY, sequence, j))
                    sequence += 1
            continue
        region = _corners(task.region) if task.region is not None else None
        wavelets = task.cost.link_busy_cycles
        boxes = [(s.direction, *_corners(s.rect)) for s in task.links] if wavelets else []
        links.prune(now)
        start = _first_free(busy, links, region, boxes, now)
        channel = "external" if task.kind == "stream" else task.channel
        if channel:
            start = max(start, channels.get(channel, 0))
        stretch = 0
        if boxes:
            stretch, delays = links.share(i, boxes, start, wavelets)
            for j, delay in delays:
                end_at[j] += delay
                heapq.heappush(heap, (end_at[j], _END, sequence, j))
                sequence += 1
        end = start + task.cost.cycles + stretch
        busy.hold(region, end)
        if channel:  # a wafer link is free again once its bytes are sent, not after latency
            channels[channel] = start + task.cost.link_busy_cycles if task.kind == "link" else end
        ready[i], start_at[i], end_at[i] = now, start, end
        heapq.heappush(heap, (end, _END, sequence, i))
        sequence += 1

    if min(end_at, default=0) < 0:
        raise ValueError("task graph has unreachable tasks")
    done = tuple(_event(i, t, ready[i], start_at[i], end_at[i]) for i, t in enumerate(tasks))
    return Timeline(done, max(end_at, default=0))


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
