"""Wafer's compiler: PyTorch model -> `wse` MLIR -> executable program.

`compile(model, example_inputs)` is the entry point; importing this package also registers
the `torch.compile` backend named "wafer".
"""

from compiler.api import compile
from compiler.compiled import CompiledModule
from compiler.lowering import op_limits, supported_ops
from compiler.placement_report import PlacementReport
from core.errors import (
    ArtifactError,
    DynamicShapeError,
    EmptyTensorError,
    ExportError,
    IndexOutOfRangeError,
    InputMismatchError,
    MetaDeviceError,
    OptionError,
    PlacementError,
    TargetError,
    TensorTooLargeError,
    UnsupportedDtypeError,
    UnsupportedOperatorError,
    UnsupportedValueError,
    WaferError,
)

__all__ = [
    "ArtifactError",
    "UnsupportedValueError",
    "TensorTooLargeError",
    "ExportError",
    "EmptyTensorError",
    "CompiledModule",
    "DynamicShapeError",
    "IndexOutOfRangeError",
    "InputMismatchError",
    "MetaDeviceError",
    "OptionError",
    "PlacementError",
    "TargetError",
    "UnsupportedDtypeError",
    "UnsupportedOperatorError",
    "WaferError",
    "PlacementReport",
    "compile",
    "supported_ops",
    "op_limits",
]
