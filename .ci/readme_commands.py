"""Run every command the README shows, as written, from the checkout's root.

Each line of a ```sh block is one command (comments after `#` dropped; the `make` lines are the
README's own set-up commands, which CI runs already); each ```python block runs as one script.
The virtual environment's `bin` comes first on PATH, so `wafersim` and `python` are the
project's. A command fails on a non-zero exit status or after `--timeout` seconds. Prints one
line per command and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.M | re.S)


def commands(readme: str) -> list[tuple[str, str]]:
    """(kind, text) for every command of the README, in order."""
    found = []
    for kind, body in BLOCK.findall(readme):
        if kind == "python":
            found.append(("python", body))
            continue
        for line in body.splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith(("#", "make ")):
                found.append(("sh", command))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command")
    args = parser.parse_args()
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    failed = 0
    for kind, text in commands((ROOT / "README.md").read_text()):
        argv = ["python", "-c", text] if kind == "python" else ["bash", "-c", text]
        label = text.strip().splitlines()[0] + (" ..." if kind == "python" else "")
        clock = time.perf_counter()
        try:
            done = subprocess.run(
                argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout
            )
            status = done.returncode
            output = done.stdout + done.stderr
        except subprocess.TimeoutExpired:
            status, output = -1, f"timed out after {args.timeout:g} s"
        seconds = time.perf_counter() - clock
        print(f"{'ok  ' if status == 0 else 'FAIL'} {seconds:7.1f} s  {label}", flush=True)
        if status != 0:
            failed += 1
            print("\n".join("      " + line for line in output.strip().splitlines()[-15:]))
    total = len(commands((ROOT / "README.md").read_text()))
    print(f"README commands: {total - failed} of {total} ran cleanly")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
