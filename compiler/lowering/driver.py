"""Lower an exported FX graph (core ATen) to a `wse` MLIR module, one registered rule per op."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.export import ExportedProgram
from torch.export.graph_signature import ConstantArgument, InputKind, OutputKind
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from compiler.dialects import wse
from compiler.lowering.context import LoweringContext
from compiler.lowering.registry import RULES, op_name
from compiler.mlir import (
    SourceLocation,
    func,
    ir,
    new_context,
    op_location,
    str_attr,
    supported_dtype,
    tensor_type,
)
from core.errors import (
    DynamicShapeError,
    LoweringError,
    OpProblem,
    UnsupportedDtypeError,
    UnsupportedOperatorError,
    WaferError,
)
from runtime.program import Scalar, Signature

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_TORCH_DIR = os.path.dirname(torch.__file__)
_TRAINING_OPS = ("dropout", "native_dropout", "batch_norm")

WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


def source_line(node: fx.Node) -> tuple[str, int]:
    """The innermost frame of the node's stack trace outside torch itself (file, line)."""
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    for file, line in reversed(frames):
        if not file.startswith(_TORCH_DIR):
            return file, int(line)
    return "", 0


def describe_location(node: fx.Node) -> str:
    file, line = source_line(node)
    return f"{file}:{line}" if file else "<unknown>"


def _check_graph(ep: ExportedProgram) -> None:
    """Raise, before any work, for every unsupported op, dtype and dynamic shape at once."""
    problems, dtypes = [], []
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        vals = val if isinstance(val, list | tuple) else [val]
        for v in vals:
            if isinstance(v, torch.Tensor):
                if any(not isinstance(d, int) for d in v.shape):
                    cause = (
                        "a data-dependent shape (boolean mask, nonzero, .item()): use "
                        "torch.where or fixed-size ops"
                        if free_unbacked_symbols(v)
                        else "a dynamic shape: export with concrete inputs, no dynamic_shapes"
                    )
                    raise DynamicShapeError(
                        f"node {node.name} ({describe_location(node)}) has shape "
                        f"{tuple(v.shape)}, {cause}. Wafer compiles static shapes only."
                    )
                if not supported_dtype(v.dtype):
                    dtypes.append(f"{node.name}: {v.dtype} at {describe_location(node)}")
        if node.op == "call_function" and (problem := op_problem(node)):
            problems.append(problem)
    if problems:
        raise UnsupportedOperatorError(problems)
    if dtypes:
        raise UnsupportedDtypeError(
            "tensors of unsupported dtype (use float32, bfloat16 or float16 for data, "
            "int64 for indices):\n  " + "\n  ".join(dtypes)
        )


def op_problem(node: fx.Node) -> OpProblem | None:
    """Why the call `node` cannot be lowered (no rule, or a variant its rule rejects); None
    when a rule takes it."""
    rule = RULES.get(node.target)
    if rule is None:
        reason = _missing_rule_reason(op_name(node.target))
    else:
        reason = rule.unsupported_reason(node)
    if rule is None or reason:
        return OpProblem(op_name(node.target), node.name, describe_location(node), reason or "")
    return None


def _missing_rule_reason(name: str) -> str | None:
    """Why an op without a rule is in the graph, when the model can do something about it."""
    if "batch_norm" in name and "no_training" in name:
        return (
            "batch norm in eval mode has no lowering rule: fold it into the convolution or "
            "linear layer before it (torch.nn.utils.fusion.fuse_conv_bn_eval / "
            "fuse_linear_bn_eval), or write it as x * scale + shift"
        )
    if any(t in name for t in _TRAINING_OPS):
        return "a training-only op: call model.eval() before compiling"
    return None


@dataclass(frozen=True)
class Lowered:
    """A verified `wse` module with what the rest of the compiler needs to know about it:
    the I/O signature, the weight names in program order, and each FX node's result value."""

    context: ir.Context
    module: ir.Module
    signature: Signature
    weight_names: tuple[str, ...]
    node_values: dict[str, ir.Value]


def lower(ep: ExportedProgram, name: str = "forward") -> Lowered:
    """Build and verify the `wse` module of `ep`."""
    _check_graph(ep)
    specs = ep.graph_signature.input_specs
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    context = new_context()
    lowering = LoweringContext()
    with context, ir.Location.unknown():
        module = ir.Module.create()
        user = [
            n
            for n, s in zip(placeholders, specs, strict=True)
            if s.kind == InputKind.USER_INPUT and isinstance(n.meta.get("val"), torch.Tensor)
        ]
        arg_types = [tensor_type(n.meta["val"].shape, n.meta["val"].dtype) for n in user]
        with ir.InsertionPoint(module.body):
            function = func.FuncOp(name, ir.FunctionType.get(arg_types, []))
            block = function.add_entry_block()
        weight_names = []
        with ir.InsertionPoint(block):
            lowering.values.update(zip(user, block.arguments, strict=True))
            for node, spec in zip(placeholders, specs, strict=True):
                if spec.kind in WEIGHT_KINDS:
                    val = node.meta["val"]
                    lowering.location = ir.Location.name(spec.target)
                    param = lowering.emit(
                        wse.ParamOp, str_attr(spec.target), tensor_type(val.shape, val.dtype)
                    )
                    lowering.values[node] = param.result
                    weight_names.append(spec.target)
                elif spec.kind != InputKind.USER_INPUT:
                    raise UnsupportedOperatorError(
                        [OpProblem(f"input of kind {spec.kind.name}", node.name, "", "")]
                    )
            for node in ep.graph.nodes:
                if node.op != "call_function":
                    continue
                file, line = source_line(node)
                lowering.source[node] = f"{file}:{line}" if file else "<unknown>"
                lowering.node = node
                lowering.location = op_location(
                    SourceLocation(node.name, op_name(node.target), file, line)
                )
                lowering.values[node] = _apply(RULES[node.target], lowering, node)
            results, outputs = _outputs(ep, lowering)
            func.ReturnOp(results)
        function.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get(arg_types, [r.type for r in results])
        )
        module.operation.verify()
    user_inputs = [
        (isinstance(n.meta.get("val"), torch.Tensor), s.arg)
        for n, s in zip(placeholders, specs, strict=True)
        if s.kind == InputKind.USER_INPUT
    ]
    input_is_tensor = tuple(is_tensor for is_tensor, _ in user_inputs)
    input_values = tuple(None if t else _input_value(arg) for t, arg in user_inputs)
    node_values = {
        node.name: value
        for node, value in lowering.values.items()
        if node.op == "call_function" and isinstance(value, ir.Value)
    }
    return Lowered(
        context,
        module,
        Signature(input_is_tensor, tuple(outputs), input_values),
        tuple(weight_names),
        node_values,
    )


def _input_value(arg) -> Scalar:
    """The value a non-tensor user input was exported with: the program computes with it,
    so calls are checked against it."""
    value = arg.value if isinstance(arg, ConstantArgument) else arg
    if value is not None and not isinstance(value, bool | int | float | str):
        raise UnsupportedOperatorError(
            [
                OpProblem(
                    f"input of type {type(value).__name__}",
                    getattr(arg, "name", ""),
                    "",
                    "non-tensor inputs must be bool, int, float, str or None",
                )
            ]
        )
    return value


def _apply(rule, lowering: LoweringContext, node: fx.Node):
    """Run one rule; a failure inside it names the op, the FX node and the user's line."""
    try:
        return rule.lower(lowering, node)
    except WaferError:
        raise
    except Exception as exc:  # a rule that met a case it does not handle
        raise LoweringError(
            f"lowering {op_name(node.target)} (node {node.name}, {lowering.source[node]}) "
            f"failed: {exc}. This is a gap in Wafer's rule for that op; please report it."
        ) from exc


def _outputs(ep: ExportedProgram, lowering: LoweringContext):
    output_node = next(n for n in ep.graph.nodes if n.op == "output")
    results: list[ir.Value] = []
    outputs: list = []
    for arg, spec in zip(output_node.args[0], ep.graph_signature.output_specs, strict=True):
        if spec.kind != OutputKind.USER_OUTPUT:
            raise UnsupportedOperatorError(
                [
                    OpProblem(
                        f"in-place update ({spec.kind.name})",
                        getattr(arg, "name", ""),
                        describe_location(arg) if isinstance(arg, fx.Node) else "",
                        "the model mutates a buffer or input; return the new value instead",
                    )
                ]
            )
        if isinstance(arg, fx.Node):
            outputs.append(len(results))
            results.append(lowering.value(arg))
        else:
            outputs.append(("constant", arg))
    return results, outputs
