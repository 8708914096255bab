"""Every lowering rule, run through `compiler.compile` on the reference runtime, matches eager."""

from __future__ import annotations

import pytest
import torch
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
