"""Data movement: reshape, transpose, broadcast, slice, concat, gathers and scatter."""

from collections.abc import Sequence

import numpy as np
from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _broadcast,
    _elem,
    _fail,
    _ints,
    _shape,
)


class ReshapeOp(Wse.Operation, name="reshape"):
    """Same elements in row-major order, new static shape (view, squeeze, unsqueeze)."""

    input: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        if int(np.prod(_shape(self.input))) != int(np.prod(_shape(self.result))):
            return _fail(self, "element counts differ")
        if _elem(self.input) != _elem(self.result):
            return _fail(self, "element types differ")
        return True


class TransposeOp(Wse.Operation, name="transpose"):
    """`result.shape[i] = input.shape[permutation[i]]` (torch.permute).

    `%t = "wse.transpose"(%x) {permutation = [0, 2, 1, 3]} : (tensor<1x8x4x16xf32>) -> tensor<1x4x8x16xf32>`
    """

    input: Tensor
    permutation: ir.ArrayAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        perm, shape = _ints(self.attributes["permutation"]), _shape(self.input)
        if sorted(perm) != list(range(len(shape))):
            return _fail(self, "permutation must permute the input dims")
        if tuple(shape[p] for p in perm) != _shape(self.result):
            return _fail(self, "result shape must be the permuted input shape")
        return True


class BroadcastOp(Wse.Operation, name="broadcast"):
    """Broadcast numpy-style to the result shape (torch.expand)."""

    input: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _broadcast(_shape(self.input), _shape(self.result)) != _shape(self.result):
            return _fail(self, "input must broadcast to the result shape")
        return True


class SliceOp(Wse.Operation, name="slice"):
    """`input[..., start:end:step, ...]` along `dim`, with 0 <= start <= end <= size, step >= 1."""

    input: Tensor
    dim: ir.IntegerAttr
    start: ir.IntegerAttr
    end: ir.IntegerAttr
    step: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        shape = list(_shape(self.input))
        dim, start, end, step = (
            ir.IntegerAttr(self.attributes[k]).value for k in ("dim", "start", "end", "step")
        )
        if not 0 <= dim < len(shape) or not 0 <= start <= end <= shape[dim] or step < 1:
            return _fail(self, "needs 0 <= dim < rank, 0 <= start <= end <= size, step >= 1")
        shape[dim] = len(range(start, end, step))
        if tuple(shape) != _shape(self.result):
            return _fail(self, f"result shape must be {tuple(shape)}")
        return True


class ConcatOp(Wse.Operation, name="concat"):
    """Concatenate `lhs` and `rhs` along `dim` (more inputs lower to a chain).

    Binary because IRDL binds all operands of a variadic group to one type, and inputs of a
    concatenation usually differ in size along `dim`.
    """

    lhs: Tensor
    rhs: Tensor
    dim: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        dim = ir.IntegerAttr(self.attributes["dim"]).value
        a, b, out = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        if not len(a) == len(b) == len(out) or not 0 <= dim < len(out):
            return _fail(self, "inputs must share the result's rank and dim must be in range")
        if (
            a[:dim] + a[dim + 1 :] != out[:dim] + out[dim + 1 :]
            or b[:dim] + b[dim + 1 :] != out[:dim] + out[dim + 1 :]
        ):
            return _fail(self, "inputs must match the result outside dim")
        if a[dim] + b[dim] != out[dim]:
            return _fail(self, "sizes along dim must add up to the result's")
        return True


class EmbeddingOp(Wse.Operation, name="embedding"):
    """Rows of `weight` picked by integer `indices`: result shape = indices.shape + (D,).

    `%e = "wse.embedding"(%wte, %ids) : (tensor<128x64xf32>, tensor<1x8xi64>) -> tensor<1x8x64xf32>`
    """

    weight: Tensor
    indices: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        w = _shape(self.weight)
        if len(w) != 2 or _shape(self.indices) + (w[1],) != _shape(self.result):
            return _fail(self, "result shape must be indices.shape + (weight.shape[1],)")
        return True


class IndexOp(Wse.Operation, name="index"):
    """Advanced indexing: `input[i_0, ..., i_k]` with i64 index tensors on `indexed_dims` and
    full slices elsewhere (torch/numpy semantics).

    The index tensors share one type: the lowering broadcasts them first (IRDL binds all
    operands of a variadic group to one type).
    """

    input: Tensor
    indices: Sequence[Tensor]
    indexed_dims: ir.ArrayAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if len(_ints(self.attributes["indexed_dims"])) != len(self.indices):
            return _fail(self, "one index tensor per indexed dim")
        return True


class ScatterOp(Wse.Operation, name="scatter"):
    """The inverse of `wse.index` (torch's `index_put`): a copy of `input` whose elements at
    `input[i_0, ..., i_k]` (i64 index tensors on `indexed_dims`, full slices elsewhere) are
    `updates` (broadcast to the indexed shape), or `input + updates` there when `accumulate`.

    `%y = "wse.scatter"(%x, %u, %i) {accumulate = false, indexed_dims = [0]}
        : (tensor<8x4xf32>, tensor<3x4xf32>, tensor<3xi64>) -> tensor<8x4xf32>`

    Without `accumulate`, which of two updates to one element wins is unspecified (as in
    eager); with it, duplicates add up. `scatter`, `slice_scatter` and `index_put` lower here.
    """

    input: Tensor
    updates: Tensor
    indices: Sequence[Tensor]
    indexed_dims: ir.ArrayAttr
    accumulate: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        dims, shape = _ints(self.attributes["indexed_dims"]), _shape(self.input)
        if len(dims) != len(self.indices) or any(not 0 <= d < len(shape) for d in dims):
            return _fail(self, "one index tensor per indexed dim, each dim in range")
        if _shape(self.result) != shape or _elem(self.result) != _elem(self.input):
            return _fail(self, "result must have the input's type")
        if _elem(self.updates) != _elem(self.input):
            return _fail(self, "updates must have the input's element type")
        return True
