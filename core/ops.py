"""The op registry: one entry per `wse` op, tying it to every layer that implements it.

Each `OpInfo` names the op, the simulator's cost class for it (the translation rule that turns
it into engine tasks), its FLOP count from shapes, and, for any layer that has no entry of its
own for the op, the reason why. The layers keep their implementations in `OpTable`s keyed by
these names (`runtime.reference.KERNELS`, `runtime.jax_runtime.RULES`,
`runtime.tiled.HANDLERS`, `simulator.translate.TRANSLATE`, which is keyed by cost class); an
`OpTable` refuses a name that is not here and a second registration, and
`tests/test_op_registry.py` checks that every op of the dialect has every entry or its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Shape = tuple[int, ...]
FlopCount = Callable[[Sequence[Shape], Sequence[Shape]], int]

# The layers whose tables the registry ties together.
LAYERS = ("reference", "jax", "tiled", "simulator")

BOUND_BY_EXECUTOR = "binds a weight by name: every executor handles it itself, not as a kernel"
WHOLE_TENSOR = "no tile-level dataflow: runs the reference kernel on whole tensors"
SSD_TILED = (
    "the reference kernel already runs chunk by chunk with the state carried, as the PEs of "
    "its region do (heads are independent: splitting them over PEs changes no number)"
)


def _zero(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    return 0


def _per_output(per_element: int) -> FlopCount:
    def count(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
        return per_element * math.prod(results[0]) if results else 0

    return count


def _per_input(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    return math.prod(operands[0])


def _per_input_times(per_element: int) -> FlopCount:
    def count(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
        return per_element * math.prod(operands[0])

    return count


def _matmul(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    return 2 * math.prod(results[0]) * operands[0][-1]


def _tile_matmul(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    return 2 * math.prod(operands[0]) * results[0][-1]


def _attention(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    q, v = operands[0], operands[2]
    return 2 * math.prod(q[:-1]) * v[-2] * (q[-1] + v[-1]) + 5 * math.prod(q[:-1]) * v[-2]


def _selective_scan(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    b, d, length = operands[0]
    return 9 * b * d * length * operands[2][-1]


def _ssd_scan(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    """The recurrence's work per step and (channel, state): decay, outer product, read-out (the
    chunked form's extra intra-chunk work depends on its chunk: `simulator.cost.ssd_scan`)."""
    batch, length, heads, width = operands[0]
    return 6 * batch * length * heads * width * operands[3][-1]


def _depthwise_conv1d(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    return 2 * math.prod(results[0]) * operands[1][-1]


def _sort(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    """Comparisons of a merge sort of every row: n log2 n per row of n (dim unknown here,
    so the whole tensor's count bounds it)."""
    n = math.prod(operands[0])
    return n * max(1, math.ceil(math.log2(max(n, 2))))


def _per_input_of(index: int) -> FlopCount:
    def count(operands: Sequence[Shape], results: Sequence[Shape]) -> int:
        return math.prod(operands[index])

    return count


@dataclass(frozen=True)
class OpInfo:
    """One `wse` op: its simulator cost class, FLOPs from (operand, result) shapes, and why a
    layer lacks an entry for it (`lacks[layer]`), if it does."""

    name: str
    cost_class: str
    flops: FlopCount
    lacks: Mapping[str, str] = field(default_factory=dict)


def _ops() -> dict[str, OpInfo]:
    ops: list[OpInfo] = []

    def add(names: str, cost_class: str, flops: FlopCount, **lacks: str) -> None:
        ops.extend(OpInfo(n, cost_class, flops, dict(lacks)) for n in names.split())

    tiled = {"tiled": WHOLE_TENSOR}
    bound = dict.fromkeys(("reference", "jax", "tiled"), BOUND_BY_EXECUTOR)
    add("param", "free", _zero, **bound)
    add("constant", "free", _zero, **tiled)
    add("reshape broadcast", "free", _zero, **tiled)
    add("transpose", "transpose", _zero, **tiled)
    add("iota slice concat", "elementwise", _zero, **tiled)
    add(
        "neg abs relu not add sub mul maximum minimum and or",
        "elementwise",
        _per_output(1),
        **tiled,
    )
    add("cmp where convert index", "elementwise", _per_output(1), **tiled)
    add(
        "exp log log1p sqrt rsqrt reciprocal div pow sin cos tanh",
        "transcendental",
        _per_output(1),
        **tiled,
    )
    add("erf sigmoid silu gelu softplus", "transcendental", _per_output(1), **tiled)
    add("depthwise_conv1d", "depthwise_conv1d", _depthwise_conv1d, **tiled)
    add("reduce", "reduce", _per_input, **tiled)
    add("argmax cumsum", "reduce_along_dim", _per_input, **tiled)
    add("softmax", "softmax", _per_output(5), **tiled)
    add("layer_norm", "layer_norm", _per_output(5), **tiled)
    add("rms_norm", "rms_norm", _per_output(5), **tiled)
    add("matmul", "matmul", _matmul, **tiled)
    add("attention", "attention", _attention)
    add("selective_scan", "selective_scan", _selective_scan)
    add("ssd_scan", "ssd_scan", _ssd_scan, tiled=SSD_TILED)
    add("embedding", "embedding", _per_output(1), **tiled)
    add("weight_tiles", "weight_tiles", _zero)
    add("tile_matmul", "tile_matmul", _tile_matmul)
    add("fabric_reduce", "fabric_reduce", _zero)
    fabric = "the Cannon dataflow of its `tile_matmul` moves the blocks; alone it is a no-op"
    add("fabric_shift", "fabric_shift", _zero, tiled=fabric)
    moves = "moves a value between PE regions: numerically the identity (reference kernel)"
    for name in ("fabric_broadcast", "fabric_stream", "host_transfer"):
        add(name, name, _zero, tiled=moves)
    add("moe_router", "moe_router", _per_input_times(5), **tiled)
    add("moe_dispatch", "moe_all_to_all", _zero, **tiled)
    add("moe_combine", "moe_all_to_all", _per_input_times(2), **tiled)
    add("grouped_matmul", "grouped_matmul", _matmul, **tiled)
    add("floor ceil trunc round sign fmod remainder xor", "elementwise", _per_output(1), **tiled)
    add(
        "tan asin acos atan sinh cosh asinh acosh atanh expm1 log2 log10 atan2",
        "transcendental",
        _per_output(1),
        **tiled,
    )
    add("cumprod", "reduce_along_dim", _per_input, **tiled)
    add("sort", "reduce_along_dim", _sort, **tiled)
    add("scatter", "elementwise", _per_input_of(1), **tiled)
    add("fabric_permute", "fabric_permute", _zero, **tiled)
    return {op.name: op for op in ops}


OPS: dict[str, OpInfo] = _ops()


def flops(name: str, operands: Sequence[Shape], results: Sequence[Shape]) -> int:
    """Floating-point operations of one `wse` op from its shapes (multiply-add = 2)."""
    return OPS[name].flops(operands, results)


T = TypeVar("T")


class OpTable(Generic[T]):
    """One layer's implementations, keyed by `wse` op name (or, for `by="cost_class"`, by
    cost class): registering an unknown key or the same key twice fails at import."""

    def __init__(self, layer: str, entries: Mapping[str, T] = {}, *, by: str = "op"):
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; the registry knows {LAYERS}")
        self.layer = layer
        self.by = by
        self._entries: dict[str, T] = {}
        for key, entry in entries.items():
            self.register(key, entry)

    def _known(self) -> set[str]:
        if self.by == "cost_class":
            return {op.cost_class for op in OPS.values()}
        return set(OPS)

    def register(self, key: str, entry: T) -> T:
        if key not in self._known():
            raise KeyError(
                f"{self.layer}: {key!r} is not a wse op{' cost class' * (self.by != 'op')}"
            )
        if key in self._entries:
            raise ValueError(f"{self.layer}: {key!r} is registered twice")
        self._entries[key] = entry
        return entry

    def __call__(self, *keys: str) -> Callable[[T], T]:
        """Decorator form: `@TABLE("add", "sub")` registers the function for each key."""

        def decorate(entry: T) -> T:
            for key in keys:
                self.register(key, entry)
            return entry

        return decorate

    def __getitem__(self, key: str) -> T:
        return self._entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, default: T | None = None) -> T | None:
        return self._entries.get(key, default)

    def keys(self):
        return self._entries.keys()

    def missing(self) -> dict[str, str]:
        """Ops with no entry here, each with the registry's reason ("" when it states none)."""
        if self.by == "cost_class":
            return {
                name: op.lacks.get(self.layer, "")
                for name, op in OPS.items()
                if op.cost_class not in self._entries
            }
        return {
            name: op.lacks.get(self.layer, "")
            for name, op in OPS.items()
            if name not in self._entries
        }
