"""Output paths a command writes to, checked before the work starts.

A command that writes files (`wafersim --trace/--plot`, `python -m compiler.opt -o`) checks
each path first: parent directories are created and a probe file is written. A bad path then
fails at once with `OutputPathError`, and no output is left half-written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.errors import OutputPathError


def output_file(flag: str, path: Path | None) -> None:
    """Before any work: `path` (given by `flag`, e.g. `--trace`) can be written; its parent
    directories are created. A bad path fails at once, with no output half-written."""
    if path is None:
        return
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; give a file name in it")
    _writable(flag, path, path.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{flag} {path}: the file exists and is not writable")


def output_dir(flag: str, path: Path | None) -> None:
    """Before any work: directory `path` (given by `flag`, e.g. `--plot`) exists, created with
    its parents, and files can be written in it."""
    if path is not None:
        _writable(flag, path, path)


def _writable(flag: str, path: Path, directory: Path) -> None:
    """Create `directory` and write a nameless temporary file in it, or say why not."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputPathError(f"{flag} {path}: {existing} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OutputPathError(
            f"{flag} {path}: cannot write in {directory} ({reason}); choose a writable path"
        ) from exc
