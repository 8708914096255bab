"""`wafersim shard-plan`: how a registered model would be sharded over N accelerators on JAX,
from meta shapes (no weights): bytes per device and the collectives of one call."""

from __future__ import annotations

import argparse
import json
import re

import torch
from rich.console import Console
from rich.table import Table

import compiler
import models
from core import dtypes
from core.arguments import positive
from runtime import sharding
from simulator.cli.common import Command, parse_grid

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """`80GB`, `141 GiB`, `8e10`: a memory size in bytes (from 1 byte to 1 PB)."""
    match = re.fullmatch(
        r"([0-9]{1,12}(?:\.[0-9]{1,6})?(?:e[0-9]{1,2})?) ?([kmgt]i?b|b|)", text.strip().lower()
    )
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 80GB or 141GiB, got {text!r:.40}"
        )
    count = float(match[1]) * _UNITS[match[2]]
    if not 1 <= count <= 1e15:
        raise argparse.ArgumentTypeError(f"a device memory from 1 byte to 1 PB, got {text!r:.40}")
    return int(count)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=models.names(), metavar="MODEL", help="a registered model")
    p.add_argument("--devices", type=positive, default=8, help="accelerators (default 8)")
    p.add_argument(
        "--mesh", type=parse_grid, metavar="SxT", help="stages x tensor-parallel devices (e.g. 2x4)"
    )
    p.add_argument(
        "--device-memory",
        type=parse_bytes,
        default=parse_bytes("80GB"),
        help="per device (default 80GB)",
    )
    p.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--seq", type=positive, default=1024, help="prompt (and KV cache) tokens")
    p.add_argument("--dtype", choices=dtypes.COMPUTE_LABELS, default="bf16")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _program(args: argparse.Namespace):
    """The model's program for one call, compiled from meta shapes without placement."""
    models.check_context(args.model, args.seq)
    config = models.config(args.model)
    overrides = {"max_seq_len": args.seq} if hasattr(config, "max_seq_len") else {}
    torch_dtype = dtypes.by_label(args.dtype).torch
    model = models.build(args.model, device="meta", dtype=torch_dtype, **overrides)
    if args.phase == "prefill":
        inputs = models.example_inputs(args.model, args.batch, args.seq)
        return compiler.compile(model.prefill_module(), inputs, target=None).program
    ids = torch.zeros((args.batch, 1), dtype=torch.int64)
    position = torch.tensor([args.seq - 1], dtype=torch.int64)
    inputs = (ids, position, *model.init_state(args.batch))
    return compiler.compile(model.decode_module(), inputs, target=None).program


def run(args: argparse.Namespace, console: Console) -> int:
    program = _program(args)
    layout = None if args.mesh is None else sharding.Layout(*args.mesh)
    plan = sharding.plan(program, args.devices, args.device_memory, layout=layout)
    if args.json:
        print(json.dumps({"model": args.model, "phase": args.phase, **plan.to_dict()}, indent=2))
        return 0
    gb = sharding.show_bytes
    title = (
        f"wafersim shard-plan {args.model}: {plan.layout.describe()} of {gb(args.device_memory)}"
    )
    table = Table(title=title)
    for col in ("stage", "weights", "activations", "KV/state", "total per device"):
        table.add_column(col, justify="right")
    for index, stage in enumerate(plan.stages):
        table.add_row(
            str(index),
            gb(stage.weight_bytes),
            gb(stage.activation_bytes),
            gb(stage.state_bytes),
            gb(stage.total_bytes),
        )
    console.print(table)
    moves = Table(title=f"collectives per {args.phase} call (estimated from the program)")
    for col in ("kind", "bytes each", "count"):
        moves.add_column(col, justify="right")
    for c in plan.collectives:
        moves.add_row(c.kind, f"{c.bytes:,}", str(c.count))
    console.print(moves)
    console.print(f"replicated weights (on every device): {gb(plan.replicated_weight_bytes)}")
    return 0


COMMAND = Command(
    "plan how a registered model shards over N accelerators on JAX (bytes per device, "
    "collectives per call), from meta shapes",
    add_arguments,
    run,
)
