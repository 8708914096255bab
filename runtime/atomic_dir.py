"""Crash-safe replacement of a directory: at every instant the path holds the old directory
or the new one, whole, and a crash leaves nothing that the next replacement does not clean up.

`replace_directory` holds a lock (`flock` on `.NAME.lock` beside the path, removed when done),
removes what killed replacements left, lets its caller refuse what is at the path, has the
caller write the new directory in a staging directory `.NAME.tmp-XXXXXXXX` beside the path
(fsyncing each file: `write_synced`, `fsync_path`), and swaps the two with one atomic
`renameat2(RENAME_EXCHANGE)`. Where that call is missing (not Linux, or a filesystem without
it) the old directory is renamed to `.NAME.old-XXXXXXXX` before the new one is renamed in; a
crash between the two leaves the path absent and the next replacement puts the old directory
back. Failures are `OSError`s.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


def replace_directory(
    path: Path, *, check: Callable[[Path], None], write: Callable[[Path], None]
) -> None:
    """Replace the directory `path` (absolute, its parent existing) with the one `write` writes
    and fsyncs in the staging directory it is given, once `check(path)` (which refuses by
    raising) passes. A failure leaves `path` as it was; a crash, the old or the new directory
    (or, with the fallback, nothing until the next replacement puts the old one back)."""
    with _locked(path):
        _remove_stale(path)
        check(path)
        staging = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            write(staging)
            _swap_into_place(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # after the swap: the old directory


def write_synced(path: Path, data: bytes) -> None:
    """Write the file `path` and fsync it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_path(path: Path) -> None:
    """fsync the file or directory `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the lock of `path`: `flock` on `.NAME.lock` beside it, which the holder removes
    before unlocking (a replacer that then gets the removed file's lock tries again)."""
    lock = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.lstat(lock)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.unlink(lock)
        os.close(fd)


def _remove_stale(path: Path) -> None:
    """Under the lock: remove the staging directories killed replacements of `path` left, and
    put back an old directory the fallback moved aside if nothing is at `path`."""
    stale = re.compile(re.escape(f".{path.name}.") + r"(tmp|old)-[0-9a-f]{8}")
    for entry in sorted(os.scandir(path.parent), key=lambda e: e.name):
        match = stale.fullmatch(entry.name)
        if match is None:
            continue
        if match[1] == "old" and not os.path.lexists(path):
            os.rename(entry.path, path)
        elif entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _swap_into_place(staging: Path, path: Path) -> None:
    """Make the staged directory `path` in one atomic step; `staging` then holds what `path`
    held. Without an atomic exchange, the old directory is moved aside first (see above)."""
    if not os.path.lexists(path):
        os.rename(staging, path)
    elif not _exchange(staging, path):
        old = path.parent / f".{path.name}.old-{secrets.token_hex(4)}"
        os.rename(path, old)
        try:
            os.rename(staging, path)
        except OSError:
            os.rename(old, path)
            raise
        os.rename(old, staging)
    fsync_path(path.parent)


@functools.cache
def _renameat2():
    """libc's renameat2 on Linux, or None."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        c_int, c_path = ctypes.c_int, ctypes.c_char_p
        function.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
