"""Mixture of experts (`core.moe`, `compiler.hf_moe`, `simulator.moe`): HF's routers and experts
rewritten to `wafer::moe_*` ops match eager for every experts implementation, compile to `wse`
ops that match eager on the reference, tile-by-tile and JAX runtimes, verify, place each expert
on its own region, and simulate the token routing as all-to-all traffic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

import compiler
from compiler.hf_moe import EXPERTS
from compiler.hf_moe_static import STATIC_MOE
from compiler.hf_rewrites import _qualname, apply_rewrites
from compiler.mlir import new_context, parse_module
from core.geometry import Rect
from core.moe import moe_combine, moe_dispatch, moe_router_reference
from simulator.moe import expert_load, moe_notes, with_routed_load
from simulator.phases import simulate_placed

IMPLS = ("eager", "batched_mm", "grouped_mm")
SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
ATTN = dict(num_key_value_heads=2, intermediate_size=48)
FAMILIES = {
    "mixtral": lambda: transformers.MixtralConfig(
        **SMALL, **ATTN, num_local_experts=4, num_experts_per_tok=2
    ),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        **SMALL,
        **ATTN,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=False,
    ),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
        **SMALL,
        **ATTN,
        moe_intermediate_size=24,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,
    ),
    "gpt_oss": lambda: transformers.GptOssConfig(
        **SMALL,
        **ATTN,
        head_dim=8,
        num_local_experts=4,
        num_experts_per_tok=2,
        layer_types=["full_attention"] * 2,
    ),
    "granitemoe": lambda: transformers.GraniteMoeConfig(
        **SMALL, **ATTN, num_local_experts=4, num_experts_per_tok=2
    ),
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        **SMALL,
        intermediate_size=48,
        moe_intermediate_size=24,
        first_k_dense_replace=1,
        num_key_value_heads=4,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
    ),
    "jamba": lambda: transformers.JambaConfig(
        **SMALL,
        **ATTN,
        num_experts=4,
        num_experts_per_tok=2,
        expert_layer_period=1,
        expert_layer_offset=0,
        attn_layer_period=2,
        attn_layer_offset=1,
        mamba_d_state=4,
        mamba_dt_rank=8,
        use_mamba_kernels=False,
    ),
    "afmoe": lambda: transformers.AfmoeConfig(
        **SMALL,
        **ATTN,
        head_dim=8,
        moe_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        num_dense_layers=1,
        route_scale=2.5,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=8,
    ),
}


def _model(family: str, impl: str) -> torch.nn.Module:
    """The family's tiny model with seeded N(0, 0.2) weights (router biases included)."""
    config = FAMILIES[family]()
    config._experts_implementation = impl
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))


def _logits(model, *args, **kwargs) -> torch.Tensor:
    out = model(*args, **kwargs)
    return out.logits if hasattr(out, "logits") else out[0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_rewrite_matches_every_experts_implementation(family, impl):
    model = _model(family, impl)
    want = _logits(model, IDS, use_cache=False)
    with apply_rewrites(model):
        rewritten = [m for m in model.modules() if "forward" in m.__dict__]
        got = _logits(model, IDS, use_cache=False)
    assert len(rewritten) >= 2  # a router and an experts module at least
    assert want.std() > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# One experts implementation per family keeps the compile count small; the rewrite replaces
# each implementation alike (test above).
COMPILED = {
    "mixtral": "eager",
    "qwen2_moe": "grouped_mm",
    "gpt_oss": "batched_mm",
    "qwen3_moe": "batched_mm",  # slow: as Qwen2-MoE without the shared expert
    "deepseek_v3": "eager",  # slow: its router's groups are checked in test_router_scorings
    "afmoe": "grouped_mm",  # sigmoid router with the block's expert_bias, route_scale
}
SLOW = {"qwen3_moe", "deepseek_v3"}
MOE_OPS = {"moe_router", "moe_dispatch", "grouped_matmul", "moe_combine"}


@pytest.fixture(scope="module")
def placed_mixtral():
    model = _model("mixtral", "eager")
    return model, compiler.compile(model, (IDS,), {"use_cache": False}, target="mesh-8x8")


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=[pytest.mark.slow] * (f in SLOW)) for f in COMPILED]
)
@torch.no_grad()
def test_compiled_matches_eager_on_reference_and_jax(family, placed_mixtral):
    if family == "mixtral":
        model, compiled = placed_mixtral
        runtimes = ("reference", "simulator", "jax")  # simulator: tile by tile on mesh-8x8
    else:
        model = _model(family, COMPILED[family])
        compiled = compiler.compile(model, (IDS,), {"use_cache": False}, target=None)
        runtimes = ("reference", "jax")
    ops = [i.op for i in compiled.program.instructions]
    assert MOE_OPS <= set(ops) and ops.count("moe_router") == ops.count("moe_combine") >= 1
    want = _logits(model, IDS, use_cache=False)
    for runtime in runtimes:
        got = _logits(compiled.using(runtime), IDS, use_cache=False)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=runtime)


def test_router_scorings():
    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    w, i = moe_router_reference(logits, None, 2, "softmax", True)
    probs = logits.softmax(-1)
    top = probs.topk(2)
    torch.testing.assert_close(w, top.values / top.values.sum(-1, keepdim=True))
    assert torch.equal(i, top.indices)
    w, i = moe_router_reference(logits, None, 2, "topk_softmax", False)
    torch.testing.assert_close(w, logits.topk(2).values.softmax(-1))
    bias = torch.zeros(8)
    bias[:4] = 10.0  # every group-0 expert wins the choice; weights stay the unbiased scores
    w, i = moe_router_reference(logits, bias, 2, "sigmoid", False, 2, 1, 2.5)
    assert (i < 4).all()
    torch.testing.assert_close(w, logits.sigmoid().gather(1, i) * 2.5)


def test_capacity_drops_the_overflow_in_token_order():
    x = torch.arange(12.0).reshape(4, 3)
    indices = torch.tensor([[0, 1], [0, 2], [0, 1], [2, 0]])
    weights = torch.full((4, 2), 0.5)
    xs, gates, slots = moe_dispatch(x, indices, weights, 3, 2)
    assert slots.tolist() == [[0, 1], [0, 2], [1, 3]]  # expert 0 keeps tokens 0, 1: 2, 3 drop
    assert gates.tolist() == [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    torch.testing.assert_close(xs[2], x[[1, 3]])
    out = moe_combine(xs, gates, slots, 4)
    torch.testing.assert_close(out, torch.stack([x[0], x[1], 0.5 * x[2], 0.5 * x[3]]))
    full = moe_combine(*moe_dispatch(x, indices, weights, 3, 4), 4)  # capacity = tokens
    torch.testing.assert_close(full, x)


def _module(body: str, args: str) -> str:
    return f"func.func @f({args}) {{\n{body}\nfunc.return\n}}"


BAD = {
    "top_k must be between": (
        '%w:2 = "wse.moe_router"(%a) {groups = 1 : i64, normalize = true, operandSegmentSizes ='
        ' array<i32: 1, 0>, scale = 1.0 : f64, scoring = "softmax", top_k = 5 : i64,'
        " topk_groups = 1 : i64} : (tensor<6x4xf32>) -> (tensor<6x5xf32>, tensor<6x5xi64>)",
        "%a: tensor<6x4xf32>",
    ),
    "scoring must be": (
        '%w:2 = "wse.moe_router"(%a) {groups = 1 : i64, normalize = true, operandSegmentSizes ='
        ' array<i32: 1, 0>, scale = 1.0 : f64, scoring = "argmax", top_k = 2 : i64,'
        " topk_groups = 1 : i64} : (tensor<6x4xf32>) -> (tensor<6x2xf32>, tensor<6x2xi64>)",
        "%a: tensor<6x4xf32>",
    ),
    "capacity must be between": (
        '%d:3 = "wse.moe_dispatch"(%x, %i, %w) {capacity = 7 : i64} : (tensor<6x8xf32>,'
        " tensor<6x2xi64>, tensor<6x2xf32>) -> (tensor<4x7x8xf32>, tensor<4x7xf32>,"
        " tensor<4x7xi64>)",
        "%x: tensor<6x8xf32>, %i: tensor<6x2xi64>, %w: tensor<6x2xf32>",
    ),
    "contraction dims differ": (
        '%y = "wse.grouped_matmul"(%x, %w) {operandSegmentSizes = array<i32: 1, 1, 0>,'
        " transpose_rhs = true} : (tensor<4x6x8xf32>, tensor<4x5x9xf32>) -> tensor<4x6x5xf32>",
        "%x: tensor<4x6x8xf32>, %w: tensor<4x5x9xf32>",
    ),
    "one \\[x, y, w, h\\] per expert": (
        '%y = "wse.grouped_matmul"(%x, %w) {expert_regions = [0, 0, 1, 1],'
        " operandSegmentSizes = array<i32: 1, 1, 0>, transpose_rhs = false} :"
        " (tensor<4x6x8xf32>, tensor<4x8x5xf32>) -> tensor<4x6x5xf32>",
        "%x: tensor<4x6x8xf32>, %w: tensor<4x8x5xf32>",
    ),
    "gates and slots \\(E, C\\)": (
        '%o = "wse.moe_combine"(%y, %g, %s) : (tensor<4x6x8xf32>, tensor<4x5xf32>,'
        " tensor<4x6xi64>) -> tensor<6x8xf32>",
        "%y: tensor<4x6x8xf32>, %g: tensor<4x5xf32>, %s: tensor<4x6xi64>",
    ),
}


@pytest.mark.parametrize("message", BAD)
def test_verifiers_reject_bad_ops(message):
    body, args = BAD[message]
    with pytest.raises(Exception, match=message):
        parse_module(_module(body, args), new_context())


FILECHECK = Path(sys.executable).with_name("filecheck")
CHECKS = """
// CHECK: "wse.moe_router"({{.*}}scoring = "softmax"{{.*}}top_k = 2
// CHECK-NEXT: "wse.moe_dispatch"({{.*}}capacity = 32 : i64{{.*}}expert_regions = [[E:.*]], region
// CHECK-SAME: -> (tensor<4x32x32xf32>, tensor<4x32xf32>, tensor<4x32xi64>)
// CHECK-NEXT: "wse.grouped_matmul"({{.*}}expert_regions = [[E]], {{.*}}-> tensor<4x32x96xf32>
// CHECK: "wse.grouped_matmul"({{.*}}expert_regions = [[D:.*]], operandSegmentSizes{{.*}}-> tensor<4x32x32xf32>
// CHECK-NEXT: "wse.moe_combine"({{.*}}expert_regions = [[D]], region{{.*}}-> tensor<32x32xf32>
"""


def test_placed_ir_puts_each_expert_on_its_own_region(placed_mixtral, tmp_path):
    _, compiled = placed_mixtral
    checks = tmp_path / "checks.txt"
    checks.write_text(CHECKS)
    run = subprocess.run(
        [str(FILECHECK), str(checks)], input=compiled.placed.mlir, text=True, capture_output=True
    )
    assert run.returncode == 0, run.stderr
    for ins in compiled.placed.program.instructions:
        if ins.op == "grouped_matmul":
            flat = ins.attrs["expert_regions"]
            rects = [Rect(*flat[i : i + 4]) for i in range(0, len(flat), 4)]
            assert len(rects) == 4 and all(r.is_valid() for r in rects)
            assert not any(a.overlaps(b) for n, a in enumerate(rects) for b in rects[n + 1 :])


def test_simulation_charges_all_to_all_with_expert_load(placed_mixtral):
    _, compiled = placed_mixtral
    program = compiled.placed.program
    sim = simulate_placed(program, compiled.target, dtype="fp32")
    rows = {o.op: o for o in sim.op_classes}
    assert rows["all_to_all"].tasks == 2 * 2 * 4  # 2 layers x (dispatch + combine) x 4 experts
    assert rows["all_to_all"].busy_cycles > 0 and rows["grouped_matmul"].tasks >= 2 * 2 * 4
    notes = moe_notes(program)
    assert len(notes) == 1 and "2 layer(s) of 4 experts, top-2" in notes[0]
    assert "expert load 16 tokens per expert" in notes[0] and "2.0x" in notes[0]
    assert expert_load(5, 2, 4, 5) == [3, 3, 2, 2]
    assert expert_load(32, 2, 4, 8) == [8, 8, 8, 8]  # capacity caps the load


@torch.no_grad()
def test_expert_load_routed_from_the_example_inputs(placed_mixtral):
    model, compiled = placed_mixtral
    routers = [layer.mlp.gate for layer in model.model.layers]
    seen: list[torch.Tensor] = []
    hooks = [r.register_forward_hook(lambda m, i, out: seen.append(out[2])) for r in routers]
    try:
        model(IDS, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    want = [torch.bincount(i.flatten(), minlength=4).tolist() for i in seen]
    program = with_routed_load(compiled.placed.program, compiled, (IDS,), {"use_cache": False})
    got = [i.attrs["expert_load"] for i in program.instructions if i.op == "moe_dispatch"]
    assert got == want and any(load != [16] * 4 for load in got)  # not uniform
    notes = moe_notes(program)
    assert "routed from the example inputs" in notes[0] and str(want[1]) in notes[2]
    sim = simulate_placed(program, compiled.target, dtype="fp32")
    assert {o.op: o for o in sim.op_classes}["all_to_all"].tasks == 16


@torch.no_grad()
def test_family_matrix_tiny_moe_models_run_in_eager():
    """The family matrix's tiny MoE configs (tests/families.py): DeepSeek-V3's MLA runs, AFMoE's
    router (HF inits it to 0: every expert tied) is seeded, and the float64 reference of a
    `grouped_mm` family (no float64 kernel) runs HF's expert loop."""
    import families

    deepseek = families.tiny_model("deepseek_v3")
    ids = families.tiny_inputs(deepseek)
    assert _logits(deepseek, ids, use_cache=False).std() > 0.01
    afmoe = families.tiny_model("afmoe")
    assert all(layer.mlp.router.gate.weight.std() > 0.1 for layer in afmoe.model.layers[1:])
    fp32, fp64 = (families.tiny_model("flex_olmo", d) for d in (torch.float32, torch.float64))
    want = _logits(fp32, ids, use_cache=False)
    torch.testing.assert_close(_logits(fp64, ids, use_cache=False).float(), want, atol=1e-5, rtol=0)


def _family_of(experts_path: str) -> str:
    """The matrix family whose modeling module (`transformers.models.<dir>`) defines a class."""
    import families

    directory, kept = experts_path.split(".")[2], set(families.families())
    return next(t for t in (directory, f"{directory}_text") if t in kept)


@pytest.mark.parametrize("path", EXPERTS, ids=lambda p: p.rsplit(".", 1)[1])
@torch.no_grad()
def test_every_rewritten_experts_class_matches_eager(path):
    """Each experts class the rewrite names, in its family's tiny matrix model (its own
    router), gives eager's logits through the rewrite."""
    import families

    model = families.tiny_model(_family_of(path))
    ids = families.tiny_inputs(model)
    want = _logits(model, ids, use_cache=False)
    with apply_rewrites(model):
        rewritten = [m for m in model.modules() if "forward" in m.__dict__]
        got = _logits(model, ids, use_cache=False)
    assert any(f"{type(m).__module__}.{type(m).__qualname__}" == path for m in rewritten)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("family", ["longcat_flash", "jetmoe"])
@torch.no_grad()
def test_static_shape_moe_rewrites_match_eager(family):
    """LongCat-Flash (zero-compute experts beside routed ones) and JetMoE (MLP and attention
    experts split by the router's counts) through `compiler.hf_moe_static`: eager's logits
    with the rewrite, and compiled to `wse` MoE ops on the reference runtime."""
    import families

    model = families.tiny_model(family)
    ids = families.tiny_inputs(model)
    want = _logits(model, ids, use_cache=False)
    targets = {target for _, target, _, _ in STATIC_MOE}
    with apply_rewrites(model):
        rewritten = {
            _qualname(m) for m in model.modules() if m.__dict__.keys() & {"forward", "map"}
        }
        got = _logits(model, ids, use_cache=False)
    assert len(rewritten & targets) >= 2 and want.std() > 0.01
    atol = 1e-5 * max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
    ops = [i.op for i in compiled.program.instructions]
    assert MOE_OPS <= set(ops)
    got = _logits(compiled.using("reference"), ids, use_cache=False)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


@torch.no_grad()
def test_qsa_indexer_rewrite_selects_eagers_keys():
    """Qwen4-Exp's sparse-attention indexer in fixed-size ops (`compiler.hf_indexer`) selects
    the keys of HF's per-query `nonzero` loop: causal, left-padded (blocks then start past the
    padding), and as a float mask; the whole tiny model gives eager's logits compiled."""
    import families
    from transformers.models.qwen4_exp import modeling_qwen4_exp as qwen4

    model = families.tiny_model("qwen4_exp_text")
    layer = next(m for m in model.modules() if isinstance(m, qwen4.Qwen4ExpTextQSAIndexer))
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, model.config.hidden_size, generator=gen)
    positions = torch.arange(16).expand(2, 16)
    rope = model.model.rotary_emb(x, positions)
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    padded = causal & (torch.arange(16) >= torch.tensor([[0], [5]]))[:, None, None]
    float_mask = torch.zeros(2, 1, 16, 16).masked_fill(~padded, torch.finfo(torch.float32).min)
    for mask in (causal.expand(2, 1, 16, 16), padded, float_mask):
        want = layer(x, rope, mask, None)
        with apply_rewrites(layer):
            got = layer(x, rope, mask, None)
        assert torch.equal(got, want) and 0 < want.sum() < causal.sum() * 2
    ids = families.tiny_inputs(model)
    want = _logits(model, ids, use_cache=False)
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
    assert "nonzero" not in {i.op for i in compiled.program.instructions}
    got = _logits(compiled.using("reference"), ids, use_cache=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(1.0, want.abs().max().item()))


def test_decode_state_probe_runs_through_the_rewrites():
    """`init_state` probes a model eagerly; with the rewrites a meta-device JetMoE (whose own
    forward reads its router's counts) probes too, as the default-size decode needs."""
    import families

    from models import hf_state

    model = families.tiny_model("jetmoe").to("meta")
    state = hf_state.init_state(model, 1, 8)
    config = model.config
    assert len(state) == 2 * config.num_hidden_layers and all(t.is_meta for t in state)
    assert state[0].shape[-2] == 8
