"""The `wse` dialect package: every op reachable as `wse.<Name>`, registered family by family,
and found by the bindings' op wrapping without a failed import per op."""

from __future__ import annotations

import importlib

from torch_mlir.dialects._ods_common import _cext

from compiler import mlir
from compiler.dialects import wse

FAMILIES = ("sources", "elementwise", "linalg", "reductions", "movement", "scans", "moe", "fabric")


def test_every_registered_op_is_exported_by_the_package():
    missing = [
        op.__name__ for op in wse.Wse.operations if getattr(wse, op.__name__, None) is not op
    ]
    assert not missing


def test_ops_register_family_by_family_in_the_documented_order():
    families = [op.__module__.rsplit(".", 1)[-1] for op in wse.Wse.operations]
    assert sorted(set(families), key=FAMILIES.index) == list(FAMILIES)
    assert families == sorted(families, key=FAMILIES.index)
    assert (wse.Wse.operations[0], wse.Wse.operations[-1]) == (wse.ParamOp, wse.HostTransferOp)


def test_op_wrapping_imports_this_package():
    # The bindings import `<prefix>.wse` for each search prefix before wrapping an op.
    prefixes = _cext.globals.dialect_search_modules
    found = [p for p in prefixes if importlib.util.find_spec(f"{p}.wse") is not None]
    assert found and importlib.import_module(f"{found[0]}.wse") is wse
    text = (
        "module { func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {"
        ' %0 = "wse.neg"(%x) : (tensor<4xf32>) -> tensor<4xf32>'
        " func.return %0 : tensor<4xf32> } }"
    )
    module = mlir.parse_module(text, mlir.new_context())
    with module.context:
        ops = list(module.body.operations[0].regions[0].blocks[0].operations)
    assert type(ops[0]) is wse.NegOp
