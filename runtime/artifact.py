"""Compiled-model artifacts: a versioned directory that runs without the compiler or MLIR.

Layout: `manifest.json` (format version, model name, target, signature with tensor specs,
pytree specs, sha256 of every other file), `program.json`, `weights.safetensors` and
`module.mlir` (kept for inspection; running never reads it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils import _pytree as pytree

from core.errors import ArtifactError
from runtime.execution import Executor, ProgramCall, check_runtime, make_executor
from runtime.program import Program, Signature, TensorSpec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRAM = "program.json"
WEIGHTS = "weights.safetensors"
MLIR = "module.mlir"


# ---------------------------------------------------------------------------- save


def save(
    path: str | os.PathLike,
    *,
    program: Program,
    weights: Mapping[str, torch.Tensor],
    signature: Signature,
    in_spec: pytree.TreeSpec,
    out_spec: pytree.TreeSpec,
    mlir: str,
    model_name: str,
    target: str,
) -> Path:
    """Write the artifact directory `path` atomically and return it.

    Everything is written and fsynced in a temporary directory beside `path`, which then
    replaces `path` by renames; a failure before that leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _weights_to_save(program, weights)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write(staging / PROGRAM, json.dumps(program.to_json()).encode())
        save_file(tensors, str(staging / WEIGHTS))
        _fsync(staging / WEIGHTS)
        _write(staging / MLIR, mlir.encode())
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_name": model_name,
            "target": str(target),
            "signature": signature.to_json(),
            "input_specs": [_spec_json(s) for s in program.input_specs],
            "output_specs": [_spec_json(s) for s in program.output_specs],
            "in_spec": _dump_spec(in_spec),
            "out_spec": _dump_spec(out_spec),
            "files": {name: _sha256(staging / name) for name in (PROGRAM, WEIGHTS, MLIR)},
        }
        _write(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync(staging)
        _replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _weights_to_save(program: Program, weights: Mapping[str, torch.Tensor]) -> dict:
    """The program's weights as contiguous CPU tensors sharing no memory (safetensors
    refuses aliases, e.g. tied embeddings)."""
    out, seen = {}, set()
    for name in program.params():
        if name not in weights:
            raise ArtifactError(f"weight {name!r} is missing from the weights given")
        t = weights[name].detach()
        if t.is_meta:
            raise ArtifactError(f"weight {name!r} is on the meta device; nothing to save")
        t = t.cpu().contiguous()
        storage = t.untyped_storage().data_ptr()
        out[name] = t.clone() if storage in seen else t
        seen.add(storage)
    return out


def _dump_spec(spec: pytree.TreeSpec) -> dict:
    """`{"treespec": text}`, or `{"flat": n}` when the spec cannot be serialised: the loaded
    module then takes and returns flat lists."""
    try:
        return {"treespec": pytree.treespec_dumps(spec)}
    except Exception as exc:  # pytree raises several types for unregistered node types
        return {"flat": spec.num_leaves, "reason": f"{type(exc).__name__}: {exc}"}


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(staging: Path, path: Path) -> None:
    """Rename `staging` to `path`; an existing `path` is moved aside first and removed only
    once the new artifact is in place (restored if that rename fails)."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, old / path.name)
    try:
        os.rename(staging, path)
    except BaseException:
        if old is not None:
            os.rename(old / path.name, path)
            old.rmdir()
        raise
    _fsync(path.parent)
    if old is not None:
        shutil.rmtree(old)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec_json(spec: TensorSpec) -> dict:
    return {"shape": list(spec.shape), "dtype": spec.dtype}


# ---------------------------------------------------------------------------- load


class LoadedModule(ProgramCall):
    """A loaded artifact, callable like the original model on the runtime chosen at load."""

    def __init__(
        self,
        manifest: dict,
        program: Program,
        weights: dict[str, torch.Tensor],
        runtime: str,
        *,
        signature: Signature,
        in_spec: pytree.TreeSpec | None,
        out_spec: pytree.TreeSpec | None,
    ):
        check_runtime(runtime, placed=False)
        self.manifest = manifest
        self.model_name: str = manifest["model_name"]
        self.target: str = manifest["target"]
        self.program = program
        self.weights = weights
        self.signature = signature
        self.in_spec = in_spec
        self.out_spec = out_spec
        self.runtime = runtime
        self._executor = None

    def _make_executor(self) -> Executor:
        return make_executor(self.runtime, self.program, self.weights)


def load(path: str | os.PathLike, *, runtime: str = "jax") -> LoadedModule:
    """Load the artifact at `path`, verified against its manifest, to run on `runtime`
    ("jax" or "reference"; an artifact holds no placement for "simulator")."""
    check_runtime(runtime, placed=False)
    path = Path(path)
    manifest = _read_manifest(path / MANIFEST)
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{file}: missing from the artifact")
        if _sha256(file) != digest:
            raise ArtifactError(f"{file}: sha256 differs from the manifest; the file is corrupted")
    with _reading(path / MANIFEST):
        signature = Signature.from_json(manifest["signature"])
        in_spec, out_spec = _load_spec(manifest["in_spec"]), _load_spec(manifest["out_spec"])
    with _reading(path / PROGRAM):
        program = Program.from_json(json.loads((path / PROGRAM).read_text()))
    with _reading(path / WEIGHTS):
        weights = load_file(str(path / WEIGHTS))
    loaded = LoadedModule(
        manifest, program, weights, runtime, signature=signature, in_spec=in_spec, out_spec=out_spec
    )
    loaded._executor = loaded._make_executor()  # JAX refuses a program it cannot run now
    return loaded


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Turn any failure to interpret `file` into an ArtifactError naming it."""
    try:
        yield
    except Exception as exc:  # json, safetensors and pytree raise many types
        raise ArtifactError(f"{file}: unreadable ({type(exc).__name__}: {exc})") from exc


def _read_manifest(file: Path) -> dict:
    if not file.is_file():
        raise ArtifactError(f"{file}: not found; {file.parent} is not a Wafer artifact")
    try:
        manifest = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{file}: truncated or not JSON ({exc})") from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{file}: no valid format_version")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{file}: format version {version} is newer than {FORMAT_VERSION}, the newest "
            "this runtime reads; upgrade Wafer to load it"
        )
    keys = ("model_name", "target", "signature", "in_spec", "out_spec", "files")
    missing = [k for k in keys if k not in manifest]
    files = manifest["files"] if isinstance(manifest.get("files"), dict) else {}
    missing += [f"files.{n}" for n in (PROGRAM, WEIGHTS, MLIR) if n not in files]
    if missing:
        raise ArtifactError(f"{file}: missing fields {', '.join(missing)}")
    return manifest


def _load_spec(stored: dict) -> pytree.TreeSpec | None:
    """The stored TreeSpec (None for a flat fallback). Node types are registered by their
    defining modules (e.g. Hugging Face ModelOutput classes), which are imported first."""
    if "treespec" not in stored:
        return None
    text = stored["treespec"]
    for name in _type_names(json.loads(text)):
        if name not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            try:
                importlib.import_module(name.rpartition(".")[0])
            except ImportError as exc:
                raise LookupError(f"pytree node type {name} is unavailable: {exc}") from exc
    return pytree.treespec_loads(text)


def _type_names(node) -> set[str]:
    """Every `"type"` named in a serialised TreeSpec."""
    if isinstance(node, list):
        return set().union(*(_type_names(n) for n in node))
    if isinstance(node, dict):
        names = {node["type"]} if node.get("type") else set()
        return names.union(*(_type_names(c) for c in node.get("children_spec", [])))
    return set()
