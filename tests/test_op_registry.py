"""The op registry (`core.ops`) against the dialect and every layer's table: each `wse` op has
a reference kernel, a JAX rule, a tile-by-tile handler, a simulator cost rule and a FLOP count,
or the registry says why it lacks one."""

from __future__ import annotations

import inspect

import pytest

from compiler.dialects import wse
from core.ops import LAYERS, OPS, OpTable
from runtime import reference, tiled
from runtime.jax_runtime import RULES as JAX_RULES
from simulator.translate import TRANSLATE

TABLES = {
    "reference": reference.KERNELS,
    "jax": JAX_RULES,
    "tiled": tiled.HANDLERS,
    "simulator": TRANSLATE,
}


def dialect_ops() -> set[str]:
    return {
        cls.OPERATION_NAME.removeprefix("wse.")
        for cls in vars(wse).values()
        if inspect.isclass(cls)
        and issubclass(cls, wse.Wse.Operation)
        and hasattr(cls, "OPERATION_NAME")
    }


def test_the_registry_lists_exactly_the_dialects_ops():
    assert set(OPS) == dialect_ops()


def test_the_tables_cover_every_layer():
    assert set(TABLES) == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_op_has_an_entry_or_a_stated_reason(layer):
    table = TABLES[layer]
    unexplained = sorted(op for op, reason in table.missing().items() if not reason)
    assert not unexplained, f"{layer}: no entry and no reason for {unexplained}"
    stale = sorted(op for op in table.missing() if op in table)
    assert not stale


@pytest.mark.parametrize("layer", LAYERS)
def test_no_reason_is_stated_for_an_op_that_has_an_entry(layer):
    table = TABLES[layer]
    key = (lambda op: OPS[op].cost_class) if table.by == "cost_class" else (lambda op: op)
    contradicted = sorted(
        op for op, info in OPS.items() if layer in info.lacks and key(op) in table
    )
    assert not contradicted, f"{layer}: entries exist for ops the registry says it lacks"


def test_tables_refuse_unknown_ops_and_second_registrations():
    table = OpTable("reference")
    with pytest.raises(KeyError, match="not a wse op"):
        table.register("fused_everything", object())
    table.register("add", object())
    with pytest.raises(ValueError, match="registered twice"):
        table.register("add", object())


@pytest.mark.parametrize(
    ("op", "operands", "results", "expected"),
    [
        ("matmul", [(8, 64), (64, 32)], [(8, 32)], 2 * 8 * 32 * 64),
        ("tile_matmul", [(4, 8, 16), (16, 32)], [(4, 8, 32)], 2 * 4 * 8 * 16 * 32),
        ("attention", [(1, 2, 8, 16), (1, 2, 8, 16), (1, 2, 8, 16)], [(1, 2, 8, 16)], 8832),
        ("selective_scan", [(2, 4, 16), (2, 4, 16), (4, 8)], [(2, 4, 16)], 9 * 2 * 4 * 16 * 8),
        ("ssd_scan", [(2, 16, 4, 8), (2, 16, 4), (4,), (2, 16, 2, 5)], [], 6 * 2 * 16 * 4 * 8 * 5),
        ("softmax", [(4, 8)], [(4, 8)], 5 * 32),
        ("reduce", [(4, 8)], [(4,)], 32),
        ("add", [(4, 8), (8,)], [(4, 8)], 32),
        ("transpose", [(4, 8)], [(8, 4)], 0),
        ("fabric_reduce", [(2, 4, 8)], [(4, 8)], 0),
    ],
)
def test_flop_counts_from_shapes(op, operands, results, expected):
    assert OPS[op].flops(operands, results) == expected
