"""Command-line arguments both CLIs (`python -m compiler`, `wafersim`) parse the same way.

`Parser` turns argparse's usage errors into `CommandLineError`, so each CLI prints one line
and exits with status 2. `positive` and `non_negative` are argparse types for counts of
tokens and sequences, bounded by `MAX_TOKENS`.
"""

from __future__ import annotations

import argparse
import re

from core.errors import CommandLineError

# The most tokens (batch x sequence) a command may ask for: beyond this even a small model's
# activations exceed any wafer's SRAM, and sizes stay far inside int64.
MAX_TOKENS = 1 << 24


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors raise `CommandLineError` instead of exiting."""

    def error(self, message: str):
        raise CommandLineError(message)


def _count(text: str, low: int) -> int:
    digits = text.strip()
    if not re.fullmatch(r"[0-9]{1,9}", digits) or not low <= int(digits) <= MAX_TOKENS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {low} to {MAX_TOKENS:,} (2**24), got {text!r:.40}"
        )
    return int(digits)


def positive(text: str) -> int:
    """A whole number from 1 to `MAX_TOKENS`; argparse type for counts of tokens and sequences."""
    return _count(text, 1)


def non_negative(text: str) -> int:
    """A whole number from 0 to `MAX_TOKENS`; argparse type (e.g. `--decode`)."""
    return _count(text, 0)
