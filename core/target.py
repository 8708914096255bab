"""Hardware targets as data: presets in `core/targets/*.json`, or a user's file.

A target file is JSON: `{"name", "wafer" ("wse2" | "wse3" | "mesh"), "description",
"fields": {field: {"value": number, "source": "where the number comes from"}}, "links"}`. Every
field carries its unit in its name. Loading validates every field against its range (`MAXIMUM`:
far above any real wafer) and the grid against its fabric, and names the one that is wrong.

`links` ({"bytes_per_second", "latency_seconds"}, each with its source) is one wafer's I/O to
the other wafers of a cluster. A cluster file adds `"wafers": {"value": N, "source"}` and
either `"cluster_of": "<preset>"` or its own `wafer`, `fields` and `links`; `load_target`
also reads a name `<preset>x<N>` (`wse3x3`) as N wafers of that preset. A cluster is one
`Target` whose grid stacks its wafers' grids vertically (wafer i holds rows
[i * wafer_height_pes, (i + 1) * wafer_height_pes)); traffic across that boundary goes over the
links, never the fabric.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NoReturn

from core.errors import TargetError

PRESET_DIR = Path(__file__).with_name("targets")
Fail = Callable[[str], NoReturn]

# The full fabric of each wafer kind (PEs, w x h): a program rectangle cannot exceed it.
FABRIC_PES = {"wse2": (757, 996), "wse3": (762, 1172)}
# A `mesh` is any rectangle of at most as many PEs as the largest published fabric (WSE-3,
# 762 x 1172 = 893,064 PEs; docs target-facts.md): placement keeps per-PE arrays of the grid.
MAX_MESH_PES = 762 * 1172
WAFER_KINDS = (*FABRIC_PES, "mesh")
MAX_TARGET_FILE_BYTES = 1 << 20
# Wafers in one cluster: placement keeps per-PE arrays over every wafer of the cluster (32 x
# WSE-3 ~ 28 M PEs); far above the 4 systems the vendor serves a 70B model on.
MAX_WAFERS = 32
# The links of a cluster: (field, JSON key, unit) with their bounds.
LINK_FIELDS = {
    "wafer_link_bytes_per_second": ("bytes_per_second", 10**15),
    "wafer_link_latency_seconds": ("latency_seconds", 1.0),
}

# Upper bounds far above any real PE (WSE-2/3: 48 KiB SRAM, 16 B/cycle reads, 1.1 GHz, 24
# colors) yet low enough that every product the compiler forms (bytes per PE x PEs, cycles x
# clock) fits a 64-bit integer and an MLIR i64 attribute.
MAXIMUM: dict[str, int] = {
    "grid_width_pes": MAX_MESH_PES,
    "grid_height_pes": MAX_MESH_PES,
    "sram_bytes_per_pe": 1 << 30,
    "sram_reserved_bytes_per_pe": 1 << 30,
    "sram_read_bytes_per_cycle": 1 << 20,
    "sram_write_bytes_per_cycle": 1 << 20,
    "clock_hz": 10**12,
    "fp16_flops_per_cycle_per_pe": 1 << 20,
    "fp32_flops_per_cycle_per_pe": 1 << 20,
    "link_bits_per_cycle": 1 << 20,
    "hop_latency_cycles": 1 << 20,
    "ramp_latency_cycles": 1 << 20,
    "relay_latency_cycles": 1 << 20,
    "colors": 1 << 16,
    "external_memory_bytes_per_second": 10**18,
}


@dataclass(frozen=True)
class Target:
    """A Cerebras-style wafer: a grid of PEs with private SRAM, linked to their neighbours."""

    name: str
    wafer: str
    description: str
    grid_width_pes: int
    grid_height_pes: int
    sram_bytes_per_pe: int
    sram_reserved_bytes_per_pe: int
    sram_read_bytes_per_cycle: int
    sram_write_bytes_per_cycle: int
    clock_hz: float
    fp16_flops_per_cycle_per_pe: int
    fp32_flops_per_cycle_per_pe: int
    link_bits_per_cycle: int
    hop_latency_cycles: int
    ramp_latency_cycles: int
    relay_latency_cycles: int
    colors: int
    external_memory_bytes_per_second: float
    sources: tuple[tuple[str, str], ...] = ()
    wafers: int = 1
    wafer_link_bytes_per_second: float = 0.0
    wafer_link_latency_seconds: float = 0.0
    wafer_name: str = ""

    @property
    def num_pes(self) -> int:
        return self.grid_width_pes * self.grid_height_pes

    @property
    def usable_sram_bytes_per_pe(self) -> int:
        return self.sram_bytes_per_pe - self.sram_reserved_bytes_per_pe

    @property
    def sram_bytes_total(self) -> int:
        return self.sram_bytes_per_pe * self.num_pes

    def peak_flops(self, bits: int = 16) -> float:
        """Dense peak FLOP/s of the whole grid for 16- or 32-bit floats."""
        per_pe = (
            self.fp16_flops_per_cycle_per_pe if bits == 16 else self.fp32_flops_per_cycle_per_pe
        )
        return per_pe * self.num_pes * self.clock_hz

    def source(self, field_name: str) -> str:
        return dict(self.sources).get(field_name, "")

    @property
    def wafer_height_pes(self) -> int:
        """Rows of one wafer's grid (the grid stacks `wafers` of them)."""
        return self.grid_height_pes // self.wafers

    @property
    def wafer_pes(self) -> int:
        return self.grid_width_pes * self.wafer_height_pes

    @property
    def unit_name(self) -> str:
        """The name of one wafer of this target (`wse3` for `wse3x4`)."""
        return self.wafer_name or self.name

    def wafer_of(self, y: int) -> int:
        """The wafer holding grid row `y`."""
        return min(y // self.wafer_height_pes, self.wafers - 1)


_CLUSTER = ("wafers", *LINK_FIELDS, "wafer_name")
_NUMERIC = [
    f
    for f in fields(Target)
    if f.name not in ("name", "wafer", "description", "sources", *_CLUSTER)
]
_ALLOWS_ZERO = {
    "sram_reserved_bytes_per_pe",
    "hop_latency_cycles",
    "ramp_latency_cycles",
    "relay_latency_cycles",
}


def presets() -> list[str]:
    """Names of the bundled target presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def cluster(target: Target, wafers: int) -> Target:
    """`wafers` wafers of `target`'s kind (one wafer of a cluster: `wafers=1`), joined by its
    links; TargetError when it has none or the count is out of range."""
    if isinstance(wafers, bool) or not isinstance(wafers, int) or not 1 <= wafers <= MAX_WAFERS:
        raise TargetError(
            f"a cluster has 1 to {MAX_WAFERS} wafers, got {wafers!r:.40}; give a count in range"
        )
    if wafers > 1 and not target.wafer_link_bytes_per_second:
        raise TargetError(
            f"target {target.name!r} gives no links between wafers, so it cannot form a "
            f'cluster of {wafers}; add "links" (bytes_per_second, latency_seconds) to its file'
        )
    unit = target.unit_name
    return replace(
        target,
        name=unit if wafers == 1 else f"{unit}x{wafers}",
        grid_height_pes=target.wafer_height_pes * wafers,
        wafers=wafers,
        wafer_name=unit,
    )


def load_target(spec: str | Path | Target) -> Target:
    """A preset name (`"wse3"`, `"wse3x3"`: 3 wafers of it), a path to a target file, or a
    `Target` (checked, returned)."""
    if isinstance(spec, Target):
        per_wafer = asdict(spec) | {"grid_height_pes": spec.wafer_height_pes}
        _check_ranges(spec.wafer, per_wafer, f"target {spec.name!r}")
        _check_cluster(spec, f"target {spec.name!r}")
        return spec
    if not isinstance(spec, str | Path):
        raise TargetError(
            f"target must be a preset name ({', '.join(presets())}), a path to a target file "
            f"or a Target, got {type(spec).__name__} {spec!r}"
        )
    path = Path(spec)
    if not path.suffix and (PRESET_DIR / f"{spec}.json").exists():
        path = PRESET_DIR / f"{spec}.json"
    elif named := re.fullmatch(r"([a-z0-9-]{1,60})x([0-9]{1,3})", str(spec)):
        if (PRESET_DIR / f"{named[1]}.json").exists():
            return cluster(load_target(named[1]), int(named[2]))
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        found = False
    if not found:
        raise TargetError(
            f"unknown target {str(spec)!r}: not a preset ({', '.join(presets())}) nor a file"
        )
    return _validate(_read_json(path), str(path))


def _read_json(path: Path) -> object:
    """The JSON in a target file of at most `MAX_TARGET_FILE_BYTES` bytes of UTF-8."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_TARGET_FILE_BYTES + 1)
    except OSError as exc:
        raise TargetError(f"target file {path} cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_TARGET_FILE_BYTES:
        raise TargetError(
            f"target file {path} is over {MAX_TARGET_FILE_BYTES:,} bytes; a target is a "
            "small JSON object (see core/targets/wse3.json)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetError(
            f"target file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON"
        ) from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also a number of 4300+ digits
        raise TargetError(f"target file {path} is not valid JSON: {exc}") from exc


def _show(value: int | float) -> str:
    """A number for a message: a huge integer by its digit count, not its 400 digits."""
    digits = len(str(abs(value))) if isinstance(value, int) else 0
    return f"a {digits}-digit number" if digits > 20 else f"{value:.6g}"


def _check_ranges(wafer: object, values: dict[str, Any], origin: str) -> None:
    """Every numeric field within its range, the grid within its fabric."""

    def fail(message: str) -> NoReturn:
        raise TargetError(f"{origin}: {message}")

    if wafer not in WAFER_KINDS:
        fail(f"'wafer' must be one of {sorted(WAFER_KINDS)}, got {wafer!r:.80}")
    for f in _NUMERIC:
        value = values[f.name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            fail(f"field '{f.name}' must be a finite number, got {value!r:.80}")
        if value < 0 or (value == 0 and f.name not in _ALLOWS_ZERO):
            low = ">= 0" if f.name in _ALLOWS_ZERO else "> 0"
            fail(f"field '{f.name}' must be {low}, got {_show(value)}")
        if value > MAXIMUM[f.name]:
            fail(
                f"field '{f.name}' is {_show(value)}, above the bound of {MAXIMUM[f.name]:,} "
                "that no real wafer comes near (core/target.py MAXIMUM)"
            )
        if f.type == "int" and value != int(value):
            fail(f"field '{f.name}' must be a whole number, got {value}")
    w, h = values["grid_width_pes"], values["grid_height_pes"]
    if wafer in FABRIC_PES:
        max_w, max_h = FABRIC_PES[wafer]
        if w > max_w or h > max_h:
            fail(
                f"grid {w}x{h} exceeds the {wafer} fabric of {max_w}x{max_h} PEs "
                "(fields 'grid_width_pes'/'grid_height_pes')"
            )
    elif w * h > MAX_MESH_PES:
        fail(
            f"grid {w}x{h} has {int(w * h):,} PEs, more than the {MAX_MESH_PES:,} of the largest "
            "published wafer (WSE-3, 762x1172); use a smaller mesh"
        )
    if values["sram_reserved_bytes_per_pe"] >= values["sram_bytes_per_pe"]:
        fail("field 'sram_reserved_bytes_per_pe' must be below 'sram_bytes_per_pe'")


def _check_cluster(target: Target, origin: str) -> None:
    """The wafer count and the links within their ranges."""
    if target.wafers != 1:
        try:
            cluster(target, target.wafers)
        except TargetError as exc:
            raise TargetError(f"{origin}: {exc}") from exc
    for name, (key, bound) in LINK_FIELDS.items():
        value = getattr(target, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= bound):
            raise TargetError(
                f"{origin}: links '{key}' must be a number from 0 to {bound:g}, got {value!r:.40}"
            )


def _entry(entry: object) -> tuple[object, str]:
    """A file's `{"value", "source"}` (or a bare value): the value and its source."""
    if isinstance(entry, dict):
        return entry.get("value"), str(entry.get("source") or "")
    return entry, ""


def _links(data: dict, fail: Fail) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The file's `links`, checked: bandwidth > 0 and latency >= 0, within bounds."""
    links = data.get("links")
    if links is None:
        return {}, []
    if not isinstance(links, dict):
        fail("'links' must be an object with 'bytes_per_second' and 'latency_seconds'")
    values: dict[str, Any] = {}
    sources = []
    for name, (key, bound) in LINK_FIELDS.items():
        if key not in links:
            fail(f"'links' misses '{key}' (each wafer's I/O to the others, with its source)")
        value, source = _entry(links[key])
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            fail(f"links '{key}' must be a finite number, got {value!r:.80}")
        if not (0 < value if key == "bytes_per_second" else 0 <= value) or value > bound:
            fail(f"links '{key}' is {_show(value)}, outside (0, {bound:g}]")
        values[name] = float(value)
        sources.append((name, source))
    return values, sources


def _validate(data: object, origin: str) -> Target:
    def fail(message: str) -> NoReturn:
        raise TargetError(f"target file {origin}: {message}")

    if not isinstance(data, dict):
        fail("expected an object with 'name', 'wafer' and 'fields'")
    if "wafers" in data or "cluster_of" in data:
        return _validate_cluster(data, origin, fail)
    if not isinstance(data.get("fields"), dict):
        fail("expected an object with 'name', 'wafer' and 'fields'")
    given = data["fields"]
    unknown = sorted(set(given) - {f.name for f in _NUMERIC})
    if unknown:
        fail(f"unknown field(s) {unknown}; known: {[f.name for f in _NUMERIC]}")
    values: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    for f in _NUMERIC:
        entry = given.get(f.name)
        if entry is None:
            fail(f"missing field '{f.name}'")
        values[f.name] = entry.get("value") if isinstance(entry, dict) else entry
        if isinstance(entry, dict) and entry.get("source"):
            sources.append((f.name, str(entry["source"])))
    _check_ranges(data.get("wafer"), values, f"target file {origin}")
    for f in _NUMERIC:
        values[f.name] = int(values[f.name]) if f.type == "int" else float(values[f.name])
    links, link_sources = _links(data, fail)
    return Target(
        name=str(data.get("name", origin)),
        wafer=data["wafer"],
        description=str(data.get("description", "")),
        sources=tuple(sources + link_sources),
        **values,
        **links,
    )


def _validate_cluster(data: dict, origin: str, fail: Fail) -> Target:
    """A cluster file: `wafers` of a preset (`cluster_of`) or of its own wafer (`fields`),
    joined by `links` (its own, else the preset's)."""
    count, count_source = _entry(data.get("wafers"))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_WAFERS:
        fail(f"'wafers' must be a whole number from 1 to {MAX_WAFERS}, got {count!r:.40}")
    base_name = data.get("cluster_of")
    if base_name is not None:
        if not isinstance(base_name, str) or base_name not in presets():
            fail(f"'cluster_of' must name a preset ({', '.join(presets())}), got {base_name!r:.40}")
        unit = load_target(base_name)
        links, link_sources = _links(data, fail)
        unit = replace(unit, sources=unit.sources + tuple(link_sources), **links)
    else:
        if count > 1 and data.get("links") is None:
            fail(
                f"a cluster of {count} wafers needs 'links' (bytes_per_second, latency_seconds, "
                "each with its source): how its wafers exchange activations"
            )
        single = {k: v for k, v in data.items() if k not in ("wafers", "name")}
        unit = _validate(single, origin)
    try:
        built = cluster(unit, count)
    except TargetError as exc:
        fail(str(exc))
    sources = built.sources + (("wafers", str(count_source)),)
    name = str(data.get("name", built.name))
    description = str(data.get("description", built.description))
    return replace(built, name=name, description=description, sources=sources)
