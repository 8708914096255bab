"""Catalogue rows for hostile inputs: inputs that once crashed with a raw traceback or a
misleading message, resource bounds that must fail before allocating, and output paths that
must be checked before the work starts. Each raises a named `WaferError`.

Command-line rows run the CLI's `main` in-process: it must exit with status 2 and print one
line `<prog>: error: <reason>` on stderr; `CliFailed` carries that line.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from catalogue import Case
from torch import nn

import compiler
from compiler.__main__ import main as compiler_main
from core.errors import (
    DynamicShapeError,
    EmptyTensorError,
    PlacementError,
    TargetError,
    TensorTooLargeError,
    UnsupportedOperatorError,
    UnsupportedValueError,
    WaferError,
)
from core.target import PRESET_DIR, load_target
from simulator.cli import main as wafersim_main

NAMED, BOUND, OUTPUT = "named-error", "resource-bound", "output-path"


class CliFailed(WaferError):
    """A command line exited with status 2 and one `<prog>: error: ...` line (the message)."""


def _cli(main: Callable[[list[str]], int], prog: str, *argv: str) -> Callable[[Path], object]:
    """Run `main(argv)` ("{tmp}" in an argument is the case's directory); raise `CliFailed`."""

    def run(tmp: Path) -> object:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main([a.format(tmp=tmp) for a in argv])
        lines = err.getvalue().strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), (
            f"exit status {status}, stderr:\n{err.getvalue()}"
        )
        raise CliFailed(lines[0])

    return run


def _compiler(*argv: str) -> Callable[[Path], object]:
    return _cli(compiler_main, "python -m compiler", *argv)


def _wafersim(*argv: str) -> Callable[[Path], object]:
    return _cli(wafersim_main, "wafersim", *argv)


def _blocked(tmp: Path) -> Path:
    """A plain file where an output path wants a directory."""
    (tmp / "blocker").write_text("not a directory")
    return tmp / "blocker"


def _after(prepare: Callable[[Path], object], run: Callable[[Path], object]):
    """`prepare(tmp)`, then `run(tmp)`."""
    return lambda tmp: (prepare(tmp), run(tmp))


# ---------------------------------------------------------------------------- models


class _Returns(nn.Module):
    """Returns `make(x)`: what the model hands back decides the case."""

    def __init__(self, make: Callable[[torch.Tensor], object]):
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


class _Splat(nn.Module):
    """Adds a `torch.zeros(shape)` constant the model builds itself."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return torch.zeros(self.shape) + x


def _compile(model: nn.Module, *inputs, target: object = None):
    return lambda tmp: compiler.compile(model, inputs, target=target)


def _dynamic(tmp: Path) -> object:
    """torch.compile(dynamic=True): dynamo wraps every backend error in BackendCompilerFailed;
    the error inside is Wafer's."""
    compiled = torch.compile(nn.Linear(4, 4), backend="wafer", dynamic=True)
    try:
        return compiled(torch.randn(3, 4))
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        raise exc.inner_exception from exc


def _fast(run: Callable[[Path], object], seconds: float = 3.0, megabytes: int = 500):
    """`run`, asserting it fails within `seconds` and grows the peak memory by < `megabytes`
    (a resource bound holds only if it fails before allocating)."""

    def checked(tmp: Path) -> object:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        clock = time.perf_counter()
        try:
            return run(tmp)
        finally:
            elapsed = time.perf_counter() - clock
            grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
            assert elapsed < seconds, f"took {elapsed:.1f} s"
            assert grown_mb < megabytes, f"peak memory grew by {grown_mb:.0f} MB"

    return checked


# ---------------------------------------------------------------------------- targets


def _target_file(name: str, content: bytes | Callable[[dict], None]):
    """A target file: raw bytes, or the mesh-8x8 preset changed in place by a function."""

    def load(tmp: Path) -> object:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            data = json.loads((PRESET_DIR / "mesh-8x8.json").read_text())
            content(data)
            path.write_text(json.dumps(data))
        return load_target(path)

    return load


def _field(name: str, value: object) -> Callable[[dict], None]:
    return lambda data: data["fields"][name].update(value=value)


def _grid(side: int) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        _field("grid_width_pes", side)(data)
        _field("grid_height_pes", side)(data)

    return change


_RUN = ("run", "tiny-mamba", "--target", "mesh-8x8", "--seq", "8", "--decode", "0")

CASES: list[Case] = [
    # -- crashes on inputs that passed validation
    Case(
        NAMED,
        "zero-size batch with a target",
        _compile(nn.Linear(8, 8), torch.randn(0, 8), target="mesh-8x8"),
        EmptyTensorError,
        "multiplies a tensor of shape [0, 8], with no elements",
    ),
    Case(
        BOUND,
        "sram_bytes_per_pe of 1e30",
        _target_file("sram.json", _field("sram_bytes_per_pe", 1e30)),
        TargetError,
        "field 'sram_bytes_per_pe' is 1e+30, above the bound of 1,073,741,824",
    ),
    Case(
        BOUND,
        "a 65536 x 65536 mesh",
        _fast(_target_file("mesh.json", _grid(65536))),
        TargetError,
        "4,294,967,296 PEs, more than the 893,064 of the largest published wafer",
    ),
    Case(
        BOUND,
        "a 2**28-element zeros constant on a small mesh",
        _fast(_compile(_Splat((1 << 28,)), torch.randn(1), target="mesh-8x8")),
        PlacementError,
        "64 PEs overflow by 2.14 GB",
    ),
    Case(
        BOUND,
        "a 51 GB zeros constant",
        _fast(_compile(_Splat((1 << 32, 3)), torch.randn(1), target="wse3")),
        PlacementError,
        "PEs overflow by 66.91 GB",
    ),
    Case(
        BOUND,
        "a constant whose size overflows 64 bits",
        _fast(_compile(_Splat((1 << 40, 1 << 30)), torch.randn(1))),
        TensorTooLargeError,
        "the model builds a tensor of shape (1099511627776, 1073741824)",
    ),
    # -- misleading errors
    Case(
        NAMED,
        "BatchNorm in eval mode",
        _compile(nn.BatchNorm1d(4).eval(), torch.randn(2, 4)),
        UnsupportedOperatorError,
        "batch norm in eval mode has no lowering rule: fold it into the convolution or linear",
    ),
    # -- raw tracebacks
    *(
        Case(
            NAMED,
            f"python -m compiler {flag} {value}",
            _compiler("tiny-gpt2", flag, value),
            CliFailed,
            f"argument {flag}: expected a whole number from 1 to 16,777,216",
        )
        for flag, value in (("--seq", "0"), ("--seq", "-1"), ("--batch", "0"))
    ),
    Case(
        NAMED,
        "python -m compiler --seq beyond the model's maximum",
        _compiler("tiny-gpt2", "--seq", "5000"),
        CliFailed,
        "--seq 5000 is beyond tiny-gpt2's maximum context of 64 tokens",
    ),
    Case(
        NAMED,
        "wafersim run --seq beyond int64",
        _wafersim("run", "tiny-gpt2", "--seq", "99999999999999999999999"),
        CliFailed,
        "argument --seq: expected a whole number from 1 to 16,777,216 (2**24)",
    ),
    Case(
        BOUND,
        "wafersim run with more tokens than any wafer holds",
        _wafersim("run", "tiny-mamba", "--batch", "4096", "--seq", "8192"),
        CliFailed,
        "= 33,619,968 tokens, over the bound of 16,777,216",
    ),
    Case(
        NAMED,
        "wafersim verify --seq beyond the model's maximum",
        _wafersim("verify", "tiny-gpt2", "--seq", "1000"),
        CliFailed,
        "--seq 1000 is beyond tiny-gpt2's maximum context of 64 tokens",
    ),
    Case(
        NAMED,
        "a sparse tensor as output",
        _compile(_Returns(lambda x: (x * 2).to_sparse()), torch.randn(4, 4)),
        UnsupportedValueError,
        "the model's output is a torch.sparse_coo tensor",
    ),
    Case(
        NAMED,
        "a generator as output",
        _compile(_Returns(lambda x: (x * 2, torch.Generator())), torch.randn(4)),
        UnsupportedValueError,
        "the model's output[1] is a torch._C.Generator",
    ),
    Case(
        NAMED,
        "a dtype as output",
        _compile(_Returns(lambda x: (x * 2, x.dtype)), torch.randn(4)),
        UnsupportedValueError,
        "the model's output[1] is a torch.dtype (torch.float32)",
    ),
    Case(
        NAMED,
        "torch.compile(backend='wafer', dynamic=True)",
        _dynamic,
        DynamicShapeError,
        "Use torch.compile(..., dynamic=False)",
    ),
    Case(
        NAMED,
        "meta example inputs with real weights",
        _compile(nn.Linear(8, 8), torch.randn(2, 8, device="meta")),
        UnsupportedValueError,
        "the example inputs are on the meta device but the model's weights are real",
    ),
    Case(
        NAMED,
        "target file of invalid UTF-8",
        _target_file("latin1.json", b'{"name": "caf\xe9"}'),
        TargetError,
        "is not UTF-8 text (byte 13)",
    ),
    Case(
        NAMED,
        "target value of 10**400",
        _target_file("huge.json", _field("grid_width_pes", 10**400)),
        TargetError,
        "field 'grid_width_pes' is a 401-digit number",
    ),
    Case(
        NAMED,
        "target file holding a list",
        _target_file("list.json", b"[1, 2]"),
        TargetError,
        "expected an object with 'name', 'wafer' and 'fields'",
    ),
    Case(
        NAMED,
        "target=42",
        _compile(nn.Linear(2, 2), torch.randn(1, 2), target=42),
        TargetError,
        "a path to a target file or a Target, got int 42",
    ),
    Case(
        BOUND,
        "target file of 2 MB",
        _target_file("big.json", b" " * (2 << 20)),
        TargetError,
        "is over 1,048,576 bytes",
    ),
    # -- output paths: checked before the work, nothing written under out/
    Case(
        OUTPUT,
        "wafersim run --trace under a file",
        _after(
            _blocked,
            _wafersim(*_RUN, "--plot", "{tmp}/out/plots", "--trace", "{tmp}/blocker/trace.json"),
        ),
        CliFailed,
        "blocker is a file, not a directory",
    ),
    Case(
        OUTPUT,
        "wafersim run --plot under a file",
        _after(
            _blocked,
            _wafersim(*_RUN, "--trace", "{tmp}/out/trace.json", "--plot", "{tmp}/blocker/plots"),
        ),
        CliFailed,
        "/blocker/plots: ",
    ),
    Case(
        OUTPUT,
        "wafersim kernel --trace to a directory",
        _wafersim("kernel", "gemv", "--trace", "{tmp}"),
        CliFailed,
        "is a directory; give a file name in it",
    ),
    Case(
        OUTPUT,
        "wafersim sweep --plot onto a file",
        _after(_blocked, _wafersim("sweep", "tiny-mamba", "--seq", "8", "--plot", "{tmp}/blocker")),
        CliFailed,
        "blocker is a file, not a directory",
    ),
]
