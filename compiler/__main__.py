"""`python -m compiler MODEL`: compile a model, run it, check it against eager.

MODEL is a registered model, or a Hugging Face `config.json` or model directory
(`models.hf_files`).

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
from core.errors import CommandLineError
from core.target import load_target, presets
from models import hf_files

PROG = "python -m compiler"


def _build(spec: str, batch: int, seq: int, dtype: torch.dtype) -> tuple[torch.nn.Module, tuple]:
    """A registered model, or a Hugging Face config.json / model directory (its safetensors
    weights, else seeded random ones), and token ids for it."""
    if spec in models.names() or hf_files.config_path(spec) is None:
        models.check_context(spec, seq)
        inputs = models.example_inputs(spec, batch=batch, seq=seq)
        return models.build(spec, dtype=dtype), inputs
    model = hf_files.build(spec, dtype=dtype)
    model.config.use_cache = False  # the logits only: no cache object out of the program
    text = model.config.get_text_config(decoder=True)
    limit = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)
    if limit is not None and seq > limit:
        raise CommandLineError(f"--seq {seq} is beyond the config's {limit} positions")
    ids = torch.randint(text.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    return model, (ids,)


def _logits(output) -> torch.Tensor:
    """The logits of a registered model's output (a tensor) or a Hugging Face one."""
    return output if isinstance(output, torch.Tensor) else output.logits


def main(argv: list[str] | None = None) -> int:
    """Run `python -m compiler`; returns the exit status."""
    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument(
        "model",
        help=f"registered model ({', '.join(models.names())}), or a Hugging Face config.json "
        "or model directory",
    )
    parser.add_argument("--target", default="wse3", help=f"preset ({', '.join(presets())}) or file")
    parser.add_argument("--batch", type=positive, default=1)
    parser.add_argument("--seq", type=positive, default=32)
    parser.add_argument("--dtype", choices=dtypes.COMPUTE_LABELS, default="fp32")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch/transformers pytree noise
    console = Console()
    try:
        args = parser.parse_args(argv)
        target = load_target(args.target)
        model, inputs = _build(args.model, args.batch, args.seq, dtypes.by_label(args.dtype).torch)
        compiled = compiler.compile(model, inputs, target=target)
        with torch.no_grad():
            expected = _logits(model(*inputs))
        actual = _logits(compiled(*inputs))
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
