"""`CompiledModule`: what `compiler.compile` returns, callable like the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from compiler.errors import MetaDeviceError
from compiler.passes import Placed
from compiler.placement_report import PlacementReport
from compiler.target import Target
from compiler.verify import VerifyReport, verify_program
from runtime import reference
from runtime.program import Program, Signature, flatten_inputs

Executor = Callable[[list[torch.Tensor]], list[torch.Tensor]]


@dataclass(eq=False)
class CompiledModule:
    """A compiled model, callable like the model on its `runtime`.

    `mlir` is the tensor-level module text and `program` its executable form; `placed` holds
    the module placed on `target` (`placed.mlir`, `placed.program`) and `report` its
    placement report. `stage_seconds` is the wall time of export, lowering and placement. `weights` maps
    state-dict names to the program's own copies of the weights: updating one in place
    changes what the next call computes, while `exported` (the exported graph, holding the
    model's weights) stays the eager reference that `verify` compares against.
    """

    name: str
    mlir: str
    program: Program
    weights: dict[str, torch.Tensor]
    signature: Signature
    exported: torch.export.ExportedProgram
    in_spec: pytree.TreeSpec
    out_spec: pytree.TreeSpec
    runtime: str
    target: Target | None
    stage_seconds: dict[str, float]
    placed: Placed | None = field(default=None, repr=False)
    _executor: Executor | None = field(default=None, repr=False)

    @property
    def report(self) -> PlacementReport | None:
        """ "Does it fit?": the placement report (`.to_dict()`, `.summary()`, `.save_heatmap()`)."""
        return None if self.placed is None else self.placed.report

    def flat_inputs(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The tensor inputs of a call, checked against the compiled signature."""
        return self._flatten(args, kwargs)[1]

    def _flatten(self, args: tuple, kwargs: dict) -> tuple[list, list[torch.Tensor]]:
        return flatten_inputs(args, kwargs, self.in_spec, self.signature, self.program.input_specs)

    def _check_weights(self) -> None:
        meta = [name for name, w in self.weights.items() if w.is_meta]
        if meta:
            raise MetaDeviceError(
                f"{len(meta)} weights (e.g. {meta[0]!r}) are on the meta device: compiling, "
                "placement and simulation work without weights, but numerical execution needs "
                "real ones. Build the model on the CPU (or load a checkpoint) to run it."
            )

    def using(self, runtime: str) -> CompiledModule:
        """The same compiled program, executed on another runtime."""
        return dataclasses.replace(self, runtime=runtime, _executor=None)

    def run_flat(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Execute on already-checked flat tensor inputs; returns the program's outputs."""
        self._check_weights()
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor(tensors)

    def _make_executor(self) -> Executor:
        if self.runtime == "jax":
            from runtime.jax_runtime import JaxExecutable

            return JaxExecutable(self.program, self.weights)
        if self.runtime == "simulator":
            from simulator import functional

            if self.placed is None:
                raise ValueError(
                    "runtime 'simulator' needs a placed program: compile with a target"
                )
            return lambda tensors: functional.execute(
                self.placed.program, self.weights, [t.cpu() for t in tensors], self.target
            )
        return lambda tensors: reference.execute(
            self.program, self.weights, [t.cpu() for t in tensors]
        )

    def save(self, path: str | Path) -> Path:
        """Write a versioned artifact directory that `runtime.load` runs without the compiler."""
        from runtime.artifact import save

        return save(
            path,
            program=self.program,
            weights=self.weights,
            signature=self.signature,
            in_spec=self.in_spec,
            out_spec=self.out_spec,
            mlir=self.mlir,
            model_name=self.name,
            target=self.target.name if self.target else "none",
        )

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
