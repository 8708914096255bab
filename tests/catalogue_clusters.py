"""Catalogue rows for clusters of wafers: malformed cluster files and names, a wafer count that
is not a positive number, and a model that no allowed cluster holds."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from catalogue import Case
from catalogue_inputs import CliFailed, _wafersim

import compiler
import models
from core.errors import PlacementError, TargetError
from core.target import PRESET_DIR, load_target

NAMED = "named-error"


def _cluster_file(**changes):
    """A cluster of two mesh-8x8 wafers, `changes` applied to its top-level keys."""

    def load(tmp: Path) -> object:
        data = json.loads((PRESET_DIR / "mesh-8x8.json").read_text())
        data["wafers"] = {"value": 2, "source": "test"}
        data.update(changes)
        data = {k: v for k, v in data.items() if v is not None}
        path = tmp / "cluster.json"
        path.write_text(json.dumps(data))
        return load_target(path)

    return load


def _tiny_llama_pipelined_on(target: str):
    def run(tmp: Path) -> object:
        model = models.build("tiny-llama", dtype=torch.float16)
        ids = models.example_inputs("tiny-llama", seq=32)
        return compiler.compile(model, ids, target=target, mode="pipelined")

    return run


CASES = [
    Case(
        NAMED,
        "cluster file without links",
        _cluster_file(links=None),
        TargetError,
        "a cluster of 2 wafers needs 'links'",
    ),
    Case(
        NAMED,
        "cluster file with a link figure missing",
        _cluster_file(links={"bytes_per_second": 1e9}),
        TargetError,
        "'links' misses 'latency_seconds'",
    ),
    Case(
        NAMED,
        "cluster of 0 wafers",
        _cluster_file(wafers=0),
        TargetError,
        "'wafers' must be a whole number from 1 to 32, got 0",
    ),
    Case(
        NAMED,
        "cluster name of 0 wafers",
        lambda tmp: load_target("wse3x0"),
        TargetError,
        "a cluster has 1 to 32 wafers, got 0",
    ),
    Case(
        NAMED,
        "--wafers 0",
        _wafersim("run", "tiny-llama", "--wafers", "0"),
        CliFailed,
        "argument --wafers: expected a whole number from 1",
    ),
    Case(
        NAMED,
        "--wafers -2",
        _wafersim("run", "tiny-llama", "--wafers", "-2"),
        CliFailed,
        "argument --wafers",
    ),
    Case(
        NAMED,
        "model that no allowed cluster holds",
        _tiny_llama_pipelined_on("mesh-4x4"),
        PlacementError,
        "mesh-4x4 hold 655,360 B: it would take about",
    ),
]
