"""JAX execution of a `Program`: one JAX rule per `wse` op, the whole program jitted as one
function. Runs on the GPU when JAX sees one, else on the CPU.

Rules reproduce `runtime.reference.KERNELS`. 16-bit floats compute in float32 where eager
PyTorch does (matmul accumulation, softmax, normalisation, attention) and round once at the
end. Programs use i64 and f64, so tracing and every call run under `jax.enable_x64`.

XLA clamps out-of-range gather indices where eager PyTorch raises. So by default the jitted
function also returns the lowest and highest index of every index operand (`embedding`,
`index`), and the call raises `IndexOutOfRangeError` on the host when one is out of range;
`check_indices=False` skips that reduction and the wait for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import torch
from jax import lax

from core.errors import ExecutionError
from core.ops import OpTable
from runtime.program import (
    IndexCheck,
    Instruction,
    Program,
    TensorSpec,
    check_extremes,
    constant_tensor,
    index_checks,
)

Rule = Callable[..., jax.Array | tuple[jax.Array, ...]]
HIGHEST = lax.Precision.HIGHEST

# The (B, D, L, N) float32 intermediates of one selective scan stay under this many bytes;
# longer sequences are scanned in chunks over time.
DEFAULT_SCAN_MEMORY_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Options:
    """Executable-wide settings the rules may read."""

    scan_memory_bytes: int = DEFAULT_SCAN_MEMORY_BYTES


RULES: OpTable[Rule] = OpTable("jax")


def register(*ops: str, rule: Rule) -> None:
    """Register `rule(ins, options, *operands)` for each op; a second registration fails."""
    for op in ops:
        RULES.register(op, rule)


def _jax_dtype(spec: TensorSpec) -> jnp.dtype:
    return jnp.dtype(str(spec.torch_dtype).removeprefix("torch."))


def out_dtype(ins: Instruction):
    return _jax_dtype(ins.result_specs[0])


def _opmath(x: jax.Array) -> jax.Array:
    """`x` in the type eager PyTorch computes it in: float32 for 16-bit floats."""
    return x.astype(jnp.float32) if x.dtype in (jnp.bfloat16, jnp.float16) else x


# ---------------------------------------------------------------------------- elementwise


def _unary(fn) -> Rule:
    return lambda ins, opts, x: fn(x)


def _binary(fn) -> Rule:
    return lambda ins, opts, a, b: fn(a, b)


def _softplus(x: jax.Array, beta: float, threshold: float) -> jax.Array:
    scaled = x * beta
    return jnp.where(scaled > threshold, x, jnp.log1p(jnp.exp(scaled)) / beta)


def _iota(ins: Instruction, opts: Options) -> jax.Array:
    (n,) = ins.result_specs[0].shape
    start, step, dtype = ins.attrs["start"], ins.attrs["step"], out_dtype(ins)
    if jnp.issubdtype(dtype, jnp.floating):
        return (jnp.arange(n, dtype=jnp.float64) * step + start).astype(dtype)
    return jnp.arange(n, dtype=dtype) * int(step) + int(start)


def _constant(ins: Instruction, opts: Options) -> jax.Array:
    return _from_torch(constant_tensor(ins.attrs["value"], ins.result_specs[0]))


_UNARY: dict[str, Callable] = {
    "neg": jnp.negative,
    "exp": jnp.exp,
    "log": jnp.log,
    "log1p": jnp.log1p,
    "sqrt": jnp.sqrt,
    "rsqrt": lax.rsqrt,
    "reciprocal": jnp.reciprocal,
    "abs": jnp.abs,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "tanh": jnp.tanh,
    "erf": lax.erf,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "not": jnp.bitwise_not,
}
for _op, _fn in _UNARY.items():
    register(_op, rule=_unary(_fn))

_BINARY: dict[str, Callable] = {
    "add": jnp.add,
    "sub": jnp.subtract,
    "mul": jnp.multiply,
    "div": jnp.true_divide,
    "pow": jnp.power,
    "maximum": jnp.maximum,
    "minimum": jnp.minimum,
    "and": jnp.bitwise_and,
    "or": jnp.bitwise_or,
}
for _op, _fn in _BINARY.items():
    register(_op, rule=_binary(_fn))

_CMP = {
    "eq": jnp.equal,
    "ne": jnp.not_equal,
    "lt": jnp.less,
    "le": jnp.less_equal,
    "gt": jnp.greater,
    "ge": jnp.greater_equal,
}

register("constant", rule=_constant)
register("iota", rule=_iota)
register(
    "gelu",
    rule=lambda ins, opts, x: jax.nn.gelu(x, approximate=ins.attrs["approximate"] == "tanh"),
)
register(
    "softplus",
    rule=lambda ins, opts, x: _softplus(x, ins.attrs["beta"], ins.attrs["threshold"]),
)
register("convert", rule=lambda ins, opts, x: x.astype(out_dtype(ins)))
register("cmp", rule=lambda ins, opts, a, b: _CMP[ins.attrs["predicate"]](a, b))
register("where", rule=lambda ins, opts, c, a, b: jnp.where(c, a, b))


# ---------------------------------------------------------------------------- linear algebra


def _matmul(ins: Instruction, opts: Options, a, b, bias) -> jax.Array:
    out = jnp.matmul(a, b, precision=HIGHEST, preferred_element_type=_opmath(a).dtype)
    out = out.astype(a.dtype)
    return out if bias is None else out + bias


def _attention(ins: Instruction, opts: Options, q, k, v, mask) -> jax.Array:
    """Explicit softmax(q k^T * scale + mask) v; a row with every key masked gives zeros,
    as eager PyTorch does on the CPU."""
    group = q.shape[-3] // k.shape[-3]
    k, v = (jnp.repeat(t, group, axis=-3) for t in (k, v))
    scores = jnp.einsum(
        "...le,...se->...ls", q, k, precision=HIGHEST, preferred_element_type=jnp.float32
    )
    scores = scores * ins.attrs["scale"]
    length, source = scores.shape[-2:]
    if mask is not None and mask.dtype == jnp.bool_:
        scores = jnp.where(mask, scores, -jnp.inf)
    elif mask is not None:
        scores = scores + mask.astype(jnp.float32)
    if ins.attrs["is_causal"]:
        causal = jnp.tril(jnp.ones((length, source), dtype=jnp.bool_))
        scores = jnp.where(causal, scores, -jnp.inf)
    top = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0))
    total = jnp.sum(weights, axis=-1, keepdims=True)
    weights = weights / jnp.where(total == 0, 1.0, total)
    out = jnp.einsum(
        "...ls,...se->...le",
        weights,
        v.astype(jnp.float32),
        precision=HIGHEST,
        preferred_element_type=jnp.float32,
    )
    return out.astype(q.dtype)


register("matmul", rule=_matmul)
register("attention", rule=_attention)


# ---------------------------------------------------------------------------- reductions


_REDUCERS: dict[str, Callable] = {
    "sum": jnp.sum,
    "mean": jnp.mean,
    "max": jnp.max,
    "min": jnp.min,
    "any": jnp.any,
}


def _reduce(ins: Instruction, opts: Options, x) -> jax.Array:
    dims = tuple(ins.attrs["dims"])
    if not dims:
        return x
    out = _REDUCERS[ins.attrs["kind"]](x, axis=dims, keepdims=ins.attrs["keepdim"])
    return out.astype(out_dtype(ins))


def _softmax(ins: Instruction, opts: Options, x) -> jax.Array:
    return jax.nn.softmax(_opmath(x), axis=ins.attrs["dim"]).astype(x.dtype)


def _layer_norm(ins: Instruction, opts: Options, x, weight, bias) -> jax.Array:
    axes = tuple(range(x.ndim - ins.attrs["axes"], x.ndim))
    h = _opmath(x)
    mean = jnp.mean(h, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=axes, keepdims=True)
    h = (h - mean) * lax.rsqrt(var + ins.attrs["eps"])
    if weight is not None:
        h = h * _opmath(weight)
    if bias is not None:
        h = h + _opmath(bias)
    return h.astype(x.dtype)


def _rms_norm(ins: Instruction, opts: Options, x, weight) -> jax.Array:
    h = _opmath(x)
    h = h * lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + ins.attrs["eps"])
    if weight is not None:
        h = h * _opmath(weight)
    return h.astype(x.dtype)


register("reduce", rule=_reduce)
register("argmax", rule=lambda ins, opts, x: jnp.argmax(x, axis=ins.attrs["dim"]))
register(
    "cumsum",
    rule=lambda ins, opts, x: jnp.cumsum(x, axis=ins.attrs["dim"], dtype=out_dtype(ins)),
)
register("softmax", rule=_softmax)
register("layer_norm", rule=_layer_norm)
register("rms_norm", rule=_rms_norm)


# ---------------------------------------------------------------------------- data movement


def _slice(ins: Instruction, opts: Options, x) -> jax.Array:
    a = ins.attrs
    return lax.slice_in_dim(x, a["start"], a["end"], a["step"], axis=a["dim"])


def _index(ins: Instruction, opts: Options, x, *indices) -> jax.Array:
    key: list = [slice(None)] * x.ndim
    for d, idx in zip(ins.attrs["indexed_dims"], indices, strict=True):
        key[d] = idx
    return x[tuple(key)]


register("reshape", rule=lambda ins, opts, x: x.reshape(ins.result_specs[0].shape))
for _op in ("transpose", "fabric_permute"):
    register(_op, rule=lambda ins, opts, x: jnp.transpose(x, ins.attrs["permutation"]))
register("broadcast", rule=lambda ins, opts, x: jnp.broadcast_to(x, ins.result_specs[0].shape))
register("slice", rule=_slice)
register("concat", rule=lambda ins, opts, a, b: jnp.concatenate((a, b), axis=ins.attrs["dim"]))
register("embedding", rule=lambda ins, opts, w, idx: w[idx])
register("index", rule=_index)


# ---------------------------------------------------------------------------- sequence mixing


def _depthwise_conv1d(ins: Instruction, opts: Options, x, weight, bias) -> jax.Array:
    pad = ins.attrs["padding"]
    out = lax.conv_general_dilated(
        x,
        weight,
        window_strides=(1,),
        padding=[(pad, pad)],
        dimension_numbers=("NCH", "OIH", "NCH"),
        feature_group_count=x.shape[1],
        precision=HIGHEST,
        preferred_element_type=_opmath(x).dtype,
    ).astype(x.dtype)
    return out if bias is None else out + bias[:, None]


def _combine(first, second):
    """(a, b) ⊕ (a', b') = (a a', a' b + b'): composing h -> a h + b, then a', b'."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def scan_chunk_length(batch: int, channels: int, length: int, state: int, budget: int) -> int:
    """Time steps per chunk so that the (B, D, chunk, N) float32 terms of the scan (decay,
    input and the two prefix results) fit in `budget` bytes; chunks are equal in size."""
    per_step = 4 * 4 * batch * channels * state
    chunks = math.ceil(length / max(1, min(length, budget // per_step)))
    return math.ceil(length / chunks)


def _selective_scan(
    ins: Instruction, opts: Options, u, delta, a, b, c, d_skip, z, delta_bias, h0=None
) -> tuple[jax.Array, jax.Array]:
    """The recurrence as an associative scan over time, chunk by chunk (`lax.scan` carries the
    state from one chunk to the next)."""
    batch, channels, length = u.shape
    state = a.shape[1]
    uf, delta = u.astype(jnp.float32), delta.astype(jnp.float32)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(jnp.float32)[:, None]
    if ins.attrs["delta_softplus"]:
        delta = _softplus(delta, 1.0, 20.0)
    chunk = scan_chunk_length(batch, channels, length, state, opts.scan_memory_bytes)
    chunks = math.ceil(length / chunk)

    def by_chunk(x):
        """(B, X, L) -> (chunks, B, X, chunk); padded steps have delta = 0: no state change."""
        x = jnp.pad(x, ((0, 0), (0, 0), (0, chunks * chunk - length)))
        return jnp.moveaxis(x.reshape(x.shape[:2] + (chunks, chunk)), 2, 0)

    af = a.astype(jnp.float32)

    def step(h, xs):
        u_t, delta_t, b_t, c_t = xs  # (B, D, T), (B, D, T), (B, N, T), (B, N, T)
        decay = jnp.exp(delta_t[..., None] * af[:, None, :])  # (B, D, T, N)
        drive = delta_t[..., None] * jnp.swapaxes(b_t, 1, 2)[:, None] * u_t[..., None]
        prod, local = lax.associative_scan(_combine, (decay, drive), axis=2)
        hs = prod * h[:, :, None, :] + local
        y = jnp.einsum("bdtn,bnt->bdt", hs, c_t, precision=HIGHEST)
        return hs[:, :, -1], y

    xs = tuple(by_chunk(x) for x in (uf, delta, b.astype(jnp.float32), c.astype(jnp.float32)))
    init = jnp.zeros((batch, channels, state)) if h0 is None else h0
    h, ys = lax.scan(step, init.astype(jnp.float32), xs)
    y = jnp.moveaxis(ys, 0, 2).reshape(batch, channels, chunks * chunk)[..., :length]
    if d_skip is not None:
        y = y + d_skip.astype(jnp.float32)[:, None] * uf
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y.astype(u.dtype), h.astype(u.dtype)


register("depthwise_conv1d", rule=_depthwise_conv1d)
register("selective_scan", rule=_selective_scan)


# ---------------------------------------------------------------------------- placement


def _tile_matmul(ins: Instruction, opts: Options, x, w, bias) -> jax.Array:
    """Dataflow "cannon": the plain product. "broadcast": the product split over K into
    `result.shape[0]` zero-padded slices, one partial sum each, the bias in the first."""
    w = w.T if ins.attrs["transpose_rhs"] else w
    if ins.attrs["dataflow"] == "cannon":
        return _matmul(ins, opts, x, w, bias)
    parts, k = ins.result_specs[0].shape[0], w.shape[0]
    size = -(-k // parts)
    pad = parts * size - k
    xs = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]).reshape(x.shape[:-1] + (parts, size))
    ws = jnp.pad(w, ((0, pad), (0, 0))).reshape(parts, size, w.shape[1])
    out = jnp.einsum(
        "...mps,psn->p...mn",
        xs,
        ws,
        precision=HIGHEST,
        preferred_element_type=_opmath(x).dtype,
    ).astype(x.dtype)
    return out if bias is None else out.at[0].add(bias)


def _identity(ins: Instruction, opts: Options, x) -> jax.Array:
    return x


for _op in ("weight_tiles", "fabric_broadcast", "fabric_shift", "fabric_stream", "host_transfer"):
    register(_op, rule=_identity)
register("tile_matmul", rule=_tile_matmul)
register("fabric_reduce", rule=lambda ins, opts, partials: jnp.sum(partials, axis=0))


# ---------------------------------------------------------------------------- torch <-> JAX


def _from_torch(t: torch.Tensor, device: jax.Device | None = None) -> jax.Array:
    """A torch tensor as a JAX array through DLPack (zero-copy where the devices allow; on
    the CPU the array shares memory with the tensor). DLPack carries every dtype a program
    uses, bool and bf16 included; XLA accepts only compact strides, hence `contiguous()`.
    Call under `jax.enable_x64(True)`, or i64/f64 are narrowed."""
    array = jnp.from_dlpack(t.detach().contiguous())
    return array if device is None else jax.device_put(array, device)


def to_torch(array: jax.Array) -> torch.Tensor:
    """A JAX array as a torch tensor through DLPack, on JAX's device when torch can use it
    (a CPU-only torch gets GPU results copied to the host, still through DLPack)."""
    (device,) = array.devices()
    if device.platform != "cpu" and not torch.cuda.is_available():
        array = jax.device_put(array, jax.devices("cpu")[0])
    return torch.from_dlpack(array)


# ---------------------------------------------------------------------------- executable


def _check(what: str, values: Sequence[jax.Array], specs: Sequence[TensorSpec]) -> None:
    """Raise (while tracing) unless `values` match `specs` in count, shape and dtype."""
    if len(values) != len(specs):
        raise ExecutionError(f"{what}: got {len(values)} values, expected {len(specs)}")
    for index, (value, spec) in enumerate(zip(values, specs, strict=True)):
        if value.shape != spec.shape or value.dtype != _jax_dtype(spec):
            raise ExecutionError(
                f"{what}: value {index} is {list(value.shape)} {value.dtype}, "
                f"expected {spec.describe()}"
            )


Constrain = Callable[[int, tuple[jax.Array, ...]], tuple[jax.Array, ...]]


def evaluate(
    program: Program,
    positions: Sequence[int],
    env: dict[int, jax.Array],
    weights: Mapping[str, jax.Array],
    options: Options,
    checks: Sequence[IndexCheck],
    constrain: Constrain | None = None,
) -> list[jax.Array]:
    """Trace the instructions at `positions` (ascending) on `env`, which gains their results;
    `constrain(position, results)` may annotate each op's results (sharding). Returns the
    (lowest, highest) index of each operand in `checks` read there."""
    extremes = []
    for position in positions:
        ins = program.instructions[position]
        results: tuple[jax.Array, ...]
        if ins.op == "param":
            results = (weights[ins.attrs["sym_name"]],)
        else:
            args = [None if v is None else env[v] for v in ins.operands]
            extremes += [
                jnp.stack([jnp.min(env[c.value]), jnp.max(env[c.value])]).astype(jnp.int64)
                for c in checks
                if c.position == position
            ]
            out = RULES[ins.op](ins, options, *args)
            results = out if isinstance(out, tuple) else (out,)
            results = results if constrain is None else constrain(position, results)
        _check(f"JAX rule of wse.{ins.op} ({ins.node})", results, ins.result_specs)
        env.update(zip(ins.results, results, strict=True))
    return extremes


def check_runnable(program: Program, weights: Mapping[str, torch.Tensor]) -> list[str]:
    """The program's weight names; `ExecutionError` for an op without a JAX rule, or a
    weight missing or on the meta device."""
    unknown = sorted({i.op for i in program.instructions} - set(RULES) - {"param"})
    if unknown:
        raise ExecutionError(f"no JAX rule for wse ops: {', '.join(unknown)}")
    names = list(program.params())
    missing = [n for n in names if n not in weights]
    if missing:
        raise ExecutionError(f"weight {missing[0]!r} is missing from the weights given")
    meta = [n for n in names if weights[n].is_meta]
    if meta:
        raise ExecutionError(
            f"{len(meta)} weights (e.g. {meta[0]!r}) are on the meta device; the JAX "
            "runtime needs real ones. Build the model on the CPU or load a checkpoint."
        )
    return names


class JaxExecutable:
    """`program` compiled by `jax.jit` as one function; weights live on the device.

    `executable(inputs)` takes and returns flat torch tensors; `run_device` takes and returns
    JAX arrays so that state can stay on the device between calls (e.g. decode steps).
    With `check_indices` (the default) a call with an index out of the range eager PyTorch
    accepts raises `IndexOutOfRangeError`, which waits for the device; without, XLA clamps it.
    """

    def __init__(
        self,
        program: Program,
        weights: Mapping[str, torch.Tensor],
        *,
        scan_memory_bytes: int = DEFAULT_SCAN_MEMORY_BYTES,
        device: jax.Device | None = None,
        check_indices: bool = True,
    ):
        names = check_runnable(program, weights)
        self.program = program
        self.options = Options(scan_memory_bytes)
        self.device = device or jax.devices()[0]
        self._checks = index_checks(program) if check_indices else []
        with jax.enable_x64(True):
            self._weights = {n: _from_torch(weights[n], self.device) for n in names}
        self._jitted = jax.jit(self._run)

    def _run(
        self, weights: dict[str, jax.Array], inputs: list[jax.Array]
    ) -> tuple[list[jax.Array], jax.Array | None]:
        """The whole program as one traceable function; also returns the (lowest, highest)
        index of every operand in `self._checks`, one row each."""
        _check("program inputs", inputs, self.program.input_specs)
        env: dict[int, jax.Array] = dict(enumerate(inputs))
        positions = range(len(self.program.instructions))
        extremes = evaluate(self.program, positions, env, weights, self.options, self._checks)
        return [env[v] for v in self.program.outputs], jnp.stack(extremes) if extremes else None

    def run_device(self, inputs: Sequence[jax.Array]) -> list[jax.Array]:
        """Run on JAX arrays (already on `self.device`); returns JAX arrays. Checking the
        indices waits for the call to finish."""
        with jax.enable_x64(True):
            outputs, extremes = self._jitted(self._weights, list(inputs))
        check_extremes(self._checks, extremes)
        return outputs

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run on flat torch tensors; results are torch tensors (see `to_torch`)."""
        with jax.enable_x64(True):
            arrays = [_from_torch(t, self.device) for t in inputs]
        return [to_torch(a) for a in self.run_device(arrays)]


import runtime.jax_general  # noqa: E402, F401  (registers the rules of the general ops)
import runtime.jax_moe  # noqa: E402, F401  (registers the rules of the MoE ops)
import runtime.jax_ssd  # noqa: E402, F401  (registers the rule of `ssd_scan`)
