"""The executable form of a `wse` function: a plain list of instructions, no MLIR needed.

The compiler derives it from the verified MLIR module (the module is the source of truth);
the reference, simulator and JAX runtimes all execute this form, and artifacts store it as
JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils import _pytree as pytree

from core import dtypes
from core.errors import InputMismatchError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    """Static shape and element type (MLIR spelling: "f32", "bf16", "i64", "i1", ...)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return dtypes.by_name(self.dtype).torch

    def describe(self) -> str:
        return f"{list(self.shape)} {self.torch_dtype}"


@dataclass(frozen=True)
class Instruction:
    """One op: `op` without the `wse.` prefix; operands in the op's declared order, `None` for
    an absent optional operand; `node`, `source_op` and `location` say where it came from."""

    op: str
    operands: tuple[int | None, ...]
    results: tuple[int, ...]
    result_specs: tuple[TensorSpec, ...]
    attrs: dict = field(default_factory=dict)
    node: str = ""
    source_op: str = ""
    location: str = ""


@dataclass(frozen=True)
class Program:
    """A straight-line function: `inputs` are value ids 0..n-1, `outputs` value ids, and
    `node_results` maps each FX node of the source graph to the value holding its result."""

    input_specs: tuple[TensorSpec, ...]
    instructions: tuple[Instruction, ...]
    outputs: tuple[int, ...]
    node_results: dict[str, int] = field(default_factory=dict)

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        specs = {i: s for i, s in enumerate(self.input_specs)}
        for ins in self.instructions:
            specs.update(zip(ins.results, ins.result_specs, strict=True))
        return tuple(specs[o] for o in self.outputs)

    def params(self) -> dict[str, TensorSpec]:
        """Weight name -> spec, in program order."""
        return {
            ins.attrs["sym_name"]: ins.result_specs[0]
            for ins in self.instructions
            if ins.op == "param"
        }

    def last_uses(self) -> dict[int, int]:
        """Value id -> index of the last instruction reading it (outputs are never freed)."""
        last: dict[int, int] = {}
        for index, ins in enumerate(self.instructions):
            for v in ins.operands:
                if v is not None:
                    last[v] = index
        for v in self.outputs:
            last.pop(v, None)
        return last

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "inputs": [_spec_json(s) for s in self.input_specs],
            "outputs": list(self.outputs),
            "node_results": self.node_results,
            "instructions": [
                {
                    "op": i.op,
                    "operands": list(i.operands),
                    "results": list(i.results),
                    "result_specs": [_spec_json(s) for s in i.result_specs],
                    "attrs": i.attrs,
                    "node": i.node,
                    "source_op": i.source_op,
                    "location": i.location,
                }
                for i in self.instructions
            ],
        }

    @staticmethod
    def from_json(data: dict) -> Program:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"program format version {data.get('format_version')!r} is not "
                f"{FORMAT_VERSION}, the version this runtime reads"
            )
        return Program(
            input_specs=tuple(_spec(s) for s in data["inputs"]),
            outputs=tuple(data["outputs"]),
            node_results=dict(data.get("node_results", {})),
            instructions=tuple(
                Instruction(
                    op=i["op"],
                    operands=tuple(i["operands"]),
                    results=tuple(i["results"]),
                    result_specs=tuple(_spec(s) for s in i["result_specs"]),
                    attrs=i["attrs"],
                    node=i["node"],
                    source_op=i["source_op"],
                    location=i["location"],
                )
                for i in data["instructions"]
            ),
        )


@dataclass(frozen=True)
class Signature:
    """How a model's call maps to a program: which flat (pytree) user inputs are tensors
    (the others were constants at export), and for each flat output either a program
    output index or `("constant", value)`."""

    input_is_tensor: tuple[bool, ...]
    outputs: tuple

    def flat_outputs(self, results: list) -> list:
        """The model's flat outputs from the program's results."""
        return [results[o] if isinstance(o, int) else o[1] for o in self.outputs]

    def to_json(self) -> dict:
        return {
            "input_is_tensor": list(self.input_is_tensor),
            "outputs": [o if isinstance(o, int) else ["constant", o[1]] for o in self.outputs],
        }

    @staticmethod
    def from_json(data: dict) -> Signature:
        return Signature(
            tuple(data["input_is_tensor"]),
            tuple(o if isinstance(o, int) else ("constant", o[1]) for o in data["outputs"]),
        )


def flatten_inputs(
    args: tuple,
    kwargs: dict,
    in_spec: pytree.TreeSpec | None,
    signature: Signature,
    input_specs: tuple[TensorSpec, ...],
) -> tuple[list, list[torch.Tensor]]:
    """A call's flat inputs and its tensor inputs, checked for structure, count, shape and
    dtype. Without an `in_spec` (an artifact whose tree could not be stored) the positional
    arguments are the flat inputs."""
    if in_spec is None:
        if kwargs:
            raise InputMismatchError(
                "this program stores no input tree: pass flat positional inputs"
            )
        flat = list(args)
    else:
        flat, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
        if spec != in_spec:
            raise InputMismatchError(
                f"inputs have structure {spec}, but the program was compiled for {in_spec}"
            )
    if len(flat) != len(signature.input_is_tensor):
        raise InputMismatchError(
            f"got {len(flat)} flat inputs, the program takes {len(signature.input_is_tensor)}"
        )
    tensors = [x for x, is_tensor in zip(flat, signature.input_is_tensor, strict=True) if is_tensor]
    for index, (x, expected) in enumerate(zip(tensors, input_specs, strict=True)):
        if not isinstance(x, torch.Tensor):
            raise InputMismatchError(f"input {index} must be a tensor, got {type(x).__name__}")
        if tuple(x.shape) != expected.shape or x.dtype != expected.torch_dtype:
            raise InputMismatchError(
                f"input {index} is {list(x.shape)} {x.dtype}, but the program was compiled "
                f"for {expected.describe()}; compile again for the new shape or dtype"
            )
    return flat, tensors


def _spec_json(spec: TensorSpec) -> dict:
    return {"shape": list(spec.shape), "dtype": spec.dtype}


def _spec(data: dict) -> TensorSpec:
    return TensorSpec(tuple(data["shape"]), data["dtype"])


def constant_tensor(value: dict, spec: TensorSpec) -> torch.Tensor:
    """Materialise a `wse.constant` value attribute (splat or values) as a torch tensor."""
    dtype = spec.torch_dtype
    if "splat" in value:
        return torch.full(spec.shape, value["splat"], dtype=dtype)
    return torch.tensor(value["values"], dtype=dtype).reshape(spec.shape)
