"""The `wafersim` command (also `python -m simulator`).

Subcommands live in one table, `COMMANDS`, one module each: each module's `COMMAND` names its
help line, a function that adds its arguments to its subparser, and a function that runs it and
returns the exit status. Bad input exits with status 2 and one line on stderr:
`wafersim: error: <reason>`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rich.console import Console

from core.arguments import Parser
from core.errors import WaferError
from simulator.cli import kernel, ops, run, shard_plan, sweep, targets, verify
from simulator.cli.common import Command

COMMANDS: dict[str, Command] = {
    "kernel": kernel.COMMAND,
    "targets": targets.COMMAND,
    "verify": verify.COMMAND,
    "ops": ops.COMMAND,
    "run": run.COMMAND,
    "sweep": sweep.COMMAND,
    "shard-plan": shard_plan.COMMAND,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="wafersim", description="Cycle-approximate wafer-scale simulator.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `wafersim`; returns the exit status."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch/transformers pytree noise
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args, Console())
    except (WaferError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        print(f"wafersim: error: {reason}", file=sys.stderr)
        return 2
