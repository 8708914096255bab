"""Artifacts under attack and under crashes: saves SIGKILLed at every line they run, four
processes saving one path at once, bit flips and truncations everywhere, and a payload class
that loading must never import. The catalogue rows are in tests/catalogue_artifacts.py."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from catalogue_artifacts import flip_bit, outputs, rehash, saved, with_payload

import runtime
from runtime import artifact, artifact_checks

REPO = Path(__file__).resolve().parent.parent

# Runs saves in forked children of one process that has imported torch once (the test process
# may have started JAX, which must not fork). `kill`: for each kill point K, a child saves the
# other version over the artifact with a trace that SIGKILLs it at the K-th line executed in
# runtime/artifact.py or shutil.py; the parent then loads the path, which must be exactly the
# old or the new version, and saves again, which must leave nothing stale beside it.
# `concurrent`: 4 children each save their own version 3 times at once while a fifth loads
# the path 100 times (each load must be one whole version). Prints a JSON summary.
CHILDREN = r"""
import json, os, shutil, signal, sys, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)
from catalogue_artifacts import outputs, save_kwargs
from runtime import artifact, artifact_checks, atomic_dir

mode, root = sys.argv[1], Path(sys.argv[2])
path = root / "model"
TRACED = {artifact.__file__, artifact_checks.__file__, atomic_dir.__file__, shutil.__file__}


def save(version):
    artifact.save(path, overwrite=True, **save_kwargs(version))


def traced_save(version, kill_at=0):
    count = 0

    def line(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return line

    sys.settrace(lambda frame, event, arg: line if frame.f_code.co_filename in TRACED else None)
    try:
        save(version)
    finally:
        sys.settrace(None)
    return count


def fork(work):
    pid = os.fork()
    if pid == 0:
        try:
            work()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    return pid


def which(expected):
    got = outputs(path)
    return next(v for v, out in expected.items() if all(map(torch.equal, got, out)))


def stray():
    return sorted(p.name for p in root.iterdir() if p.name != "model")


expected = {}
for version in range(2 if mode == "kill" else 4):
    save(version)
    expected[version] = outputs(path)
if mode == "kill":
    points = traced_save(1)
    current, seen, killed, stale = 1, {"old": 0, "new": 0}, 0, 0
    for kill_at in range(1, points + 1):
        _, status = os.waitpid(fork(lambda: traced_save(1 - current, kill_at)), 0)
        killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        old, current = current, which(expected)  # StopIteration: neither version
        seen["old" if current == old else "new"] += 1
        stale += bool(stray())
        save(current)  # the next save removes what the killed one left
        assert not stray(), stray()
    print(json.dumps({"points": points, "killed": killed, "seen": seen, "stale": stale}))
else:
    pids = [fork(lambda v=v: [save(v) for _ in range(3)]) for v in expected]
    pids.append(fork(lambda: [which(expected) for _ in range(100)]))  # a reader meanwhile
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    print(json.dumps({"statuses": statuses, "final": which(expected), "stray": stray()}))
"""


def _children(mode: str, root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    done = subprocess.run(
        [sys.executable, "-c", CHILDREN, mode, str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_save_killed_at_any_line_leaves_the_old_or_the_new_artifact(tmp_path):
    result = _children("kill", tmp_path)
    assert result["points"] >= 100 and result["killed"] == result["points"], result
    assert result["seen"]["old"] > 20 and result["seen"]["new"] > 5, (
        result
    )  # both sides of the swap
    assert result["stale"] > 20, result  # kills left staging directories, cleaned by the next save


def test_concurrent_saves_are_serialised(tmp_path):
    result = _children("concurrent", tmp_path)
    assert result["statuses"] == [0] * 5 and result["stray"] == [], result
    assert result["final"] in (0, 1, 2, 3)


def _damaged(tmp_path: Path, damage) -> tuple[int, int]:
    """Apply `damage(file, rng)` to copies of each artifact file many times; each load must
    raise ArtifactError or give exactly the original outputs. Returns (refused, unchanged)."""
    path = saved(tmp_path)
    original = outputs(path)
    rng = random.Random(0)
    refused = unchanged = 0
    for name in artifact.FILES:
        pristine = (path / name).read_bytes()
        for _ in range(150):
            damage(path / name, rng)
            try:
                got = outputs(path)
            except runtime.ArtifactError:
                refused += 1
            else:
                assert all(map(torch.equal, got, original)), f"wrong result after damaging {name}"
                unchanged += 1
            (path / name).write_bytes(pristine)
    return refused, unchanged


def test_bit_flips_anywhere_are_refused(tmp_path):
    refused, unchanged = _damaged(
        tmp_path, lambda f, rng: flip_bit(f, rng.randrange(8 * f.stat().st_size))
    )
    assert unchanged == 0 and refused == 150 * len(artifact.FILES)


def test_truncations_and_insertions_are_refused(tmp_path):
    def damage(file: Path, rng: random.Random) -> None:
        data = file.read_bytes()
        cut = rng.randrange(len(data))
        insert = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        file.write_bytes(data[:cut] if rng.random() < 0.5 else data[:cut] + insert + data[cut:])

    refused, unchanged = _damaged(tmp_path, damage)
    assert unchanged == 0 and refused == 150 * len(artifact.FILES)


def test_a_payload_class_is_never_imported(tmp_path):
    """With forged hashes, the output class names a module beside the manifest: the output
    comes back as a plain dict and the payload never runs (`with_payload` checks)."""
    path = saved(tmp_path)
    manifest = json.loads((path / artifact.MANIFEST).read_text())
    fields = manifest["out_tree"]["dict"]
    manifest["out_tree"] = {
        "model_output": {"module": "payload", "qualname": "Evil", "fields": fields}
    }
    (path / artifact.MANIFEST).write_text(json.dumps(manifest))
    rehash(path)
    module = with_payload(tmp_path, path, "payload")()
    out = module(torch.zeros(2, 3))
    assert type(out) is dict and set(out) == {"sum", "product"}
    assert "payload.Evil is not imported" in module.structure_notes[0]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_only_regular_files_are_read(tmp_path, kind):
    path = saved(tmp_path)
    (path / artifact.MLIR).unlink()
    if kind == "fifo":
        os.mkfifo(path / artifact.MLIR)  # opening it for reading would block
    else:
        (path / artifact.MLIR).mkdir()
    with pytest.raises(runtime.ArtifactError, match=r"module\.mlir: not a regular file"):
        runtime.load(path)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [[1], {"b": "[[[[{{{"}]}', 3),
        (b'["\\"[[[", "\\\\", [[]]]', 3),
        (b'"unterminated [[[[', 0),
        (b"[" * 5000, 5000),
    ],
)
def test_json_depth_skips_strings(text, depth):
    assert artifact_checks.json_depth(text) == depth
