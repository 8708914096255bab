"""Elementwise ops: unary, binary (broadcasting), conversion, comparison, select."""

from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _broadcast,
    _elem,
    _fail,
    _shape,
)


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
    """Bitwise not of an integer or i1 tensor (logical not on i1)."""


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
    """Bitwise and of integer or i1 tensors (logical and on i1), broadcasting."""


class OrOp(_Binary, name="or"):
    """Bitwise or of integer or i1 tensors (logical or on i1), broadcasting."""


class FmodOp(_Binary, name="fmod"):
    """C's `fmod`: remainder of `lhs / rhs` truncated toward zero (sign of lhs), broadcasting."""


class RemainderOp(_Binary, name="remainder"):
    """Python's `%`: remainder of `lhs / rhs` floored (sign of rhs), broadcasting."""


class Atan2Op(_Binary, name="atan2"):
    """`atan2(lhs, rhs)`, broadcasting."""


class XorOp(_Binary, name="xor"):
    """Bitwise exclusive or of integer or i1 tensors (logical on i1), broadcasting."""


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
