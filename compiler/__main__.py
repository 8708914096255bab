"""`python -m compiler MODEL`: compile a registered model, run it, check it against eager.

Bad input exits with status 2 and one line on stderr: `python -m compiler: error: <reason>`.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter

import torch
from rich.console import Console
from rich.table import Table

import compiler
import models
from core import dtypes
from core.arguments import Parser, positive
from core.target import load_target, presets

PROG = "python -m compiler"


def main(argv: list[str] | None = None) -> int:
    """Run `python -m compiler`; returns the exit status."""
    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument("model", help=f"registered model: {', '.join(models.names())}")
    parser.add_argument("--target", default="wse3", help=f"preset ({', '.join(presets())}) or file")
    parser.add_argument("--batch", type=positive, default=1)
    parser.add_argument("--seq", type=positive, default=32)
    parser.add_argument("--dtype", choices=dtypes.COMPUTE_LABELS, default="fp32")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch/transformers pytree noise
    console = Console()
    try:
        args = parser.parse_args(argv)
        models.check_context(args.model, args.seq)
        target = load_target(args.target)
        model = models.build(args.model, dtype=dtypes.by_label(args.dtype).torch)
        inputs = models.example_inputs(args.model, batch=args.batch, seq=args.seq)
        compiled = compiler.compile(model, inputs, target=target)
        with torch.no_grad():
            expected = model(*inputs)
        actual = compiled(*inputs)
    except (compiler.WaferError, ValueError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(w.numel() * w.element_size() for w in compiled.weights.values())
    error = (actual.double() - expected.double()).abs().max().item()

    summary = Table(title=f"{args.model} on {target.name}", show_header=False)
    for key, value in [
        ("parameters", f"{params / 1e6:.2f} M ({args.dtype}, {weight_bytes / 2**20:.1f} MiB)"),
        ("input", f"batch {args.batch} x seq {args.seq}"),
        (
            "target grid",
            f"{target.grid_width_pes} x {target.grid_height_pes} PEs, "
            f"{target.usable_sram_bytes_per_pe} B usable SRAM per PE",
        ),
        (
            "weights / usable SRAM",
            f"{weight_bytes / (target.usable_sram_bytes_per_pe * target.num_pes):.2%}",
        ),
        ("export", f"{compiled.stage_seconds['export']:.2f} s"),
        ("lowering", f"{compiled.stage_seconds['lowering']:.2f} s"),
        ("placement", f"{compiled.stage_seconds['placement']:.2f} s"),
        ("wse ops", str(len(compiled.program.instructions))),
        ("max |compiled - eager| (logits)", f"{error:.3g}"),
    ]:
        summary.add_row(key, value)
    console.print(summary)
    if compiled.report is not None:
        console.print(compiled.report.summary())
    ops = Table(title="wse ops by kind")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in Counter(i.op for i in compiled.program.instructions).most_common():
        ops.add_row(op, str(count))
    console.print(ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
