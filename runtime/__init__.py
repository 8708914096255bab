"""Wafer's runtimes: execute a compiled `Program` without the compiler or MLIR.

`load`, `save`, `ArtifactError`, `LoadedModule` (runtime.artifact), `JaxExecutable`
(runtime.jax_runtime), `ShardedExecutable` (runtime.jax_sharded) and `ShardingError` are
imported on first use, so `import runtime` stays light. `runtime.sharding.plan` gives the
sharding plan of a program without JAX.
"""

import importlib

_EXPORTS = {
    "ArtifactError": "core.errors",
    "LoadedModule": "runtime.artifact",
    "load": "runtime.artifact",
    "save": "runtime.artifact",
    "JaxExecutable": "runtime.jax_runtime",
    "ShardedExecutable": "runtime.jax_sharded",
    "ShardingError": "core.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
