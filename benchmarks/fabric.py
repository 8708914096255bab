"""What the fabric model of issue 14 costs: permutes across PEs, shared links and relays.

Run: `.venv/bin/python benchmarks/fabric.py [--models M ...] [--target T] [--cache-dir DIR]`.
For each model, places the prefill (128 tokens) and one decode step as `wafersim run` does,
then simulates each placed program four ways and prints the single-pass cycles:
- "fabric": as placed (`wse.fabric_permute` all-to-alls, stream relays) with the links shared
  by colour;
- "no permutes": each `wse.fabric_permute` back to a PE-local transpose, no relays;
- "locked links": one colour per link, so a transfer waits for every other on its links (the
  engine before issue 14);
- "before": both (the model before issue 14, at today's calibration).
It also prints how many permutes and relays the placement made and the wavelet-level check.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.target import Target  # noqa: E402
from runtime.program import Program  # noqa: E402
from simulator import wavelets  # noqa: E402
from simulator.cost import CostModel, load_calibration  # noqa: E402
from simulator.disk_cache import DiskCache  # noqa: E402
from simulator.phases import SimOptions, decode_key, prefill_key, simulate_placed  # noqa: E402
from simulator.placements import PlacementCache  # noqa: E402


def without_fabric_ops(program: Program) -> Program:
    """The program with every `fabric_permute` a `transpose` and no stream relays."""
    instructions = []
    for ins in program.instructions:
        attrs = {k: v for k, v in ins.attrs.items() if k != "relays"}
        op = "transpose" if ins.op == "fabric_permute" else ins.op
        instructions.append(dataclasses.replace(ins, op=op, attrs=attrs))
    return dataclasses.replace(program, instructions=tuple(instructions))


def variants(program: Program, target: Target) -> dict[str, tuple[Program, Target]]:
    locked = dataclasses.replace(target, colors=1)
    plain = without_fabric_ops(program)
    return {
        "fabric": (program, target),
        "no permutes": (plain, target),
        "locked links": (program, locked),
        "before": (plain, locked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt2-small", "llama-8b"])
    parser.add_argument("--target", default="wse3")
    parser.add_argument("--cache-dir", help="reuse placements cached here (default: none)")
    args = parser.parse_args()
    options = SimOptions(target=args.target)
    placements = PlacementCache(DiskCache(args.cache_dir) if args.cache_dir else None)
    for model in args.models:
        for phase, key in (("prefill", prefill_key), ("decode", decode_key)):
            placement = placements.place(key(model, options))
            program = placement.program
            permutes = sum(i.op == "fabric_permute" for i in program.instructions)
            relays = sum(i.attrs.get("relays", 0) for i in program.instructions)
            cells = []
            for name, (prog, target) in variants(program, key(model, options).target).items():
                sim = simulate_placed(prog, target, dtype=options.dtype)
                cells.append(f"{name} {sim.makespan_cycles:,}")
            print(f"{model} {phase}: {permutes} permutes, {relays} relays; " + " | ".join(cells))
    cm = CostModel(options.confined_target, load_calibration())
    for name, (engine, level) in wavelets.compare(cm).items():
        print(
            f"16x16 {name}: engine {engine:,}, wavelet-level {level:,} cycles, "
            f"error {(engine - level) / level:+.1%}"
        )


if __name__ == "__main__":
    main()
