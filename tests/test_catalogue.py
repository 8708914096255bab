"""The bad-input catalogue: every `Case` of every `tests/catalogue_*.py` module raises its
named `WaferError` with its fragment in the message.

Cases of item "output-path" write their outputs under `tmp_path / "out"`: after the error,
nothing may have been written there (no half-written output).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from catalogue import Case

from core.errors import WaferError

OUTPUT_DIR = "out"


def _cases() -> list[Case]:
    """`CASES` of every `catalogue_*.py` module beside this file, in file order."""
    found: list[Case] = []
    for path in sorted(Path(__file__).parent.glob("catalogue_*.py")):
        found.extend(importlib.import_module(path.stem).CASES)
    return found


CASES = _cases()


def test_case_names_are_unique():
    names = [(c.item, c.name) for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.item}: {c.name}")
def test_case_raises_its_named_error(case: Case, tmp_path: Path):
    assert issubclass(case.error, WaferError), f"{case.error.__name__} is not a WaferError"
    with pytest.raises(case.error) as info:
        case.run(tmp_path)
    assert case.fragment in str(info.value)
    if case.item == "output-path":
        written = [p for p in (tmp_path / OUTPUT_DIR).rglob("*") if not p.is_dir()]
        assert not written, f"half-written output: {written}"
