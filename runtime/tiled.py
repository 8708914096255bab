"""Tile-by-tile functional execution of a placed program: the numbers the placement implies.

`load(program, weights, target)` writes every resident weight tile into a byte image of each
PE's SRAM at the PE and offset its `wse.weight_tiles` records (and keeps streamed weights in an
external store). `run(program, wafer, inputs)` then executes the program, reading weights only
back from that image: `wse.weight_tiles` gathers a weight tile by tile (streaming ones first
copy their tiles in, in passes over dim 0 with `stream_passes`), `wse.tile_matmul` multiplies
each PE's activation slice by the tile it reads from its own SRAM, `wse.fabric_reduce` adds
the partial sums of the PE rows in its region in the order of its algorithm, and the Cannon
dataflow moves activation blocks as its `wse.fabric_shift` says and output blocks one PE up
per step. A wrong tile offset, a missing
partial sum or a wrong shift changes the result. A tiled `wse.attention` runs tile by tile
and key block by key block with the online-softmax recurrence (`flash_attention`), a chunked
`wse.selective_scan` chunk by chunk (`chunked_scan`).
Other ops run the reference kernels on whole tensors; so an embedding or indexing index out of
range raises `IndexOutOfRangeError` here as in the reference runtime.

The image holds `width x height x usable SRAM` bytes: this is for small grids (test meshes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from core.custom_ops import selective_scan_step
from core.errors import SimulationError
from core.ops import OpTable
from core.target import Target
from runtime.program import Instruction, Program
from runtime.reference import KERNELS

MAX_IMAGE_BYTES = 1 << 30


@dataclass(frozen=True)
class _Weight:
    """What a `wse.param` yields in the simulator: only a name, never the values."""

    name: str


@dataclass
class Wafer:
    """Every PE's usable SRAM as bytes, (rows, columns, bytes), and the external weight store."""

    sram: torch.Tensor
    external: dict[str, torch.Tensor]

    def write(self, x: int, y: int, offset: int, tile: torch.Tensor) -> None:
        data = tile.contiguous().reshape(-1).view(torch.uint8)
        self._check(x, y, offset, data.numel())
        self.sram[y, x, offset : offset + data.numel()] = data

    def read(self, x: int, y: int, offset: int, shape, dtype: torch.dtype) -> torch.Tensor:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        self._check(x, y, offset, size)
        return self.sram[y, x, offset : offset + size].clone().view(dtype).reshape(shape)

    def _check(self, x: int, y: int, offset: int, size: int) -> None:
        rows, cols, usable = self.sram.shape
        if not (0 <= x < cols and 0 <= y < rows and 0 <= offset and offset + size <= usable):
            raise SimulationError(
                f"bytes [{offset}, {offset + size}) on PE ({x}, {y}) are outside the "
                f"{cols} x {rows} grid's {usable} usable bytes per PE"
            )


# ---------------------------------------------------------------------------- tiles


def _tiling(ins: Instruction):
    a = ins.attrs
    x, y, _, _ = a["region"]
    return x, y, a["tile_dims"], a["tile_grid"], a["tile_shape"], a["sram_offset"]


def _tile_index(shape, dims, tile, r: int, c: int) -> tuple[slice, ...]:
    """Elements of tile (r, c): the r-th slice of dim dims[0], the c-th of dims[1]."""
    index = []
    for d, size in enumerate(shape):
        k = r if d == dims[0] else c if d == dims[1] else 0
        start = min(k * tile[d], size)
        index.append(slice(start, min(start + tile[d], size)))
    return tuple(index)


def _write_tiles(wafer: Wafer, ins: Instruction, weight: torch.Tensor, written=None) -> None:
    x, y, dims, grid, tile, offset = _tiling(ins)
    for r in range(grid[0]):
        for c in range(grid[1]):
            part = weight[_tile_index(weight.shape, dims, tile, r, c)]
            padded = weight.new_zeros(tile)
            padded[tuple(slice(0, n) for n in part.shape)] = part
            if written is not None:
                nbytes = padded.numel() * padded.element_size()
                span = written[y + r, x + c, offset : offset + nbytes]
                if bool(span.any()):
                    raise SimulationError(
                        f"tile ({r}, {c}) of a weight overlaps another tile on PE "
                        f"({x + c}, {y + r}) at bytes [{offset}, {offset + nbytes})"
                    )
                span.fill_(True)
            wafer.write(x + c, y + r, offset, padded)


def _read_tile(wafer: Wafer, ins: Instruction, r: int, c: int) -> torch.Tensor:
    x, y, _, _, tile, offset = _tiling(ins)
    return wafer.read(x + c, y + r, offset, tile, ins.result_specs[0].torch_dtype)


def _gather(wafer: Wafer, ins: Instruction) -> torch.Tensor:
    """The whole weight, tile by tile from the SRAM of the PEs that hold it."""
    spec = ins.result_specs[0]
    _, _, dims, grid, tile, _ = _tiling(ins)
    weight = torch.empty(spec.shape, dtype=spec.torch_dtype)
    for r in range(grid[0]):
        for c in range(grid[1]):
            index = _tile_index(spec.shape, dims, tile, r, c)
            part = _read_tile(wafer, ins, r, c)
            weight[index] = part[tuple(slice(0, s.stop - s.start) for s in index)]
    return weight


def _in_passes(wafer: Wafer, ins: Instruction, weight: torch.Tensor) -> torch.Tensor:
    """A weight streamed a slice of dim 0 at a time (`stream_passes`): each slice's tiles land
    in one of two buffers in turn and are gathered from there before the next but one."""
    tile = ins.attrs["tile_shape"]
    step = -(-weight.shape[0] // ins.attrs["stream_passes"])
    size = step * math.prod(tile[1:]) * weight.element_size()
    parts = []
    for p, start in enumerate(range(0, weight.shape[0], step)):
        part = weight[start : start + step]
        one = replace(
            ins,
            attrs={
                **ins.attrs,
                "tile_shape": [part.shape[0], *tile[1:]],
                "sram_offset": ins.attrs["sram_offset"] + p % 2 * size,
            },
            result_specs=(replace(ins.result_specs[0], shape=tuple(part.shape)),),
        )
        _write_tiles(wafer, one, part)
        parts.append(_gather(wafer, one))
    return torch.cat(parts)


# ---------------------------------------------------------------------------- loading


def _operand(ins: Instruction, index: int) -> int:
    """The value id of a required operand."""
    value = ins.operands[index]
    if value is None:
        raise SimulationError(f"wse.{ins.op} ({ins.node}) lacks its operand {index}")
    return value


def _tensor(value: object) -> torch.Tensor:
    """A program output: a tensor, never a weight's bare name."""
    if not isinstance(value, torch.Tensor):
        raise SimulationError(f"a program output is {value!r}, not a tensor")
    return value


def _params(program: Program) -> dict[int, str]:
    return {i.results[0]: i.attrs["sym_name"] for i in program.instructions if i.op == "param"}


def load(program: Program, weights: Mapping[str, torch.Tensor], target: Target) -> Wafer:
    """Write the resident weight tiles of `program` into a fresh SRAM image of `target`."""
    size = target.grid_height_pes * target.grid_width_pes * target.usable_sram_bytes_per_pe
    if size > MAX_IMAGE_BYTES:
        raise SimulationError(
            f"functional simulation keeps every PE's SRAM in memory: {target.name} needs "
            f"{size / 1e9:.1f} GB; use a smaller target (a test mesh)"
        )
    shape = (target.grid_height_pes, target.grid_width_pes, target.usable_sram_bytes_per_pe)
    wafer = Wafer(torch.zeros(shape, dtype=torch.uint8), {})
    written = torch.zeros(shape, dtype=torch.bool)
    names = _params(program)
    for ins in program.instructions:
        if ins.op != "weight_tiles":
            continue
        name = names[_operand(ins, 0)]
        if name not in weights:
            raise SimulationError(f"weight {name!r} is missing from the weights given")
        weight = weights[name].detach().cpu()
        if weight.is_meta:
            raise SimulationError(f"weight {name!r} is on the meta device")
        if ins.attrs["home"] == "sram":
            _write_tiles(wafer, ins, weight, written)
        else:
            wafer.external[name] = weight
    return wafer


# ---------------------------------------------------------------------------- execution


def _split_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., M, K) -> (rows, K)."""
    return x.reshape(-1, x.shape[-1])


def _slices(x: torch.Tensor, parts: int) -> torch.Tensor:
    """x (rows, K) cut into `parts` zero-padded K slices: (parts, rows, ceil(K / parts))."""
    size = -(-x.shape[-1] // parts)
    return F.pad(x, (0, parts * size - x.shape[-1])).unflatten(-1, (parts, size)).movedim(-2, 0)


def _columns(blocks: torch.Tensor, n: int, shape) -> torch.Tensor:
    """(C, rows, tn) column blocks -> the logical (..., N) tensor."""
    return blocks.movedim(0, 1).reshape(blocks.shape[1], -1)[:, :n].reshape(shape)


def _rhs_tile(wafer: Wafer, tiles: Instruction, transpose: bool, r: int, c: int):
    tile = _read_tile(wafer, tiles, r, c)
    return tile.t() if transpose else tile


def reduction_schedule(algorithm: str, rows: Sequence[int], group: int) -> list[tuple[int, int]]:
    """The adds a `wse.fabric_reduce` performs, as (destination row, source row): the sum ends
    in `rows[0]`."""
    n = len(rows)
    if algorithm == "chain":
        return [(rows[i - 1], rows[i]) for i in range(n - 1, 0, -1)]
    if algorithm == "tree":
        steps, stride = [], 1
        while stride < n:
            steps += [(rows[i], rows[i + stride]) for i in range(0, n - stride, 2 * stride)]
            stride *= 2
        return steps
    if algorithm == "two_phase":
        groups = [list(rows[i : i + group]) for i in range(0, n, group)]
        first = [step for g in groups for step in reduction_schedule("chain", g, 1)]
        return first + reduction_schedule("chain", [g[0] for g in groups], 1)
    raise SimulationError(f"unknown reduction algorithm {algorithm!r}")


class _Run:
    def __init__(self, program: Program, wafer: Wafer):
        self.wafer = wafer
        self.defs: dict[int, Instruction] = {}
        self.partials: dict[int, tuple[torch.Tensor, list[int]]] = {}
        self.program = program

    def execute(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        env: dict[int, object] = dict(enumerate(inputs))
        for ins in self.program.instructions:
            args = [None if v is None else env[v] for v in ins.operands]
            handler = HANDLERS.get(ins.op)
            out: object
            if ins.op == "param":
                out = _Weight(ins.attrs["sym_name"])
            elif handler is not None:
                out = handler(self, ins, *args)
            else:
                weight = next((a for a in args if isinstance(a, _Weight)), None)
                if weight is not None:
                    raise SimulationError(
                        f"{ins.op} reads weight {weight.name!r} directly, not through its tiles"
                    )
                out = KERNELS[ins.op](ins, *args)
            results = out if isinstance(out, tuple) else (out,)
            env.update(zip(ins.results, results, strict=True))
            for r in ins.results:
                self.defs[r] = ins
        return [_tensor(env[v]) for v in self.program.outputs]

    def _weight_tiles(self, ins: Instruction, weight: _Weight) -> torch.Tensor:
        if ins.attrs["home"] == "external" and ins.attrs.get("stream_passes", 1) > 1:
            return _in_passes(self.wafer, ins, self.wafer.external[weight.name])
        if ins.attrs["home"] == "external":
            _write_tiles(self.wafer, ins, self.wafer.external[weight.name])
        return _gather(self.wafer, ins)

    def _producer(self, ins: Instruction, index: int, op: str) -> Instruction:
        source = self.defs.get(_operand(ins, index))
        if source is None or source.op != op:
            raise SimulationError(f"operand {index} of {ins.op} must come from wse.{op}")
        return source

    def _tile_matmul(self, ins: Instruction, x, w, bias) -> torch.Tensor:
        if ins.attrs["dataflow"] == "cannon":
            return self._cannon(ins, x, bias)
        sent = self._producer(ins, 0, "fabric_broadcast")
        tiles = self._producer(ins, 1, "weight_tiles")
        transpose, shape = ins.attrs["transpose_rhs"], ins.result_specs[0].shape
        gx, gy, _, _ = tiles.attrs["region"]
        bx, by, _, _ = sent.attrs["region"]
        rows_grid, cols_grid = tiles.attrs["tile_grid"]
        slices = _slices(_split_rows(x), sent.attrs["parts"])
        chunk = ins.attrs["rows_per_pass"]
        m = slices.shape[1]
        tn = tiles.attrs["tile_shape"][tiles.attrs["tile_dims"][1]]
        partials = x.new_zeros((rows_grid, cols_grid, m, tn))
        for r in range(rows_grid):
            p = gy + r - by
            if not 0 <= p < slices.shape[0]:
                continue
            for c in range(cols_grid):
                if not bx <= gx + c < bx + sent.attrs["region"][2]:
                    continue
                tile = _rhs_tile(self.wafer, tiles, transpose, r, c)
                if tile.shape[0] != slices.shape[2]:
                    raise SimulationError(
                        f"PE ({gx + c}, {gy + r}) receives activation slices of "
                        f"{slices.shape[2]} but holds tiles of {tile.shape[0]} rows"
                    )
                for start in range(0, m, chunk):
                    partials[r, c, start : start + chunk] = slices[p, start : start + chunk] @ tile
        if bias is not None:
            partials[0] += F.pad(bias, (0, cols_grid * tn - bias.shape[0])).reshape(
                cols_grid, 1, tn
            )
        self.partials[ins.results[0]] = (partials, tiles.attrs["region"])
        return torch.stack([_columns(p, shape[-1], shape[1:]) for p in partials])

    def _fabric_reduce(self, ins: Instruction, partials_value) -> torch.Tensor:
        partials, (_, gy, _, _) = self.partials[_operand(ins, 0)]
        _, y, _, h = ins.attrs["region"]
        rows = [row - gy for row in range(y, y + h) if 0 <= row - gy < partials.shape[0]]
        if not rows:
            raise SimulationError("fabric_reduce region holds none of the partial sums")
        buffers = {row: partials[row].clone() for row in rows}
        for dst, src in reduction_schedule(ins.attrs["algorithm"], rows, ins.attrs["group"]):
            buffers[dst] += buffers[src]
        shape = ins.result_specs[0].shape
        return _columns(buffers[rows[0]], shape[-1], shape)

    def _cannon(self, ins: Instruction, x, bias) -> torch.Tensor:
        shift = self._producer(ins, 0, "fabric_shift")
        tiles = self._producer(ins, 1, "weight_tiles")
        q = ins.attrs["region"][2]
        if tiles.attrs["tile_grid"] != [q, q] or shift.attrs["region"][2:] != [q, q]:
            raise SimulationError(f"Cannon on a {q} x {q} region needs {q} x {q} blocks")
        transpose = ins.attrs["transpose_rhs"]
        b = torch.stack(
            [
                torch.stack([_rhs_tile(self.wafer, tiles, transpose, r, c) for c in range(q)])
                for r in range(q)
            ]
        )
        x = _split_rows(x)
        mb, kb = -(-x.shape[0] // q), b.shape[2]
        x = F.pad(x, (0, q * kb - x.shape[1], 0, q * mb - x.shape[0]))
        blocks = x.reshape(q, mb, q, kb).movedim(1, 2)  # [M block, K block]
        idx = torch.arange(q)
        rows, cols = idx[:, None], idx[None, :]
        # PE (column c, row r) holds activation block (M: c, K: r), skewed along its row.
        held = (cols + shift.attrs["skew"] * rows) % q
        owner = held.clone()  # the output block each PE accumulates
        acc = x.new_zeros((q, q, mb, b.shape[3]))
        for _ in range(shift.attrs["steps"]):
            acc += blocks[held, rows.expand(q, q)] @ b
            acc, owner = acc[(idx + 1) % q], owner[(idx + 1) % q]
            held = held[:, (idx + shift.attrs["step"]) % q]
        out = x.new_zeros((q, q, mb, b.shape[3]))
        out[owner, cols.expand(q, q)] = acc
        shape = ins.result_specs[0].shape
        m = math.prod(shape[:-1])
        result = out.movedim(2, 1).reshape(q * mb, -1)[:m, : shape[-1]].reshape(shape)
        return result if bias is None else result + bias

    def _attention(self, ins: Instruction, q, k, v, mask) -> torch.Tensor:
        if "kv_block" not in ins.attrs:
            return _tensor(KERNELS["attention"](ins, q, k, v, mask))
        return flash_attention(
            ins, q, k, v, mask, ins.attrs["q_block"], ins.attrs["kv_block"], ins.attrs["kv_parts"]
        )

    def _selective_scan(self, ins: Instruction, u, delta, a, b, c, d_skip, z, delta_bias, h0=None):
        if "chunk" not in ins.attrs:
            return KERNELS["selective_scan"](ins, u, delta, a, b, c, d_skip, z, delta_bias, h0)
        chunk = ins.attrs["chunk"]
        return chunked_scan(ins, u, delta, a, b, c, d_skip, z, delta_bias, chunk, h0)


def chunked_scan(ins: Instruction, u, delta, a, b, c, d_skip, z, delta_bias, chunk: int, h0=None):
    """`wse.selective_scan` as the placed PEs run it: the sequence `chunk` steps at a time, the
    fp32 state (from `h0`, else zeros) handed from each chunk to the next (the reference
    recurrence, step by step)."""
    h = torch.zeros(*u.shape[:2], a.shape[-1]) if h0 is None else h0.float()
    ys = []
    for start in range(0, u.shape[-1], chunk):
        for t in range(start, min(start + chunk, u.shape[-1])):
            y, h = selective_scan_step(
                h,
                u[:, :, t],
                delta[:, :, t],
                a,
                b[:, :, t],
                c[:, :, t],
                d_skip,
                None if z is None else z[:, :, t],
                delta_bias,
                ins.attrs["delta_softplus"],
            )
            ys.append(y)
    return torch.stack(ys, dim=-1).to(u.dtype), h.to(u.dtype)


def _visible(ins: Instruction, mask, length: int, keys: int) -> torch.Tensor:
    """The additive mask (0 or -inf, or the float mask) of every (query, key) pair."""
    bias = torch.zeros((length, keys))
    if ins.attrs["is_causal"]:
        bias = bias.masked_fill(~torch.ones(length, keys, dtype=torch.bool).tril(), -math.inf)
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return bias.masked_fill(~mask, -math.inf)
    return bias + mask.float()


def _merge(a: tuple, b: tuple) -> tuple:
    """Two partial online-softmax states (max, sum, accumulator) over disjoint keys, as one."""
    top = torch.maximum(a[0], b[0])
    safe = torch.where(torch.isfinite(top), top, 0.0)
    fa, fb = torch.exp(a[0] - safe), torch.exp(b[0] - safe)
    return top, a[1] * fa + b[1] * fb, a[2] * fa + b[2] * fb


def flash_attention(ins: Instruction, q, k, v, mask, q_block, kv_block, kv_parts):
    """`wse.attention` as the placed tiles compute it: per tile of `q_block` query rows, the keys
    in `kv_parts` ranges of whole `kv_block` blocks, each range folded block by block with the
    online-softmax recurrence, the ranges' partial states merged in order; fp32 throughout."""
    group = q.shape[-3] // k.shape[-3]
    k, v = (t.repeat_interleave(group, dim=-3).float() for t in (k, v))
    q = q.float() * ins.attrs["scale"]
    length, keys = q.shape[-2], k.shape[-2]
    bias = _visible(ins, mask, length, keys).expand(*q.shape[:-1], keys)
    blocks = -(-keys // kv_block)
    per_part = -(-blocks // kv_parts) * kv_block
    out = torch.empty(*q.shape[:-1], v.shape[-1])
    for q0 in range(0, length, q_block):
        rows = slice(q0, q0 + q_block)
        state = _empty_state(q[..., rows, :], v)
        for p0 in range(0, keys, per_part):
            part = _empty_state(q[..., rows, :], v)
            for k0 in range(p0, min(p0 + per_part, keys), kv_block):
                cols = slice(k0, min(k0 + kv_block, p0 + per_part))
                scores = q[..., rows, :] @ k[..., cols, :].transpose(-1, -2) + bias[..., rows, cols]
                top = scores.amax(-1, keepdim=True)
                weights = torch.exp(scores - torch.where(torch.isfinite(top), top, 0.0))
                part = _merge(part, (top, weights.sum(-1, keepdim=True), weights @ v[..., cols, :]))
            state = _merge(state, part)
        total = state[1]
        out[..., rows, :] = state[2] / torch.where(total == 0, 1.0, total)
    return out.to(ins.result_specs[0].torch_dtype)


def _empty_state(q: torch.Tensor, v: torch.Tensor) -> tuple:
    rows = q.shape[:-1]
    return (
        torch.full((*rows, 1), -math.inf),
        torch.zeros((*rows, 1)),
        torch.zeros((*rows, v.shape[-1])),
    )


# The ops whose tile-level dataflow this executor follows; every other op runs its reference
# kernel on whole tensors (the reasons are in `core.ops`).
HANDLERS: OpTable[Callable[..., torch.Tensor]] = OpTable(
    "tiled",
    {
        "weight_tiles": _Run._weight_tiles,
        "tile_matmul": _Run._tile_matmul,
        "fabric_reduce": _Run._fabric_reduce,
        "attention": _Run._attention,
        "selective_scan": _Run._selective_scan,
    },
)


def run(program: Program, wafer: Wafer, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Execute a placed program on `wafer` (see `load`); returns the program's outputs."""
    return _Run(program, wafer).execute([t.cpu() for t in inputs])


def execute(
    program: Program,
    weights: Mapping[str, torch.Tensor],
    inputs: Sequence[torch.Tensor],
    target: Target,
) -> list[torch.Tensor]:
    """Load the weights onto a fresh wafer image, then run."""
    return run(program, load(program, weights, target), inputs)
