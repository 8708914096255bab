"""Targets as data: presets load with sources; malformed files name the bad field."""

from __future__ import annotations

import dataclasses
import json

import pytest

import compiler
from core.target import PRESET_DIR, cluster, load_target, presets


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


def test_cluster_presets_and_names_stack_wafers_with_sourced_links():
    wse3, quad = load_target("wse3"), load_target("wse3x4")
    assert (quad.wafers, quad.unit_name, quad.wafer_height_pes) == (4, "wse3", 1170)
    assert quad.grid_height_pes == 4 * 1170 and quad.num_pes == 4 * wse3.num_pes
    assert quad.peak_flops(16) == pytest.approx(4 * 15.5e15, rel=0.03)
    assert quad.wafer_link_bytes_per_second == 150e9  # 1.2 Tb/s = 12 x 100 GbE
    assert "12 x 100 GbE" in quad.source("wafer_link_bytes_per_second")
    assert "unconfirmed" in quad.source("wafer_link_latency_seconds")
    assert "70B on 4 CS-3" in quad.source("wafers")
    assert (quad.wafer_of(0), quad.wafer_of(1169), quad.wafer_of(1170), quad.wafer_of(4679)) == (
        0,
        0,
        1,
        3,
    )
    three = load_target("wse3x3")  # any count of a preset, by name
    assert (three.name, three.wafers, three.grid_height_pes) == ("wse3x3", 3, 3510)
    assert load_target(three) == three
    assert load_target("wse2x4").unit_name == "wse2"
    assert load_target("mesh-8x8x2").grid_height_pes == 16


def _cluster_file(tmp_path, **changes):
    data = json.loads((PRESET_DIR / "wse3.json").read_text())
    data.update(name="my-cluster", wafers={"value": 2, "source": "test"})
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(data))
    return path


def test_cluster_file_of_its_own_wafers_loads(tmp_path):
    target = load_target(_cluster_file(tmp_path))
    assert (target.name, target.wafers, target.grid_height_pes) == ("my-cluster", 2, 2340)
    preset = tmp_path / "of.json"
    preset.write_text(json.dumps({"cluster_of": "wse2", "wafers": 3}))
    assert load_target(preset).num_pes == 3 * load_target("wse2").num_pes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"links": None}, "a cluster of 2 wafers needs 'links'"),
        ({"links": {"bytes_per_second": 1e9}}, "'links' misses 'latency_seconds'"),
        (
            {"links": {"bytes_per_second": -1, "latency_seconds": 0}},
            "links 'bytes_per_second' is -1, outside",
        ),
        ({"links": {"bytes_per_second": "fast", "latency_seconds": 0}}, "must be a finite"),
        ({"wafers": 0}, "'wafers' must be a whole number from 1 to 32, got 0"),
        ({"wafers": -3}, "got -3"),
        ({"wafers": 33}, "got 33"),
        ({"wafers": 2.5}, "got 2.5"),
        ({"cluster_of": "../etc/passwd"}, "'cluster_of' must name a preset"),
    ],
)
def test_bad_cluster_files_name_what_is_wrong(tmp_path, change, message):
    with pytest.raises(compiler.TargetError) as info:
        load_target(_cluster_file(tmp_path, **change))
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["wse3x0", "wse3x33"])
def test_cluster_names_out_of_range_are_refused(name):
    with pytest.raises(compiler.TargetError, match="a cluster has 1 to 32 wafers"):
        load_target(name)


def test_a_target_without_links_forms_no_cluster(tmp_path):
    data = json.loads((PRESET_DIR / "wse3.json").read_text())
    del data["links"]
    path = tmp_path / "lonely.json"
    path.write_text(json.dumps(data))
    with pytest.raises(compiler.TargetError, match="gives no links between wafers"):
        cluster(load_target(path), 2)
