"""`CompiledModule.verify`: per-op comparison with eager, and first-divergence localisation."""

from __future__ import annotations

import pytest
import torch

import compiler
import models
from core.numerics import check_output, op_error, output_error

TINY = ["tiny-gpt2", "tiny-llama", "tiny-mamba", "tiny-hybrid"]


@pytest.mark.parametrize("reference", ["fp64", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", TINY)
def test_clean_models_verify(name, dtype, reference):
    model = models.build(name, dtype=dtype)
    inputs = models.example_inputs(name, seq=8)
    report = compiler.compile(model, inputs).verify(*inputs, reference=reference)
    assert report.first_divergence is None, str(report)
    assert len(report.isolated) == len(report.accumulated) > 50
    assert all(
        row.location.startswith("/") or row.location == "<unknown>" for row in report.isolated
    )


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-mamba"])
def test_corrupted_weight_is_localised_to_its_consumer(name):
    model = models.build(name)
    inputs = models.example_inputs(name, seq=8)
    compiled = compiler.compile(model, inputs)
    weight = next(
        n for n in compiled.weights if ".1." in n and n.endswith("weight") and "norm" not in n
    )
    with torch.no_grad():
        compiled.weights[weight].view(-1)[0] += 1.0
    report = compiled.verify(*inputs)
    divergence = report.first_divergence
    assert divergence is not None and divergence.mode == "isolated"
    graph = compiled.exported.graph
    placeholder = next(
        n
        for n, s in zip(
            [n for n in graph.nodes if n.op == "placeholder"],
            compiled.exported.graph_signature.input_specs,
            strict=True,
        )
        if s.target == weight
    )
    consumers = {user.name for user in placeholder.users}
    assert divergence.node in consumers, (divergence, consumers)
    failing = [row.node for row in report.isolated if not row.passed]
    assert failing[0] == divergence.node
    assert divergence.location.endswith(".py:" + divergence.location.rsplit(":", 1)[1])
    assert "models/" in divergence.location


def test_per_op_false_reports_outputs_only():
    model = models.build("tiny-gpt2")
    inputs = models.example_inputs("tiny-gpt2", seq=8)
    report = compiler.compile(model, inputs).verify(*inputs, per_op=False)
    assert len(report.isolated) == 1 and report.passed


def test_compare_judges_near_constant_tensors_by_magnitude():
    base = torch.full((64,), 3.0)
    assert op_error(base, base.double(), torch.float32).passed
    one_ulp = base + 3.0 * 2.0**-23
    assert op_error(one_ulp, base.double(), torch.float32).passed
    assert op_error(one_ulp, base.double(), torch.float32).max_ulp == pytest.approx(2.0)
    wrong = base.clone()
    wrong[5] = 3.01
    assert not op_error(wrong, base.double(), torch.float32).passed
    nan = torch.tensor([float("nan"), 1.0])
    assert not op_error(nan, torch.tensor([0.0, 1.0]), torch.float32).passed


class Sensitive(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x * 2.0, -1) + torch.exp(x).sum(-1, keepdim=True)


def test_nan_and_inf_inputs_propagate_as_in_eager():
    x = torch.randn(4, 8)
    x[0, 1] = float("nan")
    x[2, 3] = float("inf")
    x[3, 0] = float("-inf")
    compiled = compiler.compile(Sensitive(), (torch.randn(4, 8),))
    actual, expected = compiled(x), Sensitive()(x)
    assert torch.equal(actual.isnan(), expected.isnan())
    finite = expected.isfinite()
    assert torch.equal(actual[~finite & ~expected.isnan()], expected[~finite & ~expected.isnan()])
    assert torch.allclose(actual[finite], expected[finite])


def test_output_error_scales_by_magnitude_and_refuses_mismatched_specials():
    expected = torch.tensor([0.5, 100.0, float("inf"), float("nan")])
    actual = torch.tensor([0.5 + 5e-5, 100.0 + 5e-3, float("inf"), float("nan")])
    assert output_error(actual, expected) == pytest.approx(5e-5, rel=1e-2)
    assert check_output(actual, expected) is None
    assert "max scaled error" in check_output(actual + 1e-3, expected)
    assert check_output(actual.bfloat16(), expected.bfloat16()) is None
    flipped = actual.clone()
    flipped[2] = -float("inf")
    assert output_error(flipped, expected) == float("inf")
    assert output_error(actual[:3], expected[:3].clone().fill_(float("nan"))) == float("inf")
    assert output_error(torch.tensor([1, 2]), torch.tensor([1, 3])) == float("inf")
    assert "shape" in check_output(actual[:2], expected)
    assert "dtype" in check_output(actual.double(), expected)


def test_an_ill_conditioned_output_passes_only_as_close_to_float64_as_eager():
    from core.numerics import check_conditioned_output

    exact = torch.tensor([1000.0], dtype=torch.float64)
    eager = torch.tensor([1100.0], dtype=torch.bfloat16)  # 10 % from exact: the model amplifies
    closer = torch.tensor([1040.0], dtype=torch.bfloat16)  # beyond bf16 tolerance of eager
    farther = torch.tensor([1600.0], dtype=torch.bfloat16)
    assert check_conditioned_output(closer, eager, exact) is None
    assert "from float64" in check_conditioned_output(farther, eager, exact)


class _Pick(torch.nn.Module):
    """A router's choice: 10 at the larger of two scores, 0 at the other."""

    def __init__(self, margin: float):
        super().__init__()
        self.scores = torch.nn.Parameter(torch.tensor([1.0, 1.0 + margin], dtype=torch.float64))

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.argmax(self.scores * x), 2).to(x.dtype) * 10


def test_a_choice_that_weight_rounding_flips_passes_only_as_far_as_such_rounding_moves_it():
    """Scores 2^-12 apart tie within bf16's rounding of the weights (2^-8): some of the float64
    reruns with bf16-rounded weights flip the choice, so a bf16 run that flips it passes, and
    an output further off does not. Scores 0.5 apart never flip, so neither does a run."""
    from core.numerics import check_conditioned_output, rounding_reruns

    x = torch.ones((), dtype=torch.float64)
    flipped = torch.tensor([10.0, 0.0], dtype=torch.bfloat16)
    wrong = torch.tensor([0.0, 1000.0], dtype=torch.bfloat16)
    for margin, flips in ((2**-12, True), (0.5, False)):
        model = _Pick(margin)
        exact = model(x)
        reruns = rounding_reruns(model, lambda m: m(x), torch.bfloat16)
        assert torch.equal(model.scores, torch.tensor([1.0, 1.0 + margin], dtype=torch.float64))
        assert any(not torch.equal(r, exact) for r in reruns) == flips
        eager = exact.to(torch.bfloat16)
        assert "from float64" in check_conditioned_output(flipped, eager, exact)
        flip = check_conditioned_output(flipped, eager, exact, reruns=reruns)
        assert (flip is None) == flips
        assert "weights rounded" in check_conditioned_output(wrong, eager, exact, reruns=reruns)
