"""Reductions, prefix scans and sort along a dim; softmax, layer norm and RMS norm."""

from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _elem,
    _fail,
    _ints,
    _shape,
)

REDUCE_KINDS = ("sum", "mean", "max", "min", "any")


class ReduceOp(Wse.Operation, name="reduce"):
    """Reduce `dims` with `kind` (sum mean max min any), keeping them as size 1 if `keepdim`.

    `%s = "wse.reduce"(%x) {dims = [1], keepdim = true, kind = "mean"}
        : (tensor<4x64xf32>) -> tensor<4x1xf32>`
    """

    input: Tensor
    kind: ir.StringAttr
    dims: ir.ArrayAttr
    keepdim: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if ir.StringAttr(self.attributes["kind"]).value not in REDUCE_KINDS:
            return _fail(self, f"kind must be one of {REDUCE_KINDS}")
        shape, dims = _shape(self.input), _ints(self.attributes["dims"])
        if any(d < 0 or d >= len(shape) for d in dims) or len(set(dims)) != len(dims):
            return _fail(self, "dims must be distinct and in range")
        keep = bool(ir.IntegerAttr(self.attributes["keepdim"]).value)
        expect = tuple(1 if i in dims else n for i, n in enumerate(shape) if keep or i not in dims)
        if expect != _shape(self.result):
            return _fail(self, f"result shape must be {expect}")
        return True


class ArgmaxOp(Wse.Operation, name="argmax"):
    """Index (i64) of the maximum along `dim` (first on ties); the dim is dropped."""

    input: Tensor
    dim: ir.IntegerAttr
    result: TensorResult


class CumsumOp(Wse.Operation, name="cumsum"):
    """Inclusive prefix sum along `dim`; same shape as the input."""

    input: Tensor
    dim: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _shape(self.input) != _shape(self.result):
            return _fail(self, "result shape must equal the input shape")
        return True


class CumprodOp(Wse.Operation, name="cumprod"):
    """Inclusive prefix product along `dim`; same shape as the input."""

    input: Tensor
    dim: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        return CumsumOp.verify_invariants(self)


class SortOp(Wse.Operation, name="sort"):
    """Stable sort along `dim`, ascending or `descending` (NaN sorts as the largest): the
    sorted values and their i64 source positions, both of the input's shape.

    `%v, %i = "wse.sort"(%x) {descending = true, dim = 1 : i64}
        : (tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xi64>)`

    `topk` is this op and a slice of the first k.
    """

    input: Tensor
    dim: ir.IntegerAttr
    descending: ir.IntegerAttr
    values: TensorResult
    indices: TensorResult

    def verify_invariants(self) -> bool:
        shape, dim = _shape(self.input), ir.IntegerAttr(self.attributes["dim"]).value
        if not 0 <= dim < max(len(shape), 1):
            return _fail(self, "dim must be in range")
        if _shape(self.values) != shape or _shape(self.indices) != shape:
            return _fail(self, "values and indices must have the input's shape")
        if _elem(self.values) != _elem(self.input) or _elem(self.indices) != "i64":
            return _fail(self, "values keep the input's element type, indices are i64")
        return True


# ---------------------------------------------------------------------------- normalisation


class SoftmaxOp(Wse.Operation, name="softmax"):
    """`exp(x - max) / sum(exp(x - max))` along `dim`.

    `%p = "wse.softmax"(%s) {dim = 3 : i64} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>`
    """

    input: Tensor
    dim: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _shape(self.input) != _shape(self.result):
            return _fail(self, "result shape must equal the input shape")
        return True


class LayerNormOp(Wse.Operation, name="layer_norm"):
    """Normalise over the last `axes` dims: `(x - mean) / sqrt(var + eps) * weight + bias`.

    `%y = "wse.layer_norm"(%x, %g, %b) {axes = 1 : i64, eps = 1.0e-05 : f64,
        operandSegmentSizes = array<i32: 1, 1, 1>} : (...) -> tensor<8x64xf32>`

    The variance is the biased one; weight and bias are optional and have the normalised shape.
    """

    input: Tensor
    axes: ir.IntegerAttr
    eps: ir.FloatAttr
    result: TensorResult
    weight: Tensor | None = None
    bias: Tensor | None = None

    def verify_invariants(self) -> bool:
        axes = ir.IntegerAttr(self.attributes["axes"]).value
        shape = _shape(self.input)
        if not 1 <= axes <= len(shape):
            return _fail(self, "axes must be between 1 and the input rank")
        for operand in (self.weight, self.bias):
            if operand is not None and _shape(operand) != shape[len(shape) - axes :]:
                return _fail(self, "weight and bias must have the normalised shape")
        return shape == _shape(self.result) or _fail(self, "result shape must equal the input's")


class RmsNormOp(Wse.Operation, name="rms_norm"):
    """`x * rsqrt(mean(x**2, last dim) + eps) * weight`."""

    input: Tensor
    eps: ir.FloatAttr
    result: TensorResult
    weight: Tensor | None = None
