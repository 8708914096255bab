"""Op coverage (`wafersim ops`): per ATen op the compiler lowers, the tiny models that use it,
the `wse` ops it lowers to there, and the runtimes that implement all of those."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import compiler
import models
from runtime.reference import KERNELS

TINY = [name for name in models.names() if name.startswith("tiny-")]


@dataclass(frozen=True)
class OpCoverage:
    """One supported ATen op: its lowering family, the tiny models using it, the `wse` ops it
    lowered to there, the runtimes implementing all of those, and what its rule does not
    cover (`compiler.op_limits()`, "" when nothing)."""

    op: str
    family: str
    models: list[str]
    wse_ops: list[str]
    runtimes: list[str]
    limits: str = ""


def coverage() -> list[OpCoverage]:
    """Every supported ATen op, by name; usage from the tiny models' prefill and decode."""
    from runtime.jax_runtime import RULES as JAX_RULES

    runtimes = {"reference": set(KERNELS) | {"param"}, "jax": set(JAX_RULES) | {"param"}}
    used_by: dict[str, set[str]] = defaultdict(set)
    emits: dict[str, set[str]] = defaultdict(set)
    for name in TINY:
        model = models.build(name)
        for phase, graph in (
            ("prefill", model.prefill_module()),
            ("decode", model.decode_module()),
        ):
            compiled = compiler.compile(graph, models.example_inputs(name, seq=8, phase=phase))
            for ins in compiled.program.instructions:
                if ins.source_op:
                    used_by[ins.source_op].add(name)
                    emits[ins.source_op].add(ins.op)
    rows = []
    limits = compiler.op_limits()
    for name, family in compiler.supported_ops().items():
        wse_ops = sorted(emits.get(name, ()))
        rows.append(
            OpCoverage(
                op=name,
                family=family,
                models=sorted(used_by.get(name, ())),
                wse_ops=wse_ops,
                runtimes=[r for r, ops in runtimes.items() if wse_ops and set(wse_ops) <= ops],
                limits=limits[name],
            )
        )
    return rows
