"""Bad-input catalogue rows for artifacts: hostile or damaged artifacts ("artifact-untrusted")
and saves that would destroy data ("save-never-loses"). Also the tiny artifact and the editing
helpers (`rehash` recomputes hashes as a forger would) that tests/test_artifact_safety.py uses.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from catalogue import Case
from safetensors.torch import save_file
from torch.utils import _pytree as pytree

import runtime
from core.errors import ArtifactError
from runtime import artifact
from runtime.program import Instruction, Program, Signature, TensorSpec

SPEC = TensorSpec((2, 3), "f32")
# Two weights tied to one tensor, two outputs: {"sum": x + w, "product": x * w}.
PROGRAM = Program(
    (SPEC,),
    (
        Instruction("param", (), (1,), (SPEC,), {"sym_name": "w"}),
        Instruction("param", (), (2,), (SPEC,), {"sym_name": "w_tied"}),
        Instruction("add", (0, 1), (3,), (SPEC,)),
        Instruction("mul", (0, 2), (4,), (SPEC,)),
    ),
    (3, 4),
)
INPUT = torch.arange(6.0).reshape(2, 3)


def save_kwargs(seed: int = 0) -> dict:
    """`artifact.save` arguments for the tiny program; `seed` picks the weight."""
    w = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    return dict(
        program=PROGRAM,
        weights={"w": w, "w_tied": w},
        signature=Signature((True,), (0, 1)),
        in_spec=pytree.tree_flatten(((INPUT,), {}))[1],
        out_spec=pytree.tree_flatten({"sum": INPUT, "product": INPUT})[1],
        mlir="module {}\n",
        model_name=f"tiny-{seed}",
        target="none",
    )


def saved(tmp_path: Path, name: str = "a", seed: int = 0) -> Path:
    """A fresh tiny artifact at `tmp_path / name`."""
    return artifact.save(tmp_path / name, **save_kwargs(seed))


def outputs(path: Path) -> list[torch.Tensor]:
    """The flat outputs of the artifact at `path` on INPUT (reference runtime)."""
    return pytree.tree_leaves(runtime.load(path, runtime="reference")(INPUT))


def rehash(path: Path) -> None:
    """Recompute the manifest's records of the data files and its checksum after an edit."""
    manifest = json.loads((path / artifact.MANIFEST).read_text())
    for name in artifact.DATA_FILES:
        if name in manifest["files"] and (path / name).is_file():
            data = (path / name).read_bytes()
            manifest["files"][name] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
    write_manifest(path, json.dumps(manifest).encode())


def write_manifest(path: Path, text: bytes, checksum: bool = True) -> None:
    (path / artifact.MANIFEST).write_bytes(text)
    line = f"{hashlib.sha256(text).hexdigest()}  {artifact.MANIFEST}\n"
    if checksum:
        (path / artifact.CHECKSUM).write_text(line)


def edit(path: Path, name: str, change: Callable[[dict], object], forge: bool = True) -> Path:
    """Apply `change` to the JSON file `name`; `forge` recomputes the hashes afterwards."""
    data = json.loads((path / name).read_text())
    change(data)
    (path / name).write_text(json.dumps(data))
    if forge:
        rehash(path)
    return path


def flip_bit(file: Path, bit: int) -> None:
    data = bytearray(file.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    file.write_bytes(bytes(data))


def write_weights(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Replace the weights file with `tensors` and forge the hashes."""
    save_file(tensors, str(path / artifact.WEIGHTS))
    rehash(path)
    return path


def with_payload(tmp_path: Path, path: Path, module: str) -> Callable[[], object]:
    """Drop `module`.py (which writes a marker when imported) into the artifact; return a
    load that has the artifact directory on sys.path and fails if the payload ever ran."""
    marker = tmp_path / "payload-ran"
    (path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")

    def load() -> object:
        sys.path.insert(0, str(path))
        try:
            return runtime.load(path, runtime="reference")
        finally:
            sys.path.remove(str(path))
            assert not marker.exists() and module not in sys.modules, "the payload ran"

    return load


# ---------------------------------------------------------------------------- cases


def _payload_v1(tmp_path: Path) -> object:
    path = saved(tmp_path)
    manifest = json.loads((path / artifact.MANIFEST).read_text())
    manifest["format_version"] = 1
    manifest["out_spec"] = {"treespec": json.dumps([1, {"type": "payload.Evil"}])}
    write_manifest(path, json.dumps(manifest).encode(), checksum=False)
    (path / artifact.CHECKSUM).unlink()
    return with_payload(tmp_path, path, "payload")()


def _payload_class(tmp_path: Path, forge: bool) -> object:
    path = saved(tmp_path)

    def to_payload(m: dict) -> None:
        m["out_tree"] = {"model_output": {"module": "payload", "qualname": "Evil", "fields": []}}

    return with_payload(tmp_path, edit(path, artifact.MANIFEST, to_payload, forge), "payload")()


def _name_file(name: str) -> Callable[[Path], object]:
    def run(tmp_path: Path) -> object:
        path = saved(tmp_path)
        edit(
            path, artifact.MANIFEST, lambda m: m["files"].update({name: m["files"][artifact.MLIR]})
        )
        return runtime.load(path)

    return run


def _symlinked(tmp_path: Path) -> object:
    path = saved(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    (path / artifact.WEIGHTS).rename(outside)
    (path / artifact.WEIGHTS).symlink_to(outside)
    return runtime.load(path)


def _flipped(name: str, bit: int) -> Callable[[Path], object]:
    def run(tmp_path: Path) -> object:
        path = saved(tmp_path)
        flip_bit(path / name, bit)
        return runtime.load(path)

    return run


def _swapped_outputs(tmp_path: Path) -> object:
    path = saved(tmp_path)
    edit(path, artifact.MANIFEST, lambda m: m["signature"].update(outputs=[1, 0]), forge=False)
    return runtime.load(path)


def _forged(name: str, change: Callable[[dict], object]) -> Callable[[Path], object]:
    return lambda tmp_path: runtime.load(edit(saved(tmp_path), name, change))


def _weights(make: Callable[[], dict[str, torch.Tensor]]) -> Callable[[Path], object]:
    return lambda tmp_path: runtime.load(write_weights(saved(tmp_path), make()))


def _nested(tmp_path: Path) -> object:
    path = saved(tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    text = (path / artifact.MANIFEST).read_text().replace('"target"', f'"deep": {deep}, "target"')
    write_manifest(path, text.encode())
    return runtime.load(path)


def _oversize(tmp_path: Path) -> object:
    path = saved(tmp_path)
    write_manifest(path, (path / artifact.MANIFEST).read_bytes() + b" " * (17 << 20))
    return runtime.load(path)


def _version_1(tmp_path: Path) -> object:
    path = edit(saved(tmp_path), artifact.MANIFEST, lambda m: m.update(format_version=1))
    return runtime.load(path)


def _header_size(tmp_path: Path) -> object:
    path = saved(tmp_path)
    data = bytearray((path / artifact.WEIGHTS).read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")
    (path / artifact.WEIGHTS).write_bytes(bytes(data))
    rehash(path)
    return runtime.load(path)


def _truncated_weights(tmp_path: Path) -> object:
    path = saved(tmp_path)
    data = (path / artifact.WEIGHTS).read_bytes()
    (path / artifact.WEIGHTS).write_bytes(data[:-5])
    return runtime.load(path)


def _kept(check: Callable[[], bool], save: Callable[[], object]) -> object:
    """Run `save`; whatever it raises, `check()` must still hold (nothing was lost)."""
    try:
        return save()
    finally:
        assert check(), "the save destroyed what was at the path"


def _over_file(tmp_path: Path) -> object:
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("years of work")
    return _kept(
        lambda: thesis.read_text() == "years of work",
        lambda: artifact.save(thesis, **save_kwargs()),
    )


def _over_directory(extra: bool) -> Callable[[Path], object]:
    def run(tmp_path: Path) -> object:
        path = saved(tmp_path) if extra else tmp_path / "a"
        path.mkdir(exist_ok=True)
        (path / "thesis.txt").write_text("years of work")
        return _kept(
            lambda: (path / "thesis.txt").read_text() == "years of work",
            lambda: artifact.save(path, overwrite=True, **save_kwargs(1)),
        )

    return run


def _over_artifact(tmp_path: Path) -> object:
    path = saved(tmp_path)
    before = outputs(path)
    return _kept(
        lambda: all(map(torch.equal, outputs(path), before)),
        lambda: artifact.save(path, **save_kwargs(1)),
    )


def _through_symlink(tmp_path: Path) -> object:
    target = saved(tmp_path, "real")
    (tmp_path / "link").symlink_to(target)
    return artifact.save(tmp_path / "link", overwrite=True, **save_kwargs(1))


def _under_a_file(tmp_path: Path) -> object:
    (tmp_path / "file").write_text("not a directory")
    return artifact.save(tmp_path / "file" / "a", **save_kwargs())


W = torch.zeros(2, 3)
BAD = "artifact-untrusted"
SAVE = "save-never-loses"
CASES: list[Case] = [
    Case(BAD, "payload module named by a version-1 manifest", _payload_v1, ArtifactError,
         "format version 1"),
    Case(BAD, "payload class edited into the manifest", lambda t: _payload_class(t, False),
         ArtifactError, "sha256 differs"),
    Case(BAD, "'../' path among the manifest's files", _name_file("../../etc/passwd"),
         ArtifactError, "names files ['../../etc/passwd']"),
    Case(BAD, "absolute path among the manifest's files", _name_file("/etc/hostname"),
         ArtifactError, "names files ['/etc/hostname']"),
    Case(BAD, "unknown file named by the manifest", _name_file("payload.py"), ArtifactError,
         "names files ['payload.py']"),
    Case(BAD, "weights file is a symlink", _symlinked, ArtifactError, "symbolic link"),
    Case(BAD, "bit flip in the manifest", _flipped(artifact.MANIFEST, 300), ArtifactError,
         "sha256 differs"),
    Case(BAD, "bit flip in manifest.sha256", _flipped(artifact.CHECKSUM, 3), ArtifactError,
         "manifest.sha256"),
    Case(BAD, "bit flip in the program", _flipped(artifact.PROGRAM, 200), ArtifactError,
         "sha256 differs"),
    Case(BAD, "bit flip in a weight", _flipped(artifact.WEIGHTS, -1), ArtifactError,
         "sha256 differs"),
    Case(BAD, "swapped output indices", _swapped_outputs, ArtifactError, "sha256 differs"),
    Case(BAD, "signature output out of range (hashes forged)",
         _forged(artifact.MANIFEST, lambda m: m["signature"].update(outputs=[0, 7])),
         ArtifactError, "signature output 7 is out of range"),
    Case(BAD, "program output out of range (hashes forged)",
         _forged(artifact.PROGRAM, lambda p: p.update(outputs=[3, 99])), ArtifactError,
         "which no instruction defines"),
    Case(BAD, "value read before it is defined (hashes forged)",
         _forged(artifact.PROGRAM, lambda p: p["instructions"][2].update(operands=[0, 4])),
         ArtifactError, "reads value 4 before it is defined"),
    Case(BAD, "unknown op (hashes forged)",
         _forged(artifact.PROGRAM, lambda p: p["instructions"][2].update(op="system")),
         ArtifactError, "unknown op 'system'"),
    Case(BAD, "field of the wrong type (hashes forged)",
         _forged(artifact.PROGRAM, lambda p: p["instructions"][3].update(results="4")),
         ArtifactError, "results must be list"),
    Case(BAD, "tied weight naming no param (hashes forged)",
         _forged(artifact.MANIFEST, lambda m: m.update(tied_weights={"w": "x"})), ArtifactError,
         "tied weight 'w' -> 'x'"),
    Case(BAD, "wrong-shape weight (hashes forged)", _weights(lambda: {"w": W.T.contiguous()}),
         ArtifactError, "weight 'w' is [3, 2] 'F32', but the program reads [2, 3]"),
    Case(BAD, "wrong-dtype weight (hashes forged)", _weights(lambda: {"w": W.double()}),
         ArtifactError, "weight 'w' is [2, 3] 'F64'"),
    Case(BAD, "missing weight (hashes forged)", _weights(lambda: {}), ArtifactError,
         "weight 'w' is missing"),
    Case(BAD, "extra weight (hashes forged)", _weights(lambda: {"w": W, "evil": W.clone()}),
         ArtifactError, "holds 'evil', which is not a program weight"),
    Case(BAD, "safetensors header larger than the file (hashes forged)", _header_size,
         ArtifactError, "does not fit"),
    Case(BAD, "truncated weights", _truncated_weights, ArtifactError,
         "but the manifest records"),
    Case(BAD, "deeply nested manifest (hashes forged)", _nested, ArtifactError,
         "JSON nested 100001 deep"),
    Case(BAD, "oversize manifest", _oversize, ArtifactError, "larger than the 16 MiB"),
    Case(BAD, "format version 1", _version_1, ArtifactError,
         "format version 1, which stored names of Python types"),
    Case(SAVE, "save over a regular file", _over_file, ArtifactError,
         "is a file, not a Wafer artifact"),
    Case(SAVE, "save over a directory that is not an artifact", _over_directory(False),
         ArtifactError, "not a Wafer artifact (thesis.txt)"),
    Case(SAVE, "save over an artifact holding a user's file", _over_directory(True),
         ArtifactError, "thesis.txt"),
    Case(SAVE, "save over an artifact without overwrite=True", _over_artifact, ArtifactError,
         "pass overwrite=True"),
    Case(SAVE, "save through a symlink", _through_symlink, ArtifactError, "symbolic link"),
    Case(SAVE, "save below a regular file", _under_a_file, ArtifactError,
         "could not save the artifact"),
]  # fmt: skip
