"""The spine: compile Hugging Face models and small modules, run them, compare with eager."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import assert_matches
from hf_models import build, input_ids

import compiler
from compiler.mlir import new_context, parse_module, print_module
from core.errors import LoweringError

HF = ["gpt2", "llama", "mamba"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("name", HF)
def test_hf_model_matches_eager(name, dtype):
    model = build(name, DTYPES[dtype])
    ids = input_ids()
    compiled = compiler.compile(model, (ids,), {"use_cache": False})
    out = compiled(ids, use_cache=False)
    with torch.no_grad():
        expected = model(ids, use_cache=False)
    assert type(out) is type(expected)
    assert_matches(out.logits, expected.logits, compute_dtype=DTYPES[dtype])


def test_module_text_round_trips_and_verifies():
    compiled = compiler.compile(build("llama"), (input_ids(),), {"use_cache": False})
    module = parse_module(compiled.mlir, new_context())
    assert module.operation.verify()
    assert print_module(module) == compiled.mlir
    assert '"wse.param"() {sym_name = "model.layers.0.self_attn.q_proj.weight"}' in compiled.mlir
    assert "modeling_llama.py" in compiled.mlir, "ops carry the user's source locations"


def test_same_model_compiles_to_identical_mlir():
    model, ids = build("gpt2"), input_ids()
    first = compiler.compile(model, (ids,), {"use_cache": False}).mlir
    second = compiler.compile(model, (ids,), {"use_cache": False}).mlir
    assert first == second


def test_determinism_across_processes(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import compiler, models
        model, ids = models.build_hf("tiny-mamba"), models.example_inputs("tiny-mamba", 2, 8)[0]
        text = compiler.compile(model, (ids,), {"use_cache": False}).mlir
        open(sys.argv[1], "w").write(text)
        """
    )
    outs = []
    for i in range(2):
        path = tmp_path / f"m{i}.mlir"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        outs.append(path.read_text())
    assert outs[0] == outs[1]


class Unsupported(torch.nn.Module):
    def forward(self, x):
        y = torch.fft.fft(x).real  # an op with no rule
        z = torch.fft.fft(y).real
        return (
            torch.special.bessel_j0(z)
            + torch.nn.functional.conv2d(x[None, None], torch.ones(1, 1, 3, 3)).sum()
        )


def test_unsupported_ops_are_listed_at_once():
    with pytest.raises(compiler.UnsupportedOperatorError) as info:
        compiler.compile(Unsupported(), (torch.rand(8, 8),))
    message = str(info.value)
    ops = {p.op for p in info.value.problems}
    assert "aten.special_bessel_j0.default" in ops
    assert "aten.convolution.default" in ops, "a rule's check rejects 2-D convolution"
    assert "x1" in message and "test_compiler.py:" in message
    assert "only 1-D convolution" in message
    fft = [p for p in info.value.problems if "fft" in p.op]
    assert len(fft) >= 2 and all("test_compiler.py:" in p.location for p in fft)


class DataDependent(torch.nn.Module):
    def forward(self, x):
        return x[x > 0]


def test_data_dependent_shape_is_a_clear_error():
    with pytest.raises(compiler.WaferError) as info:
        compiler.compile(DataDependent(), (torch.rand(8),))
    assert "data-dependent" in str(info.value) and "test_compiler.py:" in str(info.value)


def test_dynamic_shape_is_a_clear_error():
    ep_dims = {"x": {0: torch.export.Dim("n", min=2, max=64)}}

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    ep = torch.export.export(Double(), (torch.rand(8, 4),), dynamic_shapes=ep_dims)
    from compiler.lowering import lower

    with pytest.raises(compiler.DynamicShapeError, match="a dynamic shape"):
        lower(ep.run_decompositions())


class Nested(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x, *, scale: float = 1.0, extra=None):
        y = self.proj(x) * scale
        return {"y": y, "pair": (y.sum(-1), extra if extra is not None else y), "none": None}


def test_keyword_inputs_and_nested_outputs():
    model = Nested().eval()
    x, extra = torch.rand(3, 8), torch.rand(3, 4)
    compiled = compiler.compile(model, (x,), {"scale": 2.0, "extra": extra})
    out = compiled(x, scale=2.0, extra=extra)
    expected = model(x, scale=2.0, extra=extra)
    assert out.keys() == expected.keys() and out["none"] is None
    assert_matches(out["y"], expected["y"])
    assert_matches(out["pair"][0], expected["pair"][0])
    assert_matches(out["pair"][1], expected["pair"][1])


def test_weights_are_named_and_live():
    model = Nested().eval()
    x = torch.rand(3, 8)
    compiled = compiler.compile(model, (x,))
    assert set(compiled.weights) == {"proj.weight", "proj.bias"}
    with torch.no_grad():
        compiled.weights["proj.bias"] += 1.0
        expected = model(x)["y"] + 1.0
    assert_matches(compiled(x)["y"], expected)


def test_wrong_inputs_at_call_time():
    compiled = compiler.compile(Nested().eval(), (torch.rand(3, 8),))
    with pytest.raises(compiler.InputMismatchError, match=r"\[3, 8\] torch.float32"):
        compiled(torch.rand(4, 8))
    with pytest.raises(compiler.InputMismatchError, match="dtype|float64"):
        compiled(torch.rand(3, 8, dtype=torch.float64))
    with pytest.raises(compiler.InputMismatchError, match="structure"):
        compiled(torch.rand(3, 8), torch.rand(3, 8))


def test_meta_device_model_compiles_but_does_not_run():
    with torch.device("meta"):
        model = Nested().eval()
    x = torch.rand(3, 8)
    compiled = compiler.compile(model, (x,))
    assert "wse.matmul" in compiled.mlir
    with pytest.raises(compiler.MetaDeviceError, match="meta device"):
        compiled(x)


def test_torch_compile_backend():
    model = build("gpt2")
    ids = input_ids()
    fast = torch.compile(model, backend="wafer", fullgraph=True)
    with torch.no_grad():
        out = fast(ids, use_cache=False)
        expected = model(ids, use_cache=False)
    assert_matches(out.logits, expected.logits)


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="unknown runtime 'gpu'"):
        compiler.compile(Nested(), (torch.rand(3, 8),), runtime="gpu")


class EmptyPad(torch.nn.Module):
    def forward(self, x):
        pad = torch.zeros(x.shape[0], 0, x.shape[1])  # a zero-size constant
        return torch.cat([pad, x[:, None]], 1) * 2


def test_zero_size_constants_compile():
    x = torch.rand(3, 4)
    assert_matches(compiler.compile(EmptyPad(), (x,))(x), EmptyPad()(x))


def test_without_a_target_nothing_is_placed():
    model, x = Nested().eval(), torch.rand(3, 8)
    compiled = compiler.compile(model, (x,), target=None)
    assert compiled.report is None and "placement" not in compiled.stage_seconds
    for runtime in ("reference", "jax"):
        assert_matches(compiled.using(runtime)(x)["y"], model(x)["y"])
    with pytest.raises(ValueError, match="compile with a target"):
        compiled.using("simulator")
    with pytest.raises(ValueError, match="compile with a target"):
        compiler.compile(model, (x,), target=None, runtime="simulator")


def test_a_failing_rule_names_the_op_and_line(monkeypatch):
    from compiler.lowering import RULES

    target = torch.ops.aten.addmm.default

    def broken(ctx, node):
        raise KeyError("unexpected layout")

    monkeypatch.setitem(RULES, target, dataclasses.replace(RULES[target], lower=broken))
    with pytest.raises(LoweringError) as info:
        compiler.compile(Nested().eval(), (torch.rand(3, 8),))
    message = str(info.value)
    assert "aten.addmm.default" in message and "test_compiler.py:" in message
    assert "unexpected layout" in message
