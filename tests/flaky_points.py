"""A point function for `simulator.distribute` tests that fails on purpose; stdlib only, so
spawned worker processes start fast."""

from __future__ import annotations

import os
from pathlib import Path


def flaky(spec: tuple[str, int, int, bool]) -> int:
    """value**2, after failing the first `failures` calls for `spec` (counted in the file
    `path`): by raising, or with `die` by ending its worker process."""
    path, value, failures, die = spec
    counter = Path(path)
    calls = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(calls + 1))
    if calls < failures:
        if die:
            os._exit(3)
        raise RuntimeError(f"call {calls + 1} of {value} fails\non purpose")
    return value * value
