"""Linear algebra: matmul and scaled dot-product attention."""

from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _broadcast,
    _fail,
    _shape,
)


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
