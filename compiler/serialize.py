"""Derive the runtime's plain `Program` from a verified `wse` module."""

from __future__ import annotations

from compiler.mlir import (
    attr_to_python,
    dtype_name,
    ir,
    operands_in_order,
    read_location,
    shape_of,
    torch_dtype,
)
from runtime.program import Instruction, Program, TensorSpec


def _spec(value) -> TensorSpec:
    return TensorSpec(shape_of(value), dtype_name(torch_dtype(value.type)))


def to_program(module: ir.Module, node_values: dict[str, ir.Value] | None = None) -> Program:
    """The straight-line program of the module's single function; `node_values` (FX node name
    -> value) become `Program.node_results`, which verification and reports use."""
    function = module.body.operations[0]
    block = function.regions[0].blocks[0]
    ids: dict[ir.Value, int] = {arg: i for i, arg in enumerate(block.arguments)}
    instructions: list[Instruction] = []
    outputs: tuple[int, ...] = ()
    for op in block.operations:
        if op.name == "func.return":
            outputs = tuple(ids[v] for v in op.operands)
            continue
        operands = tuple(None if v is None else ids[v] for v in operands_in_order(op))
        results = []
        for r in op.results:
            ids[r] = len(ids)
            results.append(ids[r])
        src = read_location(op.location)
        attrs = {
            name: attr_to_python(op.attributes[name])
            for name in op.attributes
            if name != "operandSegmentSizes"
        }
        instructions.append(
            Instruction(
                op=op.name.removeprefix("wse."),
                operands=operands,
                results=tuple(results),
                result_specs=tuple(_spec(r) for r in op.results),
                attrs=attrs,
                node=src.node,
                source_op=src.op,
                location=str(src) if src.file else "",
            )
        )
    specs = tuple(_spec(arg) for arg in block.arguments)
    node_results = {name: ids[v] for name, v in (node_values or {}).items()}
    return Program(specs, tuple(instructions), outputs, node_results)
