"""The `wse` dialect object, and the helpers its ops' verifiers share."""

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import ext
from torch_mlir.dialects._ods_common import _cext

Tensor = ext.Operand[ir.RankedTensorType]
TensorResult = ext.Result[ir.RankedTensorType]


class Wse(ext.Dialect, name="wse"):
    """Wafer-scale engine dialect."""


# Wrapping a `wse` op in Python first imports the dialect's module, `<prefix>.wse` (the package
# `compiler.dialects.wse`); with only `torch_mlir.dialects` to search that import fails,
# uncached, for every op (~20 us each).
if "compiler.dialects" not in _cext.globals.dialect_search_modules:
    _cext.globals.append_dialect_search_prefix("compiler.dialects")


# ---------------------------------------------------------------------------- verification


def _shape(v) -> tuple[int, ...]:
    return tuple(ir.RankedTensorType(v.type).shape)


def _elem(v) -> str:
    return str(ir.RankedTensorType(v.type).element_type)


def _ints(attr) -> list[int]:
    return [ir.IntegerAttr(a).value for a in ir.ArrayAttr(attr)]


def _fail(op, message: str) -> bool:
    op.location.emit_error(f"'{op.OPERATION_NAME}' {message}")
    return False


def _broadcast(*shapes) -> tuple[int, ...] | None:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _int_list(op, name: str) -> list[int] | None:
    attr = op.attributes[name]
    if not isinstance(attr, ir.ArrayAttr) or not all(isinstance(a, ir.IntegerAttr) for a in attr):
        return None
    return [a.value for a in attr]


def _str(op, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def _int(op, name: str) -> int:
    return ir.IntegerAttr(op.attributes[name]).value
