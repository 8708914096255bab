"""SHA-256 of what `wafersim run` produces, for refactors that must not change behaviour.

For each case it runs `wafersim run ... --json` in-process, drops the wall-time fields
(`compile_seconds`, `simulate_seconds`, `pass_seconds`), and hashes the report and every placed
MLIR module that `compiler.compile` produced on the way. Absolute paths of the checkout are
replaced by `<root>` so two checkouts compare equal. Run it before and after a change:

    python benchmarks/report_hashes.py > before.txt   # on the old commit
    python benchmarks/report_hashes.py > after.txt    # on the new one
    diff before.txt after.txt

`--dump DIR` also writes the normalised reports and modules there, to diff what moved.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
from pathlib import Path

import compiler
import compiler.api
from simulator.cli import main as wafersim

# --no-cache: every placement is compiled (and recorded), none read from or left in a cache.
CASES = {
    "gpt2-small": ["run", "gpt2-small", "--json", "--no-cache"],
    "mamba-130m": ["run", "mamba-130m", "--json", "--no-cache"],
    "llama-8b-wse2": ["run", "llama-8b", "--target", "wse2", "--json", "--no-cache"],
}
TIMING = {"compile_seconds", "simulate_seconds", "pass_seconds"}
ROOT = str(Path(compiler.__file__).resolve().parents[1])


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def case_hashes(argv: list[str], dump: Path | None, name: str) -> dict:
    """Run one `wafersim` command; the hashes of its report and of its placed modules."""
    placed: list[str] = []
    compile_function = compiler.api.compile

    def recording_compile(*args, **kwargs):
        compiled = compile_function(*args, **kwargs)
        if compiled.placed is not None:
            placed.append(compiled.placed.mlir.replace(ROOT, "<root>"))
        return compiled

    output = io.StringIO()
    with contextlib.ExitStack() as stack:
        for module in (compiler, compiler.api):
            stack.enter_context(_patched(module, "compile", recording_compile))
        stack.enter_context(contextlib.redirect_stdout(output))
        status = wafersim(argv)
    if status != 0:
        raise SystemExit(f"wafersim {' '.join(argv)} exited with {status}")
    report = json.dumps(_without_timing(json.loads(output.getvalue())), indent=1, sort_keys=True)
    report = report.replace(ROOT, "<root>")
    if dump is not None:
        (dump / f"{name}.json").write_text(report)
        for index, text in enumerate(placed):
            (dump / f"{name}.placed{index}.mlir").write_text(text)
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    return {"report": digest(report), "placed_mlir": [digest(text) for text in placed]}


@contextlib.contextmanager
def _patched(owner, name: str, value):
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", choices=[[], *CASES], help="default: all")
    parser.add_argument("--dump", type=Path, help="write normalised reports and modules here")
    args = parser.parse_args()
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
    for name in args.cases or CASES:
        print(name, json.dumps(case_hashes(CASES[name], args.dump, name)), flush=True)


if __name__ == "__main__":
    main()
