"""Compiled and placed programs of registered models, each made once: `PlacementCache`.

A `PlacementKey` names everything that changes a placement; the cache keeps each placement for
as long as the caller keeps it (one `wafersim run`, one sweep), and with a `DiskCache`
(`simulator.disk_cache`) across runs and processes. `prefetch` compiles a large model's
phases side by side in spawned processes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

import compiler
import models
from compiler.placement_report import PlacementReport
from core import dtypes
from core.errors import ModelSimError, PlacementError
from core.target import Target
from runtime.program import Program
from simulator.disk_cache import DiskCache
from simulator.moe import with_routed_load

# `PlacementCache.prefetch` compiles in side processes only models of this many layers or more:
# starting one (Python and torch imports) costs about as much as compiling a smaller model.
PARALLEL_MIN_LAYERS = 16


@dataclass(frozen=True)
class Placement:
    """A compiled and placed program, its placement report, and the seconds that took."""

    program: Program
    report: PlacementReport
    compile_seconds: float


@dataclass(frozen=True)
class PlacementKey:
    """A registered model's prefill of `seq` tokens, or its decode step at position `seq`, with
    a `cache`-token KV cache: everything that changes its placement. `chunk` > 0: the prefill
    is placed as its chunk step of that many tokens (`CausalLM.prefill_chunk_module`)."""

    model: str
    phase: str
    seq: int
    cache: int
    batch: int
    target: Target
    mode: str
    dtype: str
    all_logits: bool = False
    chunk: int = 0


def place_module(module: torch.nn.Module, inputs: tuple, target: Target, mode: str) -> Placement:
    """Compile `module` on `inputs` and place it on `target` in `mode`, timed; MoE layers get
    the expert load that routing `inputs` gives (`simulator.moe.with_routed_load`)."""
    clock = time.perf_counter()
    compiled = compiler.compile(module, inputs, target=target, mode=mode)
    placed = compiled.placed
    if placed is None:
        raise ModelSimError(f"compiling for {target.name} placed nothing")
    program = with_routed_load(placed.program, compiled, inputs)
    return Placement(program, placed.report, time.perf_counter() - clock)


class PlacementCache:
    """Placements of registered models by `PlacementKey`: each is compiled and placed once,
    on first use, or loaded from `disk` (`simulator.disk_cache`) when it holds it."""

    def __init__(self, disk: DiskCache | None = None):
        self._placements: dict[PlacementKey, Placement] = {}
        self._disk = disk
        self._pending: dict[PlacementKey, concurrent.futures.Future] = {}

    def place(self, key: PlacementKey) -> Placement:
        if key in self._pending:
            concurrent.futures.wait([self._pending.pop(key)])  # its failure recurs below
        if key not in self._placements:
            self._placements[key] = self._load_or_compile(key)
        return self._placements[key]

    def prefetch(self, keys: Sequence[PlacementKey]) -> None:
        """Start placing `keys` ahead of `place`: with a disk cache, those of large models that
        it lacks beyond the first compile side by side in spawned processes (one per spare
        core), which leave them on disk; this process places the first when asked."""
        if self._disk is None or multiprocessing.parent_process() is not None:
            return  # nowhere to carry results back, or already a worker
        todo = []
        for key in dict.fromkeys(keys):
            if key in self._placements or key in self._pending:
                continue
            try:
                stored = self._disk.load(key)
            except PlacementError:
                continue  # `place` raises it
            if stored is not None:
                self._placements[key] = Placement(*stored)
            elif _layers(key.model) >= PARALLEL_MIN_LAYERS:
                todo.append(key)
        todo = todo[1 : os.cpu_count() or 1]
        if not todo:
            return
        pool = concurrent.futures.ProcessPoolExecutor(
            len(todo),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=warnings.filterwarnings,
            initargs=("ignore", "", FutureWarning),
        )
        for key in todo:
            disk = (str(self._disk.root), self._disk.version)
            self._pending[key] = pool.submit(_compile_into, key, *disk)
        pool.shutdown(wait=False)

    def _load_or_compile(self, key: PlacementKey) -> Placement:
        stored = None if self._disk is None else self._disk.load(key)
        if stored is not None:
            return Placement(*stored)
        try:
            placement = self._compile(key)
        except PlacementError as exc:
            if self._disk is not None and type(exc) is PlacementError:
                self._disk.store_error(key, exc)
            raise
        if self._disk is not None:
            self._disk.store(key, placement.program, placement.report, placement.compile_seconds)
        return placement

    @staticmethod
    def _compile(key: PlacementKey) -> Placement:
        """Build `key`'s model on the meta device, compile and place it."""
        config = models.config(key.model)
        overrides = {"max_seq_len": key.cache} if hasattr(config, "max_seq_len") else {}
        torch_dtype = dtypes.by_label(key.dtype).torch
        model = models.build(key.model, device="meta", dtype=torch_dtype, **overrides)
        if key.phase == "prefill" and key.chunk:
            ids = torch.zeros((key.batch, key.chunk), dtype=torch.int64)
            start = torch.tensor([key.seq // 2 // key.chunk * key.chunk], dtype=torch.int64)
            inputs = (ids, start, *model.init_state(key.batch))
            return place_module(model.prefill_chunk_module(), inputs, key.target, key.mode)
        if key.phase == "prefill":
            inputs = models.example_inputs(key.model, key.batch, key.seq)
            prefill = model.prefill_module(all_logits=key.all_logits)
            return place_module(prefill, inputs, key.target, key.mode)
        ids = torch.zeros((key.batch, 1), dtype=torch.int64)
        position = torch.tensor([key.seq], dtype=torch.int64)
        inputs = (ids, position, *model.init_state(key.batch))
        return place_module(model.decode_module(), inputs, key.target, key.mode)


def _compile_into(key: PlacementKey, cache_dir: str, version: str) -> None:
    """In a worker process: place `key` into the disk cache at `cache_dir` for `version`."""
    PlacementCache(DiskCache(cache_dir, version)).place(key)


def _layers(model: str) -> int:
    return getattr(models.config(model), "num_layers", 0)
