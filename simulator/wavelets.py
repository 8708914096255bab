"""A wavelet-level fabric simulator for small regions, to bound the engine's aggregated model.

Every directed link (and each PE's ramp in and out of its router) moves at most one wavelet per
cycle. Each flow has a colour; a link serves the colours waiting at it round robin, and the
wavelets of one colour in arrival order. A wavelet that crosses a link at cycle t waits at the
next one from t + latency (`hop_latency_cycles` a hop, `ramp_latency_cycles` a ramp). Buffers
are unbounded (no back-pressure). A flow is a path (XY routing: along x, then y); a multicast
along a line is one path whose PEs all keep a copy, and ends when its last PE has the last
wavelet. Alone, a flow of w wavelets over h hops ends after 2 ramp + h hop + w cycles, the
engine's closed form (`cost.transfer` without its task start).

`compare(cm)` runs a few transfer patterns on a 16x16 region both ways (this simulator and
`simulator.engine` with the tasks the translation makes) and returns their makespans;
`tests/test_wavelets.py` bounds the difference and docs/fabric.md reports it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, replace

from core.geometry import Rect
from simulator import collectives, cost
from simulator.collectives import Line
from simulator.cost import CostModel
from simulator.engine import GraphBuilder, LinkSpan, simulate
from simulator.permutes import all_to_all

Link = tuple[int, int, str]  # (x, y, direction) of the link leaving PE (x, y), or a ramp
_STEP = {"E": (1, 0), "W": (-1, 0), "S": (0, 1), "N": (0, -1)}
SIDE = 16
LATE = 1000  # the one-wavelet message starts while the long flow streams


@dataclass(frozen=True)
class Flow:
    """`wavelets` from the first PE of `path` along its links, on `color`, from `start`."""

    src: tuple[int, int]
    path: tuple[str, ...]
    wavelets: int
    color: int = 0
    start: int = 0

    def links(self) -> list[Link]:
        """The ramp out of the source, each hop's link, the ramp into the last PE."""
        x, y = self.src
        out: list[Link] = [(x, y, "in")]
        for d in self.path:
            out.append((x, y, d))
            dx, dy = _STEP[d]
            x, y = x + dx, y + dy
        return [*out, (x, y, "out")]


def xy_flow(src: tuple[int, int], dst: tuple[int, int], wavelets: int, color: int = 0) -> Flow:
    """A unicast routed along x, then along y."""
    dx, dy = dst[0] - src[0], dst[1] - src[1]
    path = ("E" if dx > 0 else "W") * abs(dx) + ("S" if dy > 0 else "N") * abs(dy)
    return Flow(src, tuple(path), wavelets, color)


def run(flows: list[Flow], ramp: int, hop: int) -> list[int]:
    """The cycle each flow ends (its last wavelet delivered)."""
    ids: dict[Link, int] = {}
    routes = [[ids.setdefault(link, len(ids)) for link in f.links()] for f in flows]
    arrivals: dict[int, list[tuple[int, int]]] = defaultdict(list)  # cycle -> (flow, hop)
    for i, f in enumerate(flows):
        arrivals[f.start].extend((i, 0) for _ in range(f.wavelets))
    colour_of = [f.color for f in flows]
    queues: dict[int, dict[int, deque[tuple[int, int]]]] = {}
    turn = [-1] * len(ids)
    ends = [f.start for f in flows]
    t, waiting = 0, sum(f.wavelets for f in flows)
    while waiting:
        for i, k in arrivals.pop(t, ()):
            link = routes[i][k]
            queues.setdefault(link, {}).setdefault(colour_of[i], deque()).append((i, k))
        for link, colours in list(queues.items()):
            if len(colours) == 1:
                colour = next(iter(colours))
            else:
                after = [c for c in colours if c > turn[link]]
                colour = min(after) if after else min(colours)
            turn[link] = colour
            queue = colours[colour]
            i, k = queue.popleft()
            if not queue:
                del colours[colour]
                if not colours:
                    del queues[link]
            route = routes[i]
            if k + 1 < len(route):
                # at least a cycle later: a zero latency would queue it in a read cycle
                arrivals[t + max(ramp if k == 0 else hop, 1)].append((i, k + 1))
            else:
                waiting -= 1
                ends[i] = max(ends[i], t + ramp + 1)
        t += 1
    return ends


def _engine(cm: CostModel, build) -> int:
    b = GraphBuilder()
    build(b)
    return simulate(b.tasks, cm.target.colors).makespan_cycles


def patterns(cm: CostModel, wavelets: int = 64) -> dict[str, tuple[list[Flow], int]]:
    """Each pattern's flows and the engine's makespan for the same traffic (without the task
    start the engine adds to every task)."""
    cm = replace(cm, calibration=replace(cm.calibration, task_start_cycles=0))
    nbytes = wavelets * int(cm.link_bytes_per_cycle)
    region, n = Rect(0, 0, SIDE, SIDE), SIDE
    out: dict[str, tuple[list[Flow], int]] = {}

    flows = [xy_flow((x, y), ((x + 1) % n, y), wavelets, 0) for x in range(n - 1) for y in range(n)]
    out["shift"] = (flows, _engine(cm, lambda b: _shift(b, cm, region, nbytes)))

    flows = [Flow((0, y), ("E",) * (n - 1), wavelets, 0) for y in range(n)]
    line = Line(region, "x")
    out["broadcast"] = (
        flows,
        _engine(cm, lambda b: collectives.broadcast(b, cm, line, nbytes, 0, ())),
    )

    pes = [(x, y) for y in range(n) for x in range(n)]
    flows = [  # staggered: in turn, every PE sends to the PE k places on (colour k)
        xy_flow(s, pes[(i + k) % len(pes)], 1, k % cm.target.colors)
        for k in range(1, len(pes))
        for i, s in enumerate(pes)
    ]
    per_pe = (len(pes) - 1) * int(cm.link_bytes_per_cycle)
    out["all-to-all"] = (flows, _engine(cm, lambda b: all_to_all(b, cm, region, per_pe, ())))

    row = [(x, 0) for x in range(n)]
    flows = [  # x to x' down to row (x + x') mod n, across, back up
        Flow(s, _detour(s, d, (s[0] + d[0]) % n), 4, k % cm.target.colors)
        for k in range(1, n)
        for s, d in ((row[i], row[(i + k) % n]) for i in range(n))
    ]
    block, per_pe = Rect(0, 0, n, 1), 4 * (n - 1) * int(cm.link_bytes_per_cycle)
    engine = _engine(cm, lambda b: all_to_all(b, cm, block, per_pe, (), region))
    out["all-to-all of a row, through 16x16"] = (flows, engine)

    long, short = 16 * wavelets, wavelets
    flows = [xy_flow((0, 4), (12, 10), long, 0), xy_flow((6, 4), (15, 4), short, 1)]
    first = (long, 18, [LinkSpan("E", Rect(0, 4, 12, 1)), LinkSpan("S", Rect(12, 4, 1, 6))])
    second = (short, 9, [LinkSpan("E", Rect(6, 4, 9, 1))])
    out["two crossing flows"] = (flows, _engine(cm, lambda b: two(b, cm, first, second, 0)))

    message = replace(xy_flow((3, 0), (9, 0), 1, 1), start=LATE)
    flows = [xy_flow((0, 0), (15, 0), 16_384, 0), message]
    first = (16_384, 15, [LinkSpan("E", Rect(0, 0, 15, 1))])
    second = (1, 6, [LinkSpan("E", Rect(3, 0, 6, 1))])
    engine = _engine(cm, lambda b: two(b, cm, first, second, LATE))
    out["one wavelet behind a long flow"] = (flows, engine)
    return out


def _detour(src: tuple[int, int], dst: tuple[int, int], row: int) -> tuple[str, ...]:
    across = dst[0] - src[0]
    return tuple("S" * row + ("E" if across > 0 else "W") * abs(across) + "N" * row)


def _shift(b: GraphBuilder, cm: CostModel, region: Rect, nbytes: int) -> None:
    span = LinkSpan("E", Rect(0, 0, region.width - 1, region.height))
    b.add("shift", "fabric", cost.transfer(cm, nbytes, 1), (), None, [span])


def two(b: GraphBuilder, cm: CostModel, first, second, late: int) -> tuple[int, int]:
    """Two transfers, each (wavelets, hops, link spans); the second from cycle `late`."""
    w = int(cm.link_bytes_per_cycle)
    ids = []
    for (count, hops, spans), start in ((first, 0), (second, late)):
        wait = b.add("wait", "compute", cost.Cost("wait", start, 0.0), (), Rect(0, 15, 1, 1))
        ids.append(b.add("flow", "fabric", cost.transfer(cm, count * w, hops), [wait], None, spans))
    return ids[0], ids[1]


def compare(cm: CostModel) -> dict[str, tuple[int, int]]:
    """(engine, wavelet-level) makespan of each pattern, in cycles."""
    t = cm.target
    return {
        name: (engine, max(run(flows, t.ramp_latency_cycles, t.hop_latency_cycles)))
        for name, (flows, engine) in patterns(cm).items()
    }
