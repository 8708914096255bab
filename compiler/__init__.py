"""Wafer's compiler: PyTorch model -> `wse` MLIR -> executable program.

`compile(model, example_inputs)` is the entry point; importing this package also registers
the `torch.compile` backend named "wafer".
"""

from compiler.api import compile
from compiler.compiled import CompiledModule
from compiler.lowering import supported_ops
from compiler.placement_report import PlacementReport
from core.errors import (
    DynamicShapeError,
    InputMismatchError,
    MetaDeviceError,
    PlacementError,
    TargetError,
    UnsupportedDtypeError,
    UnsupportedOperatorError,
    WaferError,
)

__all__ = [
    "CompiledModule",
    "DynamicShapeError",
    "InputMismatchError",
    "MetaDeviceError",
    "PlacementError",
    "TargetError",
    "UnsupportedDtypeError",
    "UnsupportedOperatorError",
    "WaferError",
    "PlacementReport",
    "compile",
    "supported_ops",
]
