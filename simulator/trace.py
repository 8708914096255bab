"""Reports built only from engine events: critical-path breakdown, per-link load, Chrome trace."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulator.engine import DIRECTIONS, Event

_COMM_KINDS = ("fabric", "stream", "link")


@dataclass(frozen=True)
class Breakdown:
    """The critical path split into compute, communication and waiting for resources; the three
    add up to the makespan."""

    compute_cycles: int
    comm_cycles: int
    wait_cycles: int

    def as_dict(self) -> dict[str, int]:
        return {
            "compute_cycles": self.compute_cycles,
            "comm_cycles": self.comm_cycles,
            "wait_cycles": self.wait_cycles,
        }


@dataclass(frozen=True)
class LinkLoad:
    """How long one directed link (leaving PE (x, y) towards `direction`) carried wavelets."""

    direction: str
    x: int
    y: int
    busy_cycles: int
    utilization: float


def critical_path(events: Sequence[Event]) -> tuple[Event, ...]:
    """The chain of events that ends last, following at each step the dependency that ended last
    (ties: the lower task id); in time order."""
    if not events:
        return ()
    by_id = {e.task_id: e for e in events}
    current = max(events, key=lambda e: (e.end_cycles, -e.task_id))
    path = [current]
    while current.deps:
        current = max((by_id[d] for d in current.deps), key=lambda e: (e.end_cycles, -e.task_id))
        path.append(current)
    return tuple(reversed(path))


def breakdown(events: Sequence[Event]) -> Breakdown:
    """Compute, communication and wait cycles along the critical path."""
    compute = comm = wait = 0
    for e in critical_path(events):
        wait += e.wait_cycles
        if e.kind in _COMM_KINDS:
            comm += e.duration_cycles
        else:
            compute += e.duration_cycles
    return Breakdown(compute, comm, wait)


def link_busy_cycles(events: Sequence[Event], width: int, height: int) -> dict[str, np.ndarray]:
    """Busy cycles of every directed link of a width x height grid: one (height, width) array per
    direction, indexed by the PE the link leaves."""
    diff = {d: np.zeros((height + 1, width + 1), dtype=np.int64) for d in DIRECTIONS}
    for e in events:
        if not e.link_busy_cycles:
            continue
        for span in e.links:
            r, a = span.rect, diff[span.direction]
            x1, y1 = min(r.x + r.width, width), min(r.y + r.height, height)
            if r.x >= x1 or r.y >= y1:
                continue
            a[r.y, r.x] += e.link_busy_cycles
            a[r.y, x1] -= e.link_busy_cycles
            a[y1, r.x] -= e.link_busy_cycles
            a[y1, x1] += e.link_busy_cycles
    return {d: a.cumsum(0).cumsum(1)[:height, :width] for d, a in diff.items()}


def busiest_links(
    events: Sequence[Event], width: int, height: int, makespan_cycles: int, top: int = 5
) -> tuple[LinkLoad, ...]:
    """The `top` most loaded links (ties: direction order, then row, then column)."""
    busy = link_busy_cycles(events, width, height)
    candidates: list[tuple[int, int, int, int, str]] = []
    for order, direction in enumerate(DIRECTIONS):
        flat = busy[direction].ravel()
        count = min(top, flat.size)
        threshold = max(int(np.partition(flat, flat.size - count)[flat.size - count]), 1)
        above = np.flatnonzero(flat > threshold)
        level = np.flatnonzero(flat == threshold)[: count - above.size]
        for i in np.concatenate([above, level]):
            y, x = divmod(int(i), width)
            candidates.append((-int(flat[i]), order, y, x, direction))
    candidates.sort()
    span = max(makespan_cycles, 1)
    return tuple(
        LinkLoad(direction, x, y, -neg, -neg / span) for neg, _, y, x, direction in candidates[:top]
    )


def chrome_trace(events: Sequence[Event], clock_hz: float, name: str = "wafersim") -> dict:
    """A `chrome://tracing` / Perfetto JSON object: one process per layer label (or the kernel),
    one thread per region or link set, times in microseconds at the target clock."""
    to_us = 1e6 / clock_hz
    pids: dict[str, int] = {}
    tids: dict[tuple[int, str], int] = {}
    lanes_per_pid: dict[int, int] = {}
    trace: list[dict] = []
    for e in sorted(events, key=lambda e: (e.start_cycles, e.task_id)):
        labels = dict(e.labels)
        process = labels.get("layer", name)
        args: dict[str, object] = dict(labels)
        if process not in pids:
            pids[process] = len(pids) + 1
        pid = pids[process]
        lane = f"{e.kind} {e.region}" if e.region is not None else f"{e.kind} links"
        if e.kind == "link":
            lane = f"wafer link {e.label('wafer_link')}"
        if (pid, lane) not in tids:
            lanes_per_pid[pid] = tids[pid, lane] = lanes_per_pid.get(pid, 0) + 1
        tid = tids[pid, lane]
        args.update(
            task_id=e.task_id,
            op_class=e.op_class,
            cycles=e.duration_cycles,
            wait_cycles=e.wait_cycles,
            roofline_cycles=round(e.roofline_cycles, 3),
            flops=e.flops,
            links=[f"{s.direction} {s.rect}" for s in e.links],
        )
        trace.append(
            {
                "name": e.name,
                "cat": e.kind,
                "ph": "X",
                "ts": e.start_cycles * to_us,
                "dur": e.duration_cycles * to_us,
                "pid": pid,
                "tid": tid,
                "args": args,
            }
        )
    meta = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": process}}
        for process, pid in pids.items()
    ] + [
        {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": lane}}
        for (pid, lane), tid in tids.items()
    ]
    return {
        "traceEvents": meta + trace,
        "displayTimeUnit": "ns",
        "otherData": {"clock_hz": clock_hz},
    }
