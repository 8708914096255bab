"""Targets as data: presets load with sources; malformed files name the bad field."""

from __future__ import annotations

import dataclasses
import json

import pytest

import compiler
from core.target import PRESET_DIR, load_target, presets


def test_presets_load_with_sources():
    assert {"wse2", "wse3", "mesh-4x4", "mesh-8x8", "mesh-16x16", "mesh-12x6"} <= set(presets())
    wse2 = load_target("wse2")
    assert (wse2.grid_width_pes, wse2.grid_height_pes) == (750, 994)
    assert wse2.sram_bytes_per_pe == 48 * 1024
    assert "Hot Chips" in wse2.source("sram_read_bytes_per_cycle")
    # Derived peak from target-facts.md: ~6.6 PFLOP/s fp16 on WSE-2.
    assert wse2.peak_flops(16) == pytest.approx(6.56e15, rel=0.01)
    assert load_target("wse3").peak_flops(16) == pytest.approx(15.5e15, rel=0.03)


def _write(tmp_path, **changes):
    data = json.loads((PRESET_DIR / "wse2.json").read_text())
    for key, value in changes.items():
        if key in data:
            data[key] = value
        elif value is None:
            del data["fields"][key]
        else:
            data["fields"][key] = {"value": value, "source": "test"}
    path = tmp_path / "target.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sram_bytes_per_pe": -1}, "'sram_bytes_per_pe' must be > 0"),
        ({"clock_hz": 0}, "'clock_hz' must be > 0"),
        ({"grid_width_pes": 2000}, "exceeds the wse2 fabric"),
        ({"colors": "many"}, "'colors' must be a finite number"),
        ({"hop_latency_cycles": 1.5}, "'hop_latency_cycles' must be a whole number"),
        ({"clock_hz": None}, "missing field 'clock_hz'"),
        ({"clock_ghz": 1.0}, "unknown field(s) ['clock_ghz']"),
        ({"wafer": "wse9"}, "'wafer' must be one of"),
        ({"sram_reserved_bytes_per_pe": 49152}, "'sram_reserved_bytes_per_pe' must be below"),
    ],
)
def test_malformed_target_names_the_field(tmp_path, change, message):
    with pytest.raises(compiler.TargetError) as info:
        load_target(_write(tmp_path, **change))
    assert message in str(info.value)


def test_user_target_file_and_bad_names(tmp_path):
    assert load_target(_write(tmp_path, grid_width_pes=420, grid_height_pes=420)).num_pes == 420**2
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(compiler.TargetError, match="not valid JSON"):
        load_target(tmp_path / "broken.json")
    with pytest.raises(compiler.TargetError, match="unknown target 'wse7'"):
        load_target("wse7")


def test_largest_mesh_loads_and_one_more_row_does_not(tmp_path):
    assert load_target(_write(tmp_path, wafer="mesh", grid_width_pes=762, grid_height_pes=1172))
    with pytest.raises(compiler.TargetError, match="more than the 893,064 of the largest"):
        load_target(_write(tmp_path, wafer="mesh", grid_width_pes=762, grid_height_pes=1173))


@pytest.mark.parametrize(
    "field, value",
    [("sram_bytes_per_pe", 2**30 + 1), ("clock_hz", 1e13), ("colors", 10**400)],
)
def test_values_beyond_any_wafer_are_refused(tmp_path, field, value):
    with pytest.raises(compiler.TargetError, match=f"field '{field}' is .* above the bound"):
        load_target(_write(tmp_path, **{field: value}))


def test_a_target_object_is_checked_too():
    wse3 = load_target("wse3")
    assert load_target(wse3) is wse3
    with pytest.raises(compiler.TargetError, match="target 'wse3': field 'colors' must be > 0"):
        load_target(dataclasses.replace(wse3, colors=0))


@pytest.mark.parametrize("spec", [42, None, 3.5, b"wse3"])
def test_a_target_that_is_not_a_name_path_or_target(spec):
    with pytest.raises(compiler.TargetError, match=f"got {type(spec).__name__}"):
        load_target(spec)


def test_unreadable_target_files(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(compiler.TargetError, match="not valid JSON"):
        load_target(tmp_path / "deep.json")
    (tmp_path / "digits.json").write_text('{"fields": ' + "9" * 5000 + "}")
    with pytest.raises(compiler.TargetError, match="not valid JSON"):
        load_target(tmp_path / "digits.json")
    with pytest.raises(compiler.TargetError, match="unknown target"):
        load_target(tmp_path)
