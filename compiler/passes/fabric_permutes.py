"""`fabric-permutes`: make the transposes whose elements change PEs fabric traffic.

A placed activation of N elements on a region of P PEs lies row-major over min(N, P) of them,
each PE holding a contiguous run of about N / P elements: the trailing dims whose product fits
in that run are PE-local, the leading ones are spread over PEs. A `wse.transpose` that keeps
the spread dims first, in order, only reorders each PE's own elements (PE-local: it stays a
transpose, an elementwise copy); one that moves them sends elements to other PEs and becomes
`wse.fabric_permute` (an all-to-all over the region, `simulator.permutes`). Transposes that
only move size-1 dims are relabellings and stay; so do views of weights (`tile-weights` lays
those out).

Before:
    %t = "wse.transpose"(%q) {permutation = [0, 2, 1, 3], region = [0, 0, 8, 8], stage = 0 : i64}
        : (tensor<1x16x4x8xf32>) -> tensor<1x4x16x8xf32>
After:
    %t = "wse.fabric_permute"(%q) {permutation = [0, 2, 1, 3], region = [0, 0, 8, 8],
        stage = 0 : i64} : (tensor<1x16x4x8xf32>) -> tensor<1x4x16x8xf32>
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.dialects import wse
from compiler.mlir import ir, shape_of
from compiler.passes.common import (
    PassContext,
    body_ops,
    get_ints,
    has,
    kind,
    region_of,
    weight_param,
)


@dataclass(frozen=True)
class FabricPermutesOptions:
    """`enabled=false` keeps every transpose a PE-local copy (the model before issue 14)."""

    enabled: bool = True


def crosses_pes(shape: Sequence[int], permutation: Sequence[int], pes: int) -> bool:
    """Whether permuting a tensor of `shape` laid row-major over `pes` PEs moves elements
    between PEs (see the module docstring)."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    kept = [dims.index(p) for p in permutation if shape[p] != 1]
    if kept == sorted(kept) or pes <= 1:
        return False
    sizes = [shape[d] for d in dims]
    if math.prod(sizes) % pes:
        return True  # PE boundaries fall inside rows: some elements change PE
    run = math.prod(sizes) // pes
    spread = next(k for k in range(len(sizes) + 1) if math.prod(sizes[k:]) <= run)
    if run % math.prod(sizes[spread:]):
        return True  # a block of the trailing dims straddles two PEs
    return kept[:spread] != list(range(spread))


class FabricPermutes:
    name = "fabric-permutes"

    def __init__(self, options: FabricPermutesOptions = FabricPermutesOptions()):
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        if not self.options.enabled:
            return
        for op in body_ops(module):
            if kind(op) != "transpose" or not has(op, "region"):
                continue
            if weight_param(op.operands[0]) is not None:
                continue
            shape = shape_of(op.operands[0])
            pes = min(math.prod(shape), region_of(op).num_pes)
            if not crosses_pes(shape, get_ints(op, "permutation"), pes):
                continue
            with ir.InsertionPoint(op), op.location:
                permute = wse.FabricPermuteOp(
                    input=op.operands[0],
                    permutation=op.attributes["permutation"],
                    region=op.attributes["region"],
                    result=op.result.type,
                )
            for name in list(op.attributes):  # stage, and any other placement attribute
                if name not in ("permutation", "region"):
                    permute.operation.attributes[name] = op.attributes[name]
            op.result.replace_all_uses_with(permute.result)
            op.operation.erase()
