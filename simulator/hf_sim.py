"""Hugging Face models simulated from their `config.json` or model directory: prefill and decode.

The model is built on the meta device from its config (`models.hf_files`: no weights read,
nothing downloaded, no code the config names imported); its prefill and one decode step are
the pure functions of `models.hf_state` over explicit state (a KV cache of `seq + decode
steps` slots; an SSM's or hybrid's conv/SSM state, `models.hf_recurrent_state`), placed and
simulated like a registered model's (`simulator.phases`), each compiled afresh (no placement
cache: the files may change between runs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from core import dtypes
from core.errors import ModelSimError, NoKVCacheError
from models import hf_files, hf_own_state, hf_recurrent_state, hf_state
from simulator.phases import CHUNK_TOKENS, ModelSim, SimOptions, make_phase
from simulator.placements import place_module


def _context_limit(config) -> int | None:
    text = config.get_text_config(decoder=True)
    return getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)


def _state_words(model, slots: int) -> str:
    """What the decode state holds, in words."""
    if (own := hf_own_state.words(model)) is not None:  # RWKV's, xLSTM's own
        return own
    types = hf_recurrent_state.layer_types(model)
    if types is None:
        return f"a KV cache of {slots} slots"
    recurrent = sum(t in hf_recurrent_state.RECURRENT_TYPES for t, _ in types)
    attention = sum(t not in ("conv", "linear_attention", "dummy") for t, _ in types)
    kv = f" and a KV cache of {slots} slots for {attention} attention layer(s)" if attention else ""
    return f"the conv/SSM state of {recurrent} layer(s){kv}"


def simulate_hf(
    spec: str,
    options: SimOptions,
    progress: Callable[[str], None] = lambda step: None,
) -> ModelSim:
    """Prefill of `options.seq` tokens and `options.decode_steps` decode steps (one step placed
    at `options.decode_position`, standing for all) of the Hugging Face model at `spec`."""
    model = hf_files.build(spec, device="meta", dtype=dtypes.by_label(options.dtype).torch)
    slots = options.cache_tokens
    limit = _context_limit(model.config)
    if limit is not None and slots > limit:
        raise ModelSimError(
            f"seq + decode steps = {slots} tokens, beyond the config's {limit} positions; "
            "use a shorter --seq or fewer --decode steps"
        )
    path = Path(spec)
    name = f"{model.config.model_type} ({path.parent.name if path.is_file() else path.name})"
    target = options.placement_target
    progress(f"{name}: prefill of {options.seq} tokens")
    ids = torch.zeros((options.batch, options.seq), dtype=torch.int64)
    try:
        state = hf_state.init_state(model, options.batch, slots)
        prefill_module: torch.nn.Module = hf_state.HFPrefill(model, slots)
    except NoKVCacheError:
        if options.decode_steps:
            raise
        state, prefill_module = None, hf_state.HFForward(model)
    held = _state_words(model, slots)
    placed = place_module(prefill_module, (ids,), target, options.mode)
    report = placed.report
    chunks = 1
    if report.mode == "pipelined":
        chunks = max(1, min(len(report.layers), options.seq // CHUNK_TOKENS))
    note = (
        f"Hugging Face {name} built on the meta device; prefill "
        + (f"into {held}" if state is not None else "without a cache")
        + f", pipelined over {chunks} chunk(s) of the prompt"
        if report.mode == "pipelined"
        else f"Hugging Face {name} built on the meta device; streaming prefill"
    )
    prefill = make_phase(
        "prefill",
        placed,
        options,
        report.target,
        tokens=options.batch * options.seq,
        steps=1,
        context_tokens=options.seq,
        chunks=chunks,
        notes=(note, report.mode_reason),
    )
    decode = None
    if options.decode_steps:
        progress(f"{name}: decode at {options.decode_position} tokens")
        ids = torch.zeros((options.batch, 1), dtype=torch.int64)
        position = torch.tensor([options.decode_position], dtype=torch.int64)
        assert state is not None  # init_state succeeded: decode steps need it
        placed = place_module(
            hf_state.HFDecode(model), (ids, position, *state), target, options.mode
        )
        note = (
            f"decode compiled once for position {options.decode_position}; {held} in SRAM, "
            "read whole (a KV cache masked) every step"
        )
        decode = make_phase(
            "decode",
            placed,
            options,
            placed.report.target,
            tokens=options.batch,
            steps=options.decode_steps,
            context_tokens=slots,
            chunks=1,
            notes=(note, placed.report.mode_reason),
        )
    return ModelSim(
        name, prefill.report.target, options.dtype, options.batch, options.seq, prefill, decode, ()
    )
