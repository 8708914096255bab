"""What the placement passes share: the placement error, rectangles of PEs, attribute access,
sizes and cost figures of ops, and the per-PE SRAM map read back from a placed module.

Placement attributes (see `compiler/dialects/wse/fabric.py`): `stage` (i64), `region`
([x, y, w, h] of PEs, x the column, y the row) and `sram` ([offset, bytes_per_pe]) on ops; the
module carries `wse.placement` ({mode, target, grid = [w, h], usable_sram_bytes_per_pe}),
`wse.stages` (stage names) and `wse.stage_regions` ([x, y, w, h] per stage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.mlir import i64_attr, int_list_attr, ir, shape_of, str_attr
from core import dtypes
from core import ops as core_ops
from core.errors import PlacementError
from core.geometry import Rect
from core.target import Target

MODES = ("pipelined", "streaming")
# Ops that only re-label or re-arrange one weight: they belong to the weight's layer and region.
WEIGHT_VIEWS = ("transpose", "reshape", "convert", "broadcast", "slice")


@dataclass(frozen=True)
class PassContext:
    """What every pass reads besides the module: the target and the execution mode."""

    target: Target
    mode: str

    @property
    def grid(self) -> Rect:
        return Rect(0, 0, self.target.grid_width_pes, self.target.grid_height_pes)


# Streaming: the most of a PE's usable SRAM one streamed weight may hold at once (the pool
# holds it and the next weight, prefetched; activations take the rest).
STREAM_SHARE = 0.2


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------- module access


def func_block(module: ir.Module) -> ir.Block:
    return module.body.operations[0].regions[0].blocks[0]


def body_ops(module: ir.Module) -> list:
    """The function's ops in order, without the terminator."""
    return list(func_block(module).operations)[:-1]


def kind(op) -> str:
    """`wse.matmul` -> `matmul`."""
    return op.name.removeprefix("wse.")


def producer(value):
    """The op defining `value`, or None for a function argument."""
    return None if isinstance(value, ir.BlockArgument) else value.owner


def users(module: ir.Module) -> dict:
    """Value -> the ops reading it, in program order (the terminator included)."""
    table: dict = {}
    for op in func_block(module).operations:
        for v in op.operands:
            table.setdefault(v, []).append(op)
    return table


def get_int(op, name: str) -> int:
    return ir.IntegerAttr(op.attributes[name]).value


def get_str(op, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def get_ints(op, name: str) -> list[int]:
    return [ir.IntegerAttr(a).value for a in ir.ArrayAttr(op.attributes[name])]


def has(op, name: str) -> bool:
    return name in op.attributes


def set_int(op, name: str, value: int) -> None:
    op.attributes[name] = i64_attr(value)


def set_ints(op, name: str, values) -> None:
    op.attributes[name] = int_list_attr(values)


def region_of(op, name: str = "region") -> Rect:
    return Rect(*get_ints(op, name))


def set_module_attr(module: ir.Module, name: str, attr: ir.Attribute) -> None:
    module.operation.attributes[name] = attr


def module_attr(module: ir.Module, name: str):
    return module.operation.attributes[name]


def placement_info(module: ir.Module) -> dict:
    """The module's `wse.placement` dictionary as Python values."""
    attr = ir.DictAttr(module_attr(module, "wse.placement"))
    return {
        "mode": ir.StringAttr(attr["mode"]).value,
        "target": ir.StringAttr(attr["target"]).value,
        "grid": [ir.IntegerAttr(a).value for a in ir.ArrayAttr(attr["grid"])],
        "usable_sram_bytes_per_pe": ir.IntegerAttr(attr["usable_sram_bytes_per_pe"]).value,
    }


def placement_attr(target: Target, mode: str) -> ir.DictAttr:
    return ir.DictAttr.get(
        {
            "mode": str_attr(mode),
            "target": str_attr(target.name),
            "grid": int_list_attr([target.grid_width_pes, target.grid_height_pes]),
            "usable_sram_bytes_per_pe": i64_attr(target.usable_sram_bytes_per_pe),
        }
    )


def stage_names(module: ir.Module) -> list[str]:
    return [ir.StringAttr(a).value for a in ir.ArrayAttr(module_attr(module, "wse.stages"))]


def stage_regions(module: ir.Module) -> list[Rect]:
    return [
        Rect(*(ir.IntegerAttr(v).value for v in ir.ArrayAttr(a)))
        for a in ir.ArrayAttr(module_attr(module, "wse.stage_regions"))
    ]


# ---------------------------------------------------------------------------- sizes and costs


def element_bytes(value) -> int:
    return dtypes.element_bytes(str(ir.RankedTensorType(value.type).element_type))


def nbytes(value) -> int:
    return math.prod(shape_of(value)) * element_bytes(value)


def is_float(value) -> bool:
    return str(ir.RankedTensorType(value.type).element_type) in ("f32", "f16", "bf16", "f64")


def state_inputs(module: ir.Module) -> set:
    """Function arguments that are model state (KV cache, SSM state): floating-point inputs
    whose type a result after the first also has (the state the call hands back)."""
    block = func_block(module)
    results = list(block.operations)[-1].operands
    kept = {v.type for v in list(results)[1:] if is_float(v)}
    return {arg for arg in block.arguments if is_float(arg) and arg.type in kept}


def layer_key(weight_name: str) -> str:
    """The layer a weight belongs to: its name up to the first numeric part
    ("model.blocks.3.attn.q.weight" -> "model.blocks.3"), else its module ("model.norm")."""
    parts = weight_name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or weight_name


def weight_param(value):
    """The `wse.param` behind a value that only views one weight (through transposes, reshapes,
    ...) together with whether the view is a 2-D transpose; None for other values."""
    transposed = False
    op = producer(value)
    while op is not None and kind(op) in WEIGHT_VIEWS + ("weight_tiles",):
        if kind(op) == "transpose" and get_ints(op, "permutation") == [1, 0]:
            transposed = not transposed
        elif kind(op) != "weight_tiles":
            transposed = None
        op = producer(op.operands[0])
    if op is None or kind(op) != "param":
        return None
    return op, transposed


def matrix_view(value):
    """How a matmul rhs sees a 2-D weight: through 2-D transposes and broadcasts or reshapes
    that only prepend size-1 dims. Returns (source, transposed, views): the `wse.param` or
    `wse.weight_tiles` op at the end, whether the view transposes it, and the view ops in
    between; None for any other value."""
    transposed, views = False, []
    op = producer(value)
    while op is not None and kind(op) in ("transpose", "broadcast", "reshape"):
        inner, outer = shape_of(op.operands[0]), shape_of(op.results[0])
        if kind(op) == "transpose" and get_ints(op, "permutation") == [1, 0]:
            transposed = not transposed
        elif kind(op) == "transpose" or outer[len(outer) - len(inner) :] != inner:
            return None
        elif any(d != 1 for d in outer[: len(outer) - len(inner)]):
            return None
        views.append(op)
        op = producer(op.operands[0])
    if op is None or kind(op) not in ("param", "weight_tiles") or len(shape_of(op.result)) != 2:
        return None
    return op, transposed, views


def matmul_weight(op):
    """For a `wse.matmul` whose rhs views a 2-D weight, as `matrix_view` allows, and whose
    result is lhs.shape[:-1] + (N,): (param, transposed)."""
    if kind(op) != "matmul":
        return None
    found = matrix_view(op.operands[1])
    if found is None:
        return None
    source, transposed, _ = found
    if kind(source) == "weight_tiles":
        source = producer(source.operands[0])
    n = shape_of(source.result)[0 if transposed else 1]
    if shape_of(op.result) != shape_of(op.operands[0])[:-1] + (n,):
        return None
    return source, transposed


def matmul_rows(value) -> int:
    """M of a matmul lhs: the product of all dims but the last."""
    return math.prod(shape_of(value)[:-1])


def flops(op) -> int:
    """Floating-point operations of one op, from shapes (the registry's count, `core.ops`)."""
    return core_ops.flops(
        kind(op),
        [shape_of(v) for v in op.operands],
        [shape_of(r) for r in op.results],
    )


# ---------------------------------------------------------------------------- SRAM map


def tile_rect(op) -> Rect:
    """PEs holding the tiles of a `wse.weight_tiles`: the tile grid at the region's corner."""
    x, y, _, _ = get_ints(op, "region")
    rows, cols = get_ints(op, "tile_grid")
    return Rect(x, y, cols, rows)


def tile_bytes(op) -> int:
    """Bytes of a `wse.weight_tiles` one PE holds at once: its tile, or with `stream_passes`
    (a streamed weight arriving a slice of dim 0 at a time) two slices, one in use while the
    next arrives. A streamed weight that its readers view in a wider dtype (an fp32 router's
    bf16 weight) crosses the external link at its own width and is held converted: its tile
    takes the widest dtype viewed (the convert is the PEs' work as the tiles arrive)."""
    tile = get_ints(op, "tile_shape")
    if has(op, "stream_passes"):
        tile[0] = min(tile[0], 2 * ceil_div(tile[0], get_int(op, "stream_passes")))
    widest = element_bytes(op.results[0])
    if get_str(op, "home") == "external":
        widest = _widest_view(op.results[0])
    return math.prod(tile) * widest


def _widest_view(value) -> int:
    """The most bytes per element of `value` or of any weight view of it."""
    views = [use.owner for use in value.uses if kind(use.owner) in WEIGHT_VIEWS]
    return max([element_bytes(value), *(_widest_view(v.results[0]) for v in views)])


def streamed_view(op) -> bool:
    """Whether `op` only views a streamed weight (a slice, convert, transpose... of a
    `wse.weight_tiles` with home "external", none of them adding elements): the stream
    delivers it so, and it takes no SRAM of its own. A broadcast that repeats the weight (an
    expanded table) is held as itself."""
    source = op
    while source is not None and kind(source) in WEIGHT_VIEWS:
        if math.prod(shape_of(source.result)) > math.prod(shape_of(source.operands[0])):
            return False
        source = producer(source.operands[0])
    return (
        source is not op
        and source is not None
        and kind(source) == "weight_tiles"
        and get_str(source, "home") == "external"
    )


def sram_map(module: ir.Module, width: int, height: int) -> np.ndarray:
    """Bytes of SRAM in use on every PE, (height, width): the highest byte any weight tile,
    activation, op's scratch or state buffer reaches there (offsets are from the start of usable
    SRAM)."""
    highest: dict[Rect, int] = {}
    for op in body_ops(module):
        if kind(op) == "weight_tiles":
            rect, end = tile_rect(op), get_int(op, "sram_offset") + tile_bytes(op)
        elif has(op, "sram"):
            offset, size = get_ints(op, "sram")
            rect, end = region_of(op), offset + size
            if has(op, "scratch"):
                end = max(end, sum(get_ints(op, "scratch")))
        else:
            continue
        highest[rect] = max(highest.get(rect, 0), end)
    used = np.zeros((height, width), dtype=np.int64)
    for rect, end in highest.items():
        view = used[rect.slices]
        np.maximum(view, end, out=view)
    return used


# ---------------------------------------------------------------------------- weights


def weight_consumers(param, readers: dict) -> list:
    """Ops reading `param` through any chain of weight views, paired with the view path
    (the view ops between the param and the consumer), in program order."""
    found: list = []
    frontier: list[tuple[Any, list]] = [(param, [])]
    while frontier:
        op, path = frontier.pop()
        for user in readers.get(op.results[0], ()):
            if kind(user) in WEIGHT_VIEWS + ("weight_tiles",):
                frontier.append((user, path + [user]))
            elif user.name != "func.return":
                found.append((user, path))
    return found


def primary_consumer(param, readers: dict):
    """The consumer of a weight that does the most work with it (first on ties), with its view
    path; the weight's tiles live in this op's region. None for an unused weight."""
    best = None
    for user, path in weight_consumers(param, readers):
        if best is None or flops(user) > flops(best[0]):
            best = (user, path)
    return best


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def pipelined_overflow(target: Target, needed: int, detail: str) -> PlacementError:
    """The error for a model whose pipelined placement needs `needed` bytes of SRAM."""
    available = target.usable_sram_bytes_per_pe * target.num_pes
    pes = ceil_div(needed, target.usable_sram_bytes_per_pe)
    return PlacementError(
        f"pipelined placement needs {format_bytes(needed)} of SRAM ({detail}) but {target.name} "
        f"has {format_bytes(available)} usable ({target.num_pes:,} PEs x "
        f"{target.usable_sram_bytes_per_pe:,} B). Options: mode='streaming' (weights stay in "
        f"external memory and stream in one layer at a time), or a bigger target: at least "
        f"{pes:,} PEs of this SRAM size ({pes / target.num_pes:.1f} x {target.name}).",
        needed_bytes=needed,
        available_bytes=available,
    )
