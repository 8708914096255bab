"""Mixture of experts: routing, dispatch into the experts' slots, grouped matmul, combine."""

from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _elem,
    _fail,
    _int,
    _int_list,
    _shape,
    _str,
)


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
