"""`CompiledModule`: what `compiler.compile` returns, callable like the model."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils import _pytree as pytree

from compiler.errors import InputMismatchError, MetaDeviceError
from compiler.target import Target
from compiler.verify import VerifyReport, verify_program
from runtime import reference
from runtime.program import Program, Signature


class CompiledModule:
    """A compiled model: `.mlir` (module text), `.program`, `.weights`, `.target`,
    `.stage_seconds` (export and lowering wall time) and `__call__`.

    `weights` maps state-dict names to the program's own copies of the weights: updating one
    in place changes what the next call computes, while `exported` (the exported graph, with
    the model's weights) stays the eager reference that `verify` compares against.
    """

    def __init__(
        self,
        *,
        mlir: str,
        program: Program,
        weights: Mapping[str, torch.Tensor],
        signature: Signature,
        exported: torch.export.ExportedProgram,
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
        self.exported = exported
        self.in_spec = in_spec
        self.out_spec = out_spec
        self.runtime = runtime
        self.target = target
        self.stage_seconds = dict(stage_seconds)

    def flat_inputs(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The tensor inputs of a call, checked against the compiled signature."""
        return self._flatten(args, kwargs)[1]

    def _flatten(self, args: tuple, kwargs: dict) -> tuple[list, list[torch.Tensor]]:
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
        return flat, tensors

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

    def verify(self, *args, per_op: bool = True, reference: str = "fp64", **kwargs) -> VerifyReport:
        """Run the program and eager PyTorch side by side on these inputs; one row per FX
        node (only the outputs when `per_op` is False). See `compiler.verify`."""
        self._check_weights()
        flat, tensors = self._flatten(args, kwargs)
        report = verify_program(
            self.program, self.weights, self.exported, flat, [t.cpu() for t in tensors], reference
        )
        if per_op:
            return report
        outputs = {
            name for name, v in self.program.node_results.items() if v in self.program.outputs
        }
        keep = lambda rows: tuple(r for r in rows if r.node in outputs)  # noqa: E731
        return VerifyReport(report.reference, keep(report.isolated), keep(report.accumulated))

    def __call__(self, *args, **kwargs):
        results = self.run_flat(self.flat_inputs(args, kwargs))
        return pytree.tree_unflatten(self.signature.flat_outputs(results), self.out_spec)
