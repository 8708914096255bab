"""State-space sequence mixers: depthwise 1-D convolution, selective scan, SSD scan."""

from torch_mlir import ir

from compiler.dialects.wse.base import (
    Tensor,
    TensorResult,
    Wse,
    _fail,
    _int,
    _shape,
)


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
