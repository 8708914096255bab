"""CPU reference execution of a `Program`: one torch kernel per `wse` op.

This is the baseline every other runtime is checked against. Kernels compute in the
operands' dtype exactly as eager PyTorch does, so results match eager closely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from core import moe
from core.errors import ExecutionError
from core.ops import OpTable
from runtime.program import (
    Instruction,
    Program,
    check_index_range,
    constant_tensor,
    index_bounds,
)

Kernel = Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]


def out_dtype(ins: Instruction) -> torch.dtype:
    return ins.result_specs[0].torch_dtype


def _shape(ins: Instruction) -> tuple[int, ...]:
    return ins.result_specs[0].shape


def _unary(fn) -> Kernel:
    return lambda ins, x: fn(x)


def _binary(fn) -> Kernel:
    return lambda ins, a, b: fn(a, b)


_CMP = {
    "eq": torch.eq,
    "ne": torch.ne,
    "lt": torch.lt,
    "le": torch.le,
    "gt": torch.gt,
    "ge": torch.ge,
}


def _reduce(ins: Instruction, x: torch.Tensor) -> torch.Tensor:
    dims, keep, kind = ins.attrs["dims"], ins.attrs["keepdim"], ins.attrs["kind"]
    if not dims:
        return x.clone()
    if kind == "sum":
        return torch.sum(x, dims, keepdim=keep)
    if kind == "mean":
        return torch.mean(x, dims, keepdim=keep)
    reducer = {"max": torch.amax, "min": torch.amin}.get(kind)
    if reducer is not None:
        return reducer(x, dims, keepdim=keep)
    return torch.any(x, dims, keepdim=keep)


def _layer_norm(ins: Instruction, x, weight, bias) -> torch.Tensor:
    normalized = x.shape[len(x.shape) - ins.attrs["axes"] :]
    return F.layer_norm(x, normalized, weight, bias, ins.attrs["eps"])


def _rms_norm(ins: Instruction, x, weight) -> torch.Tensor:
    return F.rms_norm(x, x.shape[-1:], weight, ins.attrs["eps"])


def _slice(ins: Instruction, x) -> torch.Tensor:
    a = ins.attrs
    index = [slice(None)] * x.dim()
    index[a["dim"]] = slice(a["start"], a["end"], a["step"])
    return x[tuple(index)]


def check_indices(ins: Instruction, source: torch.Tensor, *indices: torch.Tensor) -> None:
    """Raise `IndexOutOfRangeError` for an index outside the range eager accepts (see
    `runtime.program.index_bounds`), before the kernel raises a bare `IndexError`."""
    for bound in index_bounds(ins, source.shape):
        idx = indices[bound.operand - 1]
        if idx.numel():
            lowest, highest = torch.aminmax(idx)
            check_index_range(ins, bound, int(lowest), int(highest))


def _embedding(ins: Instruction, weight, idx) -> torch.Tensor:
    check_indices(ins, weight, idx)
    return F.embedding(idx, weight)


def _index(ins: Instruction, x, *indices) -> torch.Tensor:
    check_indices(ins, x, *indices)
    key: list = [slice(None)] * x.dim()
    for d, idx in zip(ins.attrs["indexed_dims"], indices, strict=True):
        key[d] = idx
    return x[tuple(key)]


def _iota(ins: Instruction) -> torch.Tensor:
    (n,) = _shape(ins)
    start, step = ins.attrs["start"], ins.attrs["step"]
    dtype = out_dtype(ins)
    if not dtype.is_floating_point:
        start, step = int(start), int(step)
    return (
        torch.arange(n, dtype=torch.float64 if dtype.is_floating_point else dtype)
        .mul(step)
        .add(start)
        .to(dtype)
    )


def _conv(ins: Instruction, x, weight, bias) -> torch.Tensor:
    return F.conv1d(x, weight, bias, padding=ins.attrs["padding"], groups=x.shape[1])


def _scan(ins: Instruction, u, delta, a, b, c, d_skip, z, delta_bias, h0=None):
    from core.custom_ops import selective_scan_reference

    return selective_scan_reference(
        u, delta, a, b, c, d_skip, z, delta_bias, ins.attrs["delta_softplus"], h0
    )


def _ssd_scan(ins: Instruction, x, dt, a, b, c, d_skip, h0=None):
    from core.ssd import ssd_scan_reference

    return ssd_scan_reference(x, dt, a, b, c, d_skip, ins.attrs["chunk"], h0)


def _moe_router(ins: Instruction, logits, selection_bias):
    names = ("top_k", "scoring", "normalize", "groups", "topk_groups", "scale")
    return moe.moe_router_reference(logits, selection_bias, *(ins.attrs[n] for n in names))


def _moe_dispatch(ins: Instruction, x, indices, weights):
    return moe.moe_dispatch(x, indices, weights, _shape(ins)[0], ins.attrs["capacity"])


def _grouped_matmul(ins: Instruction, xs, w, bias) -> torch.Tensor:
    return moe.grouped_matmul(xs, w, bias, bool(ins.attrs["transpose_rhs"]))


def _moe_combine(ins: Instruction, ys, gates, slots) -> torch.Tensor:
    return moe.moe_combine(ys, gates, slots, _shape(ins)[0])


def _matmul(ins: Instruction, a, b, bias) -> torch.Tensor:
    out = torch.matmul(a, b)
    return out if bias is None else out + bias


def _attention(ins: Instruction, q, k, v, mask) -> torch.Tensor:
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        is_causal=ins.attrs["is_causal"],
        scale=ins.attrs["scale"],
        enable_gqa=q.shape[-3] != k.shape[-3],
    )


def _tile_matmul(ins: Instruction, x, w, bias) -> torch.Tensor:
    """`wse.tile_matmul` (placement): stacked per-PE-row partial products, or the Cannon product."""
    w = w.t() if ins.attrs["transpose_rhs"] else w
    if ins.attrs["dataflow"] == "cannon":
        out = torch.matmul(x, w)
        return out if bias is None else out + bias
    parts, k = _shape(ins)[0], w.shape[0]
    size = -(-k // parts)
    xs = F.pad(x, (0, parts * size - k)).unflatten(-1, (parts, size))
    ws = F.pad(w, (0, 0, 0, parts * size - k)).unflatten(0, (parts, size))
    out = torch.einsum("...mps,psn->p...mn", xs, ws)
    if bias is not None:
        out[0] += bias
    return out


KERNELS: OpTable[Kernel] = OpTable(
    "reference",
    {
        "constant": lambda ins: constant_tensor(ins.attrs["value"], ins.result_specs[0]),
        "iota": _iota,
        "neg": _unary(torch.neg),
        "exp": _unary(torch.exp),
        "log": _unary(torch.log),
        "log1p": _unary(torch.log1p),
        "sqrt": _unary(torch.sqrt),
        "rsqrt": _unary(torch.rsqrt),
        "reciprocal": _unary(torch.reciprocal),
        "abs": _unary(torch.abs),
        "sin": _unary(torch.sin),
        "cos": _unary(torch.cos),
        "tanh": _unary(torch.tanh),
        "erf": _unary(torch.erf),
        "sigmoid": _unary(torch.sigmoid),
        "relu": _unary(torch.relu),
        "silu": _unary(F.silu),
        "not": _unary(torch.bitwise_not),
        "gelu": lambda ins, x: F.gelu(x, approximate=ins.attrs["approximate"]),
        "softplus": lambda ins, x: F.softplus(x, ins.attrs["beta"], ins.attrs["threshold"]),
        "convert": lambda ins, x: x.to(out_dtype(ins)),
        "add": _binary(torch.add),
        "sub": _binary(torch.sub),
        "mul": _binary(torch.mul),
        "div": _binary(torch.div),
        "pow": _binary(torch.pow),
        "maximum": _binary(torch.maximum),
        "minimum": _binary(torch.minimum),
        "and": _binary(torch.bitwise_and),
        "or": _binary(torch.bitwise_or),
        "cmp": lambda ins, a, b: _CMP[ins.attrs["predicate"]](a, b),
        "where": lambda ins, c, a, b: torch.where(c, a, b),
        "matmul": _matmul,
        "attention": _attention,
        "reduce": _reduce,
        "argmax": lambda ins, x: torch.argmax(x, ins.attrs["dim"]),
        "cumsum": lambda ins, x: torch.cumsum(x, ins.attrs["dim"], dtype=out_dtype(ins)),
        "softmax": lambda ins, x: torch.softmax(x, ins.attrs["dim"]),
        "layer_norm": _layer_norm,
        "rms_norm": _rms_norm,
        "reshape": lambda ins, x: x.reshape(_shape(ins)),
        "transpose": lambda ins, x: x.permute(ins.attrs["permutation"]),
        "fabric_permute": lambda ins, x: x.permute(ins.attrs["permutation"]),
        "broadcast": lambda ins, x: x.expand(_shape(ins)),
        "slice": _slice,
        "concat": lambda ins, a, b: torch.cat((a, b), ins.attrs["dim"]),
        "embedding": _embedding,
        "index": _index,
        "depthwise_conv1d": _conv,
        "selective_scan": _scan,
        "ssd_scan": _ssd_scan,
        "moe_router": _moe_router,
        "moe_dispatch": _moe_dispatch,
        "grouped_matmul": _grouped_matmul,
        "moe_combine": _moe_combine,
        # -- placement and fabric ops (compiler/passes): moves keep the value, reduce sums partials
        "weight_tiles": lambda ins, w: w,
        "fabric_broadcast": lambda ins, x: x,
        "fabric_shift": lambda ins, x: x,
        "fabric_stream": lambda ins, x: x,
        "host_transfer": lambda ins, x: x,
        "tile_matmul": _tile_matmul,
        "fabric_reduce": lambda ins, partials: partials.sum(0),
    },
)


def execute(
    program: Program,
    weights: Mapping[str, torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    hook: Callable[[Instruction, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None,
) -> list[torch.Tensor]:
    """Run `program` on CPU tensors; `hook(instruction, results)` may inspect or replace
    every instruction's results (verification feeds reference values through it)."""
    env: dict[int, torch.Tensor] = dict(enumerate(inputs))
    last_use = program.last_uses()
    for index, ins in enumerate(program.instructions):
        if ins.op == "param":
            name = ins.attrs["sym_name"]
            if name not in weights:
                raise ExecutionError(f"weight {name!r} is missing from the weights given")
            results: tuple[torch.Tensor, ...] = (weights[name],)
        else:
            args = [None if v is None else env[v] for v in ins.operands]
            out = KERNELS[ins.op](ins, *args)
            results = out if isinstance(out, tuple) else (out,)
        if hook is not None:
            results = hook(ins, results)
        env.update(zip(ins.results, results, strict=True))
        for v in ins.operands:
            if v is not None and last_use.get(v) == index:
                env.pop(v, None)
    return [env[v] for v in program.outputs]


import runtime.reference_general  # noqa: E402, F401  (registers the general ops' kernels)
