"""`CompiledModule`: what `compiler.compile` returns, callable like the model."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils import _pytree as pytree

from compiler.errors import InputMismatchError, MetaDeviceError
from compiler.target import Target
from runtime import reference
from runtime.program import Program, Signature


class CompiledModule:
    """A compiled model: `.mlir` (module text), `.program`, `.weights`, `.target`,
    `.stage_seconds` (export and lowering wall time) and `__call__`.

    `weights` maps state-dict names to the very tensors the program reads: updating one in
    place changes what the next call computes.
    """

    def __init__(
        self,
        *,
        mlir: str,
        program: Program,
        weights: Mapping[str, torch.Tensor],
        signature: Signature,
        in_spec: pytree.TreeSpec,
        out_spec: pytree.TreeSpec,
        runtime: str,
        target: Target,
        stage_seconds: Mapping[str, float],
    ):
        self.mlir = mlir
        self.program = program
        self.weights = dict(weights)
        self.signature = signature
        self.in_spec = in_spec
        self.out_spec = out_spec
        self.runtime = runtime
        self.target = target
        self.stage_seconds = dict(stage_seconds)

    def flat_inputs(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The tensor inputs of a call, checked against the compiled signature."""
        flat, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
        if spec != self.in_spec:
            raise InputMismatchError(
                f"inputs have structure {spec}, but the module was compiled for {self.in_spec}"
            )
        tensors = [
            x
            for x, is_tensor in zip(flat, self.signature.input_is_tensor, strict=True)
            if is_tensor
        ]
        for index, (x, expected) in enumerate(zip(tensors, self.program.input_specs, strict=True)):
            if not isinstance(x, torch.Tensor):
                raise InputMismatchError(f"input {index} must be a tensor, got {type(x).__name__}")
            if tuple(x.shape) != expected.shape or x.dtype != expected.torch_dtype:
                raise InputMismatchError(
                    f"input {index} is {list(x.shape)} {x.dtype}, but the module was compiled "
                    f"for {expected.describe()}; compile again for the new shape or dtype"
                )
        return tensors

    def _check_weights(self) -> None:
        meta = [name for name, w in self.weights.items() if w.is_meta]
        if meta:
            raise MetaDeviceError(
                f"{len(meta)} weights (e.g. {meta[0]!r}) are on the meta device: compiling, "
                "placement and simulation work without weights, but numerical execution needs "
                "real ones. Build the model on the CPU (or load a checkpoint) to run it."
            )

    def run_flat(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Execute on already-checked flat tensor inputs; returns the program's outputs."""
        self._check_weights()
        return reference.execute(self.program, self.weights, [t.cpu() for t in tensors])

    def __call__(self, *args, **kwargs):
        results = self.run_flat(self.flat_inputs(args, kwargs))
        return pytree.tree_unflatten(self.signature.flat_outputs(results), self.out_spec)
