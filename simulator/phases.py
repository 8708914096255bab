"""The driver: models compiled, placed and simulated, phase by phase.

`simulate_placed` simulates one placed program (translate, engine, summary). For a registered
model, `simulate_prefill` and `simulate_decode` compile, place and simulate one phase, and
`simulate_model` both, as `SimOptions` say; placements come from a `PlacementCache` the caller
keeps for as long as they may be reused (one `wafersim run`, one sweep).
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

import compiler
import models
from compiler.placement_report import PlacementReport
from core import dtypes
from core.arguments import MAX_TOKENS
from core.errors import ModelSimError, PlacementError, TargetError
from core.target import Target, load_target
from runtime.program import Program
from simulator.cost import Calibration, load_calibration
from simulator.engine import simulate
from simulator.summary import SimResult, summarize
from simulator.translate import streams_weights, translate

CHUNK_TOKENS = 64
# Tokens in flight at once, batch x (prompt + decode steps): beyond 2**24 the activations of
# even the smallest registered published model (mamba-130m, ~3 KB per token in fp16) exceed
# any wafer's SRAM (WSE-3: 44 GB), and shape products stay far inside 64-bit integers.


def confine(target: str | Target, grid: tuple[int, int] | None) -> Target:
    """The target, or a copy whose program rectangle is `grid` (w, h) of its PEs."""
    base = load_target(target)
    if grid is None:
        return base
    w, h = grid
    if not (0 < w <= base.grid_width_pes and 0 < h <= base.grid_height_pes):
        raise TargetError(
            f"grid {w}x{h} does not fit target {base.name}'s "
            f"{base.grid_width_pes}x{base.grid_height_pes} PEs"
        )
    return replace(base, name=f"{base.name}[{w}x{h}]", grid_width_pes=w, grid_height_pes=h)


@dataclass(frozen=True)
class SimOptions:
    """What to simulate a model with: the prefill of `seq` tokens for `batch` sequences, then
    `decode_steps` decode steps, in `dtype`, placed in `mode` on `target` (confined to `grid` =
    (w, h) PEs when given). With `resident_weights` streamed weights count as already in SRAM
    (WaferLLM's setting)."""

    target: str | Target = "wse3"
    seq: int = 128
    batch: int = 1
    decode_steps: int = 16
    dtype: str = "fp16"
    mode: str = "auto"
    grid: tuple[int, int] | None = None
    calibration: Calibration = field(default_factory=load_calibration)
    resident_weights: bool = False

    def __post_init__(self):
        if self.dtype not in dtypes.COMPUTE_LABELS:
            raise ModelSimError(
                f"dtype must be one of {list(dtypes.COMPUTE_LABELS)}, got {self.dtype!r}"
            )
        counts = (self.seq, self.batch, self.decode_steps)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts) or (
            self.seq < 1 or self.batch < 1 or self.decode_steps < 0
        ):
            raise ModelSimError(
                "need whole numbers seq >= 1, batch >= 1 and decode steps >= 0, "
                f"got {self.seq!r:.40}, {self.batch!r:.40}, {self.decode_steps!r:.40}"
            )
        tokens = self.batch * (self.seq + self.decode_steps)
        if tokens > MAX_TOKENS:
            raise ModelSimError(
                f"batch x (seq + decode steps) = {tokens:,} tokens, over the bound of "
                f"{MAX_TOKENS:,} (2**24) that no wafer's SRAM comes near holding; "
                "simulate fewer tokens"
            )

    @property
    def confined_target(self) -> Target:
        """The target, confined to `grid` when given."""
        return confine(self.target, self.grid)

    @property
    def cache_tokens(self) -> int:
        """KV-cache slots: the prompt and the decode steps (at least one)."""
        return self.seq + max(self.decode_steps, 1)

    @property
    def decode_position(self) -> int:
        """The position the decode step is compiled for: the middle of the decode steps."""
        return self.seq + self.decode_steps // 2


@dataclass(frozen=True)
class Placement:
    """A compiled and placed program, its placement report, and the seconds that took."""

    program: Program
    report: PlacementReport
    compile_seconds: float


@dataclass(frozen=True)
class PlacementKey:
    """A registered model's prefill of `seq` tokens, or its decode step at position `seq`, with
    a `cache`-token KV cache: everything that changes its placement."""

    model: str
    phase: str
    seq: int
    cache: int
    batch: int
    target: Target
    mode: str
    dtype: str


def _place(module: torch.nn.Module, inputs: tuple, target: Target, mode: str) -> Placement:
    clock = time.perf_counter()
    placed = compiler.compile(module, inputs, target=target, mode=mode).placed
    if placed is None:
        raise ModelSimError(f"compiling for {target.name} placed nothing")
    return Placement(placed.program, placed.report, time.perf_counter() - clock)


class PlacementCache:
    """Placements of registered models by `PlacementKey`: each is compiled and placed once,
    on first use."""

    def __init__(self):
        self._placements: dict[PlacementKey, Placement] = {}

    def place(self, key: PlacementKey) -> Placement:
        if key not in self._placements:
            self._placements[key] = self._compile(key)
        return self._placements[key]

    @staticmethod
    def _compile(key: PlacementKey) -> Placement:
        config = models.config(key.model)
        overrides = {"max_seq_len": key.cache} if hasattr(config, "max_seq_len") else {}
        torch_dtype = dtypes.by_label(key.dtype).torch
        model = models.build(key.model, device="meta", dtype=torch_dtype, **overrides)
        if key.phase == "prefill":
            inputs = models.example_inputs(key.model, key.batch, key.seq)
            return _place(model.prefill_module(), inputs, key.target, key.mode)
        ids = torch.zeros((key.batch, 1), dtype=torch.int64)
        position = torch.tensor([key.seq], dtype=torch.int64)
        inputs = (ids, position, *model.init_state(key.batch))
        return _place(model.decode_module(), inputs, key.target, key.mode)


def simulate_placed(
    program: Program,
    target: Target,
    *,
    dtype: str,
    calibration: Calibration | None = None,
    chunks: int = 1,
    stage_names: Sequence[str] = (),
    resident_weights: bool = False,
) -> SimResult:
    """Simulate one run of a placed program on `target` (the target it was placed for).

    `chunks` > 1: a pipelined pass over that many pieces of the input (prefill). With
    `resident_weights` streamed weights count as already in SRAM (no external traffic).
    """
    if dtype not in dtypes.COMPUTE_LABELS:
        raise ModelSimError(f"dtype must be one of {list(dtypes.COMPUTE_LABELS)}, got {dtype!r}")
    if chunks < 1:
        raise ModelSimError(f"chunks must be >= 1, got {chunks}")
    graph = translate(
        program,
        target,
        dtype,
        calibration or load_calibration(),
        resident_weights=resident_weights,
    )
    return summarize(
        simulate(graph.tasks),
        target,
        dtype=dtype,
        streaming=streams_weights(program),
        chunks=chunks,
        stage_names=stage_names,
    )


@dataclass(frozen=True)
class Phase:
    """Prefill or decode of a model: one simulated pass and what it means per token.

    Prefill: `tokens` = batch x prompt length, `cycles` the time to first token. Decode: one
    step of `tokens` = batch tokens, repeated `steps` times at the same cost (averages)."""

    name: str
    tokens: int
    steps: int
    context_tokens: int
    sim: SimResult
    report: PlacementReport
    compile_seconds: float
    simulate_seconds: float
    notes: tuple[str, ...]

    @property
    def cycles(self) -> int:
        return self.sim.cycles

    @property
    def seconds(self) -> float:
        return self.sim.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-30)

    @property
    def sequences_in_flight(self) -> int:
        """Decode, pipelined: sequences that can share the pipeline, one per stage at most,
        as many as the free SRAM holds state for (streaming: one)."""
        if self.sim.mode != "pipelined" or self.name != "decode":
            return 1
        data = self.report.to_dict()
        free = data["sram_bytes_capacity"] - data["sram_bytes_total"]
        state = self.report.bytes_by_kind.get("state", 0)
        fits = 1 + free // state if state else len(self.sim.layers)
        return max(1, min(len(self.sim.layers), fits))

    @property
    def throughput_tokens_per_second(self) -> float:
        """Tokens/s with `sequences_in_flight` sequences: latency-bound until the slowest stage
        is always busy."""
        clock = self.sim.target.clock_hz
        latency_bound = self.sequences_in_flight * self.tokens_per_second
        return min(latency_bound, self.tokens * clock / max(self.sim.slowest_stage_cycles, 1))


def _phase(
    name: str,
    placement: Placement,
    options: SimOptions,
    target: Target,
    *,
    tokens: int,
    steps: int,
    context_tokens: int,
    chunks: int,
    notes: tuple[str, ...],
) -> Phase:
    """Simulate a placed phase and time it."""
    clock = time.perf_counter()
    sim = simulate_placed(
        placement.program,
        target,
        dtype=options.dtype,
        calibration=options.calibration,
        chunks=chunks,
        stage_names=[layer.name for layer in placement.report.layers],
        resident_weights=options.resident_weights,
    )
    return Phase(
        name=name,
        tokens=tokens,
        steps=steps,
        context_tokens=context_tokens,
        sim=sim,
        report=placement.report,
        compile_seconds=placement.compile_seconds,
        simulate_seconds=time.perf_counter() - clock,
        notes=notes,
    )


def _has_kv_cache(model: str) -> bool:
    return hasattr(models.config(model), "max_seq_len")


def simulate_prefill(model: str, options: SimOptions, placements: PlacementCache) -> Phase:
    """Registered model `model`: the prefill of `options.seq` tokens, with a KV cache of
    `options.cache_tokens` tokens in SRAM. A pipelined prefill runs over
    min(stages, seq / CHUNK_TOKENS) chunks of the prompt."""
    seq, target = options.seq, options.confined_target
    cache = options.cache_tokens if _has_kv_cache(model) else 0
    key = PlacementKey(
        model, "prefill", seq, cache, options.batch, target, options.mode, options.dtype
    )
    placement = placements.place(key)
    report = placement.report
    chunks = 1
    if report.mode == "streaming":
        note = (
            "streaming: one layer at a time on the whole grid, weights streamed in at "
            f"{target.external_memory_bytes_per_second / 1e9:g} GB/s while the previous "
            "layer computes"
        )
    else:
        chunks = max(1, min(len(report.layers), seq // CHUNK_TOKENS))
        note = (
            f"pipelined over {chunks} chunks of ~{seq // chunks} tokens; a chunk costs "
            f"1/{chunks} of each stage's whole-prompt time"
            if chunks > 1
            else f"pipelined, one pass: prompts under {2 * CHUNK_TOKENS} tokens are not chunked"
        )
    return _phase(
        "prefill",
        placement,
        options,
        target,
        tokens=options.batch * seq,
        steps=1,
        context_tokens=seq,
        chunks=chunks,
        notes=(note, report.mode_reason),
    )


def simulate_decode(model: str, options: SimOptions, placements: PlacementCache) -> Phase:
    """Registered model `model`: one decode step at `options.decode_position`, standing for
    `options.decode_steps` steps (at least one), with a KV cache of `options.cache_tokens`
    tokens in SRAM. Without a KV cache the decode program is the same at every position: it is
    placed once for all of them."""
    cache, steps = options.cache_tokens, max(options.decode_steps, 1)
    has_cache = _has_kv_cache(model)
    position = options.decode_position if has_cache else 0
    key = PlacementKey(
        model,
        "decode",
        position,
        cache if has_cache else 0,
        options.batch,
        options.confined_target,
        options.mode,
        options.dtype,
    )
    placement = placements.place(key)
    state = (
        f"KV cache of {cache} slots in SRAM, read whole (masked) every step"
        if has_cache
        else "fixed recurrent state in SRAM: cost independent of the context"
    )
    note = f"decode compiled once for position {options.decode_position}; {state}"
    if steps > 1:
        note += f"; per-token figures are averages over {steps} steps"
    return _phase(
        "decode",
        placement,
        options,
        key.target,
        tokens=options.batch,
        steps=steps,
        context_tokens=cache,
        chunks=1,
        notes=(note, placement.report.mode_reason),
    )


@dataclass(frozen=True)
class ModelSim:
    """A model's prefill (time to first token) and decode (per-token) simulation."""

    model: str
    target: Target
    dtype: str
    batch: int
    seq: int
    prefill: Phase
    decode: Phase | None
    notes: tuple[str, ...]


def load_factory(spec: str) -> tuple[torch.nn.Module, tuple]:
    """`path/to/file.py:factory` -> the factory's (module, example_inputs)."""
    path, _, name = spec.rpartition(":")
    if not path.endswith(".py") or not name:
        raise ModelSimError(f"expected a registered model or path/to/file.py:factory, got {spec!r}")
    source = Path(path)
    if not source.is_file():
        raise ModelSimError(f"no such file: {path}")
    module_spec = importlib.util.spec_from_file_location(source.stem, source)
    if module_spec is None or module_spec.loader is None:
        raise ModelSimError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelSimError(f"{path} has no callable {name!r}")
    built = factory()
    if not (isinstance(built, tuple) and len(built) == 2):
        raise ModelSimError(f"{spec} must return (module, example_inputs)")
    model, inputs = built
    return model, inputs if isinstance(inputs, tuple) else (inputs,)


def simulate_model(
    model: str | tuple[torch.nn.Module, tuple],
    options: SimOptions,
    placements: PlacementCache,
    progress: Callable[[str], None] = lambda step: None,
) -> ModelSim:
    """Prefill and `options.decode_steps` decode steps of a registered model, or the prefill
    (one forward pass) of a `(module, example_inputs)` pair.

    The KV cache (or Mamba state) stays in SRAM and holds `seq + decode_steps` tokens; the
    decode program is compiled once, for the token at position `seq + decode_steps // 2`, and
    every step costs the same (it reads the whole cache, masked)."""
    target = options.confined_target
    if not isinstance(model, str):
        module, inputs = model
        progress("compile, place and simulate the module")
        placement = _place(module, inputs, target, options.mode)
        tokens = math.prod(inputs[0].shape) if inputs and hasattr(inputs[0], "shape") else 1
        note = "custom module: only its prefill (one forward pass on the factory's inputs)"
        phase = _phase(
            "prefill",
            placement,
            options,
            target,
            tokens=tokens,
            steps=1,
            context_tokens=tokens,
            chunks=1,
            notes=(note,),
        )
        name = type(module).__name__
        return ModelSim(name, target, options.dtype, options.batch, tokens, phase, None, (note,))
    progress(f"{model}: prefill of {options.seq} tokens")
    prefill = simulate_prefill(model, options, placements)
    decode = None
    if options.decode_steps:
        progress(f"{model}: decode at {options.decode_position} tokens")
        decode = simulate_decode(model, options, placements)
    return ModelSim(model, target, options.dtype, options.batch, options.seq, prefill, decode, ())


def family(model: str) -> str:
    """A registered model's architecture family ("transformer", "mamba", "hybrid", ...)."""
    kind = type(models.config(model)).__name__.removesuffix("Config").lower()
    return {"gpt2": "transformer", "llama": "transformer"}.get(kind, kind)


@dataclass(frozen=True)
class SweepPoint:
    """One (model, context length) point of a sweep: the prefill of `seq` tokens and one
    decode step after it, None for a phase that fits no placement (a note says so)."""

    model: str
    family: str
    seq: int
    prefill: Phase | None
    decode: Phase | None
    notes: tuple[str, ...]


def sweep_point(
    model: str,
    options: SimOptions,
    placements: PlacementCache,
    progress: Callable[[str], None] = lambda step: None,
) -> SweepPoint:
    """`options` with one decode step (a KV cache of seq + 1 tokens), phase by phase."""
    options = replace(options, decode_steps=1)
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
    return SweepPoint(
        model, family(model), options.seq, phases["prefill"], phases["decode"], tuple(notes)
    )
