"""The house rules that keep the layers apart: import direction (import-linter contracts in
pyproject.toml) and module size."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models", "runtime", "compiler", "simulator")
MAX_LINES = 550


def test_imports_point_down_the_layers(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(no_logo=True, no_cache=True) == 0, "run `lint-imports` to see the chain"


def test_no_module_outgrows_one_job():
    too_long = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"split by responsibility: {too_long}"
