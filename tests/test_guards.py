"""No silent wrong answers: changed non-tensor inputs, out-of-range indices, tied weights and
unknown options all raise named errors, and the valid cases still match eager PyTorch."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import assert_matches
from hf_models import build, input_ids

import compiler
from core.errors import IndexOutOfRangeError, InputMismatchError, OptionError, WaferError
from runtime.program import Signature, same_value


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, x, offset, *, scale=1.0, flag=False, n=1, name="a", cfg=None):
        y = self.proj(x) * scale + offset
        if flag:
            y = -y
        if cfg is not None:
            y = y * cfg["alpha"]
        return y * n if name == "a" else y


X = torch.rand(2, 4)
KWARGS = {"scale": 2.0, "flag": True, "n": 3, "name": "a", "cfg": {"alpha": 0.5}}


@pytest.fixture(scope="module")
def scaled():
    torch.manual_seed(0)
    model = Scaled().eval()
    return model, compiler.compile(model, (X, 1.0), KWARGS, target=None)


def test_the_compiled_for_values_run_and_match_eager(scaled):
    model, compiled = scaled
    for runtime in ("reference", "jax"):
        assert_matches(compiled.using(runtime)(X, 1.0, **KWARGS), model(X, 1.0, **KWARGS))
    assert compiled.signature.input_values == (None, 1.0, 2.0, True, 3, "a", 0.5)


@pytest.mark.parametrize(
    ("offset", "changes", "fragment"),
    [
        (1.0, {"scale": 3.0}, "argument scale is 3.0, but the program was compiled for scale=2.0"),
        (1.5, {}, "argument args[1] is 1.5"),
        (1.0, {"flag": False}, "compile again with flag=False"),
        (1.0, {"n": 4}, "argument n is 4"),
        (1.0, {"n": 3.0}, "argument n is 3.0, but the program was compiled for n=3"),
        (1, {}, "argument args[1] is 1, but"),
        (1.0, {"flag": 1}, "argument flag is 1, but the program was compiled for flag=True"),
        (1.0, {"name": "b"}, "argument name is 'b'"),
        (1.0, {"cfg": {"alpha": 0.25}}, "argument cfg['alpha'] is 0.25"),
        (torch.tensor(1.0), {}, "compile again with args[1] given as a tensor"),
    ],
)
def test_changed_non_tensor_inputs_are_refused(scaled, offset, changes, fragment):
    _, compiled = scaled
    for runtime in ("reference", "jax"):
        with pytest.raises(InputMismatchError) as info:
            compiled.using(runtime)(X, offset, **{**KWARGS, **changes})
        assert fragment in str(info.value)
        assert "or pass the value as a tensor" in str(info.value) or "as a tensor" in fragment


def test_verify_refuses_other_values_and_passes_the_compiled_ones(scaled):
    _, compiled = scaled
    with pytest.raises(InputMismatchError, match="compile again with scale=3.0"):
        compiled.verify(X, 1.0, **{**KWARGS, "scale": 3.0})
    assert compiled.verify(X, 1.0, **KWARGS).passed


def test_a_new_value_works_after_compiling_again(scaled):
    model, _ = scaled
    kwargs = {**KWARGS, "scale": 3.0}
    again = compiler.compile(model, (X, 1.0), kwargs, target=None)
    assert_matches(again(X, 1.0, **kwargs), model(X, 1.0, **kwargs))


def test_values_compare_by_type_and_bits():
    assert same_value(2.0, 2.0) and same_value(math.nan, math.nan) and same_value(None, None)
    assert not same_value(2, 2.0) and not same_value(True, 1) and not same_value(1, True)
    assert not same_value(-0.0, 0.0) and not same_value(torch.tensor(2.0), 2.0)


def test_signature_json_round_trips_the_values(scaled):
    _, compiled = scaled
    text = json.dumps(compiled.signature.to_json())
    assert Signature.from_json(json.loads(text)) == compiled.signature


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"input_is_tensor": [1, 0], "outputs": [0]},
        {"input_is_tensor": [True, False], "outputs": [0]},  # no values for the constant
        {"input_is_tensor": [True, False], "input_values": [None], "outputs": [0]},
        {"input_is_tensor": [True, False], "input_values": [None, [1]], "outputs": [0]},
        {"input_is_tensor": [True], "input_values": [2.0], "outputs": [0]},
        {"input_is_tensor": [True], "input_values": [None], "outputs": [-1]},
        {"input_is_tensor": [True], "input_values": [None], "outputs": [["tensor", 1]]},
        {"input_is_tensor": [True], "input_values": {}, "outputs": [0]},
    ],
)
def test_signature_from_json_refuses_garbage(data):
    with pytest.raises(ValueError, match="signature|input value"):
        Signature.from_json(data)


def test_saved_artifact_keeps_the_guard(scaled, tmp_path):
    import runtime

    model, compiled = scaled
    loaded = runtime.load(compiled.save(tmp_path / "scaled"), runtime="reference")
    assert_matches(loaded(X, 1.0, **KWARGS), model(X, 1.0, **KWARGS))
    with pytest.raises(InputMismatchError, match="compile again with scale=3.0"):
        loaded(X, 1.0, **{**KWARGS, "scale": 3.0})


# ---------------------------------------------------------------------------- indices


class Lookup(torch.nn.Module):
    """An embedding, advanced indexing (negative indices allowed) and index_select."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, ids, rows, picks):
        h = self.emb(ids)
        return h[:, rows] + torch.index_select(h, 1, picks)


IDS, ROWS, PICKS = torch.tensor([[1, 2, 9]]), torch.tensor([-3, 0, 2]), torch.tensor([0, 2, 1])


@pytest.fixture(scope="module")
def lookup():
    torch.manual_seed(0)
    model = Lookup().eval()
    return model, compiler.compile(model, (IDS, ROWS, PICKS), target="mesh-8x8")


RUNTIMES = ["reference", "simulator", "jax"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_in_range_indices_match_eager(lookup, runtime):
    model, compiled = lookup
    for rows in (ROWS, torch.tensor([-1, -2, 2])):
        assert_matches(compiled.using(runtime)(IDS, rows, PICKS), model(IDS, rows, PICKS))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(
    ("ids", "rows", "picks", "fragment"),
    [
        ([[1, 99, 3]], [0, 1, 2], [0, 1, 2], "index 99 is outside [0, 9], the 10 rows"),
        ([[1, -1, 3]], [0, 1, 2], [0, 1, 2], "index -1 is outside [0, 9]"),
        ([[1, 2, 3]], [0, -4, 2], [0, 1, 2], "index -4 is outside [-3, 2], dim 1 of size 3"),
        ([[1, 2, 3]], [0, 1, 3], [0, 1, 2], "index 3 is outside [-3, 2]"),
        ([[1, 2, 3]], [0, 1, 2], [0, -1, 2], "index -1 is outside [0, 2], dim 1 of size 3"),
    ],
)
def test_out_of_range_indices_raise_a_named_error(lookup, runtime, ids, rows, picks, fragment):
    model, compiled = lookup
    args = (torch.tensor(ids), torch.tensor(rows), torch.tensor(picks))
    with pytest.raises((IndexError, RuntimeError)):  # eager refuses them too
        model(*args)
    with pytest.raises(IndexOutOfRangeError) as info:
        compiled.using(runtime)(*args)
    message = str(info.value)
    assert fragment in message and "test_guards.py:" in message and "(node " in message
    assert isinstance(info.value, WaferError) and isinstance(info.value, IndexError)


def test_jax_without_index_checks_matches_eager_in_range(lookup):
    model, compiled = lookup
    fast = compiled.using("jax", check_indices=False)
    assert fast.check_indices is False and compiled.using("jax").check_indices is True
    assert_matches(fast(IDS, ROWS, PICKS), model(IDS, ROWS, PICKS))
    clamped = fast(torch.tensor([[1, 99, 3]]), ROWS, PICKS)  # unchecked, XLA clamps 99 to 9
    assert_matches(clamped, model(torch.tensor([[1, 9, 3]]), ROWS, PICKS))


# ---------------------------------------------------------------------------- tied weights


def test_tied_weights_stay_one_tensor():
    model, ids = build("gpt2"), input_ids()
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
    wte, head = compiled.weights["transformer.wte.weight"], compiled.weights["lm_head.weight"]
    assert wte is head and wte.data_ptr() != model.lm_head.weight.data_ptr()
    eager = copy.deepcopy(model)
    with torch.no_grad():
        noise = torch.randn_like(head) * 0.1
        head += noise
        eager.lm_head.weight += noise  # tied in the model too: moves the embedding as well
        expected = eager(ids, use_cache=False).logits
    assert torch.equal(compiled.weights["transformer.wte.weight"], eager.transformer.wte.weight)
    assert_matches(compiled(ids, use_cache=False).logits, expected)
    assert not torch.equal(model.lm_head.weight, head), "the model's own weights are untouched"


def test_untied_weights_stay_apart():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
            self.b.weight = torch.nn.Parameter(self.a.weight.detach().clone())

        def forward(self, x):
            return self.a(x) + self.b(x)

    compiled = compiler.compile(Two(), (torch.rand(2, 3),), target=None)
    with torch.no_grad():
        compiled.weights["a.weight"].zero_()
    assert compiled.weights["b.weight"].abs().sum() > 0


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("target", [None, "mesh-8x8"])
def test_unknown_mode_is_refused(target):
    with pytest.raises(OptionError, match="unknown mode 'bogus'; choose one of auto, pipelined"):
        compiler.compile(Scaled(), (X, 1.0), target=target, mode="bogus")
    assert issubclass(OptionError, ValueError)
