"""Golden records, one per lowering rule: the ATen overload, a function that exercises it,
sample inputs, and tolerances, side by side. `tests/test_ops.py` runs every record against
eager PyTorch and proves every registered rule has one."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import core.moe  # noqa: F401  (registers the torch.ops.wafer.moe_* ops)
import core.ssd  # noqa: F401  (registers torch.ops.wafer.ssd_scan)
import models  # noqa: F401  (registers torch.ops.wafer.selective_scan)

aten = torch.ops.aten


@dataclass(frozen=True)
class OpCase:
    """`fn(*inputs(dtype))` must compile to a program using `target` and match eager."""

    target: object
    fn: Callable
    inputs: Callable[[torch.dtype], tuple]
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    atol: float = 1e-5

    @property
    def name(self) -> str:
        return (
            getattr(self.target, "__name__", None)
            if self.target is operator.getitem
            else str(self.target)
        )


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand(*shape, low: float = -2.0, high: float = 2.0, seed: int = 0):
    """Uniform random inputs of `shape`, as a function of dtype."""
    return lambda dtype: ((torch.rand(shape, generator=_g(seed)) * (high - low) + low).to(dtype),)


def rand2(a, b, low=-2.0, high=2.0):
    """Two uniform inputs of shapes `a` and `b`."""
    return lambda dtype: (
        rand(*a, low=low, high=high, seed=1)(dtype) + rand(*b, low=low, high=high, seed=2)(dtype)
    )


def ints(*shape, high=16):
    return lambda dtype: (torch.randint(0, high, shape, generator=_g(3)),)


def ints2(a, b, high=16):
    """Two integer inputs of shapes `a` and `b` (the dtype argument is unused)."""
    return lambda dtype: tuple(
        torch.randint(0, high, shape, generator=_g(seed)) for shape, seed in ((a, 1), (b, 2))
    )


POS = dict(low=0.1, high=3.0)
INT = (torch.float32,)  # integer inputs whatever the dtype: run once
# both branches of erfinv's approximation, +-1 and beyond
ERFINV_POINTS = torch.tensor([-1.0, -0.9999, -0.998, -0.5, 0.0, 0.3, 0.95, 0.99999, 1.0, 1.5])


def _compare(predicate: str, a, b):
    """A comparison, cast back to the input dtype so results compare as numbers."""
    return getattr(torch, predicate)(a, b).to(a.dtype)


CASES: list[OpCase] = [
    # elementwise binary, with broadcasting and scalars
    OpCase(aten.add.Tensor, lambda a, b: a + b, rand2((4, 8), (8,))),
    OpCase(aten.add.Scalar, lambda a: aten.add.Scalar(a, 1.5), rand(4, 8)),
    OpCase(aten.sub.Tensor, lambda a, b: torch.sub(a, b, alpha=2), rand2((4, 1), (1, 8))),
    OpCase(aten.sub.Scalar, lambda a: aten.sub.Scalar(a, 0.5), rand(4, 8)),
    OpCase(aten.mul.Tensor, lambda a, b: a * b, rand2((2, 4, 8), (4, 1))),
    OpCase(aten.mul.Scalar, lambda a: aten.mul.Scalar(a, 3.0), rand(4, 8)),
    OpCase(aten.div.Tensor, lambda a, b: a / b, rand2((4, 8), (8,), **POS)),
    OpCase(aten.div.Scalar, lambda a: aten.div.Scalar(a, 4.0), rand(4, 8)),
    OpCase(aten.pow.Tensor_Scalar, lambda a: a.pow(2), rand(4, 8)),
    OpCase(aten.pow.Tensor_Tensor, lambda a, b: a.pow(b), rand2((4, 8), (8,), **POS)),
    OpCase(aten.pow.Scalar, lambda a: torch.pow(2.0, a), rand(4, 8)),
    OpCase(aten.maximum.default, torch.maximum, rand2((4, 8), (4, 8))),
    OpCase(aten.minimum.default, torch.minimum, rand2((4, 8), (1, 8))),
    OpCase(aten.clamp.default, lambda a: a.clamp(-0.5, 0.75), rand(4, 8)),
    # comparisons and logic
    *[
        OpCase(getattr(aten, p).Tensor, functools.partial(_compare, p), rand2((4, 8), (8,)))
        for p in ("eq", "ne", "lt", "le", "gt", "ge")
    ],
    *[
        OpCase(getattr(aten, p).Scalar, functools.partial(_compare, p, b=0.25), rand(4, 8))
        for p in ("eq", "ne", "lt", "le", "gt", "ge")
    ],
    OpCase(
        aten.bitwise_and.Tensor, lambda a, b: ((a > 0) & (b > 0)).to(a.dtype), rand2((4, 8), (8,))
    ),
    OpCase(
        aten.bitwise_or.Tensor, lambda a, b: ((a > 0) | (b > 0)).to(a.dtype), rand2((4, 8), (8,))
    ),
    OpCase(
        aten.logical_and.default,
        lambda a, b: torch.logical_and(a > 0, b > 0).to(a.dtype),
        rand2((4, 8), (8,)),
    ),
    OpCase(
        aten.logical_or.default,
        lambda a, b: torch.logical_or(a > 0, b > 0).to(a.dtype),
        rand2((4, 8), (8,)),
    ),
    OpCase(aten.logical_not.default, lambda a: torch.logical_not(a > 0).to(a.dtype), rand(4, 8)),
    OpCase(aten.bitwise_not.default, lambda a: (~(a > 0)).to(a.dtype), rand(4, 8)),
    # integer bitwise arithmetic (CPM-Ant's attention mask: int64 | bool)
    OpCase(aten.bitwise_and.Tensor, operator.and_, ints2((4, 8), (8,)), dtypes=INT),
    OpCase(aten.bitwise_or.Tensor, lambda a, b: a | (b > 7), ints2((4, 8), (8,)), dtypes=INT),
    OpCase(aten.bitwise_xor.Tensor, operator.xor, ints2((4, 8), (8,)), dtypes=INT),
    OpCase(aten.bitwise_not.default, operator.invert, ints(4, 8), dtypes=INT),
    OpCase(aten.where.self, lambda a, b: torch.where(a > 0, a, b), rand2((4, 8), (8,))),
    # unary math and activations
    OpCase(aten.neg.default, torch.neg, rand(4, 8)),
    OpCase(aten.exp.default, torch.exp, rand(4, 8)),
    OpCase(aten.log.default, torch.log, rand(4, 8, **POS)),
    OpCase(aten.log1p.default, torch.log1p, rand(4, 8, **POS)),
    OpCase(aten.sqrt.default, torch.sqrt, rand(4, 8, **POS)),
    OpCase(aten.rsqrt.default, torch.rsqrt, rand(4, 8, **POS)),
    OpCase(aten.reciprocal.default, torch.reciprocal, rand(4, 8, **POS)),
    OpCase(aten.abs.default, torch.abs, rand(4, 8)),
    OpCase(aten.sin.default, torch.sin, rand(4, 8)),
    OpCase(aten.cos.default, torch.cos, rand(4, 8)),
    OpCase(aten.tanh.default, torch.tanh, rand(4, 8)),
    OpCase(aten.erf.default, torch.erf, rand(4, 8)),
    OpCase(aten.sigmoid.default, torch.sigmoid, rand(4, 8)),
    OpCase(aten.relu.default, torch.relu, rand(4, 8)),
    OpCase(aten.silu.default, F.silu, rand(4, 8)),
    OpCase(aten.gelu.default, lambda a: F.gelu(a, approximate="tanh") + F.gelu(a), rand(4, 8)),
    OpCase(aten.softplus.default, lambda a: F.softplus(a, beta=2.0, threshold=1.0), rand(4, 8)),
    OpCase(aten._to_copy.default, lambda a: a.to(torch.float16).to(a.dtype) + a.long(), rand(4, 8)),
    # matrix products
    OpCase(aten.mm.default, torch.mm, rand2((8, 16), (16, 4)), atol=1e-4),
    OpCase(aten.bmm.default, torch.bmm, rand2((2, 8, 16), (2, 16, 4)), atol=1e-4),
    OpCase(
        aten.addmm.default,
        lambda b, x, w: torch.addmm(b, x, w) + torch.addmm(b, x, w, beta=0.5, alpha=2),
        lambda d: rand(4)(d) + rand2((8, 16), (16, 4))(d),
        atol=1e-4,
    ),
    OpCase(
        aten.scaled_dot_product_attention.default,
        lambda q, k, v: (
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            + F.scaled_dot_product_attention(
                q, k, v, attn_mask=torch.ones(8, 8).tril().bool(), enable_gqa=True
            )
        ),
        lambda d: (
            rand(1, 4, 8, 16, seed=1)(d)
            + rand(1, 2, 8, 16, seed=2)(d)
            + rand(1, 2, 8, 16, seed=3)(d)
        ),
        atol=1e-4,
    ),
    # reductions
    OpCase(aten.sum.dim_IntList, lambda a: a.sum((0, 2), keepdim=True), rand(3, 4, 5), atol=1e-4),
    OpCase(aten.mean.dim, lambda a: a.mean(-1), rand(3, 4, 5)),
    OpCase(aten.mean.default, lambda a: a.mean(), rand(3, 4)),
    OpCase(aten.amax.default, lambda a: a.amax(1), rand(3, 4, 5)),
    OpCase(aten.amin.default, lambda a: a.amin((0, 1), keepdim=True), rand(3, 4, 5)),
    OpCase(aten.any.dim, lambda a: (a > 1.5).any(1).to(a.dtype), rand(3, 4)),
    OpCase(aten.any.dims, lambda a: (a > 1.5).any((0, 1)).to(a.dtype), rand(3, 4, 2)),
    OpCase(aten.any.default, lambda a: (a > 1.5).any().to(a.dtype), rand(3, 4)),
    OpCase(
        aten.argmax.default, lambda a: a.argmax(-1, keepdim=True) + a.argmax(0)[None], rand(4, 8)
    ),
    OpCase(aten.cumsum.default, lambda a: a.cumsum(1), rand(3, 6), atol=1e-4),
    # normalisation
    OpCase(aten._softmax.default, lambda a: torch.softmax(a, -1) + torch.softmax(a, 0), rand(4, 8)),
    OpCase(
        aten.native_layer_norm.default,
        lambda a, w: F.layer_norm(a, (8,), w, w * 0.5, 1e-5) + F.layer_norm(a, (4, 8)),
        rand2((2, 4, 8), (8,)),
        atol=1e-4,
    ),
    OpCase(
        aten.rms_norm.default,
        lambda a, w: (
            F.rms_norm(a, (8,), w, 1e-6)
            + F.rms_norm(a, (8,))
            + F.rms_norm(a, (4, 8), w.expand(4, 8), 1e-6)
        ),
        rand2((2, 4, 8), (8,)),
        atol=1e-4,
    ),
    # layout
    OpCase(aten.view.default, lambda a: a.view(8, 4) * 2, rand(4, 8)),
    OpCase(aten.unsqueeze.default, lambda a: a.unsqueeze(1) * 2, rand(4, 8)),
    OpCase(aten.squeeze.dims, lambda a: a.squeeze(1) * 2, rand(4, 1, 8)),
    OpCase(aten.permute.default, lambda a: a.permute(2, 0, 1) * 2, rand(2, 3, 4)),
    OpCase(aten.expand.default, lambda a: a.expand(3, 4, 8) * 2, rand(4, 1)),
    OpCase(aten.slice.Tensor, lambda a: a[1:3, ::2] * 2 + a[-2:, -4:], rand(4, 8)),
    OpCase(aten.select.int, lambda a: a[:, -1] * 2, rand(4, 8)),
    OpCase(aten.split_with_sizes.default, lambda a: torch.split(a, [3, 5], 1)[1] * 2, rand(4, 8)),
    OpCase(aten.cat.default, lambda a, b: torch.cat([a, b, a], 1), rand2((4, 8), (4, 2))),
    OpCase(aten.clone.default, lambda a: aten.clone(a) * 2, rand(4, 8)),
    OpCase(aten.alias.default, lambda a: aten.alias(a) * 2, rand(4, 8)),
    OpCase(operator.getitem, lambda a: torch.split(a, 4, 1)[0] * 2, rand(4, 8)),
    # creation
    OpCase(aten.arange.start_step, lambda a: a + torch.arange(2, 10, 1, dtype=a.dtype), rand(4, 8)),
    OpCase(aten.full.default, lambda a: a + torch.full((4, 8), -0.5, dtype=a.dtype), rand(4, 8)),
    OpCase(aten.full_like.default, lambda a: torch.full_like(a, 0.25) * a, rand(4, 8)),
    OpCase(aten.scalar_tensor.default, lambda a: torch.where(a > 0, a, -1.0), rand(4, 8)),
    # gathers
    OpCase(
        aten.embedding.default,
        lambda w, i: F.embedding(i, w),
        lambda d: rand(16, 8)(d) + ints(2, 5)(d),
    ),
    OpCase(
        aten.index.Tensor,
        lambda a, i: a[i[:, None], i[None, :]].sum() + a[:, i],
        lambda d: rand(8, 8)(d) + (torch.tensor([3, 0, 7, 1]),),
    ),
    OpCase(
        aten.index_select.default,
        lambda a, i: a.index_select(1, i),
        lambda d: rand(4, 8)(d) + (torch.tensor([7, 2, 2]),),
    ),
    # convolution
    OpCase(
        aten.convolution.default,
        lambda x, w, b: F.conv1d(x, w, b, padding=3, groups=8)[..., :10],
        lambda d: rand(2, 8, 10)(d) + rand(8, 1, 4, seed=5)(d) + rand(8, seed=6)(d),
        atol=1e-4,
    ),
]

# Mamba's scan (the custom op registered by `models`), with every optional operand given.
CASES.append(
    OpCase(
        torch.ops.wafer.selective_scan.default,
        lambda u, dt, a, b, c, d, z, bias: (
            torch.ops.wafer.selective_scan(u, dt, -torch.exp(a), b, c, d, z, bias, True)[0]
            + torch.ops.wafer.selective_scan(u, dt, -torch.exp(a), b, c, None, None, None, False)[
                1
            ].sum()
        ),
        lambda dtype: tuple(
            rand(*shape, seed=i)(dtype)[0]
            for i, shape in enumerate(
                [(2, 6, 10), (2, 6, 10), (6, 4), (2, 4, 10), (2, 4, 10), (6,), (2, 6, 10), (6,)]
            )
        ),
        atol=1e-4,
    )
)

# Mamba-2's SSD scan (`core.ssd`), with groups, the skip and an initial state; chunk 4 over 10.
CASES.append(
    OpCase(
        torch.ops.wafer.ssd_scan.default,
        lambda x, dt, a, b, c, d, h0: (
            torch.ops.wafer.ssd_scan(x, dt.abs(), -torch.exp(a), b, c, d, 4, h0)[0]
            + torch.ops.wafer.ssd_scan(x, dt.abs(), -torch.exp(a), b, c, None, 4, None)[1].sum()
        ),
        lambda dtype: tuple(
            rand(*shape, seed=i)(dtype)[0]
            for i, shape in enumerate(
                [(2, 10, 4, 3), (2, 10, 4), (4,), (2, 10, 2, 5), (2, 10, 2, 5), (4,), (2, 4, 3, 5)]
            )
        ),
        atol=1e-4,
    )
)

# Rules that export never produces on its own but that appear in real graphs: the
# assertions `torch.export` inserts (checked by every model test) need no numerics case.
NO_NUMERICS = {aten._assert_tensor_metadata.default, aten._assert_scalar.default}

# The general ops (#11): rounding, inverse trigonometry, gathers and scatters, padding,
# sorting, statistics, group norm and general 1-D convolution.
F32 = (torch.float32,)
_UNARY_GENERAL = {
    aten.floor.default: (torch.floor, {}),
    aten.ceil.default: (torch.ceil, {}),
    aten.trunc.default: (torch.trunc, {}),
    aten.round.default: (torch.round, {}),
    aten.sign.default: (torch.sign, {}),
    aten.tan.default: (torch.tan, dict(low=-1.0, high=1.0)),
    aten.asin.default: (torch.asin, dict(low=-0.9, high=0.9)),
    aten.acos.default: (torch.acos, dict(low=-0.9, high=0.9)),
    aten.atan.default: (torch.atan, {}),
    aten.sinh.default: (torch.sinh, {}),
    aten.cosh.default: (torch.cosh, {}),
    aten.asinh.default: (torch.asinh, {}),
    aten.acosh.default: (torch.acosh, dict(low=1.1, high=3.0)),
    aten.atanh.default: (torch.atanh, dict(low=-0.9, high=0.9)),
    aten.expm1.default: (torch.expm1, {}),
    aten.log2.default: (torch.log2, POS),
    aten.log10.default: (torch.log10, POS),
    aten.exp2.default: (torch.exp2, {}),
}
CASES += [
    OpCase(target, fn, rand(4, 8, **kw), dtypes=F32, atol=1e-4)
    for target, (fn, kw) in _UNARY_GENERAL.items()
]
CASES += [
    OpCase(aten.fmod.Tensor, torch.fmod, rand2((4, 8), (8,), **POS), dtypes=F32),
    OpCase(aten.fmod.Scalar, lambda a: torch.fmod(a, 0.75), rand(4, 8), dtypes=F32),
    OpCase(aten.remainder.Tensor, torch.remainder, rand2((4, 8), (8,), **POS), dtypes=F32),
    OpCase(aten.remainder.Scalar, lambda a: torch.remainder(a, 0.75), rand(4, 8), dtypes=F32),
    OpCase(aten.atan2.default, torch.atan2, rand2((4, 8), (8,)), dtypes=F32),
    OpCase(
        aten.logical_xor.default,
        lambda a, b: torch.logical_xor(a > 0, b > 0).to(a.dtype),
        rand2((4, 8), (8,)),
    ),
    OpCase(
        aten.bitwise_xor.Tensor, lambda a, b: ((a > 0) ^ (b > 0)).to(a.dtype), rand2((4, 8), (8,))
    ),
    OpCase(
        aten.isnan.default,
        lambda a: torch.isnan(torch.log(a)).to(a.dtype) + a,
        rand(4, 8),
    ),
    OpCase(aten.isinf.default, lambda a: torch.isinf(1 / a.round()).to(a.dtype), rand(4, 8)),
    OpCase(aten.clamp.Tensor, lambda a, b: a.clamp(min=b, max=b + 1), rand2((4, 8), (8,))),
    OpCase(
        aten.div.Tensor_mode,
        lambda a, b: (
            torch.div(a, b, rounding_mode="floor")
            + torch.div(a, b, rounding_mode="trunc")
            + torch.div(a.long(), 3, rounding_mode="floor")
        ),
        rand2((4, 8), (8,), low=-7.0, high=7.0),
        dtypes=F32,
    ),
    # gathers and scatters
    OpCase(
        aten.gather.default,
        lambda a, i: torch.gather(a, 1, i) + torch.gather(a, 0, i % 4),
        lambda d: rand(4, 8)(d) + ints(4, 5, high=8)(d),
    ),
    OpCase(
        aten.scatter.src,
        lambda a, i, s: torch.scatter(a, 1, i, s),
        lambda d: (
            rand(4, 8)(d)
            + (torch.tensor([[3, 0], [7, 1], [2, 5], [6, 4]]),)
            + rand(5, 3, seed=4)(d)
        ),
    ),
    OpCase(
        aten.scatter.value,
        lambda a, i: torch.scatter(a, 0, i, 1.5),
        lambda d: rand(4, 8)(d) + (torch.tensor([[3, 0, 1], [1, 2, 0]]),),
    ),
    OpCase(
        aten.scatter_add.default,
        lambda a, i, s: torch.scatter_add(a, 1, i, s),
        lambda d: rand(4, 8)(d) + ints(4, 6, high=8)(d) + rand(4, 6, seed=4)(d),
        atol=1e-4,
    ),
    OpCase(
        aten.index_put.default,
        lambda a, i, v: a.index_put((i,), v) + a.index_put((i, i), v[0, 0], accumulate=True),
        lambda d: rand(8, 8)(d) + (torch.tensor([3, 0, 7]),) + rand(3, 8, seed=4)(d),
    ),
    OpCase(
        aten.slice_scatter.default,
        lambda a, s: torch.slice_scatter(a, s, 1, 1, 7, 2),
        lambda d: rand(4, 8)(d) + rand(4, 3, seed=4)(d),
    ),
    OpCase(aten.flip.default, lambda a: a.flip(0, -1) + a.flip(1), rand(4, 8)),
    # layout
    OpCase(
        aten.constant_pad_nd.default,
        lambda a: F.pad(a, (1, 2, -1, 3), value=0.5) * 2,
        rand(2, 4, 8),
    ),
    OpCase(aten.repeat.default, lambda a: a.repeat(2, 1, 3) * 2, rand(4, 8)),
    OpCase(
        aten.copy.default,
        lambda a, b: aten.copy(a, b) * 2,
        rand2((4, 8), (8,)),
    ),
    # creation: an empty tensor with no elements to leave uninitialised
    OpCase(aten.empty.memory_format, lambda a: a + torch.empty(0, 8).sum(0), rand(4, 8)),
    OpCase(
        aten.empty_permuted.default,
        lambda a: a + torch.empty_permuted((0, 8), (1, 0)).sum(0),
        rand(4, 8),
    ),
    OpCase(
        aten.empty_strided.default,
        lambda a: a + torch.empty_strided((0, 8), (8, 1)).sum(0),
        rand(4, 8),
    ),
    # reductions and scans
    OpCase(aten.argmin.default, lambda a: a.argmin(-1, keepdim=True) + a.argmin(), rand(4, 8)),
    OpCase(
        aten.max.dim,
        lambda a: a.max(1).values + a.max(0, keepdim=True)[1].sum(),
        rand(4, 8),
    ),
    OpCase(aten.min.dim, lambda a: a.min(1, keepdim=True)[0] * a.min(0)[1], rand(4, 8)),
    OpCase(aten.max.default, lambda a: a - a.max(), rand(4, 8)),
    OpCase(aten.min.default, lambda a: a - a.min(), rand(4, 8)),
    OpCase(aten.cumprod.default, lambda a: a.cumprod(1), rand(3, 6, low=0.5, high=1.5)),
    OpCase(aten.prod.dim_int, lambda a: a.prod(1, keepdim=True) * a, rand(3, 6, low=0.5, high=1.5)),
    OpCase(aten.prod.default, lambda a: a.prod() * a, rand(3, 4, low=0.7, high=1.3)),
    # sorting and statistics
    OpCase(
        aten.sort.default,
        lambda a: torch.sort(a, 1, descending=True)[0] + torch.sort(a, 0)[1],
        rand(4, 8),
        dtypes=F32,
    ),
    OpCase(
        aten.sort.stable,
        lambda a: torch.sort(a, dim=0, stable=True)[0] * torch.sort(a, stable=True)[1],
        rand(4, 8),
        dtypes=F32,
    ),
    OpCase(
        aten.topk.default,
        lambda a: torch.topk(a, 3)[0] + torch.topk(a, 3, dim=0, largest=False)[1].sum(),
        rand(4, 8),
        dtypes=F32,
    ),
    OpCase(
        aten.var.correction,
        lambda a: a.var(1) + a.var((0, 1), correction=0, keepdim=True).sum(),
        rand(3, 6),
        atol=1e-4,
    ),
    OpCase(
        aten.var_mean.correction,
        lambda a: torch.var_mean(a, 1)[0] * torch.var_mean(a, 1)[1],
        rand(3, 6),
        atol=1e-4,
    ),
    # normalisation and convolution
    OpCase(
        aten._log_softmax.default,
        lambda a: torch.log_softmax(a, -1) + torch.log_softmax(a, 0),
        rand(4, 8),
        atol=1e-4,
    ),
    OpCase(
        aten.native_group_norm.default,
        lambda a, w: F.group_norm(a, 2, w, w * 0.5) + F.group_norm(a, 4),
        lambda d: rand(2, 8, 5)(d) + rand(8, seed=4)(d),
        atol=1e-4,
    ),
]
CONVOLUTION_GENERAL = OpCase(
    aten.convolution.default,
    lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=2, dilation=2, groups=2),
    lambda d: rand(2, 4, 11)(d) + rand(6, 2, 3, seed=5)(d) + rand(6, seed=6)(d),
    atol=1e-4,
)
CASES.append(CONVOLUTION_GENERAL)
CASES += [
    OpCase(aten.hardtanh.default, lambda a: F.hardtanh(a, -0.5, 0.75), rand(4, 8)),
    OpCase(aten.leaky_relu.default, lambda a: F.leaky_relu(a, 0.2), rand(4, 8)),
    OpCase(aten.elu.default, lambda a: F.elu(a, 0.5) + F.selu(a), rand(4, 8), atol=1e-4),
    OpCase(
        aten.linalg_vector_norm.default,
        lambda a: (
            torch.linalg.vector_norm(a, dim=-1)
            + torch.linalg.vector_norm(a, 3, dim=-1)
            + torch.linalg.vector_norm(a, float("inf"), dim=-1)
            + torch.linalg.vector_norm(a, 1)
        ),
        rand(3, 8),
        atol=1e-4,
    ),
]
CASES.append(
    OpCase(
        aten.diagonal.default,
        lambda a: a.diagonal(1, 0, 2) * 2 + a.diagonal(-1, 2, 0),
        rand(4, 3, 5),
    )
)
CASES += [
    OpCase(
        aten.fmax.default,
        lambda a, b: torch.fmax(a, torch.where(b > 1, torch.nan, b)),
        rand2((4, 8), (8,)),
    ),
    OpCase(
        aten.fmin.default,
        lambda a, b: torch.fmin(torch.where(a > 1, torch.nan, a), b),
        rand2((4, 8), (8,)),
    ),
    OpCase(aten.hypot.default, torch.hypot, rand2((4, 8), (8,)), dtypes=F32),
    OpCase(aten.erfc.default, torch.erfc, rand(4, 8), dtypes=F32),
    OpCase(aten.erfinv.default, torch.erfinv, lambda d: (ERFINV_POINTS.to(d),)),
    OpCase(
        aten.addmv.default,
        lambda v, m, x: torch.addmv(v, m, x, beta=0.5, alpha=2),
        lambda d: rand(4)(d) + rand2((4, 8), (8,))(d),
        atol=1e-4,
    ),
    OpCase(
        aten.addbmm.default,
        lambda b, x, y: torch.addbmm(b, x, y),
        lambda d: rand(4, 5)(d) + rand2((3, 4, 6), (3, 6, 5))(d),
        atol=1e-4,
    ),
]


def _moe_layer(x, logits, bias, w_up, b_up, w_down):
    """Mixture of experts through Wafer's four MoE ops: top-2 of 4 experts, capacity = tokens."""
    weights, indices = torch.ops.wafer.moe_router(logits, bias, 2, "topk_softmax", True)
    xs, gates, slots = torch.ops.wafer.moe_dispatch(x, indices, weights, 4, x.shape[0])
    hidden = F.silu(torch.ops.wafer.grouped_matmul(xs, w_up, b_up, True))
    ys = torch.ops.wafer.grouped_matmul(hidden, w_down, None, False)
    return torch.ops.wafer.moe_combine(ys, gates, slots, x.shape[0])


# The MoE ops (`core.moe`), one case per op over the same layer: every op is in its program.
CASES.extend(
    OpCase(
        target,
        _moe_layer,
        lambda dtype: tuple(
            rand(*shape, seed=i)(dtype)[0]
            for i, shape in enumerate([(6, 8), (6, 4), (4,), (4, 5, 8), (4, 5), (4, 5, 8)])
        ),
        atol=1e-4,
    )
    for target in (
        torch.ops.wafer.moe_router.default,
        torch.ops.wafer.moe_dispatch.default,
        torch.ops.wafer.grouped_matmul.default,
        torch.ops.wafer.moe_combine.default,
    )
)
# sliding windows (Inkling-2's token-mixing convolution): overlapping taps and, with step ==
# size, whole windows as a reshape
CASES.append(
    OpCase(
        aten.unfold.default,
        lambda a: a.unfold(-1, 3, 2) * 2 + a.unfold(0, 2, 2).sum(),
        rand(4, 9),
    )
)
