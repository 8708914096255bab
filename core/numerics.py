"""How close to eager PyTorch is close enough: the one set of dtype-aware tolerances and errors.

Two judgements, documented in docs/numerics.md:

- per op (`compiler.verify`): elementwise `|a - e| <= rtol * |e| + atol * max|e|` at the
  `OP_TOLERANCES` of the least precise dtype involved (`ACCUMULATED_FACTOR` times that where
  the program's own values flow), reported as max abs, relative and ULP errors (`op_error`);
- whole outputs (tests, benchmarks): `max |a - e| / max(1, |e|)` (`output_error`) within the
  `OUTPUT_TOLERANCES` of the dtype the model computes in (`check_output`).

It needs torch only, so the runtime-only GPU check (benchmarks/gpu_fallback.py) uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class Tolerance:
    """`|actual - expected| <= rtol * |expected| + atol * max|expected|`, elementwise."""

    rtol: float
    atol: float


# A few units of roundoff for elementwise ops, and for reductions over K <= a few thousand.
OP_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(1e-10, 1e-12),
    torch.float32: Tolerance(1e-4, 1e-5),
    torch.float16: Tolerance(4e-3, 2e-3),
    torch.bfloat16: Tolerance(3e-2, 1.6e-2),
}
ACCUMULATED_FACTOR = 8  # accumulated values carry the rounding of every op before them

# Max `output_error` of a whole model's outputs: fp32 is near-exact because the reference
# runtime uses eager's kernels; half types allow rounding flips that grow through the layers.
OUTPUT_TOLERANCES: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-3,
}
# Above these an output is a gross mismatch (the GPU check), unless the model amplifies rounding.
GROSS_OUTPUT_ERRORS: dict[torch.dtype, float] = {torch.float32: 1e-2, torch.bfloat16: 5e-1}


class OpError(NamedTuple):
    """One op's result against its reference: max abs, relative and ULP-of-dtype errors."""

    max_abs: float
    max_rel: float
    max_ulp: float
    passed: bool


def mantissa_bits(dtype: torch.dtype) -> int:
    """Explicit mantissa bits of a float dtype (52, 23, 10, 7 for f64, f32, f16, bf16)."""
    return round(-math.log2(torch.finfo(dtype).eps))


def op_error(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, factor: float = 1
) -> OpError:
    """`actual` against `expected`, judged at `factor` times the tolerance of `dtype`.

    NaN positions and infinities must match; integer and bool results must be equal (their
    errors count the elements that differ). The ULP is `2^(floor(log2 |e|) - mantissa bits)`.
    """
    if not expected.dtype.is_floating_point and not actual.dtype.is_floating_point:
        wrong = int((actual != expected).sum())
        return OpError(float(wrong), float(wrong), float(wrong), wrong == 0)
    a, e = actual.double(), expected.double()
    nan_ok = torch.equal(a.isnan(), e.isnan())
    inf = e.isinf()
    inf_ok = torch.equal(a[inf], e[inf])
    finite = e.isfinite() & a.isfinite()
    a, e = a[finite], e[finite]
    if e.numel() == 0:
        return OpError(0.0, 0.0, 0.0, nan_ok and inf_ok)
    err = (a - e).abs()
    tol = OP_TOLERANCES.get(dtype, OP_TOLERANCES[torch.float32])
    scale = e.abs().max().item()
    bound = factor * (tol.rtol * e.abs() + tol.atol * max(scale, 1e-30))
    ulp = torch.exp2(torch.floor(torch.log2(e.abs().clamp(min=2.0**-126))) - mantissa_bits(dtype))
    return OpError(
        err.max().item(),
        (err / e.abs().clamp(min=1e-30)).max().item(),
        (err / ulp).max().item(),
        bool(nan_ok and inf_ok and (err <= bound).all()),
    )


def output_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max `|actual - expected| / max(1, |expected|)` over `expected`'s finite elements, in
    float64 on `expected`'s device; inf when the shapes, the NaN positions, the infinities or
    (for integer and bool outputs) any element differ."""
    actual = actual.to(expected.device)
    if actual.shape != expected.shape:
        return math.inf
    if not expected.dtype.is_floating_point:
        return 0.0 if torch.equal(actual, expected) else math.inf
    a, e = actual.double(), expected.double()
    if not torch.equal(a.isnan(), e.isnan()):
        return math.inf
    inf = e.isinf()
    if not torch.equal(a[inf], e[inf]):
        return math.inf
    finite = e.isfinite()
    err = ((a - e).abs() / e.abs().clamp(min=1.0))[finite]
    return err.max().item() if err.numel() else 0.0


def check_output(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    compute_dtype: torch.dtype | None = None,
    atol: float | None = None,
) -> str | None:
    """None when `actual` has `expected`'s shape and dtype and is within the output tolerance
    of `compute_dtype` (the dtype the model computes in; default `expected`'s), else why not.
    `atol` replaces the float32 tolerance (an op whose rounding is known to be smaller)."""
    if actual.shape != expected.shape:
        return f"shape {list(actual.shape)} != {list(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype} != {expected.dtype}"
    err = output_error(actual, expected)
    if not expected.dtype.is_floating_point:
        return None if err == 0 else "integer outputs differ"
    dtype = compute_dtype or expected.dtype
    tol = atol if atol is not None and dtype == torch.float32 else OUTPUT_TOLERANCES[dtype]
    return None if err <= tol else f"max scaled error {err:.3g} > {tol:.3g}"


# A model that amplifies rounding (exp of exp, a residual stream of 1e3) can put any two
# correct implementations further apart than the output tolerance. Such an output still passes
# when it is at most this many times further from a float64 run than eager is.
ILL_CONDITIONED_FACTOR = 4.0


def check_conditioned_output(
    actual: torch.Tensor,
    expected: torch.Tensor,
    exact: torch.Tensor,
    *,
    compute_dtype: torch.dtype | None = None,
    reruns: Sequence[torch.Tensor] = (),
) -> str | None:
    """`check_output`, except that an output beyond the tolerance of eager (`expected`) passes
    when it is no more than `ILL_CONDITIONED_FACTOR` times further from `exact` (the model
    run in float64) than eager is, or no further than one of `reruns` is: float64 runs whose
    weights carry the compute dtype's rounding (`rounding_reruns`), so a discrete choice that
    such rounding alone flips (a router's top-k on a near tie) may flip."""
    problem = check_output(actual, expected, compute_dtype=compute_dtype)
    if problem is None or actual.shape != expected.shape or actual.dtype != expected.dtype:
        return problem
    error, eager_error = output_error(actual, exact), output_error(expected, exact)
    rounding = max((output_error(rerun, exact) for rerun in reruns), default=0.0)
    if error <= max(ILL_CONDITIONED_FACTOR * eager_error, rounding):
        return None
    also = f", weights rounded: {rounding:.3g}" if reruns else ""
    return f"{problem}, and {error:.3g} from float64 (eager: {eager_error:.3g}{also})"


def rounding_reruns(
    model: torch.nn.Module,
    run: Callable[[torch.nn.Module], torch.Tensor],
    dtype: torch.dtype,
    count: int = 8,
) -> list[torch.Tensor]:
    """`run(model)` for `count` copies of a float64 `model` whose floating-point weights are
    each scaled by 1 + d, d uniform within `dtype`'s unit roundoff (seeded 0 .. count - 1):
    how far from the exact output the rounding of the weights alone moves it. The model's
    weights are restored."""
    unit = torch.finfo(dtype).eps / 2
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    outputs = []
    with torch.no_grad():
        for seed in range(count):
            generator = torch.Generator().manual_seed(seed)
            for name, param in model.named_parameters():
                if param.is_floating_point():
                    noise = torch.rand(param.shape, generator=generator, dtype=torch.float64)
                    param.copy_(saved[name] * (1 + (2 * noise - 1).to(param) * unit))
            outputs.append(run(model))
        for name, param in model.named_parameters():
            param.copy_(saved[name])
    return outputs
