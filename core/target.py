"""Hardware targets as data: presets in `core/targets/*.json`, or a user's file.

A target file is JSON: `{"name", "wafer" ("wse2" | "wse3" | "mesh"), "description",
"fields": {field: {"value": number, "source": "where the number comes from"}}}`. Every field
carries its unit in its name. Loading validates every field and names the one that is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from core.errors import TargetError

PRESET_DIR = Path(__file__).with_name("targets")

# The full fabric of each wafer kind (PEs, w x h): a program rectangle cannot exceed it.
FABRIC_PES = {"wse2": (757, 996), "wse3": (762, 1172), "mesh": (1 << 16, 1 << 16)}


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


_NUMERIC = [f for f in fields(Target) if f.name not in ("name", "wafer", "description", "sources")]
_ALLOWS_ZERO = {
    "sram_reserved_bytes_per_pe",
    "hop_latency_cycles",
    "ramp_latency_cycles",
    "relay_latency_cycles",
}


def presets() -> list[str]:
    """Names of the bundled target presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_target(spec: str | Path | Target) -> Target:
    """A preset name (`"wse3"`), a path to a target file, or a `Target` (returned as is)."""
    if isinstance(spec, Target):
        return spec
    path = Path(spec)
    if not path.suffix and (PRESET_DIR / f"{spec}.json").exists():
        path = PRESET_DIR / f"{spec}.json"
    if not path.exists():
        raise TargetError(
            f"unknown target {str(spec)!r}: not a preset ({', '.join(presets())}) nor a file"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"target file {path} is not valid JSON: {exc}") from exc
    return _validate(data, str(path))


def _validate(data: dict, origin: str) -> Target:
    def fail(message: str) -> NoReturn:
        raise TargetError(f"target file {origin}: {message}")

    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        fail("expected an object with 'name', 'wafer' and 'fields'")
    wafer = data.get("wafer")
    if wafer not in FABRIC_PES:
        fail(f"'wafer' must be one of {sorted(FABRIC_PES)}, got {wafer!r}")
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
        value = entry.get("value") if isinstance(entry, dict) else entry
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            fail(f"field '{f.name}' must be a finite number, got {value!r}")
        if value < 0 or (value == 0 and f.name not in _ALLOWS_ZERO):
            fail(
                f"field '{f.name}' must be {'>= 0' if f.name in _ALLOWS_ZERO else '> 0'}, got {value}"
            )
        if f.type == "int" and value != int(value):
            fail(f"field '{f.name}' must be a whole number, got {value}")
        values[f.name] = int(value) if f.type == "int" else float(value)
        if isinstance(entry, dict) and entry.get("source"):
            sources.append((f.name, str(entry["source"])))
    max_w, max_h = FABRIC_PES[wafer]
    if values["grid_width_pes"] > max_w or values["grid_height_pes"] > max_h:
        fail(
            f"grid {values['grid_width_pes']}x{values['grid_height_pes']} exceeds the "
            f"{wafer} fabric of {max_w}x{max_h} PEs (fields 'grid_width_pes'/'grid_height_pes')"
        )
    if values["sram_reserved_bytes_per_pe"] >= values["sram_bytes_per_pe"]:
        fail("field 'sram_reserved_bytes_per_pe' must be below 'sram_bytes_per_pe'")
    return Target(
        name=str(data.get("name", origin)),
        wafer=wafer,
        description=str(data.get("description", "")),
        sources=tuple(sources),
        **values,
    )
