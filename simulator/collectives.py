"""Fabric collectives along lines of PEs: multicast, shift and all-reduce.

A `Line` is every column (axis "y") or every row ("x") of a region at once, optionally cut
into segments. Each builder takes a `GraphBuilder`, the `CostModel`, the line, and the task ids
it depends on, and returns the ids of its last tasks (its "frontier"); the kernels
(`simulator.kernels`) and the translation of a placed program (`simulator.translate`) are made
of them.

All-reduce algorithms along a line of L PEs (every column, or every row, at once):
- "chain": the vendor-style pipelined chain: reduce hop by hop to the line's first PE, then
  multicast the sum back (L-1 dependent steps).
- "tree": WaferLLM's MeshGEMV two-level tree: groups of g ~ sqrt(L) reduce from both ends into
  their middle PE, the group roots reduce the same way into the middle root (g hops apart),
  which multicasts the sum both ways.
- "two_phase": Luczynski et al.'s two-phase reduce: groups of g reduce into their first PE, the
  group heads chain-reduce into the line's first PE, which multicasts the sum back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import KernelSpecError
from core.geometry import Rect
from simulator import cost
from simulator.cost import CostModel
from simulator.engine import GraphBuilder, LinkSpan

Frontier = tuple[int, ...]


@dataclass(frozen=True)
class Line:
    """The reduction lines of a region: along "y" (each column's PEs) or "x" (each row's), cut
    into independent segments of `length` PEs (the whole extent when 0)."""

    region: Rect
    axis: str
    length: int = 0

    def __post_init__(self):
        if self.axis not in ("x", "y") or self.length < 0:
            raise ValueError(f"a line runs along 'x' or 'y' with length >= 0, got {self}")

    @property
    def extent(self) -> int:
        return self.region.height if self.axis == "y" else self.region.width

    @property
    def segment(self) -> int:
        return min(self.length or self.extent, self.extent)

    @property
    def count(self) -> int:
        """How many independent lines run in parallel."""
        breadth = self.region.width if self.axis == "y" else self.region.height
        return breadth * math.ceil(self.extent / self.segment)

    def spans(self, forward: bool, first: int, last: int) -> list[LinkSpan]:
        """Links leaving the PEs at positions first..last of every segment, towards higher
        positions (S or E) when `forward`, else lower (N or W); clipped to each segment."""
        return list(_spans(self, forward, first, last))


@functools.lru_cache(maxsize=1 << 16)  # kernels ask for the same lines' spans at every step
def _spans(line: Line, forward: bool, first: int, last: int) -> tuple[LinkSpan, ...]:
    spans = []
    extent, segment, r = line.extent, line.segment, line.region
    for start in range(0, extent, segment):
        end = min(start + segment, extent) - 1
        lo = start + max(first, 0 if forward else 1)
        hi = min(start + last, end - 1 if forward else end)
        if lo > hi:
            continue
        if line.axis == "y":
            rect = Rect(r.x, r.y + lo, r.width, hi - lo + 1)
            direction = "S" if forward else "N"
        else:
            rect = Rect(r.x + lo, r.y, hi - lo + 1, r.height)
            direction = "E" if forward else "W"
        spans.append(LinkSpan(direction, rect))
    return tuple(spans)


def broadcast(
    b: GraphBuilder,
    cm: CostModel,
    line: Line,
    nbytes: int,
    root: int,
    deps: Sequence[int],
    hold_region: bool = True,
    **labels: Any,
) -> Frontier:
    """Multicast `nbytes` from position `root` of every line to all its PEs."""
    length = line.segment
    if length == 1:
        return tuple(deps)
    hops = max(root, length - 1 - root)
    links = line.spans(True, root, length - 2) + line.spans(False, 1, root)
    task = b.add(
        labels.pop("name", "broadcast"),
        "fabric",
        cost.transfer(cm, nbytes, hops),
        deps,
        line.region if hold_region else None,
        links,
        **labels,
    )
    return (task,)


def shift(
    b: GraphBuilder,
    cm: CostModel,
    line: Line,
    nbytes: int,
    hops: int,
    deps: Sequence[int],
    steps: int = 1,
    **labels: Any,
) -> Frontier:
    """Every PE sends `nbytes` `hops` positions along the line (both directions are used, as in
    an interleaved ring), `steps` times store-and-forward; asynchronous: holds no region."""
    links = line.spans(True, 0, line.segment - 2) + line.spans(False, 1, line.segment - 1)
    task = b.add(
        labels.pop("name", "shift"),
        "fabric",
        cost.transfer(cm, nbytes, hops, steps=steps),
        deps,
        None,
        links,
        **labels,
    )
    return (task,)


def _chain(
    b: GraphBuilder,
    cm: CostModel,
    line: Line,
    nbytes: int,
    sides: Sequence[tuple[int, int]],
    links: list[LinkSpan],
    deps: Sequence[int],
    phase: str,
    labels: dict[str, Any],
) -> Frontier:
    """One reduce phase: parallel chains, each (steps, hops); the slowest sets the time."""
    costs = [cost.chain_reduce(cm, nbytes, s, h, chains=line.count) for s, h in sides if s > 0]
    if not costs:
        return tuple(deps)
    slowest = max(costs, key=lambda c: c.cycles)
    name = labels.get("name", "allreduce")
    rest = {k: v for k, v in labels.items() if k != "name"}
    return (
        b.add(f"{name}.{phase}", "fabric", slowest, deps, line.region, links, phase=phase, **rest),
    )


def allreduce(
    b: GraphBuilder,
    cm: CostModel,
    line: Line,
    elements: int,
    algo: str,
    deps: Sequence[int] = (),
    group_size: int = 0,
    **labels: Any,
) -> Frontier:
    """Sum an `elements`-long vector over every line; the result ends on every PE of the line.

    The cores drive the reduce (blocking, as in WaferLLM's MeshGEMV), so each phase holds the
    region. `group_size` 0 picks round(sqrt(L)) for "tree" and "two_phase".
    """
    length = line.segment
    if length == 1:
        return tuple(deps)
    nbytes = elements * cm.element_bytes
    labels = {"algo": algo, **labels}
    name = labels.get("name", "allreduce")
    if algo == "chain":
        links = line.spans(False, 1, length - 1)
        front = _chain(
            b, cm, line, nbytes, [(length - 1, length - 1)], links, deps, "reduce", labels
        )
        return broadcast(b, cm, line, nbytes, 0, front, **{**labels, "name": f"{name}.broadcast"})
    g = min(group_size or max(2, round(math.sqrt(length))), length)
    groups = math.ceil(length / g)
    if algo == "tree":
        r = (g - 1) // 2
        links = []
        for first in range(0, length, g):
            links += line.spans(True, first, first + r - 1)
            links += line.spans(False, first + r + 1, first + g - 1)
        halves = [(r, r), (g - 1 - r, g - 1 - r)]
        front = _chain(b, cm, line, nbytes, halves, links, deps, "groups", labels)
        roots = [min(j * g + r, length - 1) for j in range(groups)]
        mid = (groups - 1) // 2
        top, root, bottom = roots[0], roots[mid], roots[-1]
        sides = [(mid, root - top), (groups - 1 - mid, bottom - root)]
        links = line.spans(True, top, root - 1) + line.spans(False, root + 1, bottom)
        front = _chain(b, cm, line, nbytes, sides, links, front, "roots", labels)
    elif algo == "two_phase":
        links = []
        for first in range(0, length, g):
            links += line.spans(False, first + 1, first + g - 1)
        front = _chain(b, cm, line, nbytes, [(g - 1, g - 1)], links, deps, "groups", labels)
        last_head = (groups - 1) * g
        links = line.spans(False, 1, last_head)
        front = _chain(
            b, cm, line, nbytes, [(groups - 1, last_head)], links, front, "heads", labels
        )
        root = 0
    else:
        raise KernelSpecError(
            f"unknown all-reduce algorithm {algo!r}; known: chain, tree, two_phase"
        )
    return broadcast(b, cm, line, nbytes, root, front, **{**labels, "name": f"{name}.broadcast"})
