"""Complex-valued tensors become real (re, im) pairs before lowering (`compiler.complex_pairs`):
complex rotary embeddings (DeepSeek-V2, Llama-4) compile and match eager PyTorch."""

from __future__ import annotations

import families
import pytest
import torch
from torch import nn

import compiler
from core.errors import ComplexValueError, UnsupportedOperatorError


class ComplexRope(nn.Module):
    """HF's complex RoPE: `polar` frequencies times the query viewed as complex pairs."""

    def __init__(self, dim: int = 8):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x, positions):
        freqs = positions[..., None].float() * self.inv_freq
        freqs_cis = torch.polar(torch.ones_like(freqs), freqs) * 0.5
        x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(x_ * freqs_cis.unsqueeze(1)).flatten(3).type_as(x)


class ComplexArithmetic(nn.Module):
    """Every other rewrite: `complex` (broadcasting), add/sub (with alpha), a complex scalar,
    casts both ways, `cat` and shape ops on complex values."""

    def forward(self, a, b):
        z = torch.complex(a, b)
        w = torch.view_as_complex(torch.stack([b, a], dim=-1)).transpose(0, 1)[:, :3]
        real = a.transpose(0, 1)[:, :3].to(torch.complex64)
        y = (z.transpose(0, 1)[:, 1:4] - w) * (0.5 - 2j) + torch.add(real, w, alpha=3.0)
        y = torch.cat([y, w.to(torch.complex128).to(torch.complex64)], dim=1) - 1.5
        y = y * torch.complex(a[:4, :1], b[:1, :1] * 2)  # halves broadcast to (4, 1)
        return torch.view_as_real(y).reshape(y.shape[0], -1), y.to(torch.float32)


def _inputs(*shapes):
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(shape, generator=gen) for shape in shapes)


def test_complex_rope_matches_eager_and_leaves_no_complex_op():
    model = ComplexRope()
    (x,) = _inputs((2, 3, 5, 8))
    positions = torch.arange(5).expand(2, 5)
    compiled = compiler.compile(model, (x, positions), target=None)
    expected = model(x, positions)
    torch.testing.assert_close(compiled(x, positions), expected, rtol=1e-6, atol=1e-6)
    # the first pair (positions 0) is x itself, scaled by 0.5
    torch.testing.assert_close(expected[:, :, 0], 0.5 * x[:, :, 0], rtol=1e-6, atol=1e-7)
    for gone in ("aten.polar", "aten.view_as_complex", "aten.view_as_real", "complex<"):
        assert gone not in compiled.mlir
    again = compiler.compile(model, (x, positions), target=None)
    assert again.mlir == compiled.mlir  # deterministic


@pytest.mark.filterwarnings("ignore:Casting complex values to real")  # the cast it tests
def test_complex_arithmetic_matches_eager():
    model = ComplexArithmetic()
    a, b = _inputs((5, 4), (5, 4))
    compiled = compiler.compile(model, (a, b), target=None)
    for actual, expected in zip(compiled(a, b), model(a, b), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


class _ComplexExp(nn.Module):
    def forward(self, x):
        exp = torch.view_as_real(torch.exp(torch.view_as_complex(x)))
        return exp + torch.special.bessel_j0(x)  # listed too: every unsupported op at once


class _ComplexOutput(nn.Module):
    def forward(self, x):
        return torch.view_as_complex(x) * 2.0


@pytest.mark.parametrize(
    ("model", "op"), [(_ComplexExp(), "aten.exp.default"), (_ComplexOutput(), "output")]
)
def test_a_complex_value_without_a_rewrite_is_a_named_error(model, op):
    (x,) = _inputs((3, 2))
    with pytest.raises(ComplexValueError, match=op) as info:
        compiler.compile(model, (x,), target=None)
    assert isinstance(info.value, UnsupportedOperatorError)
    assert "real (re, im) pairs" in str(info.value) and "test_complex.py:" in str(info.value)
    ops = {problem.op for problem in info.value.problems}
    assert ops == ({op, "aten.special_bessel_j0.default"} if "exp" in op else {op})


@pytest.mark.parametrize("family", ["deepseek_v2", "llama4_text"])
def test_complex_rope_family_matches_eager(family):
    actual, expected = families.tiny_logits(family)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.05  # logits that say something
