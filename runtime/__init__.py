"""Wafer's runtimes: execute a compiled `Program` without the compiler or MLIR.

`load`, `save`, `ArtifactError`, `LoadedModule` (runtime.artifact) and `JaxExecutable`
(runtime.jax_runtime) are imported on first use, so `import runtime` stays light.
"""

import importlib

_EXPORTS = {
    "ArtifactError": "core.errors",
    "LoadedModule": "runtime.artifact",
    "load": "runtime.artifact",
    "save": "runtime.artifact",
    "JaxExecutable": "runtime.jax_runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
