"""Cost functions, one per op class, each returning its cycles beside its roofline twin.

Every function takes the op's global shape and how many parts each dimension is split into (one
part per PE), costs the largest tile one PE runs, and returns a `Cost`. `cycles` is what the
engine charges; `roofline_cycles` is the lower bound no schedule can beat: the larger of the
compute bound (FLOPs over the peak of the PEs involved), the SRAM bounds (the bytes that must be
read or written at least once, over the ports of those PEs) and, for fabric ops, the link
bandwidth and distance bounds. Each cost is `task_start_cycles` plus terms that each dominate one
of the roofline's, so `cycles >= roofline_cycles` holds by construction
(`tests/test_simulator_engine.py` checks it over random shapes).

Per-PE compute, on a PE with `lanes` SIMD lanes (FP16: FLOP/cycle/PE / 2 FMAC lanes):
a vector instruction of `n` elements takes ceil(n / lanes) + `vector_op_overhead_cycles`.
Fabric ops follow the pipelined wormhole model of Luczynski et al. (HPDC'24): a stream of
`w = ceil(bytes / link bytes per cycle)` wavelets over `hops` hops takes
2 * ramp + hops * hop + w cycles, and a chain reduce over `steps` dependent PEs adds
(2 * ramp + add) per step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from core import dtypes
from core.errors import CalibrationError
from core.target import Target

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Cost:
    """The cost of one task: cycles charged, its roofline, and the work it represents (totals)."""

    op_class: str
    cycles: int
    roofline_cycles: float
    link_busy_cycles: int = 0
    flops: float = 0.0
    sram_bytes: float = 0.0
    external_bytes: float = 0.0

    def __post_init__(self):
        if self.cycles < 0 or self.link_busy_cycles < 0 or self.link_busy_cycles > self.cycles:
            raise ValueError(f"inconsistent cost {self}")


@dataclass(frozen=True)
class Calibration:
    """Fitted and assumed constants of the cost model (`simulator/calibration.json`)."""

    vector_op_overhead_cycles: int
    task_start_cycles: int
    reduce_add_cycles: int
    exp_ops_per_element: int
    sources: tuple[tuple[str, str], ...] = ()

    def source(self, field_name: str) -> str:
        return dict(self.sources).get(field_name, "")


def load_calibration(path: str | Path = CALIBRATION_PATH) -> Calibration:
    """Read a calibration file: `{"fields": {name: {"value": int, "source": str}}, ...}`."""
    try:
        given = json.loads(Path(path).read_text())["fields"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"calibration file {path}: cannot read 'fields': {exc}") from exc
    names = [f.name for f in fields(Calibration) if f.name != "sources"]
    values, sources = {}, []
    for name in names:
        entry = given.get(name) if isinstance(given, dict) else None
        entry = entry if isinstance(entry, dict) else {}
        value = entry.get("value")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CalibrationError(
                f"calibration file {path}: '{name}' must be an entry with a whole 'value' >= 0"
            )
        values[name] = value
        sources.append((name, str(entry.get("source", ""))))
    return Calibration(sources=tuple(sources), **values)


@dataclass(frozen=True)
class CostModel:
    """A target, the calibration constants and the element type the costs are for."""

    target: Target
    calibration: Calibration
    dtype: str = "fp16"

    def __post_init__(self):
        if self.dtype not in dtypes.COMPUTE_LABELS:
            raise ValueError(
                f"dtype must be one of {list(dtypes.COMPUTE_LABELS)}, got {self.dtype!r}"
            )

    @property
    def element_bytes(self) -> int:
        return dtypes.by_label(self.dtype).bytes

    @property
    def flops_per_cycle_per_pe(self) -> int:
        t = self.target
        return (
            t.fp32_flops_per_cycle_per_pe if self.dtype == "fp32" else t.fp16_flops_per_cycle_per_pe
        )

    @property
    def lanes(self) -> int:
        """FMAC lanes per PE: elements one vector instruction handles per cycle."""
        return max(1, self.flops_per_cycle_per_pe // 2)

    @property
    def link_bytes_per_cycle(self) -> float:
        return self.target.link_bits_per_cycle / 8

    @property
    def external_bytes_per_cycle(self) -> float:
        return self.target.external_memory_bytes_per_second / self.target.clock_hz

    def wavelets(self, nbytes: float) -> int:
        """Cycles a link needs to carry `nbytes`."""
        return math.ceil(nbytes / self.link_bytes_per_cycle)


def _tile(size: int, parts: int) -> int:
    if size <= 0 or parts <= 0:
        raise ValueError(f"sizes and parts must be positive, got {size} split {parts} ways")
    return -(-size // parts)


def _local(
    cm: CostModel,
    op_class: str,
    *,
    compute_cycles: int,
    read_bytes_pe: float,
    write_bytes_pe: float,
    pes: int,
    flops: float,
    min_read_bytes: float,
    min_write_bytes: float,
) -> Cost:
    """A PE-local op: the slowest of its compute and SRAM ports, after the task start."""
    t = cm.target
    busy = max(
        compute_cycles,
        math.ceil(read_bytes_pe / t.sram_read_bytes_per_cycle),
        math.ceil(write_bytes_pe / t.sram_write_bytes_per_cycle),
    )
    roofline = max(
        flops / (pes * cm.flops_per_cycle_per_pe),
        min_read_bytes / (pes * t.sram_read_bytes_per_cycle),
        min_write_bytes / (pes * t.sram_write_bytes_per_cycle),
    )
    return Cost(
        op_class,
        cm.calibration.task_start_cycles + busy,
        roofline,
        flops=flops,
        sram_bytes=(read_bytes_pe + write_bytes_pe) * pes,
    )


def _vector_cycles(cm: CostModel, elements: int) -> int:
    return math.ceil(elements / cm.lanes) + cm.calibration.vector_op_overhead_cycles


def matmul(
    cm: CostModel, m: int, k: int, n: int, *, parts_m: int = 1, parts_k: int = 1, parts_n: int = 1
) -> Cost:
    """Local FMACs of [m,k] x [k,n] split over parts_m * parts_k * parts_n PEs (GEMV: m = 1).

    A PE runs mt * kt vector FMACs of length nt (y[i,:] += a[i,j] * W[j,:]); each lane reads the
    weight and the accumulator and writes the accumulator.
    """
    mt, kt, nt = _tile(m, parts_m), _tile(k, parts_k), _tile(n, parts_n)
    b = cm.element_bytes
    return _local(
        cm,
        "matmul",
        compute_cycles=mt * kt * _vector_cycles(cm, nt),
        read_bytes_pe=(2 * mt * kt * nt + mt * kt) * b,
        write_bytes_pe=mt * kt * nt * b,
        pes=parts_m * parts_k * parts_n,
        flops=2.0 * m * k * n,
        min_read_bytes=(k * n + m * k) * b,
        min_write_bytes=m * n * b,
    )


def elementwise(
    cm: CostModel,
    numel: int,
    *,
    parts: int = 1,
    inputs: int = 1,
    ops_per_element: int = 1,
    passes: int = 1,
) -> Cost:
    """`passes` vector instructions over numel elements split over `parts` PEs."""
    e = _tile(numel, parts)
    b = cm.element_bytes
    return _local(
        cm,
        "elementwise",
        compute_cycles=math.ceil(e * ops_per_element / cm.lanes)
        + passes * cm.calibration.vector_op_overhead_cycles,
        read_bytes_pe=e * inputs * b,
        write_bytes_pe=e * b,
        pes=parts,
        flops=float(numel * ops_per_element),
        min_read_bytes=numel * inputs * b,
        min_write_bytes=numel * b,
    )


def reduction(cm: CostModel, numel: int, *, parts: int = 1, outputs: int = 1) -> Cost:
    """The PE-local part of a sum/max: each PE folds its share to `outputs` values."""
    e = _tile(numel, parts)
    b = cm.element_bytes
    return _local(
        cm,
        "reduction",
        compute_cycles=_vector_cycles(cm, e),
        read_bytes_pe=e * b,
        write_bytes_pe=outputs * b,
        pes=parts,
        flops=float(numel),
        min_read_bytes=numel * b,
        min_write_bytes=outputs * b,
    )


def softmax(
    cm: CostModel, rows: int, cols: int, *, parts_rows: int = 1, parts_cols: int = 1
) -> Cost:
    """PE-local softmax passes (max, exp of the difference, sum, scale) over a rows x cols tile;
    the cross-PE max and sum are fabric tasks of their own."""
    rt, ct = _tile(rows, parts_rows), _tile(cols, parts_cols)
    ops = 4 + cm.calibration.exp_ops_per_element
    b = cm.element_bytes
    return _local(
        cm,
        "softmax",
        compute_cycles=rt
        * (math.ceil(ct * ops / cm.lanes) + 4 * cm.calibration.vector_op_overhead_cycles),
        read_bytes_pe=4 * rt * ct * b,
        write_bytes_pe=2 * rt * ct * b,
        pes=parts_rows * parts_cols,
        flops=float(rows * cols * ops),
        min_read_bytes=rows * cols * b,
        min_write_bytes=rows * cols * b,
    )


def norm(cm: CostModel, rows: int, cols: int, *, parts_rows: int = 1, parts_cols: int = 1) -> Cost:
    """PE-local RMS/layer norm passes (sum of squares, scale by the statistic and the weight);
    the cross-PE sum is a fabric task of its own."""
    rt, ct = _tile(rows, parts_rows), _tile(cols, parts_cols)
    b = cm.element_bytes
    return _local(
        cm,
        "norm",
        compute_cycles=rt
        * (math.ceil(3 * ct / cm.lanes) + 2 * cm.calibration.vector_op_overhead_cycles),
        read_bytes_pe=(3 * rt * ct + ct) * b,
        write_bytes_pe=rt * ct * b,
        pes=parts_rows * parts_cols,
        flops=4.0 * rows * cols,
        min_read_bytes=(rows * cols + cols) * b,
        min_write_bytes=rows * cols * b,
    )


def attention(
    cm: CostModel,
    heads: int,
    q_len: int,
    kv_len: int,
    head_dim: int,
    *,
    parts_kv: int = 1,
    parts_dim: int = 1,
) -> Cost:
    """PE-local attention on a tile: scores (q . K), softmax passes, then p . V; the KV cache is
    split over `parts_kv` positions x `parts_dim` feature parts. Cross-PE reductions are fabric
    tasks of their own."""
    parts = [
        matmul(cm, heads * q_len, head_dim, kv_len, parts_k=parts_dim, parts_n=parts_kv),
        softmax(cm, heads * q_len, kv_len, parts_cols=parts_kv),
        matmul(cm, heads * q_len, kv_len, head_dim, parts_k=parts_kv, parts_n=parts_dim),
    ]
    start = cm.calibration.task_start_cycles
    return Cost(
        "attention",
        sum(p.cycles for p in parts) - (len(parts) - 1) * start,
        max(p.roofline_cycles for p in parts),
        flops=sum(p.flops for p in parts),
        sram_bytes=sum(p.sram_bytes for p in parts),
    )


def flash_attention(
    cm: CostModel,
    tiles: int,
    q_block: int,
    keys: int,
    kv_block: int,
    head_dim: int,
    value_dim: int,
    *,
    pes: int = 1,
) -> Cost:
    """`tiles` tiles of `q_block` query rows over `keys` keys, one tile per PE on `pes` PEs,
    keys visited `kv_block` at a time: per block the scores (q_block x kv_block dot products of
    `head_dim`), the online-softmax update (block max, exp, sum; the running max, sum and
    accumulator rescaled) and p . V into the accumulator. The K/V blocks' moves are fabric tasks
    of their own."""
    blocks = _tile(keys, kv_block)
    per_pe = _tile(tiles, pes)
    ops = 4 + cm.calibration.exp_ops_per_element
    overhead = cm.calibration.vector_op_overhead_cycles
    per_block = (
        q_block * kv_block * _vector_cycles(cm, head_dim)
        + q_block * (math.ceil(kv_block * ops / cm.lanes) + 4 * overhead)
        + q_block * (_vector_cycles(cm, value_dim) + 2 * overhead)
        + q_block * kv_block * _vector_cycles(cm, value_dim)
    )
    b = cm.element_bytes
    scores = q_block * kv_block
    per_tile_read = blocks * (
        (q_block * head_dim + kv_block * (head_dim + value_dim)) * b + 3 * scores * 4
    )
    flops = float(tiles * q_block * keys * (2 * head_dim + 2 * value_dim + ops))
    return _local(
        cm,
        "attention",
        compute_cycles=per_pe * blocks * per_block,
        read_bytes_pe=per_pe * per_tile_read,
        write_bytes_pe=per_pe * blocks * (2 * scores + q_block * value_dim) * 4,
        pes=min(pes, tiles),
        flops=flops,
        min_read_bytes=tiles * (q_block * head_dim + keys * (head_dim + value_dim)) * b,
        min_write_bytes=tiles * q_block * value_dim * b,
    )


def scan(cm: CostModel, length: int, channels: int, state: int, *, parts: int = 1) -> Cost:
    """Selective scan over `length` steps, channels split over `parts` PEs: per step and
    (channel, state) exp(dt*A), h = dA*h + dt*B*u, y += C*h; sequential in time."""
    ct = _tile(channels, parts)
    if length <= 0 or state <= 0:
        raise ValueError(f"scan length and state must be positive, got {length}, {state}")
    ops = 4 + cm.calibration.exp_ops_per_element
    b = cm.element_bytes
    per_step = math.ceil(ct * state * ops / cm.lanes) + 4 * cm.calibration.vector_op_overhead_cycles
    return _local(
        cm,
        "scan",
        compute_cycles=length * per_step,
        read_bytes_pe=length * 3 * ct * state * b,
        write_bytes_pe=length * ct * state * b,
        pes=parts,
        flops=float(length * channels * state * ops),
        min_read_bytes=length * channels * b,
        min_write_bytes=length * channels * b,
    )


def ssd_scan(
    cm: CostModel, length: int, heads: int, width: int, state: int, chunk: int, *, parts: int = 1
) -> Cost:
    """Mamba-2's SSD scan in chunked-matmul form: `heads` heads of `width` channels over `parts`
    PEs (a PE holding part of a head still forms the head's scores). Per head and chunk of T
    steps, as multiply-adds over the PE's lanes: the intra-chunk quadratic part (scores C B^T,
    T x T x N; their segment-sum decays and exp, T x T; scores . x, T x T x P), the read-out of
    the carried state (T x N x P) and the state passed to the next chunk (T x N x P, then the
    P x N state decayed); six vector passes per chunk. Sequential only from chunk to chunk, so a
    small chunk suits a PE holding few channels of a head and a larger one a PE holding many."""
    if length <= 0 or state <= 0 or chunk <= 0:
        raise ValueError(f"bad ssd scan: length {length}, state {state}, chunk {chunk}")
    per_pe_heads = _tile(heads, parts)
    per_pe_width = _tile(width, max(1, parts // heads)) if parts > heads else width
    t, n, p, b = min(chunk, length), state, per_pe_width, cm.element_bytes
    exps = 2 + cm.calibration.exp_ops_per_element
    macs = t * t * n + t * t * p + 2 * t * n * p + p * n
    per_chunk = math.ceil((macs + t * t * exps) / cm.lanes)
    per_chunk += 6 * cm.calibration.vector_op_overhead_cycles
    chunks = _tile(length, t)
    flops_per_chunk = 2 * t * t * (n + width) + 4 * t * n * width + t * t * exps + 2 * width * n
    read_per_chunk = t * (p + 2 * n + 1) * b + (2 * p * n + 3 * t * t) * 4
    return _local(
        cm,
        "scan",
        compute_cycles=per_pe_heads * chunks * per_chunk,
        read_bytes_pe=per_pe_heads * chunks * read_per_chunk,
        write_bytes_pe=per_pe_heads * chunks * (t * p * b + (p * n + t * t) * 4),
        pes=parts,
        flops=float(heads * chunks * flops_per_chunk),
        min_read_bytes=heads * length * (width + 2 * n + 1) * b,
        min_write_bytes=heads * length * width * b,
    )


def transfer(cm: CostModel, nbytes: int, hops: int, *, steps: int = 1) -> Cost:
    """A stream (point-to-point or multicast) of `nbytes` over `hops` hops, repeated `steps` times
    store-and-forward (a shift that must land before it moves on)."""
    if nbytes <= 0 or hops < 0 or steps <= 0:
        raise ValueError(f"bad transfer: {nbytes} bytes, {hops} hops, {steps} steps")
    t = cm.target
    w = cm.wavelets(nbytes)
    per_step = 2 * t.ramp_latency_cycles + hops * t.hop_latency_cycles + w
    return Cost(
        "data_movement",
        cm.calibration.task_start_cycles + steps * per_step,
        max(steps * nbytes / cm.link_bytes_per_cycle, steps * hops * t.hop_latency_cycles),
        link_busy_cycles=steps * w,
    )


def chain_reduce(cm: CostModel, nbytes: int, steps: int, hops: int, *, chains: int = 1) -> Cost:
    """A pipelined chain reduce of an `nbytes` vector through `steps` dependent PEs spanning
    `hops` hops; each PE receives, adds its own and forwards, wavelet by wavelet (Luczynski et
    al.: (2 T_R + 1) per dependent step). `chains` parallel copies count towards the FLOPs."""
    if nbytes <= 0 or steps <= 0 or hops < steps:
        raise ValueError(f"bad chain reduce: {nbytes} bytes, {steps} steps over {hops} hops")
    t = cm.target
    w = cm.wavelets(nbytes)
    step = 2 * t.ramp_latency_cycles + cm.calibration.reduce_add_cycles
    return Cost(
        "collective",
        cm.calibration.task_start_cycles + steps * step + hops * t.hop_latency_cycles + w,
        max(nbytes / cm.link_bytes_per_cycle, hops * t.hop_latency_cycles),
        link_busy_cycles=w,
        flops=float(steps * chains * math.ceil(nbytes / cm.element_bytes)),
    )


def stream(cm: CostModel, nbytes: int) -> Cost:
    """Weights streamed in from external memory at the target's host-link bandwidth."""
    if nbytes <= 0:
        raise ValueError(f"bad stream of {nbytes} bytes")
    bound = nbytes / cm.external_bytes_per_cycle
    return Cost(
        "stream",
        cm.calibration.task_start_cycles + math.ceil(bound),
        bound,
        external_bytes=float(nbytes),
    )


def achievable_flops_per_cycle_per_pe(cm: CostModel, elements: int = 1024) -> float:
    """FLOP/cycle one PE reaches on its best FMAC loop (a long vector of `elements`, no task
    start): the achievable roofline beside the datasheet peak. Below the peak when the vector
    overhead or the SRAM ports (reading weight and accumulator, writing the accumulator) bind."""
    c = matmul(cm, 1, 1, elements)
    return c.flops / (c.cycles - cm.calibration.task_start_cycles)
