"""Wall time of large simulations: build the task graph, run the engine, build the reports.

Run: `PYTHONPATH=. .venv/bin/python benchmarks/simulator_speed.py [--repeat N] [--no-models]`.
The goal it tracks: a whole-model simulation (gpt2-small prefill at seq 1024 on wse3, one
llama-8b decode step on wse2) in <= 2 s, so the engine must cost microseconds per task and never
touch PEs one by one. The model cases time `simulate_placed` alone (translation, engine,
breakdowns); compiling and placing the program is timed once and reported beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from core.geometry import Rect
from core.target import load_target
from simulator.cost import CostModel, load_calibration
from simulator.engine import GraphBuilder, simulate
from simulator.kernels import LLAMA3_8B, decode_layer, gemm, gemv
from simulator.phases import PlacementCache, PlacementKey, simulate_placed
from simulator.trace import breakdown, busiest_links, chrome_trace


def _gemv_full_wafer(b: GraphBuilder, cm: CostModel) -> Rect:
    region = Rect(0, 0, 750, 994)
    gemv(b, cm, region, 16384, 16384, "tree")
    return region


def _cannon_720(b: GraphBuilder, cm: CostModel) -> Rect:
    region = Rect(0, 0, 720, 720)
    gemm(b, cm, region, 8640, 8640, 8640, "cannon")
    return region


def _llama8b_decode_step(b: GraphBuilder, cm: CostModel) -> Rect:
    region = Rect(0, 0, 420, 420)
    front: tuple[int, ...] = ()
    for layer in range(32):
        front = decode_layer(b, cm, region, LLAMA3_8B, 4096, deps=front, layer=f"layer{layer}")
    return region


def _gemm_stack(b: GraphBuilder, cm: CostModel) -> Rect:
    """72 Cannon GEMMs of a 12-layer prefill (6 per layer) on 16 regions of 180x180: 26k tasks."""
    front: tuple[int, ...] = ()
    for i in range(72):
        region = Rect(180 * (i % 4), 180 * (i // 4 % 4), 180, 180)
        front = gemm(b, cm, region, 1024, 768, 768, "cannon", front, layer=f"gemm{i}")
    return Rect(0, 0, 720, 720)


CASES: dict[str, tuple[str, Callable[[GraphBuilder, CostModel], Rect]]] = {
    "gemv 16384^2 tree, 750x994": ("wse2", _gemv_full_wafer),
    "gemm 8640^3 cannon, 720x720": ("wse2", _cannon_720),
    "llama-8b decode step (32 kernel-level layers), 420x420": ("wse2", _llama8b_decode_step),
    "72 cannon gemms (prefill-sized), 16 regions": ("wse3", _gemm_stack),
}


# name -> (model, phase, prompt length or decode position, KV cache tokens, target)
MODEL_CASES = {
    "gpt2-small prefill, seq 1024, wse3": ("gpt2-small", "prefill", 1024, 1025, "wse3"),
    "llama-8b decode step, 4096-token cache, wse2": ("llama-8b", "decode", 4095, 4096, "wse2"),
}


def _time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model cases")
    args = parser.parse_args(argv)
    calibration = load_calibration()
    print(
        f"{'case':58} {'tasks':>7} {'build s':>8} {'engine s':>9} {'reports s':>10} {'cycles':>12}"
    )
    for name, (target, build) in CASES.items():
        cm = CostModel(load_target(target), calibration)

        def make(build=build, cm=cm):
            b = GraphBuilder()
            return b, build(b, cm)

        build_s, (b, region) = _time(make, args.repeat)
        engine_s, timeline = _time(lambda b=b: simulate(b.tasks), args.repeat)

        def reports(timeline=timeline, region=region, cm=cm):
            events = timeline.events
            breakdown(events)
            busiest_links(events, region.x + region.width, region.y + region.height, 1)
            chrome_trace(events, cm.target.clock_hz)

        reports_s, _ = _time(reports, args.repeat)
        print(
            f"{name:58} {len(b.tasks):>7,} {build_s:>8.3f} {engine_s:>9.3f} {reports_s:>10.3f} "
            f"{timeline.makespan_cycles:>12,}"
        )
    if not args.no_models:
        _models(args.repeat)
    return 0


def _models(repeat: int) -> None:
    print(
        f"\n{'model case (median of ' + str(repeat) + ')':58} {'mode':>10} {'tasks':>7} "
        f"{'compile s':>10} {'simulate s':>11} {'cycles':>12}"
    )
    for name, (model, phase, seq, cache, target) in MODEL_CASES.items():
        tgt = load_target(target)
        key = PlacementKey(model, phase, seq, cache, 1, tgt, "auto", "fp16")
        placement = PlacementCache().place(key)
        program, compile_s = placement.program, placement.compile_seconds
        stages = [layer.name for layer in placement.report.layers]
        simulate_s, result = _time(
            lambda p=program, t=tgt, s=stages: simulate_placed(p, t, dtype="fp16", stage_names=s),
            repeat,
        )
        print(
            f"{name:58} {result.mode:>10} {len(result.events):>7,} {compile_s:>10.1f} "
            f"{simulate_s:>11.3f} {result.makespan_cycles:>12,}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
