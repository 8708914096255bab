"""`CompiledModule`: what `compiler.compile` returns, callable like the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from compiler.passes import Placed
from compiler.placement_report import PlacementReport
from compiler.verify import VerifyReport, verify_program
from core.target import Target
from runtime.execution import (
    Executor,
    ProgramCall,
    check_devices,
    check_runtime,
    check_weights,
    make_executor,
)
from runtime.program import Program, Signature


@dataclass(eq=False)
class CompiledModule(ProgramCall):
    """A compiled model, callable like the model on its `runtime`.

    `mlir` is the tensor-level module text and `program` its executable form; `placed` holds
    the module placed on `target` (`placed.mlir`, `placed.program`) and `report` its
    placement report. `stage_seconds` is the wall time of export, lowering and placement. `weights` maps
    state-dict names to the program's own copies of the weights: updating one in place
    changes what the next call computes, while `exported` (the exported graph, holding the
    model's weights) stays the eager reference that `verify` compares against. Weights tied in
    the model (one tensor under two names) stay one tensor here.

    A call (and `verify`) must pass the non-tensor inputs compiled for, or raises
    `InputMismatchError` (see `runtime.program.Signature`). An index out of range raises
    `IndexOutOfRangeError` on every runtime; `using("jax", check_indices=False)` skips the
    JAX runtime's check, which waits for the device, and lets XLA clamp instead.
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
    check_indices: bool = True
    devices: object = field(default=None, repr=False)
    _executor: Executor | None = field(default=None, repr=False)

    def __post_init__(self):
        check_runtime(self.runtime, placed=self.placed is not None)
        check_devices(self.runtime, self.devices)

    @property
    def report(self) -> PlacementReport | None:
        """ "Does it fit?": the placement report (`.to_dict()`, `.summary()`, `.save_heatmap()`)."""
        return None if self.placed is None else self.placed.report

    def using(self, runtime: str, *, check_indices: bool = True, devices=None) -> CompiledModule:
        """The same compiled program (sharing its weights), executed on another runtime;
        `check_indices=False` skips the JAX runtime's index range check, and `devices` (a
        count or a `jax.sharding.Mesh`) shards it on JAX."""
        return dataclasses.replace(
            self, runtime=runtime, check_indices=check_indices, devices=devices, _executor=None
        )

    def _make_executor(self) -> Executor:
        return make_executor(
            self.runtime,
            self.program,
            self.weights,
            placed_program=None if self.placed is None else self.placed.program,
            target=self.target,
            check_indices=self.check_indices,
            devices=self.devices,
        )

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a versioned artifact directory that `runtime.load` runs without the compiler;
        an existing artifact at `path` is replaced only with `overwrite=True`."""
        from runtime.artifact import save

        return save(
            path,
            overwrite=overwrite,
            program=self.program,
            weights=self.weights,
            signature=self.signature,
            in_spec=self.in_spec,
            out_spec=self.out_spec,
            mlir=self.mlir,
            model_name=self.name,
            target=self.target.name if self.target else "none",
            devices=self.devices,
        )

    def verify(self, *args, per_op: bool = True, reference: str = "fp64", **kwargs) -> VerifyReport:
        """Run the program and eager PyTorch side by side on these inputs; one row per FX
        node (only the outputs when `per_op` is False). See `compiler.verify`. Inputs are
        checked as for a call: other non-tensor values than those compiled for are refused."""
        check_weights(self.program, self.weights)
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
