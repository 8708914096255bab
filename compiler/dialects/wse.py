"""The `wse` dialect: tensor-level operations of a wafer-scale engine program.

Defined with MLIR's Python `dialects.ext` (IRDL underneath): every op below is a real MLIR
operation that verifies, prints (in generic form) and parses back. All values are ranked
tensors with static shapes; element types are f32, f16, bf16, f64, i64, i32 or i1.

Conventions shared by all ops:
- Attributes holding integer lists (dims, permutations) are `ArrayAttr`s of i64.
- Elementwise binary ops broadcast their operands numpy-style to the result shape; their
  operands already carry the result's element type (the lowering inserts `wse.convert`).
- Weights are never literals: `wse.param` names a tensor of the model's state dict.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import ext
from torch_mlir.dialects._ods_common import _cext

Tensor = ext.Operand[ir.RankedTensorType]
TensorResult = ext.Result[ir.RankedTensorType]


class Wse(ext.Dialect, name="wse"):
    """Wafer-scale engine dialect."""


# Wrapping a `wse` op in Python first imports the dialect's module, `<prefix>.wse`; with only
# `torch_mlir.dialects` to search that import fails, uncached, for every op (~20 us each).
if "compiler.dialects" not in _cext.globals.dialect_search_modules:
    _cext.globals.append_dialect_search_prefix("compiler.dialects")


# ---------------------------------------------------------------------------- verification


def _shape(v) -> tuple[int, ...]:
    return tuple(ir.RankedTensorType(v.type).shape)


def _elem(v) -> str:
    return str(ir.RankedTensorType(v.type).element_type)


def _ints(attr) -> list[int]:
    return [ir.IntegerAttr(a).value for a in ir.ArrayAttr(attr)]


def _fail(op, message: str) -> bool:
    op.location.emit_error(f"'{op.OPERATION_NAME}' {message}")
    return False


def _broadcast(*shapes) -> tuple[int, ...] | None:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _is_float(elem: str) -> bool:
    return elem in ("f32", "f16", "bf16", "f64")


# ---------------------------------------------------------------------------- sources


class ParamOp(Wse.Operation, name="param"):
    """A model weight, named by its key in the model's state dict.

    `%w = "wse.param"() {sym_name = "lm_head.weight"} : () -> tensor<128x64xf32>`

    Invariants: the name is non-empty; the tensor is produced once per function and
    read-only. Placement later cuts it into per-PE tiles.
    """

    sym_name: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not ir.StringAttr(self.attributes["sym_name"]).value:
            return _fail(self, "needs a non-empty name")
        return True


class ConstantOp(Wse.Operation, name="constant"):
    """A literal tensor (masks, scalars). Not for weights: use `wse.param`.

    `%c = "wse.constant"() {value = dense<-1.0e4> : tensor<f32>} : () -> tensor<bf16>`

    `value` holds the elements in a storage type (f32/f64 for floats, i64 for integers, i1
    for booleans) with the result's shape; the result converts them to its element type.
    """

    value: Any
    result: TensorResult

    def verify_invariants(self) -> bool:
        attr = self.attributes["value"]
        if not isinstance(attr, ir.DenseElementsAttr):
            return _fail(self, "needs a dense elements 'value'")
        if tuple(ir.RankedTensorType(attr.type).shape) != _shape(self.result):
            return _fail(self, "value shape differs from the result shape")
        return True


class IotaOp(Wse.Operation, name="iota"):
    """`result[i] = start + i * step` for a 1-D result (`torch.arange`).

    `%r = "wse.iota"() {start = 0.0 : f64, step = 1.0 : f64} : () -> tensor<8xi64>`
    """

    start: ir.FloatAttr
    step: ir.FloatAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if len(_shape(self.result)) != 1:
            return _fail(self, "result must be 1-D")
        return True


# ---------------------------------------------------------------------------- elementwise


class _Unary(Wse.Operation):
    input: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _shape(self.input) != _shape(self.result):
            return _fail(self, "result shape must equal the input shape")
        if _elem(self.input) != _elem(self.result):
            return _fail(self, "result element type must equal the input's")
        return True


class NegOp(_Unary, name="neg"):
    """`-x`, elementwise."""


class ExpOp(_Unary, name="exp"):
    """`exp(x)`, elementwise."""


class LogOp(_Unary, name="log"):
    """`log(x)`, elementwise."""


class Log1pOp(_Unary, name="log1p"):
    """`log(1 + x)`, elementwise."""


class SqrtOp(_Unary, name="sqrt"):
    """`sqrt(x)`, elementwise."""


class RsqrtOp(_Unary, name="rsqrt"):
    """`1 / sqrt(x)`, elementwise."""


class ReciprocalOp(_Unary, name="reciprocal"):
    """`1 / x`, elementwise."""


class AbsOp(_Unary, name="abs"):
    """`|x|`, elementwise."""


class SinOp(_Unary, name="sin"):
    """`sin(x)`, elementwise."""


class CosOp(_Unary, name="cos"):
    """`cos(x)`, elementwise."""


class TanhOp(_Unary, name="tanh"):
    """`tanh(x)`, elementwise."""


class ErfOp(_Unary, name="erf"):
    """Gauss error function, elementwise."""


class SigmoidOp(_Unary, name="sigmoid"):
    """`1 / (1 + exp(-x))`, elementwise."""


class ReluOp(_Unary, name="relu"):
    """`max(x, 0)`, elementwise."""


class SiluOp(_Unary, name="silu"):
    """`x * sigmoid(x)`, elementwise."""


class NotOp(_Unary, name="not"):
    """Logical not of an i1 tensor."""


class FloorOp(_Unary, name="floor"):
    """Round toward -inf, elementwise."""


class CeilOp(_Unary, name="ceil"):
    """Round toward +inf, elementwise."""


class TruncOp(_Unary, name="trunc"):
    """Round toward zero, elementwise."""


class RoundOp(_Unary, name="round"):
    """Round half to even, elementwise."""


class SignOp(_Unary, name="sign"):
    """-1, 0 or 1 by the sign of x (NaN stays NaN), elementwise."""


class TanOp(_Unary, name="tan"):
    """`tan(x)`, elementwise."""


class AsinOp(_Unary, name="asin"):
    """`asin(x)`, elementwise."""


class AcosOp(_Unary, name="acos"):
    """`acos(x)`, elementwise."""


class AtanOp(_Unary, name="atan"):
    """`atan(x)`, elementwise."""


class SinhOp(_Unary, name="sinh"):
    """`sinh(x)`, elementwise."""


class CoshOp(_Unary, name="cosh"):
    """`cosh(x)`, elementwise."""


class AsinhOp(_Unary, name="asinh"):
    """`asinh(x)`, elementwise."""


class AcoshOp(_Unary, name="acosh"):
    """`acosh(x)`, elementwise."""


class AtanhOp(_Unary, name="atanh"):
    """`atanh(x)`, elementwise."""


class Expm1Op(_Unary, name="expm1"):
    """`exp(x) - 1`, elementwise."""


class Log2Op(_Unary, name="log2"):
    """`log2(x)`, elementwise."""


class Log10Op(_Unary, name="log10"):
    """`log10(x)`, elementwise."""


class GeluOp(Wse.Operation, name="gelu"):
    """GELU, exact (`approximate = "none"`) or the tanh approximation (`"tanh"`).

    `%y = "wse.gelu"(%x) {approximate = "tanh"} : (tensor<4x8xf32>) -> tensor<4x8xf32>`
    """

    input: Tensor
    approximate: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if ir.StringAttr(self.attributes["approximate"]).value not in ("none", "tanh"):
            return _fail(self, "approximate must be 'none' or 'tanh'")
        return _Unary.verify_invariants(self)


class SoftplusOp(Wse.Operation, name="softplus"):
    """`log(1 + exp(beta*x)) / beta`, linear (`x`) where `beta*x > threshold`."""

    input: Tensor
    beta: ir.FloatAttr
    threshold: ir.FloatAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        return _Unary.verify_invariants(self)


class ConvertOp(Wse.Operation, name="convert"):
    """Element type conversion (round to nearest even; float to int truncates toward zero).

    `%y = "wse.convert"(%x) : (tensor<4xf32>) -> tensor<4xbf16>`
    """

    input: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _shape(self.input) != _shape(self.result):
            return _fail(self, "result shape must equal the input shape")
        return True


class _Binary(Wse.Operation):
    lhs: Tensor
    rhs: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        out = _broadcast(_shape(self.lhs), _shape(self.rhs))
        if out is None or out != _shape(self.result):
            return _fail(self, "operand shapes must broadcast to the result shape")
        if not (_elem(self.lhs) == _elem(self.rhs) == _elem(self.result)):
            return _fail(self, "operands and result must share one element type")
        return True


class AddOp(_Binary, name="add"):
    """`lhs + rhs`, broadcasting.

    `%z = "wse.add"(%x, %b) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>`
    """


class SubOp(_Binary, name="sub"):
    """`lhs - rhs`, broadcasting."""


class MulOp(_Binary, name="mul"):
    """`lhs * rhs`, broadcasting."""


class DivOp(_Binary, name="div"):
    """`lhs / rhs` (true division), broadcasting."""


class PowOp(_Binary, name="pow"):
    """`lhs ** rhs`, broadcasting."""


class MaximumOp(_Binary, name="maximum"):
    """Elementwise maximum (NaN propagates), broadcasting."""


class MinimumOp(_Binary, name="minimum"):
    """Elementwise minimum (NaN propagates), broadcasting."""


class AndOp(_Binary, name="and"):
    """Logical and of i1 tensors, broadcasting."""


class OrOp(_Binary, name="or"):
    """Logical or of i1 tensors, broadcasting."""


class FmodOp(_Binary, name="fmod"):
    """C's `fmod`: remainder of `lhs / rhs` truncated toward zero (sign of lhs), broadcasting."""


class RemainderOp(_Binary, name="remainder"):
    """Python's `%`: remainder of `lhs / rhs` floored (sign of rhs), broadcasting."""


class Atan2Op(_Binary, name="atan2"):
    """`atan2(lhs, rhs)`, broadcasting."""


class XorOp(_Binary, name="xor"):
    """Logical exclusive or of i1 tensors, broadcasting."""


CMP_PREDICATES = ("eq", "ne", "lt", "le", "gt", "ge")


class CmpOp(Wse.Operation, name="cmp"):
    """Elementwise comparison giving i1, broadcasting; `predicate` is one of eq ne lt le gt ge.

    `%m = "wse.cmp"(%a, %b) {predicate = "le"} : (tensor<8x1xi64>, tensor<8xi64>) -> tensor<8x8xi1>`
    """

    lhs: Tensor
    rhs: Tensor
    predicate: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if ir.StringAttr(self.attributes["predicate"]).value not in CMP_PREDICATES:
            return _fail(self, f"predicate must be one of {CMP_PREDICATES}")
        out = _broadcast(_shape(self.lhs), _shape(self.rhs))
        if out is None or out != _shape(self.result):
            return _fail(self, "operand shapes must broadcast to the result shape")
        if _elem(self.lhs) != _elem(self.rhs) or _elem(self.result) != "i1":
            return _fail(self, "operands must share an element type and the result must be i1")
        return True


class WhereOp(Wse.Operation, name="where"):
    """`cond ? lhs : rhs`, all three broadcast to the result.

    `%y = "wse.where"(%m, %x, %c) : (tensor<8x8xi1>, tensor<8x8xf32>, tensor<f32>) -> tensor<8x8xf32>`
    """

    cond: Tensor
    lhs: Tensor
    rhs: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        out = _broadcast(_shape(self.cond), _shape(self.lhs), _shape(self.rhs))
        if out is None or out != _shape(self.result):
            return _fail(self, "operand shapes must broadcast to the result shape")
        if _elem(self.cond) != "i1":
            return _fail(self, "cond must be i1")
        if not (_elem(self.lhs) == _elem(self.rhs) == _elem(self.result)):
            return _fail(self, "lhs, rhs and result must share one element type")
        return True


# ---------------------------------------------------------------------------- linear algebra


class MatmulOp(Wse.Operation, name="matmul"):
    """`lhs @ rhs (+ bias)`: (..., M, K) x (..., K, N) -> (..., M, N), batch dims broadcast.

    `%y = "wse.matmul"(%x, %w, %b) {operandSegmentSizes = array<i32: 1, 1, 1>}
        : (tensor<8x64xf32>, tensor<64x256xf32>, tensor<256xf32>) -> tensor<8x256xf32>`

    The optional bias broadcasts to the result. On the wafer the reduction over K is the
    cross-PE reduction that placement makes explicit.
    """

    lhs: Tensor
    rhs: Tensor
    result: TensorResult
    bias: Tensor | None = None

    def verify_invariants(self) -> bool:
        a, b, out = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        if len(a) < 2 or len(b) < 2:
            return _fail(self, "operands must have rank >= 2")
        if a[-1] != b[-2]:
            return _fail(self, f"contraction dims differ: {a[-1]} vs {b[-2]}")
        batch = _broadcast(a[:-2], b[:-2])
        if batch is None or batch + (a[-2], b[-1]) != out:
            return _fail(self, "result shape must be broadcast(batch) x M x N")
        if self.bias is not None and _broadcast(_shape(self.bias), out) != out:
            return _fail(self, "bias must broadcast to the result")
        return True


class AttentionOp(Wse.Operation, name="attention"):
    """Scaled dot-product attention: `softmax(q k^T * scale + mask) v` over the last two dims.

    q: (..., Hq, L, E), k: (..., Hk, S, E), v: (..., Hk, S, Ev) with Hq a multiple of Hk
    (grouped-query attention shares each k/v head among Hq/Hk query heads). The optional
    mask broadcasts to (..., Hq, L, S): i1 keeps where true, a float mask is added.
    `is_causal` additionally masks key positions after the query position.

    `%o = "wse.attention"(%q, %k, %v) {is_causal = true, scale = 0.25 : f64, ...}
        : (tensor<1x4x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x4x8x16xf32>`

    Placed, it is tiled flash-style (`tile-attention`): `q_block` query rows per PE tile,
    keys visited `kv_block` at a time with the online-softmax recurrence (running max, sum and
    output accumulator; the scores are never whole), the keys of a tile split over `kv_parts`
    PEs whose partial results merge. The three come together: 1 <= q_block <= L,
    1 <= kv_block <= S, 1 <= kv_parts <= ceil(S / kv_block).
    """

    query: Tensor
    key: Tensor
    value: Tensor
    scale: ir.FloatAttr
    is_causal: ir.IntegerAttr
    result: TensorResult
    mask: Tensor | None = None

    def verify_invariants(self) -> bool:
        q, k, v, out = (_shape(x) for x in (self.query, self.key, self.value, self.result))
        if min(len(q), len(k), len(v)) < 3 or not (len(q) == len(k) == len(v)):
            return _fail(self, "query, key and value need the same rank >= 3")
        if k[:-1] != v[:-1] or q[-1] != k[-1] or q[-3] % k[-3] != 0:
            return _fail(self, "key/value must agree, and query heads be a multiple of key heads")
        if out != q[:-1] + (v[-1],):
            return _fail(self, "result must be query.shape[:-1] + (value.shape[-1],)")
        if self.mask is not None and _broadcast(_shape(self.mask), q[:-1] + (k[-2],)) != q[:-1] + (
            k[-2],
        ):
            return _fail(self, "mask must broadcast to (..., L, S)")
        return _verify_attention_tiling(self, q[-2], k[-2])


ATTENTION_TILING = ("q_block", "kv_block", "kv_parts")


def _verify_attention_tiling(op, length: int, keys: int) -> bool:
    """`q_block`, `kv_block` and `kv_parts` of a tiled `wse.attention`: all or none, in range."""
    given = [name for name in ATTENTION_TILING if name in op.attributes]
    if not given:
        return True
    if len(given) != len(ATTENTION_TILING):
        return _fail(op, f"attention tiling needs all of {ATTENTION_TILING}, got {given}")
    q_block, kv_block, kv_parts = (
        ir.IntegerAttr(op.attributes[name]).value for name in ATTENTION_TILING
    )
    if not (1 <= q_block <= length and 1 <= kv_block <= keys):
        return _fail(op, f"need 1 <= q_block <= {length} and 1 <= kv_block <= {keys}")
    if not 1 <= kv_parts <= -(-keys // kv_block):
        return _fail(op, "kv_parts must be between 1 and the number of key blocks")
    return True


# ---------------------------------------------------------------------------- reductions


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


# ---------------------------------------------------------------------------- data movement


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


class DepthwiseConv1dOp(Wse.Operation, name="depthwise_conv1d"):
    """Depthwise 1-D convolution over (B, C, L) with weight (C, 1, W), zero `padding` both sides.

    Causal convolution is this op followed by a slice keeping the first L outputs.
    """

    input: Tensor
    weight: Tensor
    padding: ir.IntegerAttr
    result: TensorResult
    bias: Tensor | None = None

    def verify_invariants(self) -> bool:
        x, w, out = _shape(self.input), _shape(self.weight), _shape(self.result)
        pad = ir.IntegerAttr(self.attributes["padding"]).value
        if len(x) != 3 or len(w) != 3 or w[0] != x[1] or w[1] != 1:
            return _fail(self, "needs input (B, C, L) and weight (C, 1, W)")
        if out != (x[0], x[1], x[2] + 2 * pad - w[2] + 1):
            return _fail(self, "result must be (B, C, L + 2*padding - W + 1)")
        return True


class SelectiveScanOp(Wse.Operation, name="selective_scan"):
    """Mamba's selective scan over time, one op per layer.

    Operands (mamba_ssm's naming in lower case): u, delta, z: (B, D, L); a: (D, N);
    b, c: (B, N, L); d_skip, delta_bias: (D,); h0: (B, D, N), the state before the first step
    (zeros when absent). `delta' = softplus?(delta + delta_bias)`;
    `h_t = exp(delta'_t a) h_{t-1} + delta'_t b_t u_t`;
    `y_t = <h_t, c_t> + d_skip u_t`, times `silu(z)` when z is given. Results: y (B, D, L) and
    the final state h_L (B, D, N). The channel dim D partitions across PEs with no traffic but
    the broadcast of B_t and C_t. Placed (`chunk-scan`), the sequence runs `chunk` steps at a
    time, 1 <= chunk <= L, the state carried from chunk to chunk.
    """

    u: Tensor
    delta: Tensor
    a: Tensor
    b: Tensor
    c: Tensor
    d_skip: Tensor | None
    z: Tensor | None
    delta_bias: Tensor | None
    h0: Tensor | None
    delta_softplus: ir.IntegerAttr
    y: TensorResult
    last_state: TensorResult

    def verify_invariants(self) -> bool:
        b, d, length = _shape(self.u)
        n = _shape(self.a)[-1]
        if _shape(self.delta) != (b, d, length) or _shape(self.a) != (d, n):
            return _fail(self, "needs u, delta (B, D, L) and a (D, N)")
        if _shape(self.b) != (b, n, length) or _shape(self.c) != (b, n, length):
            return _fail(self, "b and c must be (B, N, L)")
        if _shape(self.y) != (b, d, length) or _shape(self.last_state) != (b, d, n):
            return _fail(self, "results must be y (B, D, L) and last_state (B, D, N)")
        if self.h0 is not None and _shape(self.h0) != (b, d, n):
            return _fail(self, "h0 must be (B, D, N)")
        if "chunk" in self.attributes and not 1 <= _int(self, "chunk") <= length:
            return _fail(self, f"chunk must be between 1 and the sequence length {length}")
        return True


class SsdScanOp(Wse.Operation, name="ssd_scan"):
    """Mamba-2's SSD scan over time in chunked-matmul form, one op per layer.

    Operands: x (B, L, H, P), H heads of P channels; dt (B, L, H), the discretised step; a (H,);
    b, c (B, L, G, N), shared by the H/G heads of a group; d_skip (H,); h0 (B, H, P, N), the
    state before the first step (zeros when absent). Per head
    `h_t = exp(dt_t a) h_{t-1} + dt_t x_t b_t^T`, `y_t = h_t c_t + d_skip x_t`. Results: y
    (B, L, H, P) and the final state (B, H, P, N), in x's element type. The sequence runs
    `chunk` steps at a time (chunk >= 1): inside a chunk a masked (chunk x chunk) product of c
    and b, between chunks the state. Heads partition across PEs with no traffic but the
    broadcast of b and c; `chunk-scan` picks a chunk whose working set fits a PE.
    """

    x: Tensor
    dt: Tensor
    a: Tensor
    b: Tensor
    c: Tensor
    d_skip: Tensor | None
    h0: Tensor | None
    chunk: ir.IntegerAttr
    y: TensorResult
    last_state: TensorResult

    def verify_invariants(self) -> bool:
        x = _shape(self.x)
        if len(x) != 4 or len(_shape(self.b)) != 4:
            return _fail(self, "needs x (B, L, H, P) and b, c (B, L, G, N)")
        batch, length, heads, width = x
        groups, state = _shape(self.b)[2:]
        if _shape(self.dt) != (batch, length, heads) or _shape(self.a) != (heads,):
            return _fail(self, "needs dt (B, L, H) and a (H,)")
        if _shape(self.c) != _shape(self.b) or _shape(self.b)[:2] != (batch, length):
            return _fail(self, "b and c must be (B, L, G, N)")
        if groups < 1 or heads % groups:
            return _fail(self, f"the {heads} heads must split evenly into the {groups} groups")
        if self.d_skip is not None and _shape(self.d_skip) != (heads,):
            return _fail(self, "d_skip must be (H,)")
        if self.h0 is not None and _shape(self.h0) != (batch, heads, width, state):
            return _fail(self, "h0 must be (B, H, P, N)")
        if _shape(self.y) != x or _shape(self.last_state) != (batch, heads, width, state):
            return _fail(self, "results must be y (B, L, H, P) and last_state (B, H, P, N)")
        if _int(self, "chunk") < 1:
            return _fail(self, "chunk must be at least 1")
        return True


class MoeRouterOp(Wse.Operation, name="moe_router"):
    """Top-k routing of T tokens over E experts: logits (T, E) -> weights (T, k) f32 and
    indices (T, k) i64 (`core.moe`).

    `scoring`: "softmax" (over all experts, then top-k), "topk_softmax" (top-k of the logits,
    softmax over the k) or "sigmoid" (experts chosen by sigmoid + `selection_bias` (E,) within the
    best `topk_groups` of `groups` equal groups; weights the unbiased scores). `normalize`
    divides the k weights by their sum; `scale` multiplies them last.
    """

    logits: Tensor
    selection_bias: Tensor | None
    top_k: ir.IntegerAttr
    scoring: ir.StringAttr
    normalize: ir.IntegerAttr
    groups: ir.IntegerAttr
    topk_groups: ir.IntegerAttr
    scale: ir.FloatAttr
    weights: TensorResult
    indices: TensorResult

    def verify_invariants(self) -> bool:
        logits = _shape(self.logits)
        k, groups = _int(self, "top_k"), _int(self, "groups")
        if len(logits) != 2:
            return _fail(self, "logits must be (T, E)")
        tokens, experts = logits
        if not 1 <= k <= experts:
            return _fail(self, f"top_k must be between 1 and the {experts} experts")
        if _str(self, "scoring") not in ("softmax", "topk_softmax", "sigmoid"):
            return _fail(self, "scoring must be 'softmax', 'topk_softmax' or 'sigmoid'")
        if groups < 1 or experts % groups or not 1 <= _int(self, "topk_groups") <= groups:
            return _fail(self, "groups must divide E and 1 <= topk_groups <= groups")
        if self.selection_bias is not None and _shape(self.selection_bias) != (experts,):
            return _fail(self, "selection_bias must be (E,)")
        if _shape(self.weights) != (tokens, k) or _shape(self.indices) != (tokens, k):
            return _fail(self, "results must be weights and indices (T, top_k)")
        if _elem(self.weights) != "f32" or _elem(self.indices) != "i64":
            return _fail(self, "weights must be f32 and indices i64")
        return True


class MoeDispatchOp(Wse.Operation, name="moe_dispatch"):
    """Token rows x (T, H) packed into `capacity` slots per expert by the router's indices and
    weights (T, k): xs (E, C, H), gates (E, C) f32 (0 in an empty slot), slots (E, C) i64 (the
    slot's token, T when empty). Tokens fill an expert's slots in token order; those past its
    capacity are dropped, so C = T never drops. On the wafer: all-to-all, token rows travel from
    their PEs to the experts' regions.
    """

    input: Tensor
    indices: Tensor
    weights: Tensor
    capacity: ir.IntegerAttr
    xs: TensorResult
    gates: TensorResult
    slots: TensorResult

    def verify_invariants(self) -> bool:
        x, idx, out = _shape(self.input), _shape(self.indices), _shape(self.xs)
        if len(x) != 2 or len(idx) != 2 or idx[0] != x[0] or _shape(self.weights) != idx:
            return _fail(self, "needs input (T, H) and indices, weights (T, k)")
        if _elem(self.indices) != "i64":
            return _fail(self, "indices must be i64")
        capacity = _int(self, "capacity")
        if not 1 <= capacity <= x[0]:
            return _fail(self, f"capacity must be between 1 and the {x[0]} tokens")
        if len(out) != 3 or out[1:] != (capacity, x[1]) or out[0] < 1:
            return _fail(self, "xs must be (E, capacity, H)")
        if _shape(self.gates) != out[:2] or _shape(self.slots) != out[:2]:
            return _fail(self, "gates and slots must be (E, capacity)")
        return True


class GroupedMatmulOp(Wse.Operation, name="grouped_matmul"):
    """One matmul per expert: xs (E, C, K) x rhs (E, K, N) -> (E, C, N), or rhs (E, N, K) used
    transposed when `transpose_rhs`; the optional bias is (E, N). Each expert's weight lives on
    its own PE region (`expert_regions`, set by placement: E rectangles [x, y, w, h] flattened).
    """

    lhs: Tensor
    rhs: Tensor
    bias: Tensor | None
    transpose_rhs: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        x, w, out = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        if len(x) != 3 or len(w) != 3 or w[0] != x[0]:
            return _fail(self, "needs lhs (E, C, K) and rhs with the same E experts")
        n, k = (w[1], w[2]) if _int(self, "transpose_rhs") else (w[2], w[1])
        if k != x[2]:
            return _fail(self, f"contraction dims differ: {x[2]} vs {k}")
        if out != (x[0], x[1], n):
            return _fail(self, "result must be (E, C, N)")
        if self.bias is not None and _shape(self.bias) != (x[0], n):
            return _fail(self, "bias must be (E, N)")
        if "expert_regions" in self.attributes:
            regions = _int_list(self, "expert_regions")
            if regions is None or len(regions) != 4 * x[0]:
                return _fail(self, "expert_regions must hold one [x, y, w, h] per expert")
        return True


class MoeCombineOp(Wse.Operation, name="moe_combine"):
    """The experts' rows ys (E, C, H) back to their tokens: result (T, H) is, for each token,
    the sum over its slots of gate x row (float32, in expert order), in ys's element type.
    `slots` and `gates` come from `wse.moe_dispatch`; a slot holding T is empty. On the wafer:
    the all-to-all back from the experts' regions.
    """

    input: Tensor
    gates: Tensor
    slots: Tensor
    result: TensorResult

    def verify_invariants(self) -> bool:
        ys, out = _shape(self.input), _shape(self.result)
        if len(ys) != 3 or _shape(self.gates) != ys[:2] or _shape(self.slots) != ys[:2]:
            return _fail(self, "needs input (E, C, H), gates and slots (E, C)")
        if len(out) != 2 or out[1] != ys[2] or out[0] < ys[1]:
            return _fail(self, "result must be (T, H) with T >= capacity")
        if _elem(self.slots) != "i64" or _elem(self.result) != _elem(self.input):
            return _fail(self, "slots must be i64 and the result input's element type")
        return True


# ============================================================================ placement and fabric ops
#
# Added by placement (`compiler/passes/`). A placed module also carries, on every other op,
# the discardable attributes `stage` (i64: the pipeline stage, one model layer), `region`
# ([x, y, w, h]: the rectangle of PEs the op runs on; x is the column, y the row, from the top
# left) and, for ops whose result occupies SRAM, `sram` ([offset, bytes_per_pe]: the byte range
# of the result on every PE of `region`; `scratch`, same form: a working set held only while the
# op runs, as a tiled attention's). `wse.param` stays a name: its `wse.weight_tiles`
# users are where the weight lives. The communication ops below are value-preserving or
# reducing, so a placed module still computes the model.

FABRIC_AXES = ("row", "col")
REDUCE_ALGORITHMS = ("chain", "tree", "two_phase")
WEIGHT_HOMES = ("sram", "external")
GEMM_DATAFLOWS = ("broadcast", "cannon")


def _int_list(op, name: str) -> list[int] | None:
    attr = op.attributes[name]
    if not isinstance(attr, ir.ArrayAttr) or not all(isinstance(a, ir.IntegerAttr) for a in attr):
        return None
    return [a.value for a in attr]


def _str(op, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def _int(op, name: str) -> int:
    return ir.IntegerAttr(op.attributes[name]).value


def _check_region(op, name: str = "region") -> bool:
    region = _int_list(op, name)
    if region is None or len(region) != 4:
        return _fail(op, f"'{name}' must be [x, y, w, h]")
    x, y, w, h = region
    if x < 0 or y < 0 or w < 1 or h < 1:
        return _fail(op, f"'{name}' needs x, y >= 0 and w, h >= 1, got {region}")
    return True


def _check_identity(op) -> bool:
    if op.input.type != op.result.type:
        return _fail(op, "result type must equal the input type")
    return True


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class WeightTilesOp(Wse.Operation, name="weight_tiles"):
    """A weight cut into tiles, one per PE; value-preserving (the result is the weight).

    `%t = "wse.weight_tiles"(%w) {home = "sram", region = [8, 0, 4, 2], sram_offset = 512 : i64,
        tile_dims = [1, 0], tile_grid = [2, 4], tile_shape = [48, 32]}
        : (tensor<192x64xf32>) -> tensor<192x64xf32>`

    Tensor dim `tile_dims[0]` is split over `tile_grid[0]` PE rows and dim `tile_dims[1]` over
    `tile_grid[1]` PE columns (-1: not split, grid 1). Every tile has `tile_shape`: the split dims
    have `ceil(size / grid)` elements, the others their full size; the last tiles are
    zero-padded. Tile (r, c) holds elements `[r*tr, (r+1)*tr) x [c*tc, (c+1)*tc)` of the split
    dims, row-major, at bytes `[sram_offset, sram_offset + prod(tile_shape) * element bytes)` of
    PE (x + c, y + r), where `region = [x, y, w, h]` (w >= grid[1], h >= grid[0]). `home` is
    "sram" (resident: loaded once) or "external" (streaming: the tiles stream in from external
    memory into that SRAM range when this op runs). Every element is stored exactly once.
    """

    input: Tensor
    region: ir.ArrayAttr
    tile_dims: ir.ArrayAttr
    tile_grid: ir.ArrayAttr
    tile_shape: ir.ArrayAttr
    sram_offset: ir.IntegerAttr
    home: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not (_check_region(self) and _check_identity(self)):
            return False
        shape = _shape(self.input)
        dims, grid, tile = (_int_list(self, n) for n in ("tile_dims", "tile_grid", "tile_shape"))
        if dims is None or grid is None or tile is None or len(dims) != 2 or len(grid) != 2:
            return _fail(self, "tile_dims and tile_grid must be two integers each")
        if any(not -1 <= d < len(shape) for d in dims) or (dims[0] == dims[1] != -1):
            return _fail(self, f"tile_dims must be distinct dims of the weight or -1, got {dims}")
        if any(g < 1 for g in grid) or any(
            g != 1 for d, g in zip(dims, grid, strict=True) if d == -1
        ):
            return _fail(self, f"tile_grid must be >= 1, and 1 for unsplit dims, got {grid}")
        expect = list(shape)
        for d, g in zip(dims, grid, strict=True):
            if d != -1:
                expect[d] = _ceil_div(shape[d], g)
        if tile != expect:
            return _fail(self, f"tile_shape must be {expect} for this grid, got {tile}")
        x, y, w, h = _int_list(self, "region")
        if grid[0] > h or grid[1] > w:
            return _fail(self, f"tile_grid {grid} does not fit region {w}x{h}")
        if _int(self, "sram_offset") < 0 or _str(self, "home") not in WEIGHT_HOMES:
            return _fail(self, f"needs sram_offset >= 0 and home in {WEIGHT_HOMES}")
        return True


class FabricBroadcastOp(Wse.Operation, name="fabric_broadcast"):
    """Send slices of an activation along PE rows (or columns); value-preserving.

    `%b = "wse.fabric_broadcast"(%x) {axis = "row", dim = 1 : i64, parts = 4 : i64,
        region = [8, 0, 4, 4], rows_per_pass = 8 : i64} : (tensor<8x64xf32>) -> tensor<8x64xf32>`

    `dim` is cut into `parts` slices of `ceil(size / parts)`; slice p goes to every PE of region
    row y + p (axis "row": it travels along the row) or column x + p (axis "col"), in passes of
    `rows_per_pass` rows of the flattened leading dims.
    """

    input: Tensor
    region: ir.ArrayAttr
    axis: ir.StringAttr
    dim: ir.IntegerAttr
    parts: ir.IntegerAttr
    rows_per_pass: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not (_check_region(self) and _check_identity(self)):
            return False
        axis, dim, parts = _str(self, "axis"), _int(self, "dim"), _int(self, "parts")
        if axis not in FABRIC_AXES or not 0 <= dim < len(_shape(self.input)):
            return _fail(self, f"needs axis in {FABRIC_AXES} and dim in range")
        _, _, w, h = _int_list(self, "region")
        if not 1 <= parts <= (h if axis == "row" else w) or _int(self, "rows_per_pass") < 1:
            return _fail(
                self, "parts must be between 1 and the region's extent; rows_per_pass >= 1"
            )
        return True


class FabricShiftOp(Wse.Operation, name="fabric_shift"):
    """Cannon-style rotation of an activation's q x q blocks over a square region;
    value-preserving.

    `%a = "wse.fabric_shift"(%x) {axis = "row", region = [0, 0, 4, 4], skew = 1 : i64,
        step = 1 : i64, steps = 4 : i64} : (tensor<8x64xf32>) -> tensor<8x64xf32>`

    The activation (..., M, K) is held as q x q blocks, K over the rows and M over the columns
    of the region (block (k, i) on PE (x + i, y + k)), so each row meets the weight tiles of
    the same K slice. Before the first step, row r (axis "row"; column r for "col") rotates by
    `skew * r` PEs towards index 0; after each of the consumer's `steps` multiply-accumulate
    steps every block moves `step` PEs the same way. The consumer is a `wse.tile_matmul` with
    dataflow "cannon". With `rows_per_pass`, blocks move that many of their M rows at a time.
    """

    input: Tensor
    region: ir.ArrayAttr
    axis: ir.StringAttr
    skew: ir.IntegerAttr
    step: ir.IntegerAttr
    steps: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not (_check_region(self) and _check_identity(self)):
            return False
        _, _, w, h = _int_list(self, "region")
        if w != h or _str(self, "axis") not in FABRIC_AXES or _int(self, "steps") < 1:
            return _fail(self, f"needs a square region, axis in {FABRIC_AXES} and steps >= 1")
        return True


class TileMatmulOp(Wse.Operation, name="tile_matmul"):
    """Per-PE products of an activation and a tiled weight.

    `%p = "wse.tile_matmul"(%xb, %t, %bias) {dataflow = "broadcast", region = [8, 0, 4, 2],
        rows_per_pass = 8 : i64, transpose_rhs = true, operandSegmentSizes = array<i32: 1, 1, 1>}
        : (tensor<8x64xf32>, tensor<192x64xf32>, tensor<192xf32>) -> tensor<2x8x192xf32>`

    rhs is the weight as (K, N), or (N, K) when `transpose_rhs`. dataflow "broadcast": the
    result stacks P partial sums, `result[p] = lhs[..., K_p] @ rhs[K_p, :]` with K_p the p-th
    `ceil(K / P)` slice (PE row p's share), plus the bias in `result[0]`; a `wse.fabric_reduce`
    sums them. dataflow "cannon" (lhs from a `wse.fabric_shift`): `lhs @ rhs + bias` on a
    q x q region. The weight tiles stay put; at every step each PE multiplies the activation
    block it holds by its tile into the output block it holds, then output blocks move one PE
    towards row 0 (column shift) while activation blocks move as their shift says; after q
    steps output block (i, j) (M slice i, N slice j) is on PE (x + j, y + (i - j) mod q).
    `rows_per_pass` rows of M are processed at a time (Cannon: the rows of a block, or part
    of them per pass); with
    `cols_per_pass` (broadcast), a PE makes and sends its partial sums that many columns at a
    time.
    """

    lhs: Tensor
    rhs: Tensor
    region: ir.ArrayAttr
    dataflow: ir.StringAttr
    transpose_rhs: ir.IntegerAttr
    rows_per_pass: ir.IntegerAttr
    result: TensorResult
    bias: Tensor | None = None

    def verify_invariants(self) -> bool:
        if not _check_region(self):
            return False
        a, b, out = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        if len(a) < 2 or len(b) != 2:
            return _fail(self, "needs lhs of rank >= 2 and a 2-D rhs")
        k, n = (b[1], b[0]) if _int(self, "transpose_rhs") else b
        if a[-1] != k:
            return _fail(self, f"contraction dims differ: {a[-1]} vs {k}")
        dataflow = _str(self, "dataflow")
        if dataflow not in GEMM_DATAFLOWS:
            return _fail(self, f"dataflow must be one of {GEMM_DATAFLOWS}")
        expect = a[:-1] + (n,)
        if (dataflow == "cannon" and out != expect) or (
            dataflow == "broadcast" and (len(out) != len(expect) + 1 or out[1:] != expect)
        ):
            return _fail(
                self, f"result must be {'' if dataflow == 'cannon' else '(P,) + '}{expect}"
            )
        if self.bias is not None and _shape(self.bias) != (n,):
            return _fail(self, f"bias must be ({n},)")
        return _int(self, "rows_per_pass") >= 1 or _fail(self, "rows_per_pass must be >= 1")


class FabricReduceOp(Wse.Operation, name="fabric_reduce"):
    """Sum partial results held by the PE rows of a region: `result = sum(input, dim 0)`.

    `%y = "wse.fabric_reduce"(%p) {algorithm = "tree", axis = "col", group = 1 : i64,
        region = [8, 0, 4, 2]} : (tensor<2x8x192xf32>) -> tensor<8x192xf32>`

    Partial p lives on region row y + p; partials travel along columns (axis "col") to row y.
    `algorithm`: "chain" (each row adds its partial and passes the sum on, a pipelined chain),
    "tree" (pairwise, log2 P rounds), "two_phase" (chains within groups of `group` rows, then a
    chain over the group leaders).
    """

    input: Tensor
    region: ir.ArrayAttr
    axis: ir.StringAttr
    algorithm: ir.StringAttr
    group: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not _check_region(self):
            return False
        if _shape(self.input)[1:] != _shape(self.result) or _elem(self.input) != _elem(self.result):
            return _fail(self, "result must be the input without its leading (partials) dim")
        if (
            _str(self, "algorithm") not in REDUCE_ALGORITHMS
            or _str(self, "axis") not in FABRIC_AXES
        ):
            return _fail(
                self, f"algorithm must be one of {REDUCE_ALGORITHMS}, axis of {FABRIC_AXES}"
            )
        return _int(self, "group") >= 1 or _fail(self, "group must be >= 1")


class FabricStreamOp(Wse.Operation, name="fabric_stream"):
    """Move an activation from the PEs of `src_region` to those of `region`; value-preserving.

    `%s = "wse.fabric_stream"(%x) {hops = 6 : i64, region = [4, 0, 4, 4],
        src_region = [0, 0, 4, 4]} : (tensor<1x8x64xf32>) -> tensor<1x8x64xf32>`

    `hops` is the Manhattan distance between the regions' centres.
    """

    input: Tensor
    region: ir.ArrayAttr
    src_region: ir.ArrayAttr
    hops: ir.IntegerAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        return (
            _check_region(self)
            and _check_region(self, "src_region")
            and _check_identity(self)
            and (_int(self, "hops") >= 0 or _fail(self, "hops must be >= 0"))
        )


class FabricPermuteOp(Wse.Operation, name="fabric_permute"):
    """A transpose whose elements change PEs: an all-to-all over the PEs of `region`.

    `%t = "wse.fabric_permute"(%x) {permutation = [0, 2, 1, 3], region = [0, 0, 8, 8]}
        : (tensor<1x16x4x8xf32>) -> tensor<1x4x16x8xf32>`

    `result.shape[i] = input.shape[permutation[i]]`, as `wse.transpose`; the `fabric-permutes`
    pass makes it from a transpose whose PE-distributed dims change order, and a transpose that
    only moves size-1 dims (a relabelling) is never one.
    """

    input: Tensor
    permutation: ir.ArrayAttr
    region: ir.ArrayAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if not _check_region(self):
            return False
        perm, shape = _ints(self.attributes["permutation"]), _shape(self.input)
        if sorted(perm) != list(range(len(shape))):
            return _fail(self, "permutation must permute the input dims")
        if tuple(shape[p] for p in perm) != _shape(self.result):
            return _fail(self, "result shape must be the permuted input shape")
        kept = [p for p in perm if shape[p] != 1]
        if kept == sorted(kept):
            return _fail(self, "only moves size-1 dims: a relabelling, use wse.transpose")
        return True


class HostTransferOp(Wse.Operation, name="host_transfer"):
    """A function input entering (or a result leaving) the PEs of `region`; value-preserving.

    `%k = "wse.host_transfer"(%arg2) {direction = "in", kind = "state", region = [4, 0, 4, 4]}
        : (tensor<1x2x64x16xf32>) -> tensor<1x2x64x16xf32>`

    kind "data" crosses the host link on every call; kind "state" (KV cache, SSM state) stays
    resident in SRAM between calls.
    """

    input: Tensor
    region: ir.ArrayAttr
    direction: ir.StringAttr
    kind: ir.StringAttr
    result: TensorResult

    def verify_invariants(self) -> bool:
        if _str(self, "direction") not in ("in", "out") or _str(self, "kind") not in (
            "data",
            "state",
        ):
            return _fail(self, "direction must be 'in' or 'out' and kind 'data' or 'state'")
        return _check_region(self) and _check_identity(self)
