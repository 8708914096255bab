"""One error type per kind of user mistake; each names what is wrong and what to do.

Every error Wafer raises for bad input subclasses `WaferError`. Errors that used to be plain
`ValueError`s or `RuntimeError`s keep those bases too, so existing handlers still catch them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


class WaferError(Exception):
    """Base class of every error Wafer raises for bad input."""


# ---------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class OpProblem:
    """One node Wafer cannot lower: its ATen op, FX node, user source line and why."""

    op: str
    node: str
    location: str
    reason: str = ""


class UnsupportedOperatorError(WaferError):
    """The graph uses ops (or op variants) that have no lowering rule; lists all of them."""

    def __init__(self, problems: list[OpProblem]):
        self.problems = problems
        counts = Counter(p.op for p in problems)
        lines = [f"{len(counts)} unsupported operator(s) in the graph:"]
        for op, count in sorted(counts.items()):
            where = sorted({p.location for p in problems if p.op == op})
            reasons = sorted({p.reason for p in problems if p.op == op and p.reason})
            lines.append(
                f"  {op} x{count} at {', '.join(where[:5])}" + (" ..." if len(where) > 5 else "")
            )
            lines.extend(f"      {r}" for r in reasons)
        lines.append("Rewrite these in the model, or file an issue naming the op.")
        super().__init__("\n".join(lines))


class LoweringError(WaferError):
    """A supported op met a case its lowering rule cannot build; names the op and line."""


class DynamicShapeError(WaferError):
    """The graph has dynamic or data-dependent shapes; Wafer compiles static shapes only."""


class UnsupportedDtypeError(WaferError):
    """A tensor has a dtype the wse dialect cannot hold."""


class MetaDeviceError(WaferError):
    """Numerical execution was asked of a model whose weights live on the meta device."""


class OptionError(WaferError, ValueError):
    """An option has a value Wafer does not know (e.g. `compile(mode=...)`); lists the valid ones."""


class TargetError(WaferError):
    """A target preset is unknown or a target file is malformed."""


class PlacementError(WaferError):
    """A model does not fit the target in the requested mode; says by how much and what to do."""

    def __init__(self, message: str, *, needed_bytes: int, available_bytes: int):
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        super().__init__(message)


# ---------------------------------------------------------------------------- running


class InputMismatchError(WaferError, ValueError):
    """A compiled program was called with inputs that differ from the ones it was built for."""


class IndexOutOfRangeError(WaferError, IndexError):
    """An index tensor (embedding ids, advanced indexing) holds a value outside the range eager
    PyTorch accepts; names the op, its FX node, source line and the valid range."""


class ExecutionError(WaferError, RuntimeError):
    """A program could not run: missing or meta-device weights, or a failing kernel."""


class ArtifactError(WaferError, ValueError):
    """An artifact is missing, corrupted, truncated, or written by a newer format."""


class SimulationError(WaferError, RuntimeError):
    """The placed program cannot run as placed (a tile outside SRAM, overlapping tiles, a
    weight read other than through its tiles, or fabric ops that do not fit together)."""


class UnknownRuntimeError(WaferError, ValueError):
    """A runtime was asked for by a name Wafer does not know, or without what it needs."""


# ---------------------------------------------------------------------------- simulating


class CalibrationError(WaferError):
    """A calibration file is missing, malformed, or lacks a constant."""


class KernelSpecError(WaferError):
    """A kernel request the simulator cannot run: unknown kind or algorithm, bad sizes or grid,
    or tiles that do not fit a PE's SRAM."""


class ModelSimError(WaferError):
    """A model cannot be simulated as asked, or a placed program the simulator cannot translate."""


# ---------------------------------------------------------------------------- hostile inputs


class CommandLineError(WaferError, ValueError):
    """A command-line argument is malformed or out of range; the CLIs report it in one line."""


class OutputPathError(WaferError):
    """An output path (`--trace`, `--plot`) cannot be written; checked before any work starts."""


class UnsupportedValueError(WaferError, TypeError):
    """A model, weight, example input or output Wafer cannot compile: a sparse weight, a
    generator or dtype returned by the model, meta example inputs beside real weights."""


class ExportError(WaferError):
    """`torch.export` could not trace the model with its example inputs; gives torch's reason."""


class TensorTooLargeError(WaferError):
    """The model builds a tensor too large for any machine to hold; gives its shape and size."""


class EmptyTensorError(WaferError):
    """A tensor with no elements (a zero-size batch or sequence) was given to placement."""


class ClusterError(WaferError):
    """A distributed sweep cannot start: its engine is not installed, or its scheduler cannot be
    reached; says what to install or start."""


class ShardingError(WaferError, ValueError):
    """A program cannot be sharded as asked: more devices than JAX sees, a mesh that does not
    divide the model, a plan that does not fit the devices' memory, or an artifact saved for
    another device count; says what to change."""


class CacheDirError(WaferError):
    """The compiled-program cache directory is unsafe to load from (another user's, or writable
    by group or others) or cannot be created; says how to fix it or turn the cache off."""


class HFConfigError(WaferError, ValueError):
    """A Hugging Face `config.json` or model directory Wafer cannot build a model from: missing,
    not JSON, an unknown or remote-code `model_type`, missing or bad fields; says what to fix."""


class HFWeightsError(HFConfigError):
    """A model directory's safetensors weights do not fit its config: unreadable files, missing,
    unexpected or wrongly shaped tensors; names them."""


class NoKVCacheError(HFConfigError):
    """A Hugging Face family whose decode state is neither attention keys and values, nor the
    conv/recurrent state of transformers' linear-attention cache layers, nor state Wafer moves
    out of the family itself (`models.hf_own_state`): its decode step cannot be compiled yet;
    prefill can."""


class ComplexValueError(UnsupportedOperatorError):
    """A complex-valued tensor reaches an op, input or output that Wafer cannot rewrite into a
    pair of real tensors (`compiler.complex_pairs`); lists every such node."""
