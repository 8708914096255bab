"""Reading an artifact directory as untrusted data: the format's file names and size bounds,
and every check `runtime.artifact.load` makes before it uses a byte.

Files are opened relative to the opened directory, as regular files and never through links
(`open_directory`, `open_file`); sizes and JSON nesting depth are bounded before anything is
parsed or allocated; every file is checked against its sha256 (`check_hash`; the manifest
against `manifest.sha256`, and `read_weights` hashes the weights as it reads them).
`read_manifest`, `read_program` and `read_weights` validate each file's structure, and
`check_against_program` the manifest's signature, specs, tied weights and structures against
the program. A malformed value becomes an `ArtifactError` naming its file (`reading`).
`runtime.artifact` describes the format and re-exports the names it defines here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils import _pytree as pytree

from core import dtypes
from core.errors import ArtifactError
from core.ops import OPS
from runtime import program as program_format
from runtime import trees
from runtime.program import Program, Signature, TensorSpec

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
CHECKSUM = "manifest.sha256"
PROGRAM = "program.json"
WEIGHTS = "weights.safetensors"
MLIR = "module.mlir"
DATA_FILES = (PROGRAM, WEIGHTS, MLIR)
FILES = (MANIFEST, CHECKSUM, *DATA_FILES)

MAX_MANIFEST_BYTES = 16 << 20
MAX_PROGRAM_BYTES = 256 << 20
MAX_INSTRUCTIONS = 1 << 20
MAX_JSON_DEPTH = 100
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own bound
MAX_ELEMENTS = 1 << 48  # per tensor spec

SAFETENSORS_DTYPES = {
    "f64": "F64", "f32": "F32", "f16": "F16", "bf16": "BF16", "i64": "I64", "i32": "I32",
    "i1": "BOOL",
}  # fmt: skip
_CHECKSUM_LINE = re.compile(rb"([0-9a-f]{64})  " + re.escape(MANIFEST.encode()) + rb"\n")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ------------------------------------------------------------ opening and hashing files


@contextlib.contextmanager
def open_directory(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: not found; no Wafer artifact is at this path") from exc
    except OSError as exc:
        raise ArtifactError(
            f"{path}: not a Wafer artifact directory ({exc.strerror}); pass the directory "
            "that save() wrote"
        ) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def open_file(directory: Path, dir_fd: int | None, name: str, record=None) -> io.BufferedReader:
    """The artifact file `name`, opened relative to the directory: a regular file, not a
    link, whose size is `record["size"]` when given."""
    file = directory / name
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name if dir_fd is not None else file, flags, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{file}: missing from the artifact") from exc
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
        raise ArtifactError(f"{file}: {why}; an artifact holds only regular files") from exc
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise ArtifactError(f"{file}: not a regular file; an artifact holds only regular files")
    if record is not None and status.st_size != record["size"]:
        os.close(fd)
        raise ArtifactError(
            f"{file}: {status.st_size} bytes, but the manifest records {record['size']}; the "
            "file is truncated or corrupted"
        )
    return open(fd, "rb")


def _read_bounded(f: io.BufferedReader, file: Path, limit: int) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(
            f"{file}: larger than the {limit >> 20} MiB Wafer allows for it; the file is "
            "corrupted or not from Wafer"
        )
    return data


def check_hash(file: Path, digest: str, record: dict) -> None:
    if digest != record["sha256"]:
        raise ArtifactError(
            f"{file}: sha256 differs from the manifest; the file is corrupted or was edited. "
            "Save the artifact again from the compiled model"
        )


@contextlib.contextmanager
def reading(file: Path) -> Iterator[None]:
    """Turn a malformed value in `file` (ValueError and kin) into an ArtifactError naming it."""
    try:
        yield
    except ArtifactError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ArtifactError(
            f"{file}: {exc}. The artifact is damaged or not from this Wafer; save it again "
            "from the compiled model"
        ) from exc


def is_artifact(path: Path, entries: list[str]) -> bool:
    """Whether the directory holds only artifact files, a manifest among them that names a
    format version (of any Wafer release)."""
    if MANIFEST not in entries or not set(entries) <= set(FILES):
        return False
    if not all(stat.S_ISREG(os.lstat(path / e).st_mode) for e in entries):
        return False
    try:
        with open_file(path, None, MANIFEST) as f:
            manifest = _parse_json(_read_bounded(f, path / MANIFEST, MAX_MANIFEST_BYTES))
    except (ArtifactError, ValueError):
        return False
    return isinstance(manifest, dict) and _is_int(manifest.get("format_version"))


def hash_rest(f: io.BufferedReader, digest=None):
    """`digest` (a new sha256 by default) updated with the rest of `f`."""
    digest = digest or hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest


def spec_json(spec: TensorSpec) -> dict:
    return {"shape": list(spec.shape), "dtype": spec.dtype}


# ---------------------------------------------------------------------- the manifest


def read_manifest(directory: Path, dir_fd: int) -> dict:
    """The manifest, checked against `manifest.sha256` before it is interpreted."""
    file = directory / MANIFEST
    with open_file(directory, dir_fd, MANIFEST) as f:
        data = _read_bounded(f, file, MAX_MANIFEST_BYTES)
    stored = _stored_checksum(directory, dir_fd)
    if stored != hashlib.sha256(data).hexdigest():
        version = _peek_version(data)
        if _is_int(version) and version != FORMAT_VERSION:
            raise ArtifactError(_version_problem(file, version))
        if stored is None:
            raise ArtifactError(
                f"{directory / CHECKSUM}: missing; the artifact is incomplete or not from Wafer"
            )
        raise ArtifactError(
            f"{file}: sha256 differs from {CHECKSUM}; the manifest is truncated, corrupted or "
            "was edited. Save the artifact again from the compiled model"
        )
    with reading(file):
        manifest = _parse_json(data)
        if not isinstance(manifest, dict):
            raise ValueError("the manifest is not a JSON object")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(_version_problem(file, manifest.get("format_version")))
        _check_manifest(manifest)
    return manifest


def _stored_checksum(directory: Path, dir_fd: int) -> str | None:
    try:
        f = open_file(directory, dir_fd, CHECKSUM)
    except ArtifactError:
        if os.path.lexists(directory / CHECKSUM):
            raise
        return None
    with f:
        match = _CHECKSUM_LINE.fullmatch(f.read(200))
    if match is None:
        raise ArtifactError(
            f"{directory / CHECKSUM}: not one sha256 line for {MANIFEST}; the file is corrupted"
        )
    return match[1].decode()


def _peek_version(data: bytes) -> object:
    """The format_version a manifest that failed its checksum claims, for the message."""
    try:
        manifest = _parse_json(data)
    except ValueError:
        return None
    return manifest.get("format_version") if isinstance(manifest, dict) else None


def _version_problem(file: Path, version: object) -> str:
    """Why a manifest of this format_version (not FORMAT_VERSION) is not loaded."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"{file}: no valid format_version; the artifact is corrupted or not from Wafer"
    if version == 1:
        return (
            f"{file}: format version 1, which stored names of Python types that loading "
            "imported; it is no longer loaded. Compile the model and save it again with this "
            "Wafer (save(path, overwrite=True))"
        )
    return (
        f"{file}: format version {version} is newer than {FORMAT_VERSION}, the newest this "
        "runtime reads; upgrade Wafer to load it (or the manifest is corrupted)"
    )


MANIFEST_FIELDS = {
    "format_version": int, "model_name": str, "target": str, "signature": dict,
    "input_specs": list, "output_specs": list, "in_tree": dict, "out_tree": dict,
    "tied_weights": dict, "files": dict,
}  # fmt: skip


SHARDING_FIELDS = {"devices": int, "stages": int, "tensor": int}
MAX_SHARDED_DEVICES = 1 << 16


def _check_manifest(manifest: dict) -> None:
    """ValueError unless the manifest has exactly its fields (and optionally `sharding`), of
    their types, and names exactly the artifact's data files."""
    _check_fields(manifest, MANIFEST_FIELDS, "the manifest", optional={"sharding": dict})
    if "sharding" in manifest:
        shard = _check_fields(manifest["sharding"], SHARDING_FIELDS, "sharding")
        counts = (shard["devices"], shard["stages"], shard["tensor"])
        if not all(1 <= c <= MAX_SHARDED_DEVICES for c in counts) or (
            shard["stages"] * shard["tensor"] != shard["devices"]
        ):
            raise ValueError(
                f"sharding {shard!r:.120} is not stages x tensor = devices, each 1 to "
                f"{MAX_SHARDED_DEVICES}"
            )
    extra = sorted(set(manifest["files"]) - set(DATA_FILES))
    if extra:
        raise ValueError(
            f"names files {extra!r:.200}, but an artifact holds only {', '.join(DATA_FILES)} "
            "beside its manifest, and nothing else is read"
        )
    missing = sorted(set(DATA_FILES) - set(manifest["files"]))
    if missing:
        raise ValueError(f"files lacks the records of {missing}")
    for name, record in manifest["files"].items():
        _check_fields(record, {"sha256": str, "size": int}, f"files[{name!r}]")
        if not _SHA256.fullmatch(record["sha256"]) or record["size"] < 0:
            raise ValueError(f"files[{name!r}] is not a sha256 and a size: {record!r:.200}")
    tied = manifest["tied_weights"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise ValueError("tied_weights must map weight names to weight names")


def _check_fields(
    value: object, fields: Mapping[str, type], what: str, optional: Mapping[str, type] = {}
) -> dict:
    """`value` if it is a JSON object with exactly `fields` (and any of `optional`), of their
    types; else ValueError."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")
    fields = {**fields, **{k: t for k, t in optional.items() if k in value}}
    extra, missing = sorted(set(value) - set(fields)), sorted(set(fields) - set(value))
    if extra:
        raise ValueError(f"{what} has unknown fields {extra!r:.200}")
    if missing:
        raise ValueError(f"{what} lacks fields {missing}")
    for key, kind in fields.items():
        if not isinstance(value[key], kind) or (kind is int and isinstance(value[key], bool)):
            raise ValueError(f"{what}: {key} must be {kind.__name__}, not {value[key]!r:.80}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------ the program


PROGRAM_FIELDS = {
    "format_version": int, "inputs": list, "outputs": list, "node_results": dict,
    "instructions": list,
}  # fmt: skip
INSTRUCTION_FIELDS = {
    "op": str, "operands": list, "results": list, "result_specs": list, "attrs": dict,
    "node": str, "source_op": str, "location": str,
}  # fmt: skip


def read_program(f: io.BufferedReader, file: Path, record: dict) -> Program:
    data = _read_bounded(f, file, MAX_PROGRAM_BYTES)
    check_hash(file, hashlib.sha256(data).hexdigest(), record)
    with reading(file):
        return Program.from_json(_check_program(_parse_json(data)))


def _check_program(value: object) -> dict:
    """`value` if it is a well-formed program (every field of its type, known ops, each value
    defined once and before its use, outputs defined, unique param names); else ValueError."""
    raw = _check_fields(value, PROGRAM_FIELDS, "the program")
    if raw["format_version"] != program_format.FORMAT_VERSION:
        raise ValueError(f"program format version {raw['format_version']} is not supported")
    if len(raw["instructions"]) > MAX_INSTRUCTIONS:
        raise ValueError(f"more than {MAX_INSTRUCTIONS} instructions")
    for index, spec in enumerate(raw["inputs"]):
        _check_spec(spec, f"input {index}")
    defined = set(range(len(raw["inputs"])))
    params: set[str] = set()
    for index, ins in enumerate(raw["instructions"]):
        _check_instruction(ins, f"instruction {index}", defined, params)
    for what, values in (("outputs", raw["outputs"]), ("node_results", raw["node_results"])):
        for v in values.values() if isinstance(values, dict) else values:
            if not _is_int(v) or v not in defined:
                raise ValueError(f"{what} name value {v!r:.40}, which no instruction defines")
    return raw


def _check_instruction(value: object, what: str, defined: set[int], params: set[str]) -> None:
    ins = _check_fields(value, INSTRUCTION_FIELDS, what)
    if ins["op"] not in OPS:
        raise ValueError(f"{what}: unknown op {ins['op']!r:.40}")
    for v in ins["operands"]:
        if v is not None and (not _is_int(v) or v not in defined):
            raise ValueError(f"{what} ({ins['op']}) reads value {v!r:.40} before it is defined")
    if len(ins["result_specs"]) != len(ins["results"]):
        raise ValueError(
            f"{what}: {len(ins['results'])} results, {len(ins['result_specs'])} result specs"
        )
    for v, spec in zip(ins["results"], ins["result_specs"], strict=True):
        if not _is_int(v) or v < 0 or v in defined:
            raise ValueError(f"{what}: result {v!r:.40} is not a new value id")
        _check_spec(spec, f"{what} result {v}")
        defined.add(v)
    if ins["op"] == "param":
        name = ins["attrs"].get("sym_name")
        if not isinstance(name, str) or name in params or len(ins["results"]) != 1:
            raise ValueError(f"{what}: a param needs one result and a new sym_name, not {name!r}")
        params.add(name)


def _check_spec(value: object, what: str) -> None:
    spec = _check_fields(value, {"shape": list, "dtype": str}, what)
    shape, dtype = spec["shape"], spec["dtype"]
    if not all(_is_int(d) and d >= 0 for d in shape) or dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"{what}: {shape!r:.80} {dtype!r:.20} is not a tensor shape and dtype")
    numel = 1
    for d in shape:
        numel = min(numel * d, MAX_ELEMENTS + 1)
    if numel > MAX_ELEMENTS:
        raise ValueError(f"{what}: {shape!r:.80} has more than {MAX_ELEMENTS} elements")


def check_against_program(
    manifest: dict, program: Program, notes: list[str]
) -> tuple[Signature, pytree.TreeSpec | None, pytree.TreeSpec | None]:
    """The signature and structures, checked against the program they describe."""
    signature = Signature.from_json(manifest["signature"])
    for what, specs in (("input", program.input_specs), ("output", program.output_specs)):
        if manifest[f"{what}_specs"] != [spec_json(s) for s in specs]:
            raise ValueError(f"{what}_specs differ from the program's {what}s")
    if sum(signature.input_is_tensor) != len(program.input_specs):
        raise ValueError(
            f"the signature has {sum(signature.input_is_tensor)} tensor inputs, the program "
            f"{len(program.input_specs)}"
        )
    for o in signature.outputs:
        if isinstance(o, int) and not 0 <= o < len(program.outputs):
            raise ValueError(
                f"signature output {o} is out of range: the program has "
                f"{len(program.outputs)} outputs"
            )
    params = program.params()
    for name, shares in manifest["tied_weights"].items():
        if name not in params or shares not in params or shares in manifest["tied_weights"]:
            raise ValueError(f"tied weight {name!r} -> {shares!r} is not a pair of stored params")
        if params[name] != params[shares]:
            raise ValueError(f"tied weights {name!r} and {shares!r} have different specs")
    in_spec = trees.from_json(manifest["in_tree"], len(signature.input_is_tensor), notes)
    out_spec = trees.from_json(manifest["out_tree"], len(signature.outputs), notes)
    return signature, in_spec, out_spec


# ------------------------------------------------------------------------ the weights


def read_weights(
    f: io.BufferedReader, file: Path, record: dict, expected: dict[str, TensorSpec]
) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `f`, exactly `expected` in names, shapes and
    dtypes. The file is hashed as it is read; tensors are returned only if it matches."""
    digest = hashlib.sha256()
    head = f.read(8)
    digest.update(head)
    length = int.from_bytes(head, "little")
    if len(head) < 8 or length > min(record["size"] - 8, MAX_SAFETENSORS_HEADER):
        raise ArtifactError(
            f"{file}: its header ({length} bytes) does not fit the {record['size']}-byte file; "
            "the file is truncated, corrupted or not safetensors"
        )
    header = f.read(length)
    digest.update(header)
    try:
        layout = _weights_layout(header, record["size"] - 8 - length, expected, file)
    except ArtifactError:
        check_hash(file, hash_rest(f, digest).hexdigest(), record)  # corruption, if it is one
        raise
    tensors = {}
    for name, spec, nbytes in layout:
        data = torch.empty(nbytes, dtype=torch.uint8)
        buffer = data.numpy().data
        if f.readinto(buffer) != nbytes:
            raise ArtifactError(f"{file}: truncated while reading weight {name!r}")
        digest.update(buffer)
        tensors[name] = data.view(spec.torch_dtype).reshape(spec.shape)
    check_hash(file, hash_rest(f, digest).hexdigest(), record)
    return tensors


def _weights_layout(
    header: bytes, data_bytes: int, expected: dict[str, TensorSpec], file: Path
) -> list[tuple[str, TensorSpec, int]]:
    """(name, spec, bytes) of each stored tensor in file order, checked against `expected`
    and required to tile the `data_bytes` after the header exactly."""
    with reading(file):
        entries = _parse_json(header)
        if not isinstance(entries, dict):
            raise ValueError("the safetensors header is not a JSON object")
        entries.pop("__metadata__", None)
    missing = sorted(set(expected) - set(entries))
    if missing:
        raise ArtifactError(f"{file}: weight {missing[0]!r} is missing; the program reads it")
    extra = sorted(set(entries) - set(expected))
    if extra:
        raise ArtifactError(f"{file}: holds {extra[0]!r:.80}, which is not a program weight")
    layout = []
    for name, entry in entries.items():
        spec = expected[name]
        with reading(file):
            _check_fields(entry, {"dtype": str, "shape": list, "data_offsets": list}, name)
        if entry["dtype"] != SAFETENSORS_DTYPES[spec.dtype] or entry["shape"] != list(spec.shape):
            raise ArtifactError(
                f"{file}: weight {name!r} is {entry['shape']!r:.80} {entry['dtype']!r:.20}, but "
                f"the program reads {spec.describe()}; the weights are not this program's"
            )
        offsets = entry["data_offsets"]
        nbytes = math.prod(spec.shape) * dtypes.element_bytes(spec.dtype)
        if len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise ArtifactError(f"{file}: weight {name!r} has malformed data_offsets")
        if offsets[1] - offsets[0] != nbytes:
            raise ArtifactError(
                f"{file}: weight {name!r} spans {offsets[1] - offsets[0]} bytes; its shape and "
                f"dtype need {nbytes}"
            )
        layout.append((offsets[0], name, spec, nbytes))
    layout.sort(key=lambda item: item[0])
    position = 0
    for begin, name, _, nbytes in layout:
        if begin != position:
            raise ArtifactError(f"{file}: weight {name!r} overlaps another or leaves a gap")
        position += nbytes
    if position != data_bytes:
        raise ArtifactError(f"{file}: the tensors cover {position} of {data_bytes} data bytes")
    return [(name, spec, nbytes) for _, name, spec, nbytes in layout]


# ------------------------------------------------------------------------------ JSON

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)  # linear: no backtracking
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


def _parse_json(data: bytes) -> object:
    """JSON text nested at most MAX_JSON_DEPTH deep, checked before parsing, so the parser
    never recurses deeper; ValueError otherwise."""
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {depth} deep; Wafer reads at most {MAX_JSON_DEPTH}")
    return json.loads(data.decode("utf-8"))


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped), in linear
    time and without recursion."""
    brackets = np.frombuffer(_STRING.sub(b"", data).translate(None, _NOT_BRACKETS), np.uint8)
    level = deepest = 0
    for start in range(0, len(brackets), 1 << 22):
        levels = level + np.cumsum(_STEP[brackets[start : start + (1 << 22)]], dtype=np.int64)
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest
