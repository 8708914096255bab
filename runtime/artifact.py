"""Compiled-model artifacts: a directory that runs without the compiler or MLIR, and that
loading treats as untrusted data.

Layout (format version 2), regular files directly in the directory:

- `manifest.json`: format version, model name, target, signature, tensor specs, the input
  and output structures (`in_tree`, `out_tree`, in `runtime.trees`' JSON format), tied
  weights (`{name: name it shares its tensor with}`) and the size and sha256 of every other
  file;
- `manifest.sha256`: the manifest's sha256 in `sha256sum` format (`sha256sum -c` checks it);
- `program.json` (the `Program`), `weights.safetensors` (one tensor per distinct weight) and
  `module.mlir` (for inspection: hashed, never interpreted).

Loading checks every byte against a hash before using it: the manifest against
`manifest.sha256`, every other file against the manifest (weights are hashed as they are read
into their tensors, returned only once the digest matches). It opens only those file names,
relative to the opened directory, and refuses symbolic links and anything but regular files;
a manifest naming another file is refused. Sizes are bounded before anything is allocated
(manifest, program bytes and instruction count, JSON nesting depth, safetensors header against
the file size); the program is validated (field types, ops, value ids defined before use,
outputs and signature indices in range); the weights must be exactly the program's params in
name, shape and dtype. Nothing the artifact names is imported or executed (`runtime.trees`).
Hashes catch corruption and edits; an artifact whose hashes were recomputed after an edit is
still refused when malformed, but a well-formed one computes what its program says.

Saving never loses data. Holding a lock (`flock` on `.NAME.lock` beside `path`, removed when
done), `save` removes what killed saves left, refuses to replace anything but a Wafer artifact
(and an artifact unless `overwrite=True`), writes and fsyncs the new artifact in a staging
directory `.NAME.tmp-XXXXXXXX` beside `path`, and swaps the two with one atomic
`renameat2(RENAME_EXCHANGE)`: at every instant `path` holds the old artifact or the new one,
whole. Where that call is missing (not Linux, or a filesystem without it) the old artifact is
renamed to `.NAME.old-XXXXXXXX` before the new one is renamed in; a crash between the two
leaves `path` absent and the next save to it puts the old artifact back. Every `OSError`
while saving becomes an `ArtifactError` naming the path.

Reading and checking the files is `runtime.artifact_checks` (which defines the file names
and bounds this module re-exports); the crash-safe replacement is `runtime.atomic_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils import _pytree as pytree

from core.errors import ArtifactError, ShardingError
from runtime import sharding, trees
from runtime.artifact_checks import (
    CHECKSUM,
    DATA_FILES,
    FILES,
    FORMAT_VERSION,
    MANIFEST,
    MAX_JSON_DEPTH,
    MLIR,
    PROGRAM,
    WEIGHTS,
    check_against_program,
    check_hash,
    hash_rest,
    is_artifact,
    json_depth,
    open_directory,
    open_file,
    read_manifest,
    read_program,
    read_weights,
    reading,
    spec_json,
)
from runtime.atomic_dir import fsync_path, replace_directory, write_synced
from runtime.execution import Executor, ProgramCall, check_devices, check_runtime, make_executor
from runtime.program import Program, Signature

__all__ = [
    "CHECKSUM",
    "DATA_FILES",
    "FILES",
    "FORMAT_VERSION",
    "MANIFEST",
    "MLIR",
    "PROGRAM",
    "WEIGHTS",
    "LoadedModule",
    "load",
    "save",
]


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
    overwrite: bool = False,
    devices=None,
) -> Path:
    """Write the artifact directory `path` and return it. `path` may be absent, an empty
    directory, or (with `overwrite=True`) a Wafer artifact, which is replaced atomically;
    anything else is refused. A failure or crash leaves `path` as it was. `devices` (a
    count or a `jax.sharding.Mesh`) records the sharding that loading then expects."""
    tensors, tied = _weights_to_save(program, weights)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "target": str(target),
        "signature": signature.to_json(),
        "input_specs": [spec_json(s) for s in program.input_specs],
        "output_specs": [spec_json(s) for s in program.output_specs],
        "in_tree": trees.to_json(in_spec),
        "out_tree": trees.to_json(out_spec),
        "tied_weights": tied,
    }
    if devices is not None:
        layout = sharding.layout_of(program, devices)
        manifest["sharding"] = {
            "devices": layout.devices,
            "stages": layout.stages,
            "tensor": layout.tensor,
        }
    if json_depth(json.dumps(manifest).encode()) > MAX_JSON_DEPTH - 2:  # files add 2 levels
        raise ArtifactError(
            f"{path}: the model's inputs or outputs are nested deeper than an artifact stores "
            f"({MAX_JSON_DEPTH} JSON levels); flatten them to save this model"
        )
    where = Path(os.path.abspath(path))
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        replace_directory(
            where,
            check=lambda path: _check_replaceable(path, overwrite),
            write=lambda staging: _write_artifact(staging, manifest, program, tensors, mlir),
        )
    except OSError as exc:
        raise ArtifactError(
            f"{path}: could not save the artifact ({exc}); nothing at the path was lost. "
            "Fix the cause (space, permissions) and save again"
        ) from exc
    return Path(path)


def _weights_to_save(
    program: Program, weights: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store, one per distinct weight, and the tied ones: a param that is the
    same view of the same memory as an earlier one is stored once, as `{name: earlier}`."""
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, spec in program.params().items():
        if name not in weights:
            raise ArtifactError(f"weight {name!r} is missing from the weights given")
        t = weights[name].detach()
        if t.is_meta:
            raise ArtifactError(f"weight {name!r} is on the meta device; nothing to save")
        if tuple(t.shape) != spec.shape or t.dtype != spec.torch_dtype:
            raise ArtifactError(
                f"weight {name!r} is {list(t.shape)} {t.dtype}, but the program reads it as "
                f"{spec.describe()}; pass the weights the program was compiled with"
            )
        storage = t.untyped_storage().data_ptr()
        view = (t.device, storage, t.storage_offset(), t.shape, t.stride(), t.dtype)
        if view in views:
            tied[name] = views[view]
            continue
        views[view] = name
        t = t.cpu().contiguous()
        tensors[name] = t.clone() if storage in storages else t  # safetensors refuses overlaps
        storages.add(storage)
    return tensors, tied


def _write_artifact(
    directory: Path, manifest: dict, program: Program, tensors: dict, mlir: str
) -> None:
    """Write and fsync every file of the artifact in `directory`, the manifest last."""
    write_synced(directory / PROGRAM, json.dumps(program.to_json()).encode())
    save_file(tensors, str(directory / WEIGHTS))
    fsync_path(directory / WEIGHTS)
    write_synced(directory / MLIR, mlir.encode())
    manifest["files"] = {
        name: {"sha256": _sha256(directory / name), "size": (directory / name).stat().st_size}
        for name in DATA_FILES
    }
    text = json.dumps(manifest, indent=1).encode()
    write_synced(directory / MANIFEST, text)
    write_synced(directory / CHECKSUM, f"{hashlib.sha256(text).hexdigest()}  {MANIFEST}\n".encode())
    fsync_path(directory)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hash_rest(f).hexdigest()


def _check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an empty directory or a Wafer artifact, and an
    artifact unless `overwrite`."""
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise ArtifactError(
            f"{path} is a symbolic link; Wafer does not save through links: remove the link "
            "or save to another path"
        )
    if not path.is_dir():
        raise ArtifactError(
            f"{path} exists and is a file, not a Wafer artifact; move or delete it, or save "
            "to another path"
        )
    entries = sorted(os.listdir(path))
    if entries and not is_artifact(path, entries):
        odd = [e for e in entries if e not in FILES] or entries
        shown = ", ".join(odd[:3]) + (", ..." if len(odd) > 3 else "")
        raise ArtifactError(
            f"{path} is a directory holding files that are not a Wafer artifact ({shown}); "
            "Wafer replaces only its own artifacts: move those files away or save to another path"
        )
    if entries and not overwrite:
        raise ArtifactError(
            f"{path} already holds a Wafer artifact; pass overwrite=True to replace it"
        )


# ---------------------------------------------------------------------------- load


class LoadedModule(ProgramCall):
    """A loaded artifact, callable like the original model on the runtime chosen at load.
    `structure_notes` says which output (or input) classes came back as plain containers
    because they were not imported (see `runtime.trees`)."""

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
        structure_notes: list[str],
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
        self.structure_notes = structure_notes
        self.runtime = runtime
        self._executor = None

    def _make_executor(self) -> Executor:
        return make_executor(
            self.runtime,
            self.program,
            self.weights,
            check_indices=self.check_indices,
            devices=self.devices,
        )


def load(
    path: str | os.PathLike,
    *,
    runtime: str = "jax",
    check_indices: bool = True,
    devices=None,
) -> LoadedModule:
    """Load the artifact at `path`, verified as described above, to run on `runtime`
    ("jax" or "reference"; an artifact holds no placement for "simulator"); `check_indices=False`
    lets the JAX runtime clamp out-of-range indices instead of checking them. `devices` (a
    count or a `jax.sharding.Mesh`) shards it on JAX; an artifact saved sharded runs on the
    layout it records, and refuses another device count (`ShardingError`). A load that a
    concurrent save replaced the artifact under (and then removed the old one) starts again."""
    check_runtime(runtime, placed=False)
    check_devices(runtime, devices)
    path = Path(path)
    attempts = 3
    while True:
        attempts -= 1
        with open_directory(path) as dir_fd:
            try:
                return _load(path, dir_fd, runtime, check_indices, devices)
            except ArtifactError:
                if not attempts or _still_at(path, dir_fd):
                    raise


def _still_at(path: Path, dir_fd: int) -> bool:
    """Whether the directory opened as `dir_fd` is still the one at `path`."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(dir_fd))
    except OSError:
        return False


def _load(path: Path, dir_fd: int, runtime: str, check_indices: bool, devices) -> LoadedModule:
    manifest = read_manifest(path, dir_fd)
    files = manifest["files"]
    with open_file(path, dir_fd, PROGRAM, files[PROGRAM]) as f:
        program = read_program(f, path / PROGRAM, files[PROGRAM])
    with open_file(path, dir_fd, MLIR, files[MLIR]) as f:
        check_hash(path / MLIR, hash_rest(f).hexdigest(), files[MLIR])
    notes: list[str] = []
    with reading(path / MANIFEST):
        signature, in_spec, out_spec = check_against_program(manifest, program, notes)
    tied = manifest["tied_weights"]
    stored = {n: s for n, s in program.params().items() if n not in tied}
    with open_file(path, dir_fd, WEIGHTS, files[WEIGHTS]) as f:
        weights = read_weights(f, path / WEIGHTS, files[WEIGHTS], stored)
    weights.update({name: weights[shares] for name, shares in tied.items()})
    loaded = LoadedModule(
        manifest,
        program,
        weights,
        runtime,
        signature=signature,
        in_spec=in_spec,
        out_spec=out_spec,
        structure_notes=notes,
    )
    loaded.check_indices = check_indices
    if runtime == "jax":
        loaded.devices = _saved_devices(path, manifest, devices)
    loaded._executor = loaded._make_executor()  # JAX refuses a program it cannot run now
    return loaded


def _saved_devices(path: Path, manifest: dict, devices):
    """The devices to shard a loaded artifact over: its recorded layout, unless a mesh is
    given; a count or mesh given must number as many devices as the artifact records."""
    saved = manifest.get("sharding")
    if saved is None:
        return devices
    recorded = sharding.Layout(saved["stages"], saved["tensor"])
    if devices is None:
        return recorded
    count = devices if isinstance(devices, int) else sharding.layout_of(None, devices).devices
    if count != recorded.devices:
        raise ShardingError(
            f"{path} was saved sharded over {recorded.devices} devices "
            f"({recorded.describe()}), not {count}; load it with devices={recorded.devices} "
            "(or leave devices out), or compile with the new count and save again"
        )
    return recorded if isinstance(devices, int) else devices
