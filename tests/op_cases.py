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


POS = dict(low=0.1, high=3.0)


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
        torch.addmm,
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
        lambda a, w: F.rms_norm(a, (8,), w, 1e-6) + F.rms_norm(a, (8,)),
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

# Rules that export never produces on its own but that appear in real graphs: the
# assertions `torch.export` inserts (checked by every model test) need no numerics case.
NO_NUMERICS = {aten._assert_tensor_metadata.default, aten._assert_scalar.default}
