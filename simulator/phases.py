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

import models
from compiler.placement_report import PlacementReport
from core import dtypes
from core.arguments import MAX_TOKENS
from core.errors import ModelSimError, TargetError
from core.target import Target, cluster, load_target
from runtime.program import Program
from simulator.cost import Calibration, load_calibration
from simulator.engine import simulate
from simulator.moe import moe_notes
from simulator.placements import Placement, PlacementCache, PlacementKey, place_module
from simulator.summary import SimResult, summarize
from simulator.translate import streams_weights, translate

CHUNK_TOKENS = 64
# A pipelined prefill of at least `CHUNKED_PREFILL_MIN_CHUNKS` chunks of `PREFILL_CHUNK_TOKENS`
# is placed as its chunk step (activations of one chunk per stage, not of the whole prompt).
# Measured on wse3 (gpt2-small, mamba-130m): 256-token chunks beat 64 and 1,024 from 8K to 32K
# tokens; at 1K the whole-prompt placement is faster.
PREFILL_CHUNK_TOKENS = 256
CHUNKED_PREFILL_MIN_CHUNKS = 16
# `auto` pipelines a model that does not fit one wafer on up to this many wafers of the
# target's kind (unless `wafers` says otherwise) before it falls back to weight streaming.
DEFAULT_MAX_WAFERS = 16
WHAT_IF_RESIDENT = "what-if: weights resident (streamed weights counted as already in SRAM)"
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
    (w, h) PEs when given), on up to `wafers` wafers of the target's kind (None: the target's
    own count; `auto` on one wafer: up to `DEFAULT_MAX_WAFERS`). With `resident_weights`, a
    labelled what-if, streamed weights count as already in SRAM (WaferLLM's setting). The
    prefill returns the last position's logits, or every position's with `all_logits`."""

    target: str | Target = "wse3"
    seq: int = 128
    batch: int = 1
    decode_steps: int = 16
    dtype: str = "fp16"
    mode: str = "auto"
    grid: tuple[int, int] | None = None
    calibration: Calibration = field(default_factory=load_calibration)
    resident_weights: bool = False
    wafers: int | None = None
    all_logits: bool = False

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
        if self.wafers is not None and (
            isinstance(self.wafers, bool) or not isinstance(self.wafers, int) or self.wafers < 1
        ):
            raise ModelSimError(f"wafers must be a whole number >= 1, got {self.wafers!r:.40}")

    @property
    def confined_target(self) -> Target:
        """The target, confined to `grid` when given."""
        return confine(self.target, self.grid)

    @property
    def placement_target(self) -> Target:
        """What placement may use: up to `wafers` wafers of the (confined) target's kind."""
        base = load_target(self.target)
        unit = confine(cluster(base, 1), self.grid)
        if self.wafers is not None:
            return cluster(unit, self.wafers)
        if base.wafers == 1 and self.mode == "auto" and unit.wafer_link_bytes_per_second:
            return cluster(unit, DEFAULT_MAX_WAFERS)
        return cluster(unit, base.wafers)

    @property
    def cache_tokens(self) -> int:
        """KV-cache slots: the prompt and the decode steps (at least one)."""
        return self.seq + max(self.decode_steps, 1)

    @property
    def decode_position(self) -> int:
        """The position the decode step is compiled for: the middle of the decode steps."""
        return self.seq + self.decode_steps // 2


def simulate_placed(
    program: Program,
    target: Target,
    *,
    dtype: str,
    calibration: Calibration | None = None,
    chunks: int = 1,
    stage_names: Sequence[str] = (),
    resident_weights: bool = False,
    per_chunk: bool = False,
) -> SimResult:
    """Simulate one run of a placed program on `target` (the target it was placed for).

    `chunks` > 1: a pipelined pass over that many pieces of the input (prefill); `per_chunk`:
    the program is one such piece (a chunk step), else the whole input. With
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
        simulate(graph.tasks, target.colors),
        target,
        dtype=dtype,
        streaming=streams_weights(program),
        chunks=chunks,
        stage_names=stage_names,
        per_chunk=per_chunk,
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


def make_phase(
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
    per_chunk: bool = False,
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
        per_chunk=per_chunk,
    )
    if options.resident_weights and sim.mode == "streaming":
        notes = (WHAT_IF_RESIDENT, *notes)
    notes = (*notes, *moe_notes(placement.program))
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


def prefill_chunk_tokens(options: SimOptions) -> int:
    """Tokens per chunk when the prefill is placed as its chunk step, 0 when placed whole:
    whole for prompts under `CHUNKED_PREFILL_MIN_CHUNKS` chunks, in streaming mode and with
    `all_logits`."""
    short = options.seq < CHUNKED_PREFILL_MIN_CHUNKS * PREFILL_CHUNK_TOKENS
    whole = options.mode == "streaming" or options.all_logits or short
    return 0 if whole else PREFILL_CHUNK_TOKENS


def prefill_key(model: str, options: SimOptions) -> PlacementKey:
    """The placement of registered model `model`'s prefill under `options`."""
    cache = options.cache_tokens if _has_kv_cache(model) else 0
    return PlacementKey(
        model, "prefill", options.seq, cache, options.batch, options.placement_target,
        options.mode, options.dtype, options.all_logits, prefill_chunk_tokens(options),
    )  # fmt: skip


def decode_key(model: str, options: SimOptions) -> PlacementKey:
    """The placement of registered model `model`'s decode step under `options`: without a KV
    cache the same at every position."""
    has_cache = _has_kv_cache(model)
    return PlacementKey(
        model,
        "decode",
        options.decode_position if has_cache else 0,
        options.cache_tokens if has_cache else 0,
        options.batch,
        options.placement_target,
        options.mode,
        options.dtype,
    )


def simulate_prefill(model: str, options: SimOptions, placements: PlacementCache) -> Phase:
    """Registered model `model`: the prefill of `options.seq` tokens, with a KV cache of
    `options.cache_tokens` tokens in SRAM. A pipelined prefill runs over
    min(stages, seq / CHUNK_TOKENS) chunks of the prompt."""
    seq = options.seq
    key = prefill_key(model, options)
    if key.chunk:
        placement = placements.place(key)
        if placement.report.mode == "pipelined":
            return _chunked_prefill(placement, options, key, placements)
        key = replace(key, chunk=0)  # `auto` streams even the chunk step: stream it whole
    placement = placements.place(key)
    report = placement.report
    target = report.target
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
    return make_phase(
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


def _chunked_prefill(
    placement: Placement, options: SimOptions, key: PlacementKey, placements: PlacementCache
) -> Phase:
    """A pipelined prefill placed per chunk: ceil(seq / chunk) chunk steps flow through the
    stages, one pass to fill, then one per slowest stage's chunk time. The fit is the chunk
    step's with the whole cache (the last chunk's); its time is that of the chunk at the middle
    of the prompt, compiled with the cache slots it reads: attention's cost grows linearly with
    the position, so the middle chunk's is the mean."""
    chunks = -(-options.seq // key.chunk)
    timed, target = placement, placement.report.target
    if key.cache:
        middle = placements.place(
            replace(key, cache=key.seq // 2 // key.chunk * key.chunk + key.chunk)
        )
        seconds = placement.compile_seconds + middle.compile_seconds
        timed, target = Placement(middle.program, placement.report, seconds), middle.report.target
    state = f"the whole {key.cache}-slot KV cache" if key.cache else "the recurrent state"
    timing = (
        "timed at the middle chunk (attention grows linearly with position)"
        if key.cache
        else "every chunk costs the same"
    )
    note = (
        f"pipelined, placed per chunk: the chunk step of {key.chunk} tokens with {state} as "
        f"input; {chunks} chunks through {len(placement.report.layers)} stages (one pass, then "
        f"the slowest stage's chunk time per further chunk); {timing}"
    )
    return make_phase(
        "prefill",
        timed,
        options,
        target,
        tokens=options.batch * options.seq,
        steps=1,
        context_tokens=options.seq,
        chunks=chunks,
        notes=(note, placement.report.mode_reason),
        per_chunk=True,
    )


def simulate_decode(model: str, options: SimOptions, placements: PlacementCache) -> Phase:
    """Registered model `model`: one decode step at `options.decode_position`, standing for
    `options.decode_steps` steps (at least one), with a KV cache of `options.cache_tokens`
    tokens in SRAM. Without a KV cache the decode program is the same at every position: it is
    placed once for all of them."""
    cache, steps = options.cache_tokens, max(options.decode_steps, 1)
    has_cache = _has_kv_cache(model)
    placement = placements.place(decode_key(model, options))
    state = (
        f"KV cache of {cache} slots in SRAM, read whole (masked) every step"
        if has_cache
        else "fixed recurrent state in SRAM: cost independent of the context"
    )
    note = f"decode compiled once for position {options.decode_position}; {state}"
    if steps > 1:
        note += f"; per-token figures are averages over {steps} steps"
    return make_phase(
        "decode",
        placement,
        options,
        placement.report.target,
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
    if not isinstance(model, str):
        module, inputs = model
        progress("compile, place and simulate the module")
        placement = place_module(module, inputs, options.placement_target, options.mode)
        target = placement.report.target
        tokens = math.prod(inputs[0].shape) if inputs and hasattr(inputs[0], "shape") else 1
        note = "custom module: only its prefill (one forward pass on the factory's inputs)"
        phase = make_phase(
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
    decode_keys = [decode_key(model, options)] if options.decode_steps else []
    placements.prefetch([prefill_key(model, options), *decode_keys])
    progress(f"{model}: prefill of {options.seq} tokens")
    prefill = simulate_prefill(model, options, placements)
    decode = None
    if options.decode_steps:
        progress(f"{model}: decode at {options.decode_position} tokens")
        decode = simulate_decode(model, options, placements)
    target = prefill.report.target
    return ModelSim(model, target, options.dtype, options.batch, options.seq, prefill, decode, ())
