"""Every lowering rule, run through `compiler.compile` on the reference runtime, matches eager."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_matches
from op_cases import CASES, NO_NUMERICS

import compiler
from compiler import frontend
from compiler.lowering import RULES, op_name


class Fn(torch.nn.Module):
    """Wrap a function as a module so it can be exported."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: op_name(c.target))
def test_op_matches_eager(case, dtype):
    if dtype not in case.dtypes:
        pytest.skip(f"{op_name(case.target)} is not defined for {dtype}")
    inputs = case.inputs(dtype)
    module = Fn(case.fn)
    graph_ops = {n.target for n in frontend.export(module, inputs, {}).graph.nodes}
    assert case.target in graph_ops, f"the case never reaches {op_name(case.target)}"
    compiled = compiler.compile(module, inputs)
    assert_matches(compiled(*inputs), module(*inputs), atol=case.atol)


def test_every_rule_has_a_numerics_case():
    covered = {c.target for c in CASES} | NO_NUMERICS
    missing = sorted(op_name(t) for t in RULES if t not in covered)
    assert not missing, f"rules without a numerics case in tests/op_cases.py: {missing}"


# 0-d and empty inputs, which every rule handles (#11): each on the reference and JAX runtimes.
EDGE_CASES = {
    "index_select-0d": (lambda a, i: a.index_select(0, i), (torch.tensor(1.5), torch.tensor([0]))),
    "index_select-empty": (
        lambda a, i: a.index_select(1, i),
        (torch.ones(3, 4), torch.zeros(0, dtype=torch.long)),
    ),
    "argmax-0d": (lambda a: a.argmax(0), (torch.tensor(2.0),)),
    "argmax-flat": (lambda a: a.argmax(), (torch.rand(3, 4),)),
    "softmax-0d": (lambda a: torch.softmax(a, 0), (torch.tensor(2.0),)),
    "softmax-empty": (lambda a: torch.softmax(a, -1), (torch.ones(0, 4),)),
    "log_softmax-0d": (lambda a: torch.log_softmax(a, 0), (torch.tensor(2.0),)),
    "cat-empty": (lambda a, b: torch.cat([a, b]), (torch.ones(0, 4), torch.ones(0, 4))),
    "stack-0d": (lambda a, b: torch.stack([a, b]), (torch.tensor(1.0), torch.tensor(2.0))),
    "cumsum-0d": (lambda a: a.cumsum(0), (torch.tensor(2.0),)),
    "cumprod-empty": (lambda a: a.cumprod(1), (torch.ones(2, 0),)),
    "sort-0d": (lambda a: torch.sort(a, 0)[0] + torch.sort(a, 0)[1], (torch.tensor(2.0),)),
    "topk-empty": (lambda a: torch.topk(a, 0, 1)[0], (torch.rand(3, 4),)),
    "max.dim-0d": (lambda a: a.max(0)[0] * a.max(0)[1], (torch.tensor(2.0),)),
    "gather-0d": (lambda a, i: torch.gather(a, 0, i), (torch.tensor(2.0), torch.tensor(0))),
    "scatter-0d": (
        lambda a, i, s: torch.scatter(a, 0, i, s),
        (torch.tensor(2.0), torch.tensor(0), torch.tensor(3.0)),
    ),
    "var-0d": (lambda a: a.var(correction=0), (torch.tensor(2.0),)),
    "pad-empty": (lambda a: F.pad(a, (1, 1)), (torch.ones(2, 0),)),
    "repeat-0d": (lambda a: a.repeat(2, 3), (torch.tensor(2.0),)),
    "flip-empty": (lambda a: a.flip(0), (torch.ones(0, 3),)),
    "unfold-0d": (lambda a: a.unfold(0, 1, 1) * 2, (torch.tensor(2.0),)),
    "unfold-empty": (lambda a: a.unfold(1, 2, 1), (torch.ones(0, 3),)),
    "unfold-no-taps": (lambda a: a.unfold(0, 0, 2), (torch.rand(7),)),
}


@pytest.mark.parametrize("runtime", ["reference", "jax"])
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_zero_dim_and_empty_inputs_match_eager(name, runtime):
    fn, inputs = EDGE_CASES[name]
    module = Fn(fn)
    compiled = compiler.compile(module, inputs, target=None, runtime=runtime)
    expected = module(*inputs)
    actual = compiled(*inputs)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("runtime", ["reference", "jax"])
def test_eye_matches_eager(runtime):
    """`torch.eye` (Olmo-Hybrid's chunked delta rule) compiles: Wafer decomposes it from int64
    positions, where the default decomposition compares uint8 ones."""
    module = Fn(lambda a: a * 2 + torch.eye(3, 4, dtype=a.dtype) + torch.eye(4)[:3])
    inputs = (torch.rand(3, 4),)
    compiled = compiler.compile(module, inputs, target=None, runtime=runtime)
    torch.testing.assert_close(compiled(*inputs), module(*inputs))
