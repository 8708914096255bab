"""The Hugging Face family matrix: every decoder-only family x stage (tests/families.py).

Prints one row per family (✔ or a short failure reason per stage), a count per stage and the
excluded families with their reasons; `--markdown PATH` also writes the table as markdown and
`--errors PATH` the full error of every failing cell. Each family runs in its own process
(`--jobs` at a time, at most `--timeout` seconds each). CPU heavy: run it with `nice`.

    nice .venv/bin/python benchmarks/families.py --jobs 2 --markdown out/families.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import families  # noqa: E402

Row = dict[str, dict[str, str]]  # stage -> {"mark", "error", "note"}


PARTS = {"tiny": families.STAGES[:4], "default": families.STAGES[4:]}


def _one(model_type: str, part: str) -> None:
    """Run one part of one family and print its cells as JSON (the child process)."""
    cells = families.run_family(model_type, PARTS[part])
    row = {s: {"mark": c.mark, "error": c.error, "note": c.note} for s, c in cells.items()}
    print("ROW " + json.dumps(row))


def _child(model_type: str, part: str, timeout: float) -> Row:
    """One part of a family in a fresh process; a crash or a timeout fills its cells."""
    command = [sys.executable, __file__, "--one", model_type, "--part", part]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return _all(PARTS[part], f"timeout > {timeout:g} s", "")
    for line in done.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return _all(PARTS[part], f"crash (exit {done.returncode})", tail)


def _all(stages: tuple[str, ...], mark: str, error: str) -> Row:
    return {s: {"mark": mark, "error": error or mark, "note": ""} for s in stages}


def table(rows: dict[str, Row]) -> list[str]:
    """Markdown rows: family x stage, then the count of ✔ per stage."""
    head = ["family", *families.STAGES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        marks = [row.get(s, {"mark": "…"})["mark"].replace("|", "/") for s in families.STAGES]
        lines.append("| " + " | ".join([name, *marks]) + " |")
    counts = [
        sum(row.get(s, {}).get("mark") == "✔" for row in rows.values()) for s in families.STAGES
    ]
    lines.append("| " + " | ".join([f"✔ of {len(rows)}", *map(str, counts)]) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="model types (default: every kept family)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per family")
    p.add_argument("--markdown", type=Path, help="write the table as markdown here")
    p.add_argument("--errors", type=Path, help="write every failing cell's full error here")
    p.add_argument("--json", type=Path, help="write every cell (mark, error, note) here")
    p.add_argument(
        "--part", choices=PARTS, help="only the tiny stages or only the default-size ones"
    )
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        _one(args.one, args.part)
        return 0
    names = args.names or families.families()
    rows: dict[str, Row] = {name: {} for name in names}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        parts = [args.part] if args.part else list(PARTS)
        jobs = {
            pool.submit(_child, name, part, args.timeout): (name, part)
            for name in names
            for part in parts
        }
        for future in concurrent.futures.as_completed(jobs):
            name, part = jobs[future]
            rows[name].update(future.result())
            marks = "  ".join(f"{s}={rows[name][s]['mark']}" for s in PARTS[part])
            print(f"{name} ({part}): {marks}", flush=True)
            _write(args, rows)
    print("\n".join(table(rows)))
    print("\nexcluded:")
    for name, reason in families.exclusions().items():
        print(f"  {name}: {reason}")
    return 0


def _write(args: argparse.Namespace, rows: dict[str, Row]) -> None:
    """The table and errors so far (a long run leaves a usable partial result)."""
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(table(rows)) + "\n", encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.errors:
        args.errors.parent.mkdir(parents=True, exist_ok=True)
        errors = {
            f"{name} / {stage}": cell["error"]
            for name, row in rows.items()
            for stage, cell in row.items()
            if cell["mark"] != "✔"
        }
        args.errors.write_text(json.dumps(errors, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
