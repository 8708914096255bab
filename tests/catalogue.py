"""The bad-input catalogue: each `Case` is one careless or hostile input, the `WaferError`
subclass Wafer must raise for it and a fragment its message must contain.

Case tables live in `tests/catalogue_*.py` modules (one per area, each exporting `CASES`);
`tests/test_catalogue.py` runs every one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """`run(tmp_path)` does the bad thing; it must raise `error` with `fragment` in its message.

    `item` names the issue item the case covers (e.g. "artifact-untrusted", "save-never-loses",
    "silent-wrong-answer", "named-error", "resource-bound", "readme-command")."""

    item: str
    name: str
    run: Callable[[Path], object]
    error: type[BaseException]
    fragment: str
