"""The one table of lowering rules: ATen op overload -> rule building `wse` ops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.fx as fx

RuleFn = Callable[..., object]
Check = Callable[[fx.Node], str | None]


@dataclass(frozen=True)
class Rule:
    """How one op overload lowers. `check(node)` returns why a concrete node is unsupported
    (a variant the rule does not cover), or None when the rule applies; `limits` says in
    words what the rule covers (shown by `wafersim ops`), "" when it covers the op whole."""

    target: object
    lower: RuleFn
    family: str
    check: Check | None = None
    limits: str = ""

    def unsupported_reason(self, node: fx.Node) -> str | None:
        return self.check(node) if self.check is not None else None


RULES: dict[object, Rule] = {}


def op_name(target) -> str:
    """`aten.add.Tensor`, `wafer.selective_scan.default`, `getitem`."""
    name = getattr(target, "__name__", None) if not hasattr(target, "_schema") else None
    return name or str(target)


def supported_ops() -> dict[str, str]:
    """Every ATen op overload with a lowering rule, by name, with its rule family."""
    return {
        op_name(t): rule.family for t, rule in sorted(RULES.items(), key=lambda i: op_name(i[0]))
    }


def op_limits() -> dict[str, str]:
    """Every supported ATen op overload, by name, with what its rule does not cover ("" when
    it covers every variant on every dtype Wafer compiles)."""
    return {op_name(t): RULES[t].limits for t in sorted(RULES, key=op_name)}


def register(*targets, check: Check | None = None, limits: str = ""):
    """Decorator registering `fn` as the rule for each target; a second registration fails."""

    def decorate(fn: RuleFn) -> RuleFn:
        family = fn.__module__.rsplit(".", 1)[-1]
        for target in targets:
            if target in RULES:
                raise RuntimeError(
                    f"{op_name(target)} already has a lowering rule "
                    f"({RULES[target].family}.{RULES[target].lower.__name__})"
                )
            RULES[target] = Rule(target, fn, family, check, limits)
        return fn

    return decorate
