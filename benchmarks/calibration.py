"""Simulated vs published wafer-scale measurements: fit, held-out validation, sensitivity.

Run: `PYTHONPATH=. .venv/bin/python benchmarks/calibration.py [--fit] [--sensitivity] [--no-write]`.

The figures are declared in `simulator/calibration.json` with their sources: the "fit_set"
(kernel-level WSE-2 measurements only: GEMV, GEMM, all-reduce) and the "validation_set"
(decoder layers, whole models, product figures and kernels whose constant is not fitted),
which never enter a fit. `--fit` refits the fitted constants by least squares on log ratios
(`simulator.fitting`), computes the leave-one-out error of every fitted figure, and writes the
constants and the leave-one-out errors back. Every run simulates all figures with the current
constants and, unless `--no-write`, stores the result (validation error, error bar from the
held-out residuals) under "last_result", where `wafersim` reads it, and regenerates
docs/calibration.md. `--sensitivity` reruns gpt2-small and llama-8b `wafersim run` with each
constant at +/-20 % (minutes) and stores the table for the doc.

The model-level point compiles the real `llama-8b` decode program (about 40 s), places it on
420x420 PEs and simulates it with `simulator.phases.simulate_decode`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core.geometry import Rect
from core.target import load_target
from simulator import fitting
from simulator.cost import CALIBRATION_PATH, Calibration, CostModel, load_calibration
from simulator.engine import GraphBuilder, simulate
from simulator.kernels import LLAMA3_8B, decode_layer, simulate_kernel
from simulator.phases import PlacementCache, SimOptions, simulate_decode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the siblings, however it is run

from calibration_doc import fmt_figure, markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "calibration.md"
GEMV_SIZE, GEMV_GRID = 16384, (720, 720)
GEMM_SIZE, GEMM_GRID = 8640, (720, 720)
FP32_GEMM_SIZE, FP32_GEMM_GRID = 33000, (750, 750)
DECODE_GRID, DECODE_KV_LEN, DECODE_LAYERS = (420, 420), 4096, 32
# The fitted constants, their bounds and first steps of the pattern search.
FITTED = ("task_start_cycles", "vector_op_overhead_cycles")
BOUNDS, STEPS = ((0, 300), (0, 12)), (20, 2)
# The llama-8b decode placement, compiled once and reused by every calibration tried.
PLACEMENTS = PlacementCache()


@dataclass(frozen=True)
class Point:
    """One published figure as declared in the calibration file, and how to simulate it."""

    id: str
    name: str
    level: str
    published: str
    low: float
    high: float
    unit: str
    source: str
    fitted: bool
    dtype: str = "fp16"
    target: str = "wse2"
    note: str = ""

    @property
    def measure(self) -> Callable[[Calibration], float]:
        return MEASURES[self.id]


def _gemv(algo: str, cal: Calibration) -> int:
    return simulate_kernel(
        "gemv", 1, GEMV_SIZE, GEMV_SIZE, GEMV_GRID, algo, "wse2", x_resident=True, calibration=cal
    ).cycles


@functools.lru_cache(maxsize=256)
def _gemm(algo: str, cal: Calibration, size: int = GEMM_SIZE, dtype: str = "fp16"):
    grid = GEMM_GRID if size == GEMM_SIZE else FP32_GEMM_GRID
    return simulate_kernel("gemm", size, size, size, grid, algo, "wse2", dtype, calibration=cal)


def _decode_layer(cal: Calibration, target: str = "wse2", grid=DECODE_GRID) -> int:
    b = GraphBuilder()
    cm = CostModel(load_target(target), cal)
    decode_layer(b, cm, Rect(0, 0, *grid), LLAMA3_8B, DECODE_KV_LEN, "tree")
    return simulate(b.tasks).makespan_cycles


def _wse3_layer(cal: Calibration) -> int:
    """The layer on its share of the WSE-3 rectangle when 32 layers are pipelined over it."""
    t = load_target("wse3")
    side = math.isqrt(t.num_pes // DECODE_LAYERS)
    return _decode_layer(cal, "wse3", (side, side))


def _model_decode_layer(cal: Calibration) -> float:
    """Cycles per decoder layer of the compiled llama-8b decode step (KV cache of 4096 tokens)
    on one 420x420 region of WSE-2, each layer in turn on the whole region (streaming order, as
    WaferLLM runs it; `auto` would pipeline the layers over several such regions), from the end
    of the embedding to the end of the last decoder layer, over the layers; weights count as
    resident (WaferLLM holds them in SRAM)."""
    options = SimOptions(
        "wse2",
        seq=DECODE_KV_LEN - 1,
        decode_steps=1,
        grid=DECODE_GRID,
        calibration=cal,
        mode="streaming",
        wafers=1,
        resident_weights=True,
    )
    phase = simulate_decode("llama-8b", options, PLACEMENTS)
    layers = [
        layer for layer in phase.sim.layers if any(p.isdigit() for p in layer.name.split("."))
    ]
    first = min(layer.stage for layer in layers)
    before = max(layer.end_cycles for layer in phase.sim.layers if layer.stage < first)
    return (max(layer.end_cycles for layer in layers) - before) / len(layers)


def _fp32_tflops(cal: Calibration) -> float:
    r = _gemm("summa", cal, FP32_GEMM_SIZE, "fp32")
    return r.flops / r.seconds / 1e12


MEASURES: dict[str, Callable[[Calibration], float]] = {
    "gemv_tree_720": lambda cal: _gemv("tree", cal),
    "gemv_chain_over_tree": lambda cal: _gemv("chain", cal) / _gemv("tree", cal),
    "gemm_summa_over_cannon": lambda cal: _gemm("summa", cal).cycles / _gemm("cannon", cal).cycles,
    "gemm_cannon_utilisation": lambda cal: _gemm("cannon", cal).utilization,
    "gemm_summa_utilisation": lambda cal: _gemm("summa", cal).utilization,
    "decode_layer_kernel": lambda cal: _decode_layer(cal),
    "decode_layer_model": _model_decode_layer,
    "gemm_fp32_tflops": _fp32_tflops,
    "decode_layer_wse3_product": _wse3_layer,
}


def load_points(path: Path = CALIBRATION_PATH) -> list[Point]:
    """The fit set then the validation set of the calibration file."""
    data = json.loads(path.read_text())
    points = []
    for key, fitted in (("fit_set", True), ("validation_set", False)):
        for entry in data[key]:
            points.append(Point(fitted=fitted, **entry))
    return points


def held_out_scope(p: Point) -> bool:
    """Whether a held-out figure counts towards the validation error and error bar the reports
    quote: the fp16/bf16 figures (reports default to 16 bits; fp32 is a blind spot)."""
    return p.dtype != "fp32"


def run_fit(points: list[Point], base: Calibration):
    """Least squares over the fit set, then leave-one-out; returns (constants, loo)."""
    fit_points = [p for p in points if p.fitted]

    @functools.cache
    def residuals(params: fitting.Params) -> dict[str, float]:
        cal = dataclasses.replace(base, **dict(zip(FITTED, params, strict=True)))
        return {p.id: fitting.log_residual(p.measure(cal), p.low, p.high) for p in fit_points}

    names = [p.id for p in fit_points]
    start = tuple(getattr(base, f) for f in FITTED)
    params, _ = fitting.fit(residuals, names, start, BOUNDS, STEPS)
    # each refit starts from the middle of the bounds, not from the full fit, so the figure
    # it leaves out cannot steer it
    middle = tuple((lo + hi) // 2 for lo, hi in BOUNDS)
    loo = fitting.leave_one_out(residuals, names, middle, BOUNDS, STEPS)
    return dict(zip(FITTED, params, strict=True)), {
        name: {
            "refit": dict(zip(FITTED, refit, strict=True)),
            "error_pct": round(fitting.pct(r), 2),
        }
        for name, (refit, r) in loo.items()
    }


def write_fit(constants: dict[str, int], loo: dict) -> None:
    data = json.loads(CALIBRATION_PATH.read_text())
    for name, value in constants.items():
        data["fields"][name]["value"] = value
    data["leave_one_out"] = loo
    _write_atomically(CALIBRATION_PATH, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` whole: a crash leaves the old file, never half of a new one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def evaluate(points: list[Point], cal: Calibration) -> list[tuple[Point, float, float]]:
    """Every point's simulated value and error at `cal`."""
    return [(p, v, fitting.error_pct(v, p.low, p.high)) for p in points for v in [p.measure(cal)]]


def summarise(rows, loo: dict) -> dict:
    """The "last_result" block: validation error and error bar from the held-out residuals."""
    held = [(p, v) for p, v, _ in rows if not p.fitted and held_out_scope(p)]
    residuals = [fitting.log_residual(v, p.low, p.high) for p, v in held]
    residuals += [math.log1p(entry["error_pct"] / 100) for entry in loo.values()]
    model = next(r for r in rows if r[0].id == "decode_layer_model")
    return {
        "validation_max_abs_error_pct": round(
            max(abs(fitting.error_pct(v, p.low, p.high)) for p, v in held), 2
        ),
        "error_bar_pct": round(fitting.error_bar_pct(residuals), 1),
        "fit_points": sum(p.fitted for p, *_ in rows),
        "validation_points": len(held),
        "loo_max_abs_error_pct": round(max(abs(e["error_pct"]) for e in loo.values()), 2),
        "points": {p.id: {"simulated": round(v, 4), "error_pct": round(e, 2)} for p, v, e in rows},
        "model_level": {
            "point": model[0].name,
            "published_cycles": round(model[0].low),
            "simulated_cycles": round(model[1]),
            "error_pct": round(model[2], 2),
        },
        "generated_by": "benchmarks/calibration.py",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="refit the constants first")
    parser.add_argument(
        "--sensitivity", action="store_true", help="rerun the headline figures at +/-20 %%"
    )
    parser.add_argument("--no-write", action="store_true", help="write nothing")
    args = parser.parse_args(argv)
    points = load_points()
    cal = load_calibration()
    console = Console()
    if args.fit:
        constants, loo = run_fit(points, cal)
        write_fit(constants, loo)
        cal = load_calibration()
    data = json.loads(CALIBRATION_PATH.read_text())
    loo = data.get("leave_one_out", {})
    rows = evaluate(points, cal)
    result = summarise(rows, loo)
    console.print(_table(rows, loo))
    console.print(
        f"held out: within {result['validation_max_abs_error_pct']:.1f} % on "
        f"{result['validation_points']} validation figures; leave-one-out max "
        f"{result['loo_max_abs_error_pct']:.1f} %; error bar ±{result['error_bar_pct']:.1f} %"
    )
    for name in FITTED + ("reduce_add_cycles", "exp_ops_per_element"):
        console.print(f"  {name} = {getattr(cal, name)}  ({cal.source(name)})")
    if args.sensitivity:
        from calibration_sensitivity import sensitivity

        data["sensitivity"] = sensitivity(cal, console)
    if not args.no_write:
        data["last_result"] = result
        _write_atomically(CALIBRATION_PATH, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

        _write_atomically(DOC_PATH, markdown(rows, data, cal))
        console.print(f"wrote {DOC_PATH.relative_to(ROOT)} and simulator/calibration.json")
    return 0


def _table(rows, loo: dict) -> Table:
    table = Table(title="Calibration: fitted (kernel-level) and held-out published figures")
    for col in ("point", "level", "published", "simulated", "error", "role", "LOO error"):
        table.add_column(col)
    for p, value, err in rows:
        held = loo.get(p.id, {}).get("error_pct")
        table.add_row(
            p.name,
            p.level,
            p.published,
            fmt_figure(value, p.unit),
            f"{err:+.1f} %",
            "fit" if p.fitted else "held out",
            "" if held is None else f"{held:+.1f} %",
        )
    return table


if __name__ == "__main__":
    raise SystemExit(main())
