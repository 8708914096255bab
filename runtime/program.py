"""The executable form of a `wse` function: a plain list of instructions, no MLIR needed.

The compiler derives it from the verified MLIR module (the module is the source of truth);
the reference, simulator and JAX runtimes all execute this form, and artifacts store it as
JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.utils import _pytree as pytree

from core import dtypes
from core.errors import IndexOutOfRangeError, InputMismatchError, MetaDeviceError

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


Scalar = bool | int | float | str | None


@dataclass(frozen=True)
class Signature:
    """How a model's call maps to a program.

    `input_is_tensor` says which flat (pytree) user inputs are tensors. The others were
    constants at export: the program holds the result for the value in `input_values` (None
    at tensor positions), so a call passing any other value raises `InputMismatchError`
    rather than returning the answer for the old one. Values compare by type and exactly
    (`True != 1`, `2 != 2.0`, floats bit for bit). To use a new value, compile again with
    it, or pass it as a tensor. `outputs` gives, for each flat output, a program output
    index or `("constant", value)`."""

    input_is_tensor: tuple[bool, ...]
    outputs: tuple
    input_values: tuple[Scalar, ...] = ()

    def __post_init__(self):
        if not self.input_values and all(self.input_is_tensor):
            object.__setattr__(self, "input_values", (None,) * len(self.input_is_tensor))
        if len(self.input_values) != len(self.input_is_tensor):
            raise ValueError(
                f"a signature of {len(self.input_is_tensor)} inputs needs as many input "
                f"values, got {len(self.input_values)}"
            )
        for is_tensor, value in zip(self.input_is_tensor, self.input_values, strict=True):
            if _kind(value) is None or (is_tensor and value is not None):
                raise ValueError(
                    f"input value {value!r} ({type(value).__name__}) is not None for a tensor "
                    "input, nor a bool, int, float, str or None for another"
                )

    def flat_outputs(self, results: list) -> list:
        """The model's flat outputs from the program's results."""
        return [results[o] if isinstance(o, int) else o[1] for o in self.outputs]

    def to_json(self) -> dict:
        return {
            "input_is_tensor": list(self.input_is_tensor),
            "input_values": list(self.input_values),
            "outputs": [o if isinstance(o, int) else ["constant", o[1]] for o in self.outputs],
        }

    @staticmethod
    def from_json(data: dict) -> Signature:
        """The signature `to_json` wrote; `ValueError` for anything else."""
        if not isinstance(data, dict):
            raise ValueError(f"a signature is a JSON object, not {type(data).__name__}")
        is_tensor, outputs = data.get("input_is_tensor"), data.get("outputs")
        values = data.get("input_values", [])
        if not isinstance(is_tensor, list) or not all(type(t) is bool for t in is_tensor):
            raise ValueError("signature input_is_tensor must be a list of booleans")
        if not isinstance(values, list):
            raise ValueError("signature input_values must be a list")
        if not values and not all(is_tensor):
            raise ValueError(
                "the signature stores no compiled-for values of its non-tensor inputs (written "
                "before Wafer checked them): compile and save the model again"
            )
        if not isinstance(outputs, list) or not all(_output_json(o) for o in outputs):
            raise ValueError('signature outputs must be indices or ["constant", value] pairs')
        return Signature(
            tuple(is_tensor),
            tuple(o if isinstance(o, int) else ("constant", o[1]) for o in outputs),
            tuple(values),
        )


def _kind(value: object) -> type | None:
    """The scalar type a non-tensor input is compared as (bool before int), None if none."""
    if value is None:
        return type(None)
    return next((k for k in (bool, int, float, str) if isinstance(value, k)), None)


def _output_json(output: object) -> bool:
    if isinstance(output, list):
        return len(output) == 2 and output[0] == "constant"
    return isinstance(output, int) and not isinstance(output, bool) and output >= 0


def same_value(given: object, compiled: Scalar) -> bool:
    """A call's non-tensor input equals the compiled-for one: same scalar type and value,
    floats bit for bit (NaN equals NaN, -0.0 differs from 0.0)."""
    kind = _kind(given)
    if kind is None or kind is not _kind(compiled):
        return False
    if kind is float:
        return float(given).hex() == float(compiled).hex()  # type: ignore[arg-type]
    return given == compiled


def flatten_inputs(
    args: tuple,
    kwargs: dict,
    in_spec: pytree.TreeSpec | None,
    signature: Signature,
    input_specs: tuple[TensorSpec, ...],
) -> tuple[list, list[torch.Tensor]]:
    """A call's flat inputs and its tensor inputs, checked for structure, count, shape and
    dtype, and its other inputs for the values compiled for. Without an `in_spec` (an
    artifact whose tree could not be stored) the positional arguments are the flat inputs."""
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
    for index, (x, is_tensor, compiled) in enumerate(
        zip(flat, signature.input_is_tensor, signature.input_values, strict=True)
    ):
        if not is_tensor and not same_value(x, compiled):
            raise _changed_constant(args, kwargs, in_spec, index, x, compiled)
    tensors = [x for x, is_tensor in zip(flat, signature.input_is_tensor, strict=True) if is_tensor]
    for index, (x, expected) in enumerate(zip(tensors, input_specs, strict=True)):
        if not isinstance(x, torch.Tensor):
            raise InputMismatchError(f"input {index} must be a tensor, got {type(x).__name__}")
        if tuple(x.shape) != expected.shape or x.dtype != expected.torch_dtype:
            raise InputMismatchError(
                f"input {index} is {list(x.shape)} {x.dtype}, but the program was compiled "
                f"for {expected.describe()}; compile again for the new shape or dtype"
            )
        if x.is_meta:
            raise MetaDeviceError(
                f"input {index} is on the meta device and holds no data: call with real tensors"
            )
    return flat, tensors


def _changed_constant(
    args: tuple, kwargs: dict, in_spec: pytree.TreeSpec | None, index: int, given, compiled
) -> InputMismatchError:
    """The error for a non-tensor input that differs from the value compiled for, naming the
    argument as the caller wrote it (`scale`, `args[1]`, `config['alpha']`)."""
    if in_spec is None:
        name = f"flat input {index}"
    else:
        path = pytree.tree_flatten_with_path((tuple(args), dict(kwargs)))[0][index][0][1:]
        if isinstance(path[0], pytree.MappingKey):
            name = str(path[0].key) + pytree.keystr(path[1:])
        else:
            name = "args" + pytree.keystr(path)
    fix = (
        f"compile again with {name} given as a tensor"
        if isinstance(given, torch.Tensor)
        else f"compile again with {name}={given!r}, or pass the value as a tensor"
    )
    shown = "a tensor" if isinstance(given, torch.Tensor) else repr(given)
    return InputMismatchError(
        f"argument {name} is {shown}, but the program was compiled for {name}={compiled!r} "
        f"(non-tensor inputs are constants of the compiled program): {fix}"
    )


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


# The ops that read by index tensors; `index_bounds` gives their valid ranges.
INDEXED_OPS = ("embedding", "index", "scatter")


@dataclass(frozen=True)
class IndexBound:
    """The indices eager PyTorch accepts in operand `operand` of an op: `low..high`."""

    operand: int
    low: int
    high: int
    what: str


def index_bounds(ins: Instruction, source_shape: Sequence[int]) -> tuple[IndexBound, ...]:
    """The index operands of `ins` and their valid ranges, given the shape of the tensor it
    reads (operand 0), as eager PyTorch checks them: `embedding` ids pick rows 0..n-1 (eager
    raises for -1); advanced indexing (`index`) takes -n..n-1 on each indexed dim, but
    `index_select`, also lowered to `index`, only 0..n-1."""
    if ins.op == "embedding":
        n = source_shape[0]
        return (IndexBound(1, 0, n - 1, f"the {n} rows of the embedding table"),)
    if ins.op == "index":
        sizes = [source_shape[d] for d in ins.attrs["indexed_dims"]]
        signed = ins.source_op != "aten.index_select.default"
        return tuple(
            IndexBound(1 + i, -n if signed else 0, n - 1, f"dim {d} of size {n}")
            for i, (d, n) in enumerate(zip(ins.attrs["indexed_dims"], sizes, strict=True))
        )
    if ins.op == "scatter":
        sizes = [source_shape[d] for d in ins.attrs["indexed_dims"]]
        return tuple(
            IndexBound(2 + i, -n, n - 1, f"dim {d} of size {n}")
            for i, (d, n) in enumerate(zip(ins.attrs["indexed_dims"], sizes, strict=True))
        )
    return ()


def check_index_range(ins: Instruction, bound: IndexBound, lowest: int, highest: int) -> None:
    """Raise `IndexOutOfRangeError` unless the indices `lowest..highest` lie in `bound`."""
    if bound.low <= lowest and highest <= bound.high:
        return
    bad = lowest if lowest < bound.low else highest
    at = f" at {ins.location}" if ins.location else ""
    where = f" (node {ins.node}, {ins.source_op}{at})" if ins.node else ""
    raise IndexOutOfRangeError(
        f"wse.{ins.op}{where}: index {bad} is outside [{bound.low}, {bound.high}], "
        f"{bound.what}; eager PyTorch raises IndexError here too. Pass indices in range "
        "(token ids below the vocabulary size, positions below the maximum length)."
    )


class IndexCheck(NamedTuple):
    """Index operand `value` of the instruction at `position`, to check against `bound`."""

    position: int
    ins: Instruction
    bound: IndexBound
    value: int


def index_checks(program: Program) -> list[IndexCheck]:
    """The non-empty index operands of the program's `embedding` and `index` ops."""
    specs = dict(enumerate(program.input_specs))
    checks = []
    for position, ins in enumerate(program.instructions):
        specs.update(zip(ins.results, ins.result_specs, strict=True))
        source = ins.operands[0] if ins.op in INDEXED_OPS else None
        if source is None:
            continue
        for bound in index_bounds(ins, specs[source].shape):
            value = ins.operands[bound.operand]
            if value is not None and 0 not in specs[value].shape:
                checks.append(IndexCheck(position, ins, bound, value))
    return checks


def check_extremes(checks: Sequence[IndexCheck], extremes) -> None:
    """Raise `IndexOutOfRangeError` for the first of `checks` whose (lowest, highest) row of
    `extremes` (an array with `.tolist()`, or None when there are no checks) is out of range."""
    if extremes is not None:
        for check, (lowest, highest) in zip(checks, extremes.tolist(), strict=True):
            check_index_range(check.ins, check.bound, lowest, highest)
