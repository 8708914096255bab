"""The sensitivity table of `benchmarks/calibration.py --sensitivity`: each calibration constant
moved by about +/-20 % (at least one whole step, never below 0), and the change it makes to the
headline figures of `wafersim run` (time to first token, decode time per token, decode
throughput) for gpt2-small and llama-8b. Placements come from `wafersim`'s disk cache or are
compiled once and reused."""

from __future__ import annotations

import dataclasses

from rich.console import Console

from simulator.cost import Calibration
from simulator.disk_cache import from_arguments
from simulator.phases import PlacementCache, SimOptions, simulate_model

RUNS = (("gpt2-small", "wse3"), ("llama-8b", "wse3"), ("llama-8b", "wse2"))
CONSTANTS = (
    "task_start_cycles",
    "vector_op_overhead_cycles",
    "reduce_add_cycles",
    "exp_ops_per_element",
)


def moves(value: int) -> list[int]:
    """About -20 % and +20 % of a whole number, at least one step away, never negative."""
    down = min(round(value * 0.8), value - 1)
    up = max(round(value * 1.2), value + 1)
    return ([down] if down >= 0 else []) + [up]


def headline(model: str, target: str, cal: Calibration, placements: PlacementCache) -> dict:
    """TTFT (s), decode time per token (s) and decode throughput (tokens/s) of the default
    `wafersim run` (128-token prompt, 16 decode steps)."""
    sim = simulate_model(model, SimOptions(target, calibration=cal), placements)
    assert sim.decode is not None
    return {
        "ttft": sim.prefill.seconds,
        "decode": sim.decode.seconds,
        "tokens_per_second": sim.decode.throughput_tokens_per_second,
    }


def sensitivity(cal: Calibration, console: Console) -> dict:
    """The table stored under "sensitivity" in the calibration file."""
    placements = PlacementCache(from_arguments(None, no_cache=False))
    names = [f"{model} {target}" for model, target in RUNS]
    base = {}
    for name, (model, target) in zip(names, RUNS, strict=True):
        console.print(f"sensitivity: {name} at the fitted constants")
        base[name] = headline(model, target, cal, placements)
    rows = []
    for constant in CONSTANTS:
        value = getattr(cal, constant)
        for moved in moves(value):
            trial = dataclasses.replace(cal, **{constant: moved})
            change = {}
            for name, (model, target) in zip(names, RUNS, strict=True):
                console.print(f"sensitivity: {name}, {constant} {value} -> {moved}")
                figures = headline(model, target, trial, placements)
                change[name] = {
                    key: round(100 * (figures[key] / base[name][key] - 1), 2) for key in figures
                }
            rows.append({"constant": constant, "from": value, "to": moved, "change_pct": change})
    return {
        "runs": "; ".join(f"wafersim run {m} --target {t}" for m, t in RUNS),
        "base": base,
        "rows": rows,
    }
