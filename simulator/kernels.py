"""Single-kernel task graphs: GEMV, GEMM (Cannon, SUMMA), a Llama decode layer, and
`simulate_kernel`, which builds and simulates one of them (`wafersim kernel`).

Layout conventions: a GEMV [1,K] x [K,N] on a w x h region puts K over the rows and N over the
columns ("k_rows"; "k_cols" swaps them): x is broadcast along each row, every PE multiplies its
kt x nt weight tile, and the partial sums are all-reduced along each column. The kernels are
made of the collectives of `simulator.collectives` and return their frontier the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import KernelSpecError
from core.geometry import Rect
from core.target import Target, load_target
from simulator import cost
from simulator.collectives import Frontier, Line, allreduce, broadcast, shift
from simulator.cost import Calibration, CostModel, load_calibration
from simulator.engine import Event, GraphBuilder, simulate
from simulator.trace import Breakdown, LinkLoad, breakdown, busiest_links

ALGORITHMS = {
    "gemv": ("chain", "tree", "two_phase"),
    "gemm": ("cannon", "summa"),
    "allreduce": ("chain", "tree", "two_phase"),
}
DEFAULT_ALGORITHM = {"gemv": "tree", "gemm": "cannon", "allreduce": "tree"}


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
    **labels: Any,
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
    **labels: Any,
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
    **labels: Any,
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
    **labels: Any,
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
    labels: dict[str, Any] = {"op": kind}
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
