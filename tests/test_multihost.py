"""One saved artifact run over two hosts, simulated on this machine: two processes joined by
`jax.distributed.initialize` on localhost, each with 2 forced CPU devices, shard a tiny Llama
over the 4 devices (cross-process collectives through gloo), tensor-parallel across the hosts
or one pipeline stage per host, and both return eager's answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_matches
from torch.utils import _pytree as pytree

import compiler
import models
from runtime import sharding

ROOT = Path(__file__).resolve().parent.parent

# What each host runs: the runtime alone (no compiler), the same artifact and inputs.
WORKER = """
import sys, jax, torch
port, process, artifact, inputs, out = sys.argv[1:]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process))
import runtime
assert jax.device_count() == 4 and jax.local_device_count() == 2, jax.devices()
module = runtime.load(artifact, devices=4)
print("layout", module._executor.layout)
outputs = module(*torch.load(inputs, weights_only=True))
torch.save(list(torch.utils._pytree.tree_leaves(outputs)), out)
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "layout",
    [
        sharding.Layout(1, 4),  # tensor-parallel across the two hosts
        pytest.param(sharding.Layout(2, 2), marks=pytest.mark.slow),  # a stage per host
    ],
    ids=str,
)
def test_two_processes_run_one_sharded_artifact(tmp_path, layout):
    model = models.build("tiny-llama")
    inputs = models.example_inputs("tiny-llama", 2, 8, phase="decode")
    module = model.decode_module()
    with torch.no_grad():
        eager = pytree.tree_leaves(module(*inputs))
    compiled = compiler.compile(module, inputs, target=None, runtime="jax", devices=layout)
    compiled.save(tmp_path / "artifact")
    torch.save(list(inputs), tmp_path / "inputs.pt")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    port = _free_port()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(port),
                str(i),
                str(tmp_path / "artifact"),
                str(tmp_path / "inputs.pt"),
                str(tmp_path / f"out{i}.pt"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        logs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    for i, (w, log) in enumerate(zip(workers, logs, strict=True)):
        assert w.returncode == 0, f"process {i} failed:\n{log[-3000:]}"
        assert f"layout {layout}" in log
        outputs = torch.load(tmp_path / f"out{i}.pt", weights_only=True)
        assert len(outputs) == len(eager)
        for actual, expected in zip(outputs, eager, strict=True):
            assert_matches(actual, expected)
