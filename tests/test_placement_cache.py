"""The on-disk placement cache: hits equal misses byte for byte, any change of key or of
Wafer's code misses, concurrent writers are safe, damaged or edited entries are rebuilt,
and unsafe directories are refused."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import CacheDirError, PlacementError
from core.target import load_target
from simulator import disk_cache, placements
from simulator.cli import main as wafersim
from simulator.disk_cache import DiskCache, default_dir
from simulator.phases import PlacementCache, PlacementKey, confine

ROOT = Path(__file__).resolve().parents[1]
KEY = PlacementKey("tiny-llama", "prefill", 32, 33, 1, load_target("mesh-8x8"), "auto", "fp16")


def _text(placement) -> str:
    """Everything a placement holds, as text."""
    return json.dumps(
        [placement.program.to_json(), placement.report.to_dict(), placement.compile_seconds],
        sort_keys=True,
    )


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A cache holding KEY, and the placement compiled for it."""
    disk = DiskCache(tmp_path_factory.mktemp("cache") / "wafer")
    placement = PlacementCache(disk).place(KEY)
    return disk, placement


def test_hit_is_byte_identical_to_the_miss_and_compiles_nothing(filled, monkeypatch):
    disk, missed = filled
    monkeypatch.setattr(PlacementCache, "_compile", staticmethod(_no_compiling))
    hit = PlacementCache(disk).place(KEY)
    assert _text(hit) == _text(missed)
    assert (hit.report.usage == missed.report.usage).all()
    assert hit.report.target == missed.report.target and hit.report.layers == missed.report.layers


def _no_compiling(key):
    raise AssertionError(f"compiled {key} although it was cached")


@pytest.mark.parametrize(
    "change",
    [
        {"mode": "streaming"},
        {"target": load_target("mesh-16x16")},
        {"seq": 31},
        {"dtype": "bf16"},
        {"phase": "decode"},
    ],
)
def test_a_changed_key_misses(filled, change):
    disk, _ = filled
    other = replace(KEY, **change)
    assert disk.path(other) != disk.path(KEY)
    assert disk.load(other) is None
    assert disk.load(KEY) is not None


def test_other_code_misses(filled):
    disk, _ = filled
    assert DiskCache(disk.root, version="0" * 64).load(KEY) is None
    assert DiskCache(disk.root).load(KEY) is not None


def test_version_is_a_hash_of_the_sources():
    version = disk_cache.wafer_version()
    assert len(version) == 64 and int(version, 16) >= 0
    assert disk_cache.wafer_version() == version


WRITER = """
import sys
from core.target import load_target
from simulator.disk_cache import DiskCache
from simulator.phases import PlacementKey
key = PlacementKey("tiny-llama", "prefill", 32, 33, 1, load_target("mesh-8x8"), "auto", "fp16")
program, report, seconds = DiskCache(sys.argv[1], "test").load(key)
target = DiskCache(sys.argv[2], "test")  # the tree may change while the test runs
for _ in range(6):
    assert target.store(key, program, report, seconds)
"""


def test_two_processes_filling_one_key_are_safe(filled, tmp_path):
    _, placement = filled
    disk, shared = DiskCache(tmp_path / "source", "test"), tmp_path / "shared"
    disk.store(KEY, placement.program, placement.report, placement.compile_seconds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(disk.root), str(shared)], env=env)
        for _ in range(2)
    ]
    reader = DiskCache(shared, "test")
    seen = 0
    while any(w.poll() is None for w in writers):
        stored = reader.load(KEY)
        if stored is not None:  # never a torn or mixed entry: all of it, or nothing yet
            seen += 1
            assert _text(type(placement)(*stored)) == _text(placement)
    assert [w.wait() for w in writers] == [0, 0]
    assert _text(type(placement)(*reader.load(KEY))) == _text(placement)
    assert sorted(os.listdir(reader.entries)) == [reader.path(KEY).name]  # no staging or locks


@pytest.mark.parametrize("file", ["program.json", "report.json", "arrays.bin", "entry.json"])
def test_a_damaged_entry_is_rebuilt(filled, tmp_path, file):
    disk, placement = filled
    copy = DiskCache(tmp_path / "cache")
    copy.store(KEY, placement.program, placement.report, placement.compile_seconds)
    damaged = copy.path(KEY) / file
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x55
    damaged.write_bytes(bytes(data))
    assert copy.load(KEY) is None
    calls = []
    rebuilt = PlacementCache(copy)
    rebuilt._compile = lambda key: calls.append(key) or placement
    assert rebuilt.place(KEY) is placement and calls == [KEY]
    assert _text(type(placement)(*copy.load(KEY))) == _text(placement)


def _edit_report(cache: DiskCache, report: object) -> None:
    """Replace KEY's stored report with `report`, recomputing its hash as an attacker would."""
    entry_dir = cache.path(KEY)
    data = json.dumps(report).encode()
    (entry_dir / "report.json").write_bytes(data)
    entry = json.loads((entry_dir / "entry.json").read_text())
    entry["files"]["report.json"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (entry_dir / "entry.json").write_text(json.dumps(entry))


def test_an_edited_entry_with_matching_hashes_builds_nothing_unknown(filled, tmp_path):
    """A report naming a class outside the report's own is refused even when the hashes were
    recomputed after the edit."""
    disk, placement = filled
    copy = DiskCache(tmp_path / "cache")
    copy.store(KEY, placement.program, placement.report, placement.compile_seconds)
    _edit_report(copy, {"class": ["Popen", {"args": {"list": ["touch", str(tmp_path / "owned")]}}]})
    assert copy.load(KEY) is None
    assert not (tmp_path / "owned").exists()


@pytest.mark.parametrize(
    "evil",
    [
        {"class": []},  # no class name
        {"array": ["int64", [10**200, 10**200], 0, 0]},  # a shape past any float
        {"array": ["int64", [10**400], 0, 0]},
        {"list": [{"array": ["int8", [3 << 30], 0, 0]}] * 2},  # 6 GiB in all, past the bound
    ],
)
def test_an_edited_report_with_matching_hashes_is_rebuilt(filled, tmp_path, evil):
    """Malformed values and oversized arrays in an edited entry read as no entry."""
    _, placement = filled
    copy = DiskCache(tmp_path / "cache")
    copy.store(KEY, placement.program, placement.report, placement.compile_seconds)
    _edit_report(copy, evil)
    assert copy.load(KEY) is None


def test_unsafe_directories_are_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CacheDirError, match="writable by group or others"):
        DiskCache(shared)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        status = wafersim(["run", "tiny-llama", "--target", "mesh-8x8", "--cache-dir", str(shared)])
    assert status == 2 and "chmod go-w" in errors.getvalue()
    if os.getuid() == 0:  # only root can give a directory away
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 4321, 4321)
        with pytest.raises(CacheDirError, match="belongs to user id 4321"):
            DiskCache(theirs)
    created = DiskCache(tmp_path / "new" / "wafer")
    assert (created.root.stat().st_mode & 0o777) == 0o700


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.setenv("WAFER_CACHE_DIR", str(tmp_path / "w"))
    assert default_dir() == tmp_path / "w"
    monkeypatch.delenv("WAFER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "wafer"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert default_dir() == Path.home() / ".cache" / "wafer"


def test_cli_hits_and_no_cache(tmp_path, monkeypatch):
    argv = ["run", "tiny-llama", "--target", "mesh-8x8", "--seq", "32", "--decode", "1"]
    argv += ["--json", "--cache-dir", str(tmp_path / "c")]
    first, second = _report(argv), None
    monkeypatch.setattr(PlacementCache, "_compile", staticmethod(_no_compiling))
    second = _report(argv)
    assert first == second
    assert len(os.listdir(tmp_path / "c" / f"placements-v{disk_cache.FORMAT}")) == 2
    monkeypatch.undo()
    monkeypatch.setenv("WAFER_CACHE_DIR", str(tmp_path / "env"))
    _report([*argv[:-2], "--no-cache"])
    assert not (tmp_path / "env").exists()


def _report(argv: list[str]) -> str:
    """`wafersim` JSON without its wall times."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert wafersim(argv) == 0
    data = json.loads(out.getvalue())
    for phase in ("prefill", "decode"):
        data[phase].pop("simulate_seconds")
    return json.dumps(data, sort_keys=True)


def test_prefetch_compiles_in_a_side_process(tmp_path, monkeypatch):
    """The second key compiles in a spawned process, which leaves it on disk for `place`."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing compiles on the side")
    monkeypatch.setattr(placements, "PARALLEL_MIN_LAYERS", 0)
    decode = replace(KEY, phase="decode", seq=33, cache=34)
    cache = PlacementCache(DiskCache(tmp_path / "c"))
    cache.prefetch([KEY, decode])
    assert list(cache._pending) == [decode]
    here: list[PlacementKey] = []
    compile_here = PlacementCache._compile
    monkeypatch.setattr(
        PlacementCache, "_compile", staticmethod(lambda key: here.append(key) or compile_here(key))
    )
    cache.place(KEY)
    side = cache.place(decode)
    assert here == [KEY]
    assert _untimed(side) == _untimed(compile_here(decode))


def _untimed(placement) -> str:
    report = placement.report.to_dict()
    report.pop("pass_seconds")
    return json.dumps([placement.program.to_json(), report], sort_keys=True)


def test_a_linked_entry_is_not_followed(filled, tmp_path):
    disk, placement = filled
    copy = DiskCache(tmp_path / "cache")
    copy.path(KEY).symlink_to(disk.path(KEY) if disk.version == copy.version else tmp_path)
    assert copy.load(KEY) is None
    assert copy.store(KEY, placement.program, placement.report, placement.compile_seconds)
    assert not copy.path(KEY).is_symlink() and copy.load(KEY) is not None


def test_a_key_that_does_not_fit_is_recorded(tmp_path, monkeypatch):
    """Its `PlacementError` comes back from the cache, message and sizes, without compiling."""
    tight = replace(KEY, target=confine("mesh-8x8", (1, 1)), mode="pipelined")
    disk = DiskCache(tmp_path / "c")
    with pytest.raises(PlacementError) as first:
        PlacementCache(disk).place(tight)
    monkeypatch.setattr(PlacementCache, "_compile", staticmethod(_no_compiling))
    with pytest.raises(PlacementError) as again:
        PlacementCache(disk).place(tight)
    assert str(again.value) == str(first.value)
    assert (again.value.needed_bytes, again.value.available_bytes) == (
        first.value.needed_bytes,
        first.value.available_bytes,
    )
