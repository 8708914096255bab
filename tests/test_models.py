"""Reference models: prefill/decode consistency, export, generation, scan op, registry."""

import functools

import pytest
import torch

import models
from core.custom_ops import selective_scan, selective_scan_reference
from models import build, example_inputs, generate, greedy_reference
from models.mamba import MambaBlock

TINY = ["tiny-gpt2", "tiny-llama", "tiny-mamba", "tiny-hybrid"]
SCAN = torch.ops.wafer.selective_scan.default
FORBIDDEN = ("index_put", "scatter", "_local_scalar_dense", "nonzero", "masked_select", "copy_")


@functools.cache
def _model(name: str) -> models.CausalLM:
    return build(name)


@functools.cache
def _exported(name: str, phase: str) -> torch.export.ExportedProgram:
    model = _model(name)
    mod = model.prefill_module() if phase == "prefill" else model.decode_module()
    return torch.export.export(mod, example_inputs(name, 2, 8, phase=phase), strict=False)


def _ids(name: str, batch: int = 2, seq: int = 12, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(models.config(name).vocab_size, (batch, seq), generator=gen)


def _pos(t: int) -> torch.Tensor:
    return torch.tensor([t])


def _num_mamba_layers(model: models.CausalLM) -> int:
    return sum(isinstance(block, MambaBlock) for block in model.blocks)


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_prefill_matches_forward(name):
    model = _model(name)
    ids = _ids(name)
    logits, *state = model.prefill_module(all_logits=True)(ids)
    assert logits.shape == (2, 12, models.config(name).vocab_size)
    torch.testing.assert_close(logits, model(ids), rtol=0, atol=0)
    last, *last_state = model.prefill_module()(ids)
    assert last.shape == (2, 1, models.config(name).vocab_size)
    torch.testing.assert_close(last, logits[:, -1:], rtol=0, atol=1e-6)
    for a, b in zip(last_state, state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    init = model.init_state(2)
    assert [(s.shape, s.dtype) for s in state] == [(s.shape, s.dtype) for s in init]
    assert all(not s.any() for s in init)


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_decode_reproduces_full_sequence(name):
    model = _model(name)
    ids = _ids(name)
    full = model(ids)
    decode = model.decode_module()
    # Token by token from the empty state.
    state = model.init_state(2)
    for t in range(ids.shape[1]):
        logits, *state = decode(ids[:, t : t + 1], _pos(t), *state)
        torch.testing.assert_close(logits[:, 0], full[:, t], rtol=0, atol=1e-4)
    _, *prefill_state = model.prefill_module()(ids)
    for a, b in zip(state, prefill_state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # Prefill half the sequence, decode the rest.
    logits, *state = model.prefill_module(all_logits=True)(ids[:, :5])
    torch.testing.assert_close(logits, full[:, :5], rtol=0, atol=1e-4)
    for t in range(5, ids.shape[1]):
        logits, *state = decode(ids[:, t : t + 1], _pos(t), *state)
        torch.testing.assert_close(logits[:, 0], full[:, t], rtol=0, atol=1e-4)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_export(name, phase):
    ep = _exported(name, phase)
    assert not ep.graph_signature.buffers_to_mutate
    assert not ep.graph_signature.user_inputs_to_mutate
    ep = ep.run_decompositions()
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if any(bad in t for bad in FORBIDDEN)]
    scans = sum(n.target == SCAN for n in ep.graph.nodes)
    expected = _num_mamba_layers(_model(name)) if phase == "prefill" else 0
    assert scans == expected
    args = example_inputs(name, 2, 8, phase=phase, seed=3)
    mod = _model(name).prefill_module() if phase == "prefill" else _model(name).decode_module()
    for got, want in zip(ep.module()(*args), mod(*args), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_generate_matches_greedy_reference(name):
    model = _model(name)
    ids = _ids(name, seq=8)  # the exported prefill is specialized to (2, 8)
    want = greedy_reference(model, ids, 16)
    assert want.shape == (2, 24)
    assert want[:, 8:].unique().numel() > 2  # the continuation depends on the state
    eager = generate(model.prefill_module(), model.decode_module(), ids, 16)
    torch.testing.assert_close(eager, want, rtol=0, atol=0)
    decode_only = generate(None, model.decode_module(), ids, 16, init_state=model.init_state(2))
    torch.testing.assert_close(decode_only, want, rtol=0, atol=0)
    exported = generate(
        _exported(name, "prefill").module(), _exported(name, "decode").module(), ids, 16
    )
    torch.testing.assert_close(exported, want, rtol=0, atol=0)


def test_generate_needs_prefill_or_state():
    model = _model("tiny-llama")
    with pytest.raises(ValueError, match="init_state"):
        generate(None, model.decode_module(), _ids("tiny-llama"), 2)


def _scan_inputs(b=2, d=5, n=3, length=7, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    return dict(
        u=r(b, d, length),
        delta=r(b, d, length),
        A=-torch.rand(d, n, generator=g).to(dtype),
        B=r(b, n, length),
        C=r(b, n, length),
        D=r(d),
        z=r(b, d, length),
        delta_bias=r(d),
    )


def _naive_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Independent elementwise loop over (b, d, n, t)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    b, d, length = u.shape
    y = torch.zeros(b, d, length, dtype=torch.float64)
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    for i in range(b):
        for j in range(d):
            for t in range(length):
                dt = delta[i, j, t]
                h[i, j] = torch.exp(dt * A[j]) * h[i, j] + dt * B[i, :, t] * u[i, j, t]
                y[i, j, t] = (h[i, j] * C[i, :, t]).sum()
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * z.double() * torch.sigmoid(z.double())
    return y, h


@pytest.mark.parametrize(
    "options",
    [
        dict(delta_softplus=True),
        dict(delta_softplus=False, D=None, z=None, delta_bias=None),
        dict(delta_softplus=True, z=None),
    ],
)
def test_selective_scan_semantics(options):
    args = {**_scan_inputs(), **options}
    y, last = selective_scan(**args)
    want_y, want_last = _naive_scan(**args)
    torch.testing.assert_close(y, want_y.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, want_last.float(), rtol=1e-5, atol=1e-5)
    ref_y, ref_last = selective_scan_reference(**args)
    torch.testing.assert_close(y, ref_y, rtol=0, atol=0)
    torch.testing.assert_close(last, ref_last, rtol=0, atol=0)


def test_selective_scan_dtype_and_fake():
    args = _scan_inputs(dtype=torch.bfloat16)
    y, last = selective_scan(**args, delta_softplus=True)
    assert (y.dtype, last.dtype) == (torch.bfloat16, torch.bfloat16)
    assert (y.shape, last.shape) == ((2, 5, 7), (2, 5, 3))
    torch.library.opcheck(selective_scan, (*_scan_inputs().values(), True))


@pytest.mark.parametrize(
    "name, params",
    [
        ("gpt2-small", 124.4e6),
        ("llama-1b", 1.236e9),
        ("llama-8b", 8.03e9),
        ("llama-13b", 13.0e9),
        ("llama-70b", 70.6e9),
        ("mamba-130m", 129.1e6),
        ("mamba-370m", 371.5e6),
        ("mamba-1.4b", 1.372e9),
        ("mamba-2.8b", 2.768e9),
        ("hybrid-1b", 1.087e9),
    ],
)
def test_meta_build_parameter_count(name, params):
    model = build(name, device="meta", dtype=torch.bfloat16)
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in model.parameters())
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(params, rel=0.02)


def test_registry():
    assert set(TINY) <= set(models.names())
    with pytest.raises(ValueError, match="tiny-llama"):
        models.config("no-such-model")
    assert models.config("tiny-llama", max_seq_len=32).max_seq_len == 32
    rng = torch.get_rng_state()
    a, b, c = build("tiny-gpt2", seed=1), build("tiny-gpt2", seed=1), build("tiny-gpt2", seed=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a.embed.weight, b.embed.weight)
    assert not torch.equal(a.embed.weight, c.embed.weight)
    ids, position, *state = example_inputs("tiny-hybrid", 3, 10, phase="decode")
    assert ids.shape == (3, 1) and position.tolist() == [9]
    assert [s.shape for s in state] == [s.shape for s in _model("tiny-hybrid").init_state(3)]
    with pytest.raises(ValueError, match="phase"):
        example_inputs("tiny-gpt2", phase="train")
