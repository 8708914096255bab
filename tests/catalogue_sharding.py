"""Catalogue rows for sharded execution ("named-error"): more devices than JAX sees, a mesh
that does not divide the model, a plan that does not fit, a sharded artifact loaded with
another device count; and a forged sharding record ("artifact-untrusted"). One hand-built
program, y = x @ w.T with w 6 x 6, keeps them fast."""

from __future__ import annotations

from pathlib import Path

import torch
from catalogue import Case
from catalogue_artifacts import edit
from torch.utils import _pytree as pytree

import runtime
from core.errors import ArtifactError, ShardingError
from runtime import artifact, sharding
from runtime.jax_sharded import ShardedExecutable
from runtime.program import Instruction, Program, Signature, TensorSpec

X, W = TensorSpec((4, 6), "f32"), TensorSpec((6, 6), "f32")
PROGRAM = Program(
    (X,),
    (
        Instruction("param", (), (1,), (W,), {"sym_name": "w"}),
        Instruction("transpose", (1,), (2,), (W,), {"permutation": [1, 0]}),
        Instruction("matmul", (0, 2, None), (3,), (X,)),
    ),
    (3,),
)
INPUT = torch.ones(4, 6)
WEIGHTS = {"w": torch.eye(6)}


def _executable(devices) -> ShardedExecutable:
    return ShardedExecutable(PROGRAM, WEIGHTS, devices)


def _saved(tmp_path: Path, devices: int = 2) -> Path:
    return artifact.save(
        tmp_path / "sharded",
        program=PROGRAM,
        weights=WEIGHTS,
        signature=Signature((True,), (0,)),
        in_spec=pytree.tree_flatten(((INPUT,), {}))[1],
        out_spec=pytree.tree_flatten(INPUT)[1],
        mlir="module {}\n",
        model_name="matmul",
        target="none",
        devices=devices,
    )


def _forged_sharding(tmp_path: Path):
    path = edit(_saved(tmp_path), artifact.MANIFEST, lambda m: m["sharding"].update(stages=3))
    return runtime.load(path)


NAMED = "named-error"
CASES: list[Case] = [
    Case(NAMED, "more devices than JAX sees", lambda t: _executable(4096), ShardingError,
         "but JAX sees"),
    Case(NAMED, "tensor size dividing no dimension of a weight",
         lambda t: _executable(sharding.Layout(1, 4)), ShardingError,
         "divides neither dimension of weight 'w'"),
    Case(NAMED, "more pipeline stages than the program has layers",
         lambda t: sharding.plan(PROGRAM, layout=sharding.Layout(2, 1)), ShardingError,
         "cannot be cut into 2 pipeline stages"),
    Case(NAMED, "plan that does not fit the devices' memory",
         lambda t: sharding.plan(PROGRAM, 1, device_bytes=300), ShardingError,
         "it would fit on 2 such devices"),
    Case(NAMED, "sharded artifact loaded with another device count",
         lambda t: runtime.load(_saved(t), devices=3), ShardingError,
         "saved sharded over 2 devices"),
    Case(NAMED, "devices with a runtime other than JAX",
         lambda t: runtime.load(_saved(t), runtime="reference", devices=2), ShardingError,
         "use runtime='jax'"),
    Case("artifact-untrusted", "forged sharding record (stages x tensor != devices)",
         _forged_sharding, ArtifactError, "is not stages x tensor = devices"),
]  # fmt: skip
