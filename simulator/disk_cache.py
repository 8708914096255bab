"""Placed programs cached on disk, shared between runs and processes.

An entry is keyed by everything that decides a placement (the `PlacementKey`: model, phase,
shapes, dtype, mode, target) and by Wafer's version, the sha256 of the project's own source
files, so any code change misses. It is a directory `placements/<sha256 of the key>/` of
plain data, never pickles: `program.json` (read back through the artifact format's checks:
bounded, hashed, validated), `report.json` (the placement report's fields, each of a known
type), `arrays.bin` (its SRAM map, zlib-compressed) and `entry.json` (the key, and the size and
sha256 of each file). Entries are written with `runtime.atomic_dir.replace_directory` (staged,
fsynced, swapped in atomically under a lock), so concurrent writers of one key are safe; an
entry that fails any check is treated as absent, rebuilt and replaced, never trusted.

The cache directory must belong to the current user and be writable by no one else
(`CacheDirError` otherwise): `--cache-dir`, else `$WAFER_CACHE_DIR`, else
`$XDG_CACHE_HOME/wafer`, else `~/.cache/wafer`; `--no-cache` turns it off.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import stat
import sys
import zlib
from pathlib import Path

import numpy as np

import compiler
from compiler.placement_report import LayerReport, PlacementReport
from core.errors import ArtifactError, CacheDirError, PlacementError
from core.target import Target
from runtime.artifact_checks import (
    check_hash,
    json_depth,
    open_directory,
    open_file,
    read_program,
)
from runtime.atomic_dir import replace_directory, write_synced
from runtime.program import Program

FORMAT = 1
ENTRY, PROGRAM, REPORT, ARRAYS = "entry.json", "program.json", "report.json", "arrays.bin"
DATA_FILES = (PROGRAM, REPORT, ARRAYS)
ERROR = "error.json"  # instead of the data files: the key does not fit (a `PlacementError`)
MAX_ENTRY_BYTES = 1 << 20
MAX_REPORT_BYTES = 64 << 20
MAX_ARRAY_BYTES = 4 << 30
ARRAY_DTYPES = ("int64", "int32", "float64", "float32")
SOURCES = ("compiler", "core", "models", "runtime", "simulator")
COMPILING_DISTRIBUTIONS = ("torch", "torch-mlir")
# The dataclasses a report may hold, by name: decoding builds only these.
CLASSES = {cls.__name__: cls for cls in (PlacementReport, LayerReport, Target)}


class _Unstorable(Exception):
    """A value the cache has no data form for: that placement is simply not cached."""


@functools.cache
def wafer_version() -> str:
    """sha256 of Wafer's own source files (paths and bytes) and of the Python, torch and
    torch-mlir versions that compile: any change of code changes it."""
    root = Path(compiler.__file__).resolve().parents[1]
    digest = hashlib.sha256(sys.version.encode())
    for dist in COMPILING_DISTRIBUTIONS:
        try:
            digest.update(f"{dist} {importlib.metadata.version(dist)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{dist} none\0".encode())
    for package in SOURCES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def default_dir() -> Path:
    """`$WAFER_CACHE_DIR`, else `$XDG_CACHE_HOME/wafer` (when absolute), else `~/.cache/wafer`."""
    if os.environ.get("WAFER_CACHE_DIR"):
        return Path(os.environ["WAFER_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "wafer"


def from_arguments(cache_dir: Path | None, no_cache: bool) -> DiskCache | None:
    """The cache `wafersim` uses: None with `--no-cache`, else at `--cache-dir` or the default."""
    return None if no_cache else DiskCache(cache_dir or default_dir())


def _check_private(path: Path) -> None:
    """Refuse a directory that another user owns or that group or others may write."""
    info = os.stat(path)
    problem = ""
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != os.getuid():
        problem = f"belongs to user id {info.st_uid}, not to you ({os.getuid()})"
    elif info.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise CacheDirError(
            f"cache directory {path} {problem}; Wafer loads compiled programs only from a "
            f"directory that only you can write: `chmod go-w {path}`, choose another with "
            "--cache-dir or WAFER_CACHE_DIR, or run with --no-cache"
        )


class DiskCache:
    """Placements on disk under `root` (created private if missing, refused if not private),
    for Wafer's `version` (default: this code's, `wafer_version()`)."""

    def __init__(self, root: str | os.PathLike, version: str | None = None):
        self.root = Path(os.path.abspath(root))
        self.version = version or wafer_version()
        self.entries = self.root / f"placements-v{FORMAT}"
        try:
            for path in (self.root, self.entries):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                _check_private(path)
        except OSError as exc:
            raise CacheDirError(
                f"cache directory {self.root} cannot be used ({exc.strerror or exc}); choose "
                "another with --cache-dir or WAFER_CACHE_DIR, or run with --no-cache"
            ) from exc

    def path(self, key) -> Path:
        """The entry directory of `key` (a `PlacementKey`)."""
        return self.entries / hashlib.sha256(self._key_text(key).encode()).hexdigest()

    def load(self, key) -> tuple[Program, PlacementReport, float] | None:
        """The stored (program, report, compile seconds) of `key`, or None when there is no
        sound entry (missing, from other code, damaged or edited); raises the stored
        `PlacementError` of a key that does not fit."""
        path = self.path(key)
        if path.is_symlink():
            return None  # never followed: entries are directories the cache wrote
        for _ in range(2):  # once more if a concurrent writer swapped the entry mid-read
            try:
                with open_directory(path) as dir_fd:
                    try:
                        return _read_entry(path, dir_fd, self._key_text(key))
                    except PlacementError:
                        raise
                    except (
                        ArtifactError,
                        OSError,
                        ValueError,
                        TypeError,
                        KeyError,
                        IndexError,
                        zlib.error,
                    ):
                        if _same_directory(path, dir_fd):
                            return None
            except ArtifactError:  # no entry
                return None
        return None

    def store(self, key, program: Program, report: PlacementReport, seconds: float) -> bool:
        """Write the entry of `key`; False (and nothing written) when the report holds a value
        the cache has no data form for or the disk refuses."""
        try:
            arrays: list[bytes] = []
            report_text = json.dumps(_encode(report, arrays), allow_nan=True).encode()
        except _Unstorable:
            return False
        files = {
            PROGRAM: json.dumps(program.to_json()).encode(),
            REPORT: report_text,
            ARRAYS: b"".join(arrays),
        }
        return self._write(key, files, seconds)

    def store_error(self, key, error: PlacementError) -> bool:
        """Record that `key` does not fit, with `error`'s message."""
        fields = {
            "message": str(error),
            "needed_bytes": error.needed_bytes,
            "available_bytes": error.available_bytes,
        }
        if not all(type(v) is int for v in (error.needed_bytes, error.available_bytes)):
            return False
        return self._write(key, {ERROR: json.dumps(fields).encode()}, 0.0)

    def _write(self, key, files: dict[str, bytes], seconds: float) -> bool:
        entry = {
            "format": FORMAT,
            "key": self._key_text(key),
            "compile_seconds": float(seconds),
            "files": {
                name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        }

        def write(staging: Path) -> None:
            for name, data in files.items():
                write_synced(staging / name, data)
            write_synced(staging / ENTRY, json.dumps(entry).encode())

        try:
            replace_directory(self.path(key), check=_check_entry_path, write=write)
        except OSError:
            return False
        return True

    def _key_text(self, key) -> str:
        """The key with Wafer's version, as canonical JSON."""
        fields = dataclasses.asdict(key)
        return json.dumps({"wafer": self.version, "key": fields}, sort_keys=True, default=repr)


def _same_directory(path: Path, dir_fd: int) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(dir_fd))
    except OSError:
        return False


def _check_entry_path(path: Path) -> None:
    """Whatever is at an entry's path is replaced; anything but a directory is removed first."""
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        os.unlink(path)
    elif path.is_dir() and not set(os.listdir(path)) <= {ENTRY, ERROR, *DATA_FILES}:
        shutil.rmtree(path)


def _read_entry(path: Path, dir_fd: int, key_text: str):
    with open_file(path, dir_fd, ENTRY) as f:
        data = f.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES or json_depth(data) > 4:
        raise ValueError("entry.json is not a cache entry")
    entry = json.loads(data)
    if entry["format"] != FORMAT or entry["key"] != key_text:
        raise ValueError("another key's entry")
    files = entry["files"]
    if sorted(files) == [ERROR]:
        with open_file(path, dir_fd, ERROR, files[ERROR]) as f:
            data = f.read(MAX_ENTRY_BYTES + 1)
        check_hash(path / ERROR, hashlib.sha256(data).hexdigest(), files[ERROR])
        error = json.loads(data)
        message, needed, available = (
            error[name] for name in ("message", "needed_bytes", "available_bytes")
        )
        if type(message) is not str or type(needed) is not int or type(available) is not int:
            raise ValueError("error.json holds no placement error")
        raise PlacementError(message, needed_bytes=needed, available_bytes=available)
    if sorted(files) != sorted(DATA_FILES):
        raise ValueError("entry lists other files")
    with open_file(path, dir_fd, PROGRAM, files[PROGRAM]) as f:
        program = read_program(f, path / PROGRAM, files[PROGRAM])
    blobs = {}
    for name in (REPORT, ARRAYS):
        with open_file(path, dir_fd, name, files[name]) as f:
            blobs[name] = f.read(MAX_REPORT_BYTES if name == REPORT else MAX_ARRAY_BYTES)
        check_hash(path / name, hashlib.sha256(blobs[name]).hexdigest(), files[name])
    if json_depth(blobs[REPORT]) > 16:
        raise ValueError("report nested too deep")
    report = _decode(json.loads(blobs[REPORT]), blobs[ARRAYS], [MAX_ARRAY_BYTES])
    if not isinstance(report, PlacementReport):
        raise ValueError("report.json holds no placement report")
    seconds = entry["compile_seconds"]
    if not isinstance(seconds, float):
        raise ValueError("compile_seconds is not a number")
    return program, report, seconds


# ---------------------------------------------------------------- report <-> JSON data

# Every value but None, bool, int, float and str is a one-key object naming its type.


def _encode(value, arrays: list[bytes]):
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (list, tuple):
        return {type(value).__name__: [_encode(v, arrays) for v in value]}
    if type(value) is dict:
        return {"dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if type(value) is np.ndarray and value.dtype.name in ARRAY_DTYPES:
        raw = np.ascontiguousarray(value).tobytes()
        start = sum(len(a) for a in arrays)
        arrays.append(zlib.compress(raw, 1))
        info = [value.dtype.name, list(value.shape), start, len(arrays[-1])]
        return {"array": info}
    if type(value).__name__ in CLASSES and type(value) is CLASSES[type(value).__name__]:
        fields = {f.name: _encode(getattr(value, f.name), arrays) for f in _fields(type(value))}
        return {"class": [type(value).__name__, fields]}
    raise _Unstorable(type(value).__name__)


def _decode(value, arrays: bytes, budget: list[int]):
    """A report value from its JSON form; its arrays inflate from `arrays`, all of them
    together within `budget[0]` bytes (decremented)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is not dict or len(value) != 1:
        raise ValueError("malformed report value")
    (tag, data), decode = (
        next(iter(value.items())),
        functools.partial(_decode, arrays=arrays, budget=budget),
    )
    if tag in ("list", "tuple") and type(data) is list:
        items = [decode(v) for v in data]
        return items if tag == "list" else tuple(items)
    if tag == "dict" and type(data) is list:
        return {_hashable(decode(k)): decode(v) for k, v in data}
    if tag == "array":
        return _decode_array(data, arrays, budget)
    if tag == "class" and type(data) is list and len(data) == 2 and data[0] in CLASSES:
        cls, fields = CLASSES[data[0]], data[1]
        if type(fields) is not dict or sorted(fields) != sorted(f.name for f in _fields(cls)):
            raise ValueError(f"{data[0]} with other fields")
        return cls(**{name: decode(v) for name, v in fields.items()})
    raise ValueError(f"unknown report value {tag!r:.40}")


def _fields(cls) -> list:
    return [f for f in dataclasses.fields(cls) if f.init]


def _hashable(key):
    hash(key)
    return key


def _decode_array(info, arrays: bytes, budget: list[int]) -> np.ndarray:
    dtype, shape, start, size = info
    if dtype not in ARRAY_DTYPES or type(shape) is not list or len(shape) > 8:
        raise ValueError("malformed array")
    if not all(type(n) is int and 0 <= n <= MAX_ARRAY_BYTES for n in shape):
        raise ValueError("malformed array")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # whole numbers: no overflow
    budget[0] -= nbytes
    if budget[0] < 0 or not (type(start) is int and type(size) is int):
        raise ValueError("arrays over the bound, or malformed")
    if not 0 <= start <= start + size <= len(arrays):
        raise ValueError("array out of bounds")
    inflate = zlib.decompressobj()
    raw = inflate.decompress(arrays[start : start + size], nbytes + 1)
    if len(raw) != nbytes or not inflate.eof:
        raise ValueError("array data of the wrong size")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
