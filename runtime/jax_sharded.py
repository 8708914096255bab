"""A `Program` sharded over many devices on JAX, as `runtime.sharding` partitions it.

Each pipeline stage is one `jax.jit` function on its own row of the device grid, a 1-D
`Mesh` with the axis "tensor". Weights are placed with `NamedSharding` (split matmul weights
on their split dimension, the rest replicated) and the results of split matmuls and
embeddings are annotated with `with_sharding_constraint`; XLA's SPMD partitioner inserts the
all-reduces and all-gathers. Values that cross from one stage to the next, and the program's
outputs but its KV caches and recurrent state, are replicated over their stage's devices;
`jax.device_put` moves them to the next stage. Caches and state stay split on the devices
and are gathered to the host when the call returns them.

Arrays are built with `jax.make_array_from_callback`, so the same code runs in every process
of a multi-host job (`jax.distributed.initialize`), each placing only its own devices'
shards. There every stage spans all the hosts (`_across_processes`), so only collectives
cross hosts: JAX's CPU backend cannot `device_put` between processes, and a replicated value
is already on every host when it moves to the next stage (docs/sharding.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import numpy as np
import torch
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from core.errors import ShardingError
from runtime.jax_runtime import (
    DEFAULT_SCAN_MEMORY_BYTES,
    Options,
    check_runnable,
    evaluate,
    to_torch,
)
from runtime.program import IndexCheck, Program, check_extremes, index_checks
from runtime.sharding import STAGE, TENSOR, Layout, Partition, layout_of, partition

Devices = int | Mesh | Layout


def device_grid(devices: Devices, program: Program) -> np.ndarray:
    """The (stages, tensor) grid of JAX devices for `devices`: a count (laid out by
    `runtime.sharding.choose_layout`) or a `Mesh` with axes "stage" and/or "tensor"."""
    if isinstance(devices, Mesh):
        names = tuple(devices.axis_names)
        if names not in ((STAGE, TENSOR), (TENSOR,), (STAGE,)):
            raise ShardingError(
                f"a mesh with axes {names} cannot shard a program; name its axes "
                f"('{STAGE}', '{TENSOR}'), ('{TENSOR}',) or ('{STAGE}',)"
            )
        grid = devices.devices.reshape(-1, 1) if names == (STAGE,) else devices.devices
        return grid.reshape(-1, grid.shape[-1])
    layout = layout_of(program, devices)
    seen = jax.devices()
    if layout.devices > len(seen):
        raise ShardingError(
            f"asked for {layout.devices} devices, but JAX sees {len(seen)} ({seen[0].platform}); "
            f"give devices=1..{len(seen)}, run where JAX sees more, or on the CPU set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={layout.devices} before JAX starts"
        )
    grid = np.array(_across_processes(seen), dtype=object)[: layout.devices]
    return grid.reshape(layout.stages, layout.tensor)


def _across_processes(devices: list) -> list:
    """The devices taking one from each process in turn, so that each stage (a row of the
    grid) spans every process when it has at least as many devices as there are processes."""
    by_process: dict[int, list] = {}
    for device in devices:
        by_process.setdefault(device.process_index, []).append(device)
    rounds = zip(*by_process.values(), strict=False)
    return [d for r in rounds for d in r] if len(by_process) > 1 else devices


def _check_spans_processes(grid: np.ndarray) -> None:
    """In a multi-host run every stage must hold a device of every process: only XLA's
    collectives then cross hosts (JAX's CPU backend cannot `device_put` between processes)."""
    processes = {d.process_index for d in jax.devices()}
    for index, row in enumerate(grid):
        if {d.process_index for d in row} != processes:
            raise ShardingError(
                f"pipeline stage {index} has devices of processes "
                f"{sorted({d.process_index for d in row})} but not all of {sorted(processes)}; "
                "in a multi-host run give each stage at least one device per host (tensor size "
                f">= {len(processes)}, or a mesh whose every stage row spans the hosts)"
            )


@dataclass(frozen=True)
class _Stage:
    """One pipeline stage: the positions it runs (its params first), the values it receives
    and sends on, its weights and index checks, and its mesh."""

    positions: tuple[int, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    weights: tuple[str, ...]
    checks: tuple[IndexCheck, ...]
    mesh: Mesh


def _stages(program: Program, part: Partition, grid: np.ndarray, checks) -> list[_Stage]:
    params = {ins.results[0]: p for p, ins in enumerate(program.instructions) if ins.op == "param"}
    defined = {v: p for p, ins in enumerate(program.instructions) for v in ins.results}
    ranges = part.stage_ranges(program)
    stages = []
    for index, positions in enumerate(ranges):
        compute = [p for p in positions if program.instructions[p].op != "param"]
        reads = {v for p in compute for v in program.instructions[p].operands if v is not None}
        later = {
            v for r in ranges[index + 1 :] for p in r for v in program.instructions[p].operands
        }
        made = [v for p in compute for v in program.instructions[p].results]
        own = sorted(params[v] for v in reads if v in params)
        stages.append(
            _Stage(
                positions=(*own, *compute),
                inputs=tuple(
                    sorted(v for v in reads - params.keys() if defined.get(v, -1) < positions.start)
                ),
                outputs=tuple(v for v in made if v in later or v in program.outputs),
                weights=tuple(program.instructions[p].attrs["sym_name"] for p in own),
                checks=tuple(c for c in checks if c.position in positions),
                mesh=Mesh(grid[index], (TENSOR,)),
            )
        )
    return stages


def _host(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as a NumPy array sharing its memory (bf16 through its bits)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(jax.numpy.bfloat16)
    return t.numpy()


def _place(t: torch.Tensor, sharding: NamedSharding) -> jax.Array:
    """`t` as a global array: each process places the shards of its own devices."""
    host = _host(t)
    return jax.make_array_from_callback(
        host.shape, sharding, lambda index: host[index], dtype=host.dtype
    )


def _local(array: jax.Array) -> jax.Array:
    """A replicated global array as one array on a device of this process."""
    return array.addressable_shards[0].data


def _fetch(array: jax.Array) -> torch.Tensor:
    """A global array as a torch tensor in every process: a replicated one from a local
    device, a split one (a KV cache or state, left split on the devices) gathered to the host."""
    if array.is_fully_replicated:
        return to_torch(_local(array))
    host = np.array(multihost_utils.process_allgather(array, tiled=True))  # writable
    if host.dtype == jax.numpy.bfloat16:
        return torch.from_numpy(host.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(host)


def _spec(ndim: int, dim: int | None) -> P:
    return P(*[TENSOR if d == dim else None for d in range(ndim)])


class ShardedExecutable:
    """`program` sharded over `devices` (a count or a `Mesh`), one `jax.jit` per stage.

    `executable(inputs)` takes and returns flat torch tensors, as `JaxExecutable` does;
    `layout` and `partition` say how the program was split (see `runtime.sharding`)."""

    def __init__(
        self,
        program: Program,
        weights: Mapping[str, torch.Tensor],
        devices: Devices,
        *,
        scan_memory_bytes: int = DEFAULT_SCAN_MEMORY_BYTES,
        check_indices: bool = True,
    ):
        check_runnable(program, weights)
        grid = device_grid(devices, program)
        self.program = program
        self.layout = Layout(*grid.shape)
        self.partition = partition(program, self.layout)
        self.options = Options(scan_memory_bytes)
        checks = index_checks(program) if check_indices else []
        self._stages = _stages(program, self.partition, grid, checks)
        self._multihost = jax.process_count() > 1
        if self._multihost:
            _check_spans_processes(grid)
        params = program.params()
        with jax.enable_x64(True):
            self._weights = [
                {
                    name: _place(
                        weights[name],
                        NamedSharding(
                            stage.mesh,
                            _spec(len(params[name].shape), self.partition.weight_dims[name]),
                        ),
                    )
                    for name in stage.weights
                }
                for stage in self._stages
            ]
        self._jitted = [jax.jit(partial(self._run_stage, stage)) for stage in self._stages]

    def _constrain(self, mesh: Mesh, position: int, results: tuple) -> tuple:
        """Split a column-parallel matmul's result on its last dimension; replicate a
        row-parallel one's (after XLA's all-reduce) and a split embedding's rows."""
        kind = self.partition.matmuls.get(position)
        if kind is None and position not in self.partition.gathers:
            return results
        (value,) = results
        dim = value.ndim - 1 if kind == "column" else None
        return (lax.with_sharding_constraint(value, NamedSharding(mesh, _spec(value.ndim, dim))),)

    def _run_stage(
        self, stage: _Stage, weights: dict, inputs: list
    ) -> tuple[list, jax.Array | None]:
        env = dict(zip(stage.inputs, inputs, strict=True))
        constrain = partial(self._constrain, stage.mesh)
        extremes = evaluate(
            self.program, stage.positions, env, weights, self.options, stage.checks, constrain
        )
        replicated = NamedSharding(stage.mesh, P())
        outputs = [
            env[v]
            if v in self.partition.state and not self._multihost
            else lax.with_sharding_constraint(env[v], replicated)
            for v in stage.outputs
        ]
        return outputs, jax.numpy.stack(extremes) if extremes else None

    def _move(self, array: jax.Array, sharding: NamedSharding) -> jax.Array:
        """A replicated value to the next stage: `jax.device_put`, or in a multi-host run
        (where JAX reshards across hosts only within one device set) each process's own
        copy placed on its devices of the next stage."""
        if not self._multihost:
            return jax.device_put(array, sharding)
        host = np.asarray(_local(array))
        return jax.make_array_from_callback(
            host.shape, sharding, lambda index: host[index], dtype=host.dtype
        )

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run on flat torch tensors; every stage in turn, then the outputs to the host."""
        values: dict[int, jax.Array] = {}
        with jax.enable_x64(True):
            for stage, weights, jitted in zip(
                self._stages, self._weights, self._jitted, strict=True
            ):
                replicated = NamedSharding(stage.mesh, P())
                arrays = [
                    _place(inputs[v], replicated)
                    if v < len(inputs)
                    else self._move(values[v], replicated)
                    for v in stage.inputs
                ]
                outputs, extremes = jitted(weights, arrays)
                if extremes is not None:
                    check_extremes(stage.checks, np.asarray(_local(extremes)))
                values.update(zip(stage.outputs, outputs, strict=True))
            return [
                _fetch(values[v]) if v in values else inputs[v].clone()
                for v in self.program.outputs
            ]
