""" "Does it fit?": the placement report, read back from a placed `wse` module.

Everything here comes from the module's attributes (stages, regions, tile tables, SRAM ranges),
so the report describes exactly what the IR says. `to_dict()` is JSON-ready (schema version 1);
`save_heatmap(path)` draws SRAM occupancy over the grid; `summary()` is a short text.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from compiler.mlir import ir
from compiler.passes.common import (
    body_ops,
    element_bytes,
    flops,
    format_bytes,
    get_int,
    get_ints,
    get_str,
    has,
    kind,
    nbytes,
    placement_info,
    sram_map,
    stage_names,
    stage_regions,
    tile_bytes,
    tile_rect,
)
from core.geometry import Rect
from core.target import Target

SCHEMA_VERSION = 1


@dataclass
class LayerReport:
    """One stage: its region, what it holds, and `estimated_cycles`, a roofline figure (the
    larger of FLOPs and weight bytes read over the stage's PEs' rates; no communication)."""

    stage: int
    name: str
    region: tuple[int, ...]
    wafer: int = 0
    weight_bytes: int = 0
    weight_tile_bytes: int = 0
    state_bytes: int = 0
    activation_bytes_per_pe: int = 0
    flops: int = 0
    sram_bytes_per_pe_max: int = 0
    estimated_cycles: float = 0.0
    element_bytes: int = 4

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "name": self.name,
            "region": list(self.region),
            "wafer": self.wafer,
            "pes": self.region[2] * self.region[3],
            "weight_bytes": self.weight_bytes,
            "weight_tile_bytes": self.weight_tile_bytes,
            "state_bytes": self.state_bytes,
            "activation_bytes_per_pe": self.activation_bytes_per_pe,
            "flops": self.flops,
            "sram_bytes_per_pe_max": self.sram_bytes_per_pe_max,
            "estimated_cycles": self.estimated_cycles,
        }


def _scratch_end(op) -> int:
    """The end of an op's `scratch` bytes (its working set while it runs), 0 without one."""
    return sum(get_ints(op, "scratch")) if has(op, "scratch") else 0


def _add_buffers(
    ops: list, workspace: dict, layers: list, totals: Counter, shape: tuple, mode: str
) -> None:
    """Streamed weights' buffers and activations into `totals` (and each layer's activation
    bytes per PE): pipelined, one workspace per (stage, region) in `workspace`; streaming,
    buffers placed PE by PE, so the bytes each PE spans."""
    streamed = [w for w in ops if kind(w) == "weight_tiles" and get_str(w, "home") == "external"]
    if streamed:
        offsets = [get_int(w, "sram_offset") for w in streamed]
        spans = [
            (tile_rect(w), at, at + tile_bytes(w)) for w, at in zip(streamed, offsets, strict=True)
        ]
        totals["weight_buffers"] = int(_per_pe(spans, shape).sum())
    if mode == "streaming" and workspace:
        per_pe = _per_pe([(Rect(*r), lo, hi) for (_, r), (lo, hi) in workspace.items()], shape)
        layers[0].activation_bytes_per_pe = int(per_pe.max())
        totals["activations"] += int(per_pe.sum())
        return
    for (stage, region), (low, high) in workspace.items():
        layer = layers[stage]
        if region == layer.region:
            layer.activation_bytes_per_pe = high - low
        totals["activations"] += (high - low) * region[2] * region[3]


def _per_pe(spans: list[tuple[Rect, int, int]], shape: tuple[int, ...]) -> np.ndarray:
    """Per PE, the bytes from the lowest to the highest byte of the (rect, low, high) buffer
    spans on it, as streaming places buffers PE by PE."""
    low = np.full(shape, np.iinfo(np.int64).max, np.int64)
    high = np.zeros(shape, np.int64)
    for rect, a, b in spans:
        view = low[rect.slices]
        np.minimum(view, a, out=view)
        view = high[rect.slices]
        np.maximum(view, b, out=view)
    return np.where(low <= high, high - low, 0)


def _new_state(slot: tuple, size: int, seen: set) -> int:
    """Bytes of a state buffer at `slot` (region, offset) of `size` bytes per PE, counted once:
    0 for the state's new value or an update, written in place over the old one."""
    if slot in seen:
        return 0
    seen.add(slot)
    return size * math.prod(slot[0][2:])


@dataclass
class PlacementReport:
    """Per-layer regions (and wafers), per-PE SRAM use (`usage`, bytes, rows x columns: a
    cluster's wafers stacked), totals, and `deployment`: how the model is deployed and why."""

    target: Target
    mode: str
    mode_reason: str
    usage: np.ndarray
    layers: list[LayerReport]
    bytes_by_kind: dict[str, int]
    communication: dict
    ops: dict[str, int]
    pass_seconds: dict[str, float] = field(default_factory=dict)
    deployment: str = ""

    @staticmethod
    def from_module(
        module: ir.Module, target: Target, mode_reason: str = "", pass_seconds=None
    ) -> PlacementReport:
        info = placement_info(module)
        usage = sram_map(module, target.grid_width_pes, target.grid_height_pes)
        layers = [
            LayerReport(i, name, tuple(region), target.wafer_of(region[1]))
            for i, (name, region) in enumerate(
                zip(stage_names(module), stage_regions(module), strict=True)
            )
        ]
        totals: Counter[str] = Counter()
        comm: dict = {"reduce_algorithms": Counter(), "stream_hops": 0}
        ops = body_ops(module)
        workspace: dict[tuple, list[int]] = {}
        state_slots: set[tuple] = set()
        for op in ops:
            name = kind(op)
            if name == "param" or not has(op, "stage"):
                continue
            layer = layers[get_int(op, "stage")]
            layer.flops += flops(op)
            if name.startswith("fabric_"):
                comm[name] = comm.get(name, 0) + 1
            if name == "fabric_reduce":
                comm["reduce_algorithms"][get_str(op, "algorithm")] += 1
            if name == "fabric_stream":
                comm["stream_hops"] += get_int(op, "hops")
            if name == "weight_tiles":
                rect = tile_rect(op)
                stored = tile_bytes(op) * rect.num_pes
                layer.element_bytes = min(layer.element_bytes, element_bytes(op.input))
                if get_str(op, "home") == "sram":
                    layer.weight_bytes += nbytes(op.input)
                    layer.weight_tile_bytes += stored
                    totals["weights"] += nbytes(op.input)
                    totals["weight_padding"] += stored - nbytes(op.input)
                else:
                    totals["weights_streamed"] += nbytes(op.input)
                    layer.weight_bytes += nbytes(op.input)
                continue
            if not has(op, "sram"):
                continue
            offset, size = get_ints(op, "sram")
            slot = (tuple(get_ints(op, "region")), offset)
            if slot in state_slots or (name == "host_transfer" and get_str(op, "kind") == "state"):
                stored = _new_state(slot, size, state_slots)
                layer.state_bytes += stored
                totals["state"] += stored
            else:
                key = (get_int(op, "stage"), tuple(get_ints(op, "region")))
                bounds = workspace.setdefault(key, [offset, offset])
                bounds[0] = min(bounds[0], offset)
                bounds[1] = max(bounds[1], offset + size, _scratch_end(op))
        _add_buffers(ops, workspace, layers, totals, usage.shape, info["mode"])
        for layer in layers:
            x, y, w, h = layer.region
            layer.sram_bytes_per_pe_max = int(usage[y : y + h, x : x + w].max())
            per_cycle = (
                target.fp16_flops_per_cycle_per_pe
                if layer.element_bytes <= 2
                else target.fp32_flops_per_cycle_per_pe
            )
            layer.estimated_cycles = max(
                layer.flops / (per_cycle * w * h),
                layer.weight_bytes / (target.sram_read_bytes_per_cycle * w * h),
            )
        comm["reduce_algorithms"] = dict(comm["reduce_algorithms"])
        placed = sum(1 for op in ops if has(op, "region"))
        return PlacementReport(
            target=target,
            mode=info["mode"],
            mode_reason=mode_reason,
            usage=usage,
            layers=layers,
            bytes_by_kind=dict(totals),
            communication=comm,
            ops={"total": len(ops), "placed": placed, "params": len(ops) - placed},
            pass_seconds=dict(pass_seconds or {}),
        )

    # -- figures -----------------------------------------------------------------------------

    @property
    def usable_sram_bytes_per_pe(self) -> int:
        return self.target.usable_sram_bytes_per_pe

    @property
    def sram_bytes_per_pe_max(self) -> int:
        return int(self.usage.max())

    @property
    def fits(self) -> bool:
        return self.sram_bytes_per_pe_max <= self.usable_sram_bytes_per_pe

    def wafer_layers(self) -> list[dict]:
        """Per wafer in use: its first and last stage and their names."""
        out: list[dict] = []
        for layer in self.layers:
            if not out or out[-1]["wafer"] != layer.wafer:
                out.append({"wafer": layer.wafer, "first": layer.stage, "first_name": layer.name})
            out[-1] |= {"last": layer.stage, "last_name": layer.name}
        return out

    def fullest_pes(self, count: int = 5) -> list[dict]:
        """The `count` PEs using the most SRAM: x, y, bytes, stage."""
        flat = self.usage.reshape(-1)
        top = np.argpartition(flat, -count)[-count:] if flat.size > count else np.arange(flat.size)
        out = []
        for i in sorted(top, key=lambda i: -flat[i]):
            y, x = divmod(int(i), self.usage.shape[1])
            stage = next(
                (
                    layer.stage
                    for layer in self.layers
                    if layer.region[0] <= x < layer.region[0] + layer.region[2]
                    and layer.region[1] <= y < layer.region[1] + layer.region[3]
                ),
                None,
            )
            out.append({"x": x, "y": y, "bytes": int(flat[i]), "stage": stage})
        return out

    def to_dict(self) -> dict:
        usage = self.usage
        times = [layer.estimated_cycles for layer in self.layers]
        return {
            "schema_version": SCHEMA_VERSION,
            "target": self.target.name,
            "grid": [self.target.grid_width_pes, self.target.grid_height_pes],
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "deployment": self.deployment,
            "wafers": self.target.wafers,
            "wafer_layers": self.wafer_layers() if self.target.wafers > 1 else [],
            "fits": self.fits,
            "usable_sram_bytes_per_pe": self.usable_sram_bytes_per_pe,
            "sram_bytes_capacity": self.usable_sram_bytes_per_pe * self.target.num_pes,
            "sram_bytes_total": int(usage.sum()),
            "sram_bytes_per_pe_max": self.sram_bytes_per_pe_max,
            "sram_bytes_per_pe_min": int(usage.min()),
            "sram_bytes_per_pe_median": float(np.median(usage)),
            "sram_bytes_per_pe_mean": float(usage.mean()),
            "fullest_pes": self.fullest_pes(),
            "bytes_by_kind": dict(self.bytes_by_kind),
            "layers": [layer.to_dict() for layer in self.layers],
            "stage_balance": (max(times) / (sum(times) / len(times))) if any(times) else 1.0,
            "communication": self.communication,
            "ops": dict(self.ops),
            "pass_seconds": dict(self.pass_seconds),
        }

    def summary(self) -> str:
        data = self.to_dict()
        lines = [
            f"{data['target']} ({data['grid'][0]} x {data['grid'][1]} PEs), mode {self.mode}: "
            f"{'fits' if self.fits else 'DOES NOT FIT'}",
            f"  deployed: {self.deployment or self.mode}",
            f"  why: {self.mode_reason or self.mode}",
            *(
                f"  wafer {w['wafer']}: stages {w['first']}-{w['last']} "
                f"({w['first_name']} .. {w['last_name']})"
                for w in data["wafer_layers"]
            ),
            f"  SRAM per PE: max {data['sram_bytes_per_pe_max']:,} B, median "
            f"{data['sram_bytes_per_pe_median']:,.0f} B, min {data['sram_bytes_per_pe_min']:,} B"
            f" of {data['usable_sram_bytes_per_pe']:,} B usable",
            f"  SRAM in use: {format_bytes(data['sram_bytes_total'])} of "
            f"{format_bytes(data['sram_bytes_capacity'])}; "
            + ", ".join(f"{k} {format_bytes(v)}" for k, v in self.bytes_by_kind.items()),
            f"  {len(self.layers)} stages, balance (max / mean estimated cycles) "
            f"{data['stage_balance']:.2f}",
        ]
        return "\n".join(lines)

    def save_heatmap(self, path) -> None:
        """PNG of SRAM occupancy (fraction of usable SRAM) per PE, stages outlined."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        height, width = self.usage.shape
        fig, ax = plt.subplots(
            figsize=(8, max(3.0, 7 * height / width + 1)), dpi=100, layout="constrained"
        )
        image = ax.imshow(
            self.usage / self.usable_sram_bytes_per_pe,
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            origin="upper",
        )
        if len(self.layers) <= 400:
            for layer in self.layers:
                x, y, w, h = layer.region
                ax.add_patch(
                    Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="white", lw=0.5)
                )
        fig.colorbar(image, ax=ax, label="fraction of usable SRAM per PE")
        ax.set_title(
            f"{self.target.name}, {self.mode}: SRAM per PE "
            f"(max {self.sram_bytes_per_pe_max:,} of {self.usable_sram_bytes_per_pe:,} B)"
        )
        ax.set_xlabel("x (PE column)")
        ax.set_ylabel("y (PE row)")
        fig.savefig(path)
        plt.close(fig)
