"""Sharded execution on JAX over 8 forced host devices (tests/conftest.py sets XLA_FLAGS):
tiny models split over 2, 4 and 8 devices and a 2x4 (stage x tensor) mesh, prefill and
decode, against eager PyTorch; the plan against the arrays actually placed; bad input."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from conftest import assert_matches
from jax.sharding import Mesh
from torch.utils import _pytree as pytree

import compiler
import models
import runtime
from core.errors import ShardingError
from runtime import sharding
from runtime.jax_sharded import ShardedExecutable

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)


def mesh(stages: int, tensor: int) -> Mesh:
    grid = np.array(jax.devices()[: stages * tensor]).reshape(stages, tensor)
    return Mesh(grid, (sharding.STAGE, sharding.TENSOR))


_COMPILED: dict = {}


def compiled(name: str, phase: str, dtype: torch.dtype = torch.float32):
    """(module, inputs, eager outputs) of a tiny model, compiled for JAX once per test run."""
    key = (name, phase, dtype)
    if key not in _COMPILED:
        model = models.build(name, dtype=dtype)
        inputs = models.example_inputs(name, 2, 8, phase=phase, dtype=dtype)
        module = model.prefill_module() if phase == "prefill" else model.decode_module()
        with torch.no_grad():
            eager = pytree.tree_leaves(module(*inputs))
        _COMPILED[key] = compiler.compile(module, inputs, target=None, runtime="jax"), inputs, eager
    return _COMPILED[key]


# Each model in each phase over several layouts: 2, 4 and 8 tensor-parallel devices, and
# 2 pipeline stages of 4.
CASES = [
    (name, phase, devices)
    for name in ("tiny-llama", "tiny-mamba")
    for phase, layouts in (("prefill", (2, 8, "2x4")), ("decode", (4, "2x4")))
    for devices in layouts
]


@pytest.mark.parametrize("name, phase, devices", CASES, ids=str)
def test_sharded_matches_eager(name, phase, devices):
    module, inputs, eager = compiled(name, phase)
    devices = mesh(2, 4) if devices == "2x4" else devices
    outputs = pytree.tree_leaves(module.using("jax", devices=devices)(*inputs))
    assert len(outputs) == len(eager)
    for actual, expected in zip(outputs, eager, strict=True):
        assert_matches(actual, expected)


def test_bf16_sharded_matches_single_device():
    module, inputs, eager = compiled("tiny-llama", "prefill", torch.bfloat16)
    single = pytree.tree_leaves(module.using("jax")(*inputs))
    sharded = pytree.tree_leaves(module.using("jax", devices=mesh(2, 4))(*inputs))
    for a, b, e in zip(sharded, single, eager, strict=True):
        assert_matches(a, b, compute_dtype=torch.bfloat16)
        assert_matches(a, e, compute_dtype=torch.bfloat16)


def test_weights_are_split_as_planned():
    """Per device, the placed weights take exactly the bytes the plan gives, and the
    Megatron pairs are split column- then row-wise."""
    module, inputs, _ = compiled("tiny-llama", "prefill")
    executable = ShardedExecutable(module.program, module.weights, mesh(2, 4))
    plan = sharding.plan(module.program, layout=executable.layout)
    assert executable.layout == sharding.Layout(2, 4)
    for stage, weights, planned in zip(
        executable._stages, executable._weights, plan.stages, strict=True
    ):
        first = stage.mesh.devices.flat[0]
        held = sum(
            s.data.nbytes
            for w in weights.values()
            for s in w.addressable_shards
            if s.device == first
        )
        assert held == planned.weight_bytes
    dims = executable.partition.weight_dims
    assert dims["model.blocks.0.attn.q_proj.weight"] == 0  # column-parallel: output dim
    assert dims["model.blocks.0.attn.o_proj.weight"] == 1  # row-parallel: input dim
    assert dims["model.blocks.1.mlp.down_proj.weight"] == 1
    assert dims["model.blocks.0.norm1.weight"] is None
    kinds = sorted(executable.partition.matmuls.values())
    assert kinds.count("row") == 4 and kinds.count("column") == 11  # 2 layers x (5 + 2) + head


def test_xla_inserts_the_collectives():
    """The all-reduces come from XLA's partitioner, one per row-parallel matmul at least."""
    module, inputs, _ = compiled("tiny-llama", "prefill")
    executable = ShardedExecutable(module.program, module.weights, 4)
    (stage,) = executable._stages
    with jax.enable_x64(True):
        args = [jax.ShapeDtypeStruct(tuple(inputs[v].shape), jax.numpy.int64) for v in stage.inputs]
        text = executable._jitted[0].lower(executable._weights[0], args).compile().as_text()
    planned = sum(
        c.count for c in sharding.plan(module.program, 4).collectives if c.kind == "all-reduce"
    )
    assert planned == 4
    assert text.count("all-reduce(") + text.count("all-reduce-start(") >= planned


def test_plan_of_tiny_llama():
    module, _, _ = compiled("tiny-llama", "prefill")
    one, four = (sharding.plan(module.program, d) for d in (1, 4))
    assert four.layout == sharding.Layout(1, 4)
    weights = sum(sharding.nbytes(s) for s in module.program.params().values())
    assert one.stages[0].weight_bytes == weights == 427264
    assert (
        four.stages[0].weight_bytes
        == (weights - four.replicated_weight_bytes) // 4 + four.replicated_weight_bytes
    )
    assert four.replicated_weight_bytes == 5 * 64 * 4  # the five norm weights
    kv = 2 * 2 * (2 * 2 * 64 * 16 * 4)  # 2 layers x (k, v) x [2, 2 heads, 64, 16] f32
    assert one.stages[0].state_bytes == kv and four.stages[0].state_bytes == kv // 4
    assert {(c.kind, c.count) for c in four.collectives} >= {("all-reduce", 4)}
    assert json.loads(json.dumps(four.to_dict()))["devices"] == 4


def test_plan_too_big_names_bytes_and_devices():
    module, _, _ = compiled("tiny-llama", "prefill")
    with pytest.raises(ShardingError, match=r"does not fit .* it would fit on \d+ such devices"):
        sharding.plan(module.program, 2, device_bytes=150_000)
    with pytest.raises(ShardingError, match="cannot be cut into 64 pipeline stages"):
        sharding.plan(module.program, layout=sharding.Layout(64, 1))


def test_sharded_artifact_records_and_checks_its_devices(tmp_path):
    module, inputs, eager = compiled("tiny-llama", "decode")
    module.using("jax", devices=mesh(2, 2)).save(tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["sharding"] == {"devices": 4, "stages": 2, "tensor": 2}
    loaded = runtime.load(tmp_path / "a")
    assert loaded.devices == sharding.Layout(2, 2)
    for actual, expected in zip(pytree.tree_leaves(loaded(*inputs)), eager, strict=True):
        assert_matches(actual, expected)
    assert isinstance(loaded._executor, ShardedExecutable)
    with pytest.raises(ShardingError, match="saved sharded over 4 devices.*devices=4"):
        runtime.load(tmp_path / "a", devices=2)
    runtime.load(tmp_path / "a", devices=4)


@pytest.mark.parametrize(
    "devices, fragment",
    [
        (64, "JAX sees 8"),
        (sharding.Layout(1, 3), "divides neither dimension"),
        ("two", "device count or a jax.sharding.Mesh"),
    ],
    ids=["too-many", "tensor-3", "not-devices"],
)
def test_bad_devices_raise_sharding_error(devices, fragment):
    module, inputs, _ = compiled("tiny-llama", "prefill")
    with pytest.raises(ShardingError, match=fragment):
        module.using("jax", devices=devices)(*inputs)


def test_bad_mesh_axes_and_runtime():
    module, inputs, _ = compiled("tiny-llama", "prefill")
    with pytest.raises(ShardingError, match="name its axes"):
        ShardedExecutable(module.program, module.weights, Mesh(np.array(jax.devices()[:2]), ("x",)))
    with pytest.raises(ShardingError, match="use runtime='jax'"):
        module.using("reference", devices=2)


@pytest.mark.slow
def test_plan_of_llama_70b_on_8_gpus():
    """A 70B Llama on meta (no weights): 8 x 80 GB fits tensor-parallel; 2 devices do not."""
    model = models.build("llama-70b", device="meta", dtype=torch.bfloat16, max_seq_len=1024)
    ids = models.example_inputs("llama-70b", 1, 1024)
    program = compiler.compile(model.prefill_module(), ids, target=None).program
    plan = sharding.plan(program, 8, device_bytes=80e9)
    assert plan.layout == sharding.Layout(1, 8)
    weights = sum(sharding.nbytes(s) for s in program.params().values())
    assert 140e9 < weights < 142e9
    assert 17e9 < plan.stages[0].weight_bytes < 18e9
    with pytest.raises(ShardingError, match="it would fit on"):
        sharding.plan(program, 1, device_bytes=80e9)


def test_shard_plan_cli(capsys):
    """`wafersim shard-plan` prints the plan of a meta-shape model; too little memory, or a
    malformed size, is one line on stderr and status 2."""
    from simulator.cli import main

    argv = ["shard-plan", "tiny-llama", "--devices", "4", "--seq", "32", "--dtype", "fp32"]
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["stages"], plan["tensor"], plan["device_bytes"]) == (1, 4, 80_000_000_000)
    assert plan["per_stage"][0]["weight_bytes"] == (427264 - 1280) // 4 + 1280
    assert main([*argv, "--device-memory", "100kB"]) == 2
    assert "it would fit on" in capsys.readouterr().err
    assert main([*argv, "--device-memory", "eighty"]) == 2
    assert "such as 80GB" in capsys.readouterr().err
