"""Choosing a runtime and calling a program: the one path `CompiledModule` and `LoadedModule`
share.

`RUNTIMES` names the executors: `"reference"` (CPU, one torch kernel per op), `"simulator"`
(tile by tile as placed, on the simulated PEs' SRAM; needs a placed program and its target)
and `"jax"` (the whole program under one `jax.jit`, on a GPU when JAX sees one).
`ProgramCall` gives a class holding a program, its weights, its signature and pytree specs the
model-like call: inputs checked against the signature (tensors for shape and dtype, other
inputs for the values compiled for), the chosen executor built on first use, outputs rebuilt
in the model's structure.

Every runtime raises `IndexOutOfRangeError` for an embedding or indexing index outside the
range eager PyTorch accepts. The reference and tile-by-tile runtimes always check; the JAX
runtime checks unless built with `check_indices=False` (the check waits for the device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import torch
from torch.utils import _pytree as pytree

from core.errors import (
    InputMismatchError,
    MetaDeviceError,
    ShardingError,
    UnknownRuntimeError,
)
from core.target import Target
from runtime.program import Program, Signature, flatten_inputs

RUNTIMES = ("reference", "simulator", "jax")

Executor = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def check_runtime(runtime: str, *, placed: bool) -> None:
    """Refuse an unknown runtime name, or the tile-by-tile one without a placed program."""
    if runtime not in RUNTIMES:
        raise UnknownRuntimeError(
            f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}"
        )
    if runtime == "simulator" and not placed:
        raise UnknownRuntimeError(
            "runtime 'simulator' executes the placed program: compile with a target "
            "(saved artifacts hold no placement: load them with 'reference' or 'jax')"
        )


def check_devices(runtime: str, devices) -> None:
    """Only the JAX runtime shards a program over devices."""
    if devices is not None and runtime != "jax":
        raise ShardingError(
            f"devices={devices!r} shards the program on JAX, but the runtime is {runtime!r}; "
            "use runtime='jax', or leave devices out"
        )


def make_executor(
    runtime: str,
    program: Program,
    weights: Mapping[str, torch.Tensor],
    *,
    placed_program: Program | None = None,
    target: Target | None = None,
    check_indices: bool = True,
    devices=None,
) -> Executor:
    """The function that runs `program` (or, tile by tile, `placed_program` on `target`) on
    flat tensor inputs and returns its flat outputs; `check_indices=False` lets the JAX
    runtime skip its index range check. `devices` (a count or a `jax.sharding.Mesh`) shards
    the program over that many devices (JAX only; see `runtime.jax_sharded`)."""
    check_runtime(runtime, placed=placed_program is not None and target is not None)
    check_devices(runtime, devices)
    if runtime == "simulator" and placed_program is not None and target is not None:
        from runtime import tiled

        placed, on = placed_program, target
        return lambda tensors: tiled.execute(placed, weights, [t.cpu() for t in tensors], on)
    if runtime == "jax" and devices is not None:
        from runtime.jax_sharded import ShardedExecutable

        return ShardedExecutable(program, weights, devices, check_indices=check_indices)
    if runtime == "jax":
        from runtime.jax_runtime import JaxExecutable

        return JaxExecutable(program, weights, check_indices=check_indices)
    from runtime import reference

    return lambda tensors: reference.execute(program, weights, [t.cpu() for t in tensors])


def check_weights(program: Program, weights: Mapping[str, torch.Tensor]) -> None:
    """Numerical execution needs real weights, of the shapes and dtypes the program was
    compiled for: refuse meta-device, missing or mismatched ones, naming one."""
    for name, spec in program.params().items():
        weight = weights.get(name)
        if weight is None:
            raise InputMismatchError(f"weight {name!r} is missing from the weights given")
        if tuple(weight.shape) != spec.shape or weight.dtype != spec.torch_dtype:
            raise InputMismatchError(
                f"weight {name!r} is {list(weight.shape)} {weight.dtype}, but the program was "
                f"compiled for {spec.describe()}; give the weights it was compiled with"
            )
    meta = [name for name, w in weights.items() if w.is_meta]
    if meta:
        raise MetaDeviceError(
            f"{len(meta)} weights (e.g. {meta[0]!r}) are on the meta device: compiling, "
            "placement and simulation work without weights, but numerical execution needs "
            "real ones. Build the model on the CPU (or load a checkpoint) to run it."
        )


class ProgramCall(ABC):
    """The model-like call of a compiled program; subclasses provide the attributes below
    and `_make_executor` (which passes `check_indices` on to `make_executor`)."""

    program: Program
    weights: dict[str, torch.Tensor]
    signature: Signature
    in_spec: pytree.TreeSpec | None
    out_spec: pytree.TreeSpec | None
    runtime: str
    check_indices: bool = True
    devices: object = None  # a device count or a jax.sharding.Mesh: sharded on JAX
    _executor: Executor | None

    @abstractmethod
    def _make_executor(self) -> Executor:
        """The executor of `self.runtime` for this program (see `make_executor`)."""

    def _flatten(self, args: tuple, kwargs: dict) -> tuple[list, list[torch.Tensor]]:
        return flatten_inputs(args, kwargs, self.in_spec, self.signature, self.program.input_specs)

    def flat_inputs(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The tensor inputs of a call, checked against the compiled signature."""
        return self._flatten(args, kwargs)[1]

    def run_flat(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Execute on already-checked flat tensor inputs; returns the program's outputs."""
        check_weights(self.program, self.weights)
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor(tensors)

    def __call__(self, *args, **kwargs):
        flat = self.signature.flat_outputs(self.run_flat(self.flat_inputs(args, kwargs)))
        return flat if self.out_spec is None else pytree.tree_unflatten(flat, self.out_spec)
