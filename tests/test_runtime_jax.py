"""JAX runtime: every wse op against the reference kernels, and whole models against eager."""

import jax
import pytest
import torch

from core import moe
from runtime import reference
from runtime.jax_runtime import RULES, JaxExecutable, register, scan_chunk_length
from runtime.program import Instruction, Program, TensorSpec

_NAMES = {
    torch.float32: "f32",
    torch.bfloat16: "bf16",
    torch.float16: "f16",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.bool: "i1",
}
GEN = torch.Generator().manual_seed(0)


def _spec(shape, dtype) -> TensorSpec:
    return TensorSpec(tuple(shape), _NAMES[dtype])


def randn(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=GEN).to(dtype)


def positive(*shape, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(shape, generator=GEN) + 0.1).to(dtype)


def ints(high, *shape, low=0) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=GEN)


def mask(*shape) -> torch.Tensor:
    return torch.rand(shape, generator=GEN) > 0.4


def _program(op, args, attrs, outs) -> Program:
    """One instruction reading the non-None `args` as program inputs."""
    specs, operands = [], []
    for t in args:
        operands.append(None if t is None else len(specs))
        if t is not None:
            specs.append(_spec(t.shape, t.dtype))
    if outs is None:  # ops whose kernel needs no result spec: infer it from the reference
        probe = Instruction(op, tuple(operands), (), (), attrs)
        out = reference.KERNELS[op](probe, *args)
        outs = [_spec(o.shape, o.dtype) for o in (out if isinstance(out, tuple) else (out,))]
    results = tuple(range(len(specs), len(specs) + len(outs)))
    return Program(
        tuple(specs), (Instruction(op, tuple(operands), results, tuple(outs), attrs),), results
    )


def _case(op, *args, attrs=None, outs=None, id=None):
    return pytest.param(op, list(args), attrs or {}, outs, id=id or op)


BF = torch.bfloat16
UNARY = ["neg", "exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "abs", "sin", "cos"]
UNARY += ["tanh", "erf", "sigmoid", "relu", "silu"]
CMP = ["eq", "ne", "lt", "le", "gt", "ge"]
LN = {"axes": 2, "eps": 1e-5}
ATT = {"scale": 0.3, "is_causal": False}
SCAN = {"delta_softplus": True}
PLACEMENT_MOVES = ["weight_tiles", "fabric_broadcast", "fabric_shift", "fabric_stream"]
PLACEMENT_MOVES += ["host_transfer"]
TILE = {"dataflow": "broadcast", "transpose_rhs": True}  # K = 10 over 3 or 4 PE rows: padded


def _scan_args(b=2, d=3, length=10, n=4, dtype=torch.float32, optional=True):
    opt = [randn(d), randn(b, d, length), randn(d)] if optional else [None] * 3
    args = [randn(b, d, length), randn(b, d, length), -positive(d, n), randn(b, n, length)]
    return [t if t is None else t.to(dtype) for t in [*args, randn(b, n, length), *opt]]


CASES = [
    *(_case(op, positive(3, 5) if op in ("log", "sqrt", "rsqrt") else randn(3, 5)) for op in UNARY),
    *(_case(op, positive(3, 5, dtype=BF), id=f"{op}-bf16") for op in UNARY),
    _case("not", mask(4, 3)),
    _case("gelu", randn(4, 7), attrs={"approximate": "none"}),
    _case("gelu", randn(4, 7, dtype=BF), attrs={"approximate": "tanh"}, id="gelu-tanh-bf16"),
    _case("softplus", randn(4, 7) * 4, attrs={"beta": 2.0, "threshold": 5.0}),
    _case("convert", randn(5) * 9, outs=[_spec([5], torch.int64)], id="convert-f32-i64"),
    _case("convert", randn(5), outs=[_spec([5], BF)], id="convert-f32-bf16"),
    _case("convert", mask(5), outs=[_spec([5], torch.float32)], id="convert-i1-f32"),
    *(_case(op, randn(3, 1, 5), randn(4, 5)) for op in ["add", "sub", "mul", "div"]),
    *(_case(op, randn(3, 1, 5), randn(4, 5)) for op in ["maximum", "minimum"]),
    _case("pow", positive(3, 1, 5), randn(4, 5)),
    _case("mul", randn(2, 1, 8, dtype=BF), randn(3, 1, dtype=BF), id="mul-bf16"),
    _case("add", ints(9, 4, 1), ints(9, 3), id="add-i64"),
    _case("and", mask(4, 1), mask(3)),
    _case("or", mask(4, 1), mask(3)),
    *(_case("cmp", ints(4, 6, 1), ints(4, 6), attrs={"predicate": p}, id=p) for p in CMP),
    _case("cmp", randn(3, 1), randn(4), attrs={"predicate": "lt"}, id="lt-f32"),
    _case("where", mask(4, 1), randn(4, 6), randn(6)),
    _case("matmul", randn(2, 1, 3, 8), randn(4, 8, 5), randn(5)),
    _case("matmul", randn(3, 8, dtype=BF), randn(8, 5, dtype=BF), None, id="matmul-bf16"),
    _case(
        "attention",
        randn(2, 4, 5, 8),
        randn(2, 2, 7, 8),
        randn(2, 2, 7, 6),
        mask(5, 7),
        attrs=ATT,
        id="attention-bool-mask-gqa",
    ),
    _case(
        "attention",
        randn(1, 4, 5, 8),
        randn(1, 1, 7, 8),
        randn(1, 1, 7, 8),
        None,
        attrs={"scale": 0.3, "is_causal": True},
        id="attention-causal-gqa",
    ),
    _case(
        "attention",
        randn(1, 2, 5, 8),
        randn(1, 2, 5, 8),
        randn(1, 2, 5, 8),
        randn(1, 1, 5, 5),
        attrs=ATT,
        id="attention-float-mask",
    ),
    _case(
        "attention",
        randn(2, 3, 4),
        randn(2, 3, 4),
        randn(2, 3, 4),
        torch.zeros(3, 3, dtype=bool),
        attrs=ATT,
        id="attention-all-masked",
    ),
    _case(
        "attention",
        *(randn(1, 2, 6, 8, dtype=BF) for _ in range(3)),
        None,
        attrs={"scale": 0.35, "is_causal": True},
        id="attention-bf16",
    ),
    *(
        _case("reduce", x, attrs={"kind": k, "dims": [0, 2], "keepdim": keep}, id=f"{k}-{keep}")
        for k, x in [
            ("sum", randn(3, 4, 5)),
            ("mean", randn(3, 4, 5)),
            ("max", randn(3, 4, 5)),
            ("min", randn(3, 4, 5)),
            ("any", mask(3, 4, 5)),
        ]
        for keep in (True, False)
    ),
    _case("reduce", randn(3, 4), attrs={"kind": "sum", "dims": [], "keepdim": False}, id="no-dims"),
    _case(
        "reduce",
        randn(3, 64, dtype=BF),
        attrs={"kind": "mean", "dims": [1], "keepdim": True},
        id="mean-bf16",
    ),
    _case("argmax", torch.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]), attrs={"dim": 1}),
    _case("cumsum", ints(5, 2, 6), attrs={"dim": 1}, outs=[_spec([2, 6], torch.int64)]),
    _case("cumsum", mask(2, 6), attrs={"dim": 1}, outs=[_spec([2, 6], torch.int64)], id="cs-i1"),
    _case("softmax", randn(2, 3, 7), attrs={"dim": 1}),
    _case("softmax", randn(2, 33, dtype=BF), attrs={"dim": 1}, id="softmax-bf16"),
    _case("layer_norm", randn(2, 3, 8), randn(3, 8), randn(3, 8), attrs=LN),
    _case("layer_norm", randn(2, 8), None, None, attrs={"axes": 1, "eps": 1e-3}, id="ln-plain"),
    _case(
        "layer_norm",
        randn(4, 32, dtype=BF),
        randn(32, dtype=BF),
        randn(32, dtype=BF),
        attrs={"axes": 1, "eps": 1e-5},
        id="ln-bf16",
    ),
    _case("rms_norm", randn(2, 3, 16), randn(16), attrs={"eps": 1e-6}),
    _case(
        "rms_norm", randn(4, 32, dtype=BF), randn(32, dtype=BF), attrs={"eps": 1e-6}, id="rms-bf"
    ),
    _case("reshape", randn(2, 3, 4), outs=[_spec([6, 4], torch.float32)]),
    _case("transpose", randn(2, 3, 4), attrs={"permutation": [2, 0, 1]}),
    _case("broadcast", randn(3, 1), outs=[_spec([2, 3, 4], torch.float32)]),
    _case("slice", randn(4, 9), attrs={"dim": 1, "start": 1, "end": 8, "step": 3}),
    _case("concat", randn(2, 3), randn(2, 5), attrs={"dim": 1}),
    _case("embedding", randn(10, 4), ints(10, 2, 3)),
    _case(
        "index",
        randn(5, 3, 6),
        ints(5, 2, 1),
        ints(6, 4, low=-6),
        attrs={"indexed_dims": [0, 2]},
        id="index-2-broadcast-split-dims",
    ),
    _case(
        "index",
        randn(3, 5, 6, 2),
        ints(5, 4, 1),
        ints(6, 4, 1),
        attrs={"indexed_dims": [1, 2]},
        id="index-2-adjacent-dims",
    ),
    _case("depthwise_conv1d", randn(2, 3, 9), randn(3, 1, 4), randn(3), attrs={"padding": 3}),
    _case(
        "depthwise_conv1d",
        randn(2, 3, 9, dtype=BF),
        randn(3, 1, 4, dtype=BF),
        None,
        attrs={"padding": 0},
        id="conv-bf16",
    ),
    _case("selective_scan", *_scan_args(), attrs=SCAN),
    _case(
        "selective_scan",
        *_scan_args(optional=False),
        attrs={"delta_softplus": False},
        id="scan-plain",
    ),
    _case("selective_scan", *_scan_args(dtype=BF), attrs=SCAN, id="scan-bf16"),
    *(_case(op, randn(3, 4)) for op in PLACEMENT_MOVES),
    _case(
        "tile_matmul",
        randn(2, 5, 10),
        randn(6, 10),
        randn(6),
        attrs=TILE,
        outs=[_spec([3, 2, 5, 6], torch.float32)],
    ),
    _case(
        "tile_matmul",
        randn(5, 10, dtype=BF),
        randn(10, 6, dtype=BF),
        None,
        attrs={**TILE, "transpose_rhs": False},
        outs=[_spec([4, 5, 6], BF)],
        id="tile_matmul-bf16",
    ),
    _case(
        "tile_matmul",
        randn(5, 8),
        randn(8, 6),
        randn(6),
        attrs={"dataflow": "cannon", "transpose_rhs": False},
        id="tile_matmul-cannon",
    ),
    _case("fabric_reduce", randn(3, 4, 5)),
    _case(
        "constant",
        attrs={"value": {"shape": [2, 3], "values": [1.5, -2, 0, 3, 4, 5]}},
        outs=[_spec([2, 3], BF)],
    ),
    _case(
        "constant",
        attrs={"value": {"shape": [], "splat": True}},
        outs=[_spec([], torch.bool)],
        id="splat-i1",
    ),
    _case("iota", attrs={"start": 3.0, "step": 2.0}, outs=[_spec([5], torch.int64)]),
    _case("iota", attrs={"start": 0.5, "step": 0.1}, outs=[_spec([7], torch.float32)], id="iota-f"),
]

# The general ops (#11), Mamba-2's scan, the MoE ops and the fabric permute (#14).
UNIT = ["asin", "acos", "atanh"]  # defined on (-1, 1)
GENERAL_UNARY = ["floor", "ceil", "trunc", "round", "sign", "tan", "atan", "sinh", "cosh"]
GENERAL_UNARY += ["asinh", "expm1"]
ROUTED = torch.stack([torch.arange(6) % 4, (torch.arange(6) + 1) % 4], 1)  # top-2 of 4 experts
GATES = positive(6, 2)
CASES += [
    *(_case(op, randn(3, 5) * 3) for op in GENERAL_UNARY),
    *(_case(op, torch.rand(3, 5, generator=GEN) * 1.8 - 0.9) for op in UNIT),
    _case("acosh", positive(3, 5) + 1),
    *(_case(op, positive(3, 5)) for op in ["log2", "log10"]),
    *(_case(op, randn(3, 1, 5) * 4, positive(4, 5) + 0.5) for op in ["fmod", "remainder"]),
    _case("atan2", randn(3, 1, 5), randn(4, 5)),
    _case("xor", mask(4, 1), mask(3)),
    _case("cumprod", randn(3, 5), attrs={"dim": 1}, outs=[_spec([3, 5], torch.float32)]),
    _case("sort", randn(4, 6), attrs={"dim": 1, "descending": True}),
    _case(
        "scatter",
        randn(5, 4),
        randn(3, 4),
        torch.tensor([4, 0, 4]),
        attrs={"indexed_dims": [0], "accumulate": True},
    ),
    _case("fabric_permute", randn(2, 3, 4), attrs={"permutation": [2, 0, 1]}),
    _case(
        "ssd_scan",
        randn(2, 10, 4, 3),
        positive(2, 10, 4),
        -positive(4),
        randn(2, 10, 2, 5),
        randn(2, 10, 2, 5),
        randn(4),
        randn(2, 4, 3, 5),
        attrs={"chunk": 4},
    ),
    _case(
        "moe_router",
        randn(6, 4),
        None,
        attrs={
            "top_k": 2,
            "scoring": "topk_softmax",
            "normalize": True,
            "groups": 1,
            "topk_groups": 1,
            "scale": 1.0,
        },
    ),  # fmt: skip
    _case(
        "moe_dispatch",
        randn(6, 8),
        ROUTED,
        GATES,
        attrs={"capacity": 6},
        outs=[_spec([4, 6, 8], torch.float32), _spec([4, 6], torch.float32)]
        + [_spec([4, 6], torch.int64)],
    ),
    _case(
        "moe_combine",
        randn(4, 6, 8),
        *moe.moe_slots(ROUTED, GATES, 4, 6)[::-1],
        outs=[_spec([6, 8], torch.float32)],
    ),
    _case(
        "grouped_matmul", randn(4, 5, 8), randn(4, 3, 8), randn(4, 3), attrs={"transpose_rhs": True}
    ),  # fmt: skip
]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if expected.dtype in (torch.bfloat16, torch.float16):
        torch.testing.assert_close(actual, expected, rtol=1.6e-2, atol=1e-2, equal_nan=True)
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_every_reference_op_has_a_rule_and_a_case():
    assert set(RULES) == set(reference.KERNELS)
    assert {c.values[0] for c in CASES} == set(reference.KERNELS)


def test_registering_an_op_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        register("add", rule=RULES["add"])


@pytest.mark.parametrize(("op", "args", "attrs", "outs"), CASES)
def test_op_matches_reference(op, args, attrs, outs):
    program = _program(op, args, attrs, outs)
    inputs = [t for t in args if t is not None]
    expected = reference.execute(program, {}, inputs)
    actual = JaxExecutable(program, {})(inputs)
    for a, e in zip(actual, expected, strict=True):
        _assert_close(a, e)


def _scan_program(args, chunk_bytes):
    program = _program("selective_scan", args, SCAN, None)
    return JaxExecutable(program, {}, scan_memory_bytes=chunk_bytes)


def test_selective_scan_chunked_matches_sequential_loop():
    from core.custom_ops import selective_scan_reference

    args = _scan_args(b=2, d=3, length=11, n=4)
    # 4 float32 (B, D, T, N) terms: 384 bytes a step; 1200 bytes hold 3 steps, so 4 chunks
    # of 3 steps, the last one padded.
    assert scan_chunk_length(2, 3, 11, 4, 1200) == 3
    expected = selective_scan_reference(*args, delta_softplus=True)
    for budget in (1200, 1, 1 << 30):
        y, h = _scan_program(args, budget)([t for t in args if t is not None])
        torch.testing.assert_close(y, expected[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h, expected[1], rtol=1e-5, atol=1e-5)


def test_meta_weights_are_refused():
    program = _program("add", [randn(2), randn(2)], {}, None)
    param = Instruction("param", (), (2,), (_spec([2], torch.float32),), {"sym_name": "w"})
    program = Program(program.input_specs, (param, *program.instructions), program.outputs)
    with pytest.raises(reference.ExecutionError, match="meta device"):
        JaxExecutable(program, {"w": torch.empty(2, device="meta")})
    with pytest.raises(reference.ExecutionError, match="missing"):
        JaxExecutable(program, {})


def test_run_device_keeps_state_on_device():
    program = _program("add", [randn(3), randn(3)], {}, None)
    executable = JaxExecutable(program, {})
    state = jax.device_put(jax.numpy.zeros(3), executable.device)
    one = jax.device_put(jax.numpy.ones(3), executable.device)
    for _ in range(3):
        (state,) = executable.run_device([state, one])
        assert isinstance(state, jax.Array)
    assert state.tolist() == [3.0, 3.0, 3.0]


def test_out_of_range_indices_raise_unless_unchecked():
    from core.errors import IndexOutOfRangeError

    weight, ids = randn(10, 4), torch.tensor([[1, 2, 3]])
    program = _program("embedding", [weight, ids], {}, None)
    checked, unchecked = JaxExecutable(program, {}), JaxExecutable(program, {}, check_indices=False)
    for bad in (99, -1):
        with pytest.raises(IndexOutOfRangeError, match=rf"index {bad} is outside \[0, 9\]"):
            checked([weight, torch.tensor([[1, bad, 3]])])
        with jax.enable_x64(True), pytest.raises(IndexOutOfRangeError):
            device_ids = jax.numpy.asarray([[1, bad, 3]], dtype=jax.numpy.int64)
            checked.run_device([jax.numpy.asarray(weight.numpy()), device_ids])
    (clamped,) = unchecked([weight, torch.tensor([[1, 99, 3]])])
    torch.testing.assert_close(clamped, weight[torch.tensor([[1, 9, 3]])])
    (out,) = checked([weight, ids])
    torch.testing.assert_close(out, torch.nn.functional.embedding(ids, weight))


def test_empty_index_tensors_need_no_check():
    weight = randn(10, 4)
    program = _program("embedding", [weight, ints(10, 0)], {}, None)
    (out,) = JaxExecutable(program, {})([weight, ints(10, 0)])
    assert out.shape == (0, 4)
