"""Lowering rules from core ATen to `wse`, one module per op family, one shared table."""

from compiler.lowering import (  # noqa: F401  (importing registers the rules)
    conv,
    creation,
    elementwise,
    indexing,
    matmul,
    moe,
    normalization,
    reduction,
    scan,
    shape,
    sort,
    special,
)
from compiler.lowering.driver import lower
from compiler.lowering.registry import RULES, op_limits, op_name, supported_ops

__all__ = ["RULES", "lower", "op_limits", "op_name", "supported_ops"]
