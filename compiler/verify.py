"""Per-op verification of a compiled program against eager PyTorch, localising divergences.

The exported FX graph (core ATen, the model's own weights) is run eagerly node by node as the
reference, in the model's dtype (`reference="eager"`) or upcast to float64 (`"fp64"`). The
compiled program runs in two modes: *isolated* (every op is fed the reference values of its
inputs, so an error shows at the op that makes it) and *accumulated* (the program's own
values flow, as in a real run). Tolerances and error metrics are in `core.numerics`, explained
in `docs/numerics.md`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from compiler.lowering.driver import describe_location
from compiler.lowering.registry import op_name
from core.numerics import ACCUMULATED_FACTOR, OP_TOLERANCES, mantissa_bits, op_error
from runtime import reference
from runtime.program import Instruction, Program


@dataclass(frozen=True)
class OpRow:
    """One FX node's comparison: errors in absolute, relative and ULP-of-dtype terms."""

    node: str
    op: str
    location: str
    dtype: str
    max_abs_error: float
    max_rel_error: float
    max_ulp_error: float
    passed: bool


@dataclass(frozen=True)
class Divergence:
    """The first op whose result falls outside tolerance."""

    node: str
    op: str
    location: str
    mode: str


@dataclass(frozen=True)
class VerifyReport:
    """Rows per FX node in graph order, for both modes, and the first divergence."""

    reference: str
    isolated: tuple[OpRow, ...]
    accumulated: tuple[OpRow, ...]

    @property
    def first_divergence(self) -> Divergence | None:
        for mode, rows in (("isolated", self.isolated), ("accumulated", self.accumulated)):
            for row in rows:
                if not row.passed:
                    return Divergence(row.node, row.op, row.location, mode)
        return None

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def __str__(self) -> str:
        lines = [
            f"verify against {self.reference}: {len(self.isolated)} ops, "
            + (
                "all within tolerance"
                if self.passed
                else f"first divergence {self.first_divergence}"
            )
        ]
        header = f"{'node':28} {'op':34} {'iso abs':>9} {'iso ulp':>8} {'acc abs':>9} {'ok':>3}"
        lines.append(header)
        for iso, acc in zip(self.isolated, self.accumulated, strict=True):
            ok = "yes" if iso.passed and acc.passed else "NO"
            lines.append(
                f"{iso.node[:28]:28} {iso.op[:34]:34} {iso.max_abs_error:9.2e} "
                f"{iso.max_ulp_error:8.1f} {acc.max_abs_error:9.2e} {ok:>3}"
            )
        return "\n".join(lines)


_ASSERTIONS = (
    torch.ops.aten._assert_tensor_metadata.default,
    torch.ops.aten._assert_scalar.default,
)


class _Recorder(fx.Interpreter):
    """Runs the exported graph, keeping every node's value (upcast to float64 if asked)."""

    def __init__(self, module: fx.GraphModule, upcast: bool):
        super().__init__(module)
        self.upcast = upcast
        self.values: dict[str, torch.Tensor] = {}

    def _lift(self, value):
        if self.upcast and isinstance(value, torch.Tensor) and value.dtype.is_floating_point:
            return value.double()
        return value

    def run_node(self, n: fx.Node):
        if n.target in _ASSERTIONS:  # they pin the model's dtypes, which fp64 replaces
            return None
        value = super().run_node(n)
        if isinstance(value, list | tuple):
            value = type(value)(self._lift(v) for v in value)
        else:
            value = self._lift(value)
        if isinstance(value, torch.Tensor):
            self.values[n.name] = value
        return value


def _least_precise(nodes: list[fx.Node]) -> torch.dtype:
    """The float dtype with the fewest mantissa bits among the nodes' values (an op fed
    bfloat16 inputs cannot be more exact than bfloat16, whatever its output dtype)."""
    dtypes = [
        n.meta["val"].dtype
        for n in nodes
        if isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dtype in OP_TOLERANCES
    ]
    return min(dtypes, key=mantissa_bits, default=torch.float32)


def reference_values(
    ep: ExportedProgram, user_inputs: list, upcast: bool
) -> dict[str, torch.Tensor]:
    """Every node's eager value for these flat user inputs."""
    tensors = iter(user_inputs)
    args = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            args.append(next(tensors))
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            args.append(ep.constants[spec.target])
        else:
            args.append(ep.state_dict.get(spec.target, ep.constants.get(spec.target)))
    recorder = _Recorder(ep.graph_module, upcast)
    lifted = [recorder._lift(a) for a in args]
    with torch.no_grad():
        recorder.run(*lifted)
    return recorder.values


def verify_program(
    program: Program,
    weights: Mapping[str, torch.Tensor],
    ep: ExportedProgram,
    user_inputs: list,
    tensor_inputs: list[torch.Tensor],
    reference_kind: str = "fp64",
) -> VerifyReport:
    """Compare `program` with the eager graph `ep` op by op, in both modes."""
    if reference_kind not in ("fp64", "eager"):
        raise ValueError(f"reference must be 'fp64' or 'eager', got {reference_kind!r}")
    try:
        ref = reference_values(ep, user_inputs, upcast=reference_kind == "fp64")
    except Exception:
        # Bad inputs (e.g. an index out of range) make eager raise its own error first; the
        # program's run names the op and the source line instead.
        reference.execute(program, weights, tensor_inputs)
        raise
    nodes = {n.name: n for n in ep.graph.nodes}
    by_value: dict[int, list[str]] = {}
    for name, value_id in program.node_results.items():
        if name in ref:
            by_value.setdefault(value_id, []).append(name)

    def run(isolated: bool) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}

        def hook(ins: Instruction, results: tuple) -> tuple:
            out = []
            for value_id, value in zip(ins.results, results, strict=True):
                for name in by_value.get(value_id, ()):
                    seen[name] = value
                if isolated and value_id in by_value:
                    value = ref[by_value[value_id][0]].to(value.dtype)
                out.append(value)
            return tuple(out)

        reference.execute(program, weights, tensor_inputs, hook=hook)
        return seen

    model_precision = _least_precise(
        [n for n in ep.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    )
    rows = {}
    for mode, values in (("isolated", run(True)), ("accumulated", run(False))):
        factor = 1 if mode == "isolated" else ACCUMULATED_FACTOR
        mode_rows = []
        for node in ep.graph.nodes:
            if node.name not in values:
                continue
            actual = values[node.name]
            expected = ref[node.name]
            if actual.shape != expected.shape:
                continue
            precision = (
                _least_precise([node, *node.all_input_nodes])
                if mode == "isolated"
                else model_precision
            )
            abs_err, rel_err, ulp_err, ok = op_error(actual, expected, precision, factor)
            mode_rows.append(
                OpRow(
                    node.name,
                    op_name(nodes[node.name].target),
                    describe_location(node),
                    str(actual.dtype).removeprefix("torch."),
                    abs_err,
                    rel_err,
                    ulp_err if math.isfinite(ulp_err) else float("inf"),
                    ok,
                )
            )
        rows[mode] = tuple(mode_rows)
    return VerifyReport(reference_kind, rows["isolated"], rows["accumulated"])
