"""One error type per kind of user mistake; each names what is wrong and what to do."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from runtime.program import InputMismatchError

__all__ = [
    "DynamicShapeError",
    "InputMismatchError",
    "LoweringError",
    "MetaDeviceError",
    "OpProblem",
    "TargetError",
    "UnsupportedDtypeError",
    "UnsupportedOperatorError",
    "WaferError",
]


class WaferError(Exception):
    """Base class of every error Wafer raises for bad input."""


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


class TargetError(WaferError):
    """A target preset is unknown or a target file is malformed."""
