"""`python -m compiler.opt`: run placement passes on a `wse` module, like mlir-opt.

    python -m compiler.opt --pass partition-stages model.mlir
    python -m compiler.opt --target mesh-4x4 --pass partition-stages,layout-regions - < in.mlir
    python -m compiler.opt --pass 'split-matmuls{reduce_algorithm=tree}' in.mlir -o out.mlir
    python -m compiler.opt --pipeline model.mlir
    python -m compiler.opt --list-passes

The input is module text as `compiler.mlir.print_module` writes it: a lowered module, or the
output of earlier passes. Passes run in the order given; `{field=value ...}` after a name sets
fields of that pass's options (`--list-passes` shows them). A module without `wse.placement`
gets one for `--target` (default mesh-8x8) and `--mode` (default pipelined); a module with one
keeps its target and mode, and naming others is an error. `--split-input-file` runs every chunk
between `// -----` lines alone. The result is verified and printed. Any error is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from compiler.mlir import ir, new_context, parse_module, print_module
from compiler.passes.common import MODES, PassContext, placement_attr, set_module_attr
from compiler.passes.pipeline import PlacementOptions, passes, run_passes
from core.errors import TargetError, WaferError
from core.outputs import output_file
from core.target import Target, load_target, presets

DEFAULT_TARGET = "mesh-8x8"
SPLIT = re.compile(r"^// -----[ \t]*$", re.MULTILINE)
PASS_SPEC = re.compile(r"\s*([\w-]+)\s*(?:\{([^{}]*)\})?\s*")


class OptError(Exception):
    """A bad command line or input file."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compiler.opt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", default="-", help="a .mlir file, or - for stdin")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--pass",
        dest="passes",
        action="append",
        default=[],
        metavar="NAME[{OPTIONS}][,...]",
        help="passes to run, in order (repeatable)",
    )
    chosen.add_argument("--pipeline", action="store_true", help="every pass, in pipeline order")
    parser.add_argument(
        "--target",
        help=f"preset ({', '.join(presets())}) or target file "
        f"(default: the module's, else {DEFAULT_TARGET})",
    )
    parser.add_argument("--mode", choices=MODES, help="default: the module's, else pipelined")
    parser.add_argument(
        "--split-input-file", action="store_true", help="run each `// -----` chunk alone"
    )
    parser.add_argument("-o", dest="output", default="-", help="output file (default: stdout)")
    parser.add_argument("--list-passes", action="store_true", help="describe the passes")
    args = parser.parse_args(argv)
    if args.list_passes:
        print(describe_passes())
        return 0
    try:
        if args.output != "-":
            output_file("-o", Path(args.output))
        steps = passes(PlacementOptions()) if args.pipeline else parse_passes(args.passes)
        text = read_input(args.input)
        chunks = split_input(text) if args.split_input_file else [text]
        name = "<stdin>" if args.input == "-" else args.input
        out = "// -----\n".join(run(c, name, steps, args.target, args.mode) for c in chunks)
        write_output(args.output, out)
    except (OptError, WaferError, ir.MLIRError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        print(f"compiler.opt: error: {'; '.join(lines)}", file=sys.stderr)
        return 2
    return 0


def describe_passes() -> str:
    """Every pass in pipeline order: its name, the first paragraph of its docstring, options."""
    lines = []
    for step in passes(PlacementOptions()):
        doc = sys.modules[type(step).__module__].__doc__ or ""
        summary = " ".join(doc.split("\n\n")[0].split()).removeprefix(f"`{step.name}`: ")
        options = " ".join(
            f"{f.name}={_show(getattr(step.options, f.name))}"
            for f in dataclasses.fields(step.options)
        )
        lines += [f"{step.name:<18} {summary}", f"{'':<18} options: {options}"]
    return "\n".join(lines)


def parse_passes(specs: list[str]) -> list:
    """New pass objects for `--pass` values: comma-separated names, each optionally followed by
    `{field=value ...}` setting fields of its options."""
    known = {step.name: step for step in passes(PlacementOptions())}
    steps = []
    for spec in specs:
        for item in re.split(r",(?![^{]*\})", spec):
            match = PASS_SPEC.fullmatch(item)
            if match is None or match[1] not in known:
                raise OptError(
                    f"unknown pass {item.strip()!r}: name one of {', '.join(known)}, optionally "
                    f"with {{field=value ...}} (see --list-passes)"
                )
            steps.append(_configured(known[match[1]], (match[2] or "").split()))
    return steps


def _configured(step, pairs: list[str]):
    """A new pass like `step` with the `field=value` pairs set in its options."""
    fields = {f.name: getattr(step.options, f.name) for f in dataclasses.fields(step.options)}
    values = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in fields or not raw:
            options = ", ".join(f"{k}={_show(v)}" for k, v in fields.items())
            raise OptError(f"{step.name} has no option {pair!r}: its options are {options}")
        values[key] = _value(step.name, key, raw, type(fields[key]))
    try:
        return type(step)(dataclasses.replace(step.options, **values))
    except ValueError as exc:
        raise OptError(f"{step.name}: {exc}") from exc


def _value(pass_name: str, key: str, raw: str, kind: type):
    try:
        return {"true": True, "false": False}[raw.lower()] if kind is bool else kind(raw)
    except (KeyError, ValueError):
        wanted = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise OptError(f"{pass_name} option {key} must be {wanted}, not {raw!r}") from None


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_input(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeError) as exc:
        raise OptError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def write_output(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise OptError(f"cannot write {path}: {exc.strerror}") from exc


def split_input(text: str) -> list[str]:
    """The chunks between `// -----` lines, each padded with newlines so that line numbers in
    errors and locations stay those of the file."""
    starts = [0] + [m.end() for m in SPLIT.finditer(text)]
    ends = [m.start() for m in SPLIT.finditer(text)] + [len(text)]
    return ["\n" * text.count("\n", 0, a) + text[a:b] for a, b in zip(starts, ends, strict=True)]


def run(text: str, name: str, steps: list, target: str | None, mode: str | None) -> str:
    """Parse one module, run `steps` on it, verify it and return its text."""
    context = new_context()
    try:
        module = parse_module(text, context)
    except ir.MLIRError as exc:
        message = (
            str(exc).removeprefix("Unable to parse module assembly:").replace('"-":', f"{name}:")
        )
        raise OptError(f"cannot parse {name}: {message.strip()}") from exc
    with context, ir.Location.unknown():
        run_passes(module, steps, PassContext(*_placement(module, target, mode)))
        return print_module(module)


def _placement(module: ir.Module, target: str | None, mode: str | None) -> tuple[Target, str]:
    """The target and mode to run with; sets `wse.placement` on a module without one."""
    attributes = module.operation.attributes
    if "wse.placement" not in attributes:
        found, mode = load_target(target or DEFAULT_TARGET), mode or "pipelined"
        set_module_attr(module, "wse.placement", placement_attr(found, mode))
        return found, mode
    placed = ir.DictAttr(attributes["wse.placement"])
    own = ir.StringAttr(placed["target"]).value
    try:
        found = load_target(target or own)
    except TargetError as exc:
        hint = "" if target else " (the module's wse.placement names it): pass --target FILE"
        raise OptError(f"{exc}{hint}") from exc
    mode = mode or ir.StringAttr(placed["mode"]).value
    if placement_attr(found, mode) != placed:
        raise OptError(
            f"the module is placed for {placed} (its wse.placement), not for --target "
            f"{found.name} --mode {mode}: drop those options, or start from a module without "
            f"wse.placement"
        )
    return found, mode


if __name__ == "__main__":
    sys.exit(main())
