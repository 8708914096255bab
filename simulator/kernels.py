"""Single-kernel task graphs (GEMV, GEMM, all-reduce) and the fabric collectives they are made of.

Layout conventions: a GEMV [1,K] x [K,N] on a w x h region puts K over the rows and N over the
columns ("k_rows"; "k_cols" swaps them): x is broadcast along each row, every PE multiplies its
kt x nt weight tile, and the partial sums are all-reduced along each column. The collective
builders (`allreduce`, `broadcast`, `shift`) are the pieces a placed program's fabric ops
translate into; each takes a `GraphBuilder`, the `CostModel`, the region, and the task ids it
depends on, and returns the ids of its last tasks (its "frontier").

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
from dataclasses import dataclass, field

from core.errors import KernelSpecError
from core.geometry import Rect
from core.target import Target, load_target
from simulator import cost
from simulator.cost import Calibration, CostModel, load_calibration
from simulator.engine import Event, GraphBuilder, LinkSpan, simulate
from simulator.trace import Breakdown, LinkLoad, breakdown, busiest_links

ALGORITHMS = {
    "gemv": ("chain", "tree", "two_phase"),
    "gemm": ("cannon", "summa"),
    "allreduce": ("chain", "tree", "two_phase"),
}
DEFAULT_ALGORITHM = {"gemv": "tree", "gemm": "cannon", "allreduce": "tree"}
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


@functools.lru_cache(maxsize=4096)
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
    **labels: str,
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
    **labels: str,
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
    labels: dict[str, str],
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
    **labels: str,
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


def gemv(
    b: GraphBuilder,
    cm: CostModel,
    region: Rect,
    k: int,
    n: int,
    algo: str,
    deps: Sequence[int] = (),
    *,
    orientation: str = "k_rows",
    x_resident: bool = False,
    group_size: int = 0,
    **labels: str,
) -> Frontier:
    """[1,K] x [K,N]: broadcast x along the rows (unless already resident), local FMACs, then an
    all-reduce of the partial sums along the K axis. The result ends replicated along K."""
    k_rows = orientation == "k_rows"
    parts_k, parts_n = (region.height, region.width) if k_rows else (region.width, region.height)
    kt, nt = -(-k // parts_k), -(-n // parts_n)
    name = labels.pop("name", "gemv")
    front = tuple(deps)
    if not x_resident:
        x_line = Line(region, "x" if k_rows else "y")
        front = broadcast(
            b, cm, x_line, kt * cm.element_bytes, 0, front, name=f"{name}.x_broadcast", **labels
        )
    mac = cost.matmul(cm, 1, k, n, parts_k=parts_k, parts_n=parts_n)
    front = (b.add(f"{name}.fmac", "compute", mac, front, region, **labels),)
    line = Line(region, "y" if k_rows else "x")
    return allreduce(b, cm, line, nt, algo, front, group_size, name=f"{name}.allreduce", **labels)


def gemm(
    b: GraphBuilder,
    cm: CostModel,
    region: Rect,
    m: int,
    k: int,
    n: int,
    algo: str,
    deps: Sequence[int] = (),
    **labels: str,
) -> Frontier:
    """[M,K] x [K,N] with C's tiles stationary: "cannon" (WaferLLM MeshGEMM: interleaved rings,
    every shift 2 physical hops, overlapped with compute; square grids) or "summa" (each step
    multicasts one A panel along the rows and one B panel along the columns, then computes; one
    panel buffer, so no look-ahead)."""
    w, h = region.width, region.height
    bytes_ = cm.element_bytes
    rows, cols = Line(region, "x"), Line(region, "y")
    labels = {**labels, "algo": algo}
    front = tuple(deps)
    if algo == "cannon":
        p = w
        mt, kt, nt = -(-m // p), -(-k // p), -(-n // p)
        a_bytes, b_bytes = mt * kt * bytes_, kt * nt * bytes_
        skew = -(-p // 2)
        shift_a = shift(b, cm, rows, a_bytes, 2, front, skew, name="cannon.skew_a", **labels)
        shift_b = shift(b, cm, cols, b_bytes, 2, front, skew, name="cannon.skew_b", **labels)
        mac = cost.matmul(cm, m, kt, n, parts_m=p, parts_n=p)
        compute: tuple[int, ...] = ()
        for s in range(p):
            step = {**labels, "step": str(s)}
            done = b.add("cannon.fmac", "compute", mac, compute + shift_a + shift_b, region, **step)
            if s < p - 1:
                a, c = compute + shift_a, compute + shift_b
                shift_a = shift(b, cm, rows, a_bytes, 2, a, name="cannon.shift_a", **step)
                shift_b = shift(b, cm, cols, b_bytes, 2, c, name="cannon.shift_b", **step)
            compute = (done,)
        return compute
    if algo == "summa":
        steps = max(w, h)
        mt, nt, kb = -(-m // h), -(-n // w), -(-k // steps)
        mac = cost.matmul(cm, m, kb, n, parts_m=h, parts_n=w)
        for s in range(steps):
            step = {**labels, "step": str(s)}
            col, row = s * w // steps, s * h // steps
            a = broadcast(b, cm, rows, mt * kb * bytes_, col, front, False, name="summa.a", **step)
            c = broadcast(b, cm, cols, kb * nt * bytes_, row, front, False, name="summa.b", **step)
            front = (b.add("summa.fmac", "compute", mac, a + c, region, **step),)
        return front
    raise KernelSpecError(f"unknown gemm algorithm {algo!r}; known: cannon, summa")


@dataclass(frozen=True)
class DecoderShape:
    """A Llama-style decoder layer's sizes."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int


LLAMA3_8B = DecoderShape(hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336)


def decode_attention(
    b: GraphBuilder,
    cm: CostModel,
    region: Rect,
    shape: DecoderShape,
    kv_len: int,
    algo: str,
    deps: Sequence[int],
    **labels: str,
) -> Frontier:
    """One decode step's attention over a KV cache spread over the region: feature dims over the
    rows (where the q projection left q), positions over the columns. Scores reduce over each
    head's rows, softmax max and sum reduce along the rows of PEs, p.V reduces along them too."""
    w, h = region.width, region.height
    kv_dim = shape.kv_heads * shape.head_dim
    group = shape.heads // shape.kv_heads
    dt, pt = -(-kv_dim // h), -(-kv_len // w)
    head_rows = Line(region, "y", -(-shape.head_dim // dt))
    positions = Line(region, "x")
    front = shift(
        b, cm, positions, 2 * dt * cm.element_bytes, 1, deps, name="attn.kv_shift", **labels
    )
    scores = cost.matmul(cm, group, kv_dim, kv_len, parts_k=h, parts_n=w)
    front = (b.add("attn.scores", "compute", scores, front, region, **labels),)
    front = allreduce(b, cm, head_rows, group * pt, algo, front, name="attn.scores_sum", **labels)
    probs = cost.softmax(cm, shape.heads, kv_len, parts_rows=shape.kv_heads, parts_cols=w)
    front = (b.add("attn.softmax", "compute", probs, front, region, **labels),)
    for stat in ("max", "sum"):
        front = allreduce(
            b, cm, positions, group, algo, front, name=f"attn.softmax_{stat}", **labels
        )
    pv = cost.matmul(cm, group, kv_len, kv_dim, parts_k=w, parts_n=h)
    front = (b.add("attn.pv", "compute", pv, front, region, **labels),)
    return allreduce(b, cm, positions, group * dt, algo, front, name="attn.pv_sum", **labels)


def decode_layer(
    b: GraphBuilder,
    cm: CostModel,
    region: Rect,
    shape: DecoderShape,
    kv_len: int,
    algo: str = "tree",
    deps: Sequence[int] = (),
    **labels: str,
) -> Frontier:
    """A kernel-level Llama decode layer on one region: RMSNorm, q/k/v GEMVs, RoPE, attention,
    o GEMV, residual, RMSNorm, gate/up GEMVs, SiLU * up, down GEMV, residual. GEMVs alternate
    orientation so each one's output is already laid out as the next one's input (no transposes):
    the residual stream lives split over the columns."""
    w, h = region.width, region.height
    hid, q_dim = shape.hidden, shape.heads * shape.head_dim
    kv_dim = shape.kv_heads * shape.head_dim
    cols = Line(region, "x")

    def rms_norm(front: Frontier, name: str) -> Frontier:
        local = cost.norm(cm, 1, hid, parts_cols=w)
        front = (b.add(f"{name}.local", "compute", local, front, region, **labels),)
        return allreduce(b, cm, cols, 1, algo, front, name=f"{name}.sum", **labels)

    def elementwise(front: Frontier, name: str, numel: int, parts: int, ops: int) -> Frontier:
        c = cost.elementwise(cm, numel, parts=parts, inputs=2, ops_per_element=ops)
        return (b.add(name, "compute", c, front, region, **labels),)

    def proj(front: Frontier, name: str, k: int, n: int, orientation: str) -> Frontier:
        kwargs = dict(orientation=orientation, x_resident=True, name=name, **labels)
        return gemv(b, cm, region, k, n, algo, front, **kwargs)

    front = rms_norm(tuple(deps), "attn_norm")
    qkv = [
        proj(front, p, hid, d, "k_cols") for p, d in (("q", q_dim), ("k", kv_dim), ("v", kv_dim))
    ]
    front = elementwise(sum(qkv, ()), "rope", q_dim + kv_dim, h, 3)
    front = decode_attention(b, cm, region, shape, kv_len, algo, front, **labels)
    front = proj(front, "o", q_dim, hid, "k_rows")
    front = elementwise(front, "residual", hid, w, 1)
    front = rms_norm(front, "mlp_norm")
    gate_up = [proj(front, p, hid, shape.ffn, "k_cols") for p in ("gate", "up")]
    front = elementwise(
        sum(gate_up, ()), "silu_mul", shape.ffn, h, 3 + cm.calibration.exp_ops_per_element
    )
    front = proj(front, "down", shape.ffn, hid, "k_rows")
    return elementwise(front, "residual", hid, w, 1)


@dataclass(frozen=True)
class KernelResult:
    """The simulated cycles of one kernel, where they went, and the events behind them."""

    kind: str
    algo: str
    target: str
    dtype: str
    m: int
    k: int
    n: int
    grid: tuple[int, int]
    clock_hz: float
    cycles: int
    flops: float
    utilization: float
    breakdown: Breakdown
    busiest_links: tuple[LinkLoad, ...]
    events: tuple[Event, ...] = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz


def _fits(cm: CostModel, kind: str, algo: str, m: int, k: int, n: int, w: int, h: int) -> int:
    """Bytes one PE needs for the kernel's tiles and buffers."""
    mt, nt = -(-m // h), -(-n // w)
    if kind == "gemv":
        kt = -(-k // h)
        words = kt * nt + kt + nt
    elif kind == "allreduce":
        words = 2 * n
    elif algo == "cannon":
        kt = -(-k // w)
        words = 2 * mt * kt + 2 * kt * nt + mt * nt
    else:
        ka, kb, kp = -(-k // w), -(-k // h), -(-k // max(w, h))
        words = mt * ka + kb * nt + mt * nt + mt * kp + kp * nt
    return words * cm.element_bytes


def simulate_kernel(
    kind: str,
    m: int = 1,
    k: int = 1,
    n: int = 1,
    grid: tuple[int, int] | None = None,
    algo: str | None = None,
    target: str | Target = "wse2",
    dtype: str = "fp16",
    *,
    x_resident: bool = False,
    group_size: int = 0,
    calibration: Calibration | None = None,
) -> KernelResult:
    """Simulate one kernel on a w x h grid (default: the whole target).

    gemv: [1,K] x [K,N]; gemm: [M,K] x [K,N]; allreduce: an N-element vector on every PE, summed
    along every column. Raises `KernelSpecError` (or `TargetError`) naming what is wrong.
    """
    if kind not in ALGORITHMS:
        raise KernelSpecError(f"unknown kernel {kind!r}; known: {', '.join(ALGORITHMS)}")
    algo = algo or DEFAULT_ALGORITHM[kind]
    if algo not in ALGORITHMS[kind]:
        raise KernelSpecError(
            f"unknown algorithm {algo!r} for {kind}; known: {', '.join(ALGORITHMS[kind])}"
        )
    tgt = load_target(target)
    w, h = grid or (tgt.grid_width_pes, tgt.grid_height_pes)
    for label, value in (("m", m), ("k", k), ("n", n), ("grid width", w), ("grid height", h)):
        if value <= 0:
            raise KernelSpecError(f"{label} must be positive, got {value}")
    if w > tgt.grid_width_pes or h > tgt.grid_height_pes:
        raise KernelSpecError(
            f"grid {w}x{h} is larger than target {tgt.name}'s "
            f"{tgt.grid_width_pes}x{tgt.grid_height_pes} PEs"
        )
    if kind == "gemv" and m != 1:
        raise KernelSpecError(f"gemv multiplies one row (m = 1), got m = {m}; use gemm")
    if algo == "cannon" and w != h:
        raise KernelSpecError(f"cannon needs a square grid, got {w}x{h}; use summa")
    if group_size < 0:
        raise KernelSpecError(f"group size must be >= 0, got {group_size}")
    try:
        cm = CostModel(tgt, calibration or load_calibration(), dtype)
    except ValueError as exc:
        raise KernelSpecError(str(exc)) from exc
    need = _fits(cm, kind, algo, m, k, n, w, h)
    if need > tgt.usable_sram_bytes_per_pe:
        raise KernelSpecError(
            f"{kind} tiles need {need} B per PE on a {w}x{h} grid, more than the "
            f"{tgt.usable_sram_bytes_per_pe} B of usable SRAM; use a larger grid"
        )

    b = GraphBuilder()
    region = Rect(0, 0, w, h)
    labels = {"op": kind}
    if kind == "gemv":
        gemv(b, cm, region, k, n, algo, x_resident=x_resident, group_size=group_size, **labels)
        flops = 2.0 * k * n
    elif kind == "gemm":
        gemm(b, cm, region, m, k, n, algo, **labels)
        flops = 2.0 * m * k * n
    else:
        allreduce(b, cm, Line(region, "y"), n, algo, (), group_size, name="allreduce", **labels)
        flops = float(n * (h - 1) * w)
    timeline = simulate(b.tasks)
    cycles = timeline.makespan_cycles
    peak = cm.flops_per_cycle_per_pe * region.num_pes * max(cycles, 1)
    return KernelResult(
        kind=kind,
        algo=algo,
        target=tgt.name,
        dtype=dtype,
        m=m,
        k=k,
        n=n,
        grid=(w, h),
        clock_hz=tgt.clock_hz,
        cycles=cycles,
        flops=flops,
        utilization=flops / peak,
        breakdown=breakdown(timeline.events),
        busiest_links=busiest_links(timeline.events, w, h, cycles),
        events=timeline.events,
    )
