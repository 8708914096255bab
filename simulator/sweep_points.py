"""The points of a sweep: one model at one context length, prefill and one decode step.

`sweep_point` simulates a point with `simulator.phases`; a `SweepPoint` holds both phases (None
for one that fits nowhere, a note says why), the bytes of the model's KV cache or recurrent
state at that context, and one wafer's usable SRAM, so a sweep can say when the cache
outgrows a wafer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import models
from core import dtypes
from core.errors import PlacementError
from core.target import cluster
from simulator.phases import (
    Phase,
    PlacementCache,
    SimOptions,
    decode_key,
    prefill_key,
    simulate_decode,
    simulate_prefill,
)


def family(model: str) -> str:
    """A registered model's architecture family ("transformer", "mamba", "hybrid", ...)."""
    kind = type(models.config(model)).__name__.removesuffix("Config").lower()
    return {"gpt2": "transformer", "llama": "transformer"}.get(kind, kind)


@dataclass(frozen=True)
class SweepPoint:
    """One (model, context length) point of a sweep: the prefill of `seq` tokens and one
    decode step after it, None for a phase that fits no placement (a note says so);
    `state_bytes` the KV cache or recurrent state of that context, `wafer_sram_bytes` one
    wafer's usable SRAM."""

    model: str
    family: str
    seq: int
    prefill: Phase | None
    decode: Phase | None
    notes: tuple[str, ...]
    state_bytes: int = 0
    wafer_sram_bytes: int = 0

    @property
    def fits(self) -> bool:
        return self.prefill is not None and self.decode is not None

    @property
    def wafers(self) -> int:
        """The most wafers either phase uses (0 when neither is placed)."""
        return max((p.sim.target.wafers for p in (self.prefill, self.decode) if p), default=0)

    @property
    def state_outgrows_wafer(self) -> bool:
        return self.state_bytes > self.wafer_sram_bytes


def state_bytes(model: str, options: SimOptions) -> int:
    """Bytes of a registered model's KV cache (of `options.cache_tokens` slots) or recurrent
    state for `options.batch` sequences, from its state's shapes (meta tensors: no memory)."""
    config = models.config(model)
    overrides = {"max_seq_len": options.cache_tokens} if hasattr(config, "max_seq_len") else {}
    torch_dtype = dtypes.by_label(options.dtype).torch
    built = models.build(model, device="meta", dtype=torch_dtype, **overrides)
    return sum(t.numel() * t.element_size() for t in built.init_state(options.batch))


def sweep_point(
    model: str,
    options: SimOptions,
    placements: PlacementCache,
    progress: Callable[[str], None] = lambda step: None,
) -> SweepPoint:
    """`options` with one decode step (a KV cache of seq + 1 tokens), phase by phase."""
    options = replace(options, decode_steps=1)
    placements.prefetch([prefill_key(model, options), decode_key(model, options)])
    phases: dict[str, Phase | None] = {}
    notes: list[str] = []
    for name, run in (("prefill", simulate_prefill), ("decode", simulate_decode)):
        progress(f"{model}: {name} at {options.seq:,} tokens")
        try:
            phase = run(model, options, placements)
        except PlacementError as exc:
            phases[name] = None
            notes.append(f"{name} does not fit: {' '.join(str(exc).split()[:18])} ...")
            continue
        phases[name] = phase
        if phase.sim.mode == "streaming" and options.mode == "auto":
            notes.append(f"{name} falls back to streaming (pipelined does not fit)")
    unit = cluster(options.placement_target, 1)
    return SweepPoint(
        model, family(model), options.seq, phases["prefill"], phases["decode"], tuple(notes),
        state_bytes(model, options), unit.usable_sram_bytes_per_pe * unit.num_pes,
    )  # fmt: skip
