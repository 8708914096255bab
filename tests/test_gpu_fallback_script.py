"""benchmarks/gpu_fallback.py --quick: prepare with the compiler, then run in a process where
`compiler` and `torch_mlir` cannot be imported, and check the report."""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_fallback.py"

# Runs the script's `run` phase with the compiler and MLIR blocked (as tests/test_artifact.py).
BLOCKED = """
import importlib.abc, runpy, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch_mlir", "compiler"):
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

ROWS = [
    ("tiny-gpt2 HF fp32 seq32", ("eager", "torch.compile", "wafer jax")),
    ("tiny-gpt2 HF bf16 seq32", ("eager", "torch.compile", "wafer jax")),
    ("tiny-mamba HF seq32", ("eager", "wafer jax")),
    ("tiny-mamba HF seq64", ("eager", "wafer jax")),
    ("tiny-mamba ref seq32", ("eager", "torch.compile", "wafer jax")),
    ("tiny-mamba ref seq64", ("eager", "torch.compile", "wafer jax")),
    ("tiny-mamba ref decode x8", ("eager", "wafer jax")),
    ("tiny-gpt2 ref decode x8", ("eager", "wafer jax")),
]


def _run(*args: str, status: int = 0) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == status, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _run_without_compiler(out, *args: str, status: int = 0) -> str:
    return _run(
        sys.executable, "-c", BLOCKED, str(SCRIPT),
        "run", "--quick", "--device", "cpu", "--artifacts", str(out), *args, status=status,
    )  # fmt: skip


def test_quick_prepare_and_run_without_compiler(tmp_path):
    out = tmp_path / "gpu"
    _run(sys.executable, str(SCRIPT), "prepare", "--quick", "--out", str(out))
    assert (out / "index.json").is_file() and not list(out.rglob("*.safetensors"))
    manifest = json.loads((out / "gpt2-decode" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and "weights.safetensors" in manifest["files"]
    report = _run_without_compiler(out)
    lines = report.splitlines()
    for case, impls in ROWS:
        for impl in impls:
            row = [line for line in lines if line.startswith(f"{case}  ") and f"  {impl}  " in line]
            assert len(row) == 1, (case, impl, report)
            assert "failed" not in row[0], row[0]
            if impl != "eager":
                assert re.search(r"\s(ok|high|ill-cond)(\s|$)", row[0]), row[0]
    assert sum("PASS" in line or "FAIL" in line for line in lines) == 5
    assert "gross mismatches: none" in report and "failed runs: none" in report

    # The runtime checks the rebuilt weights against the sha256 that prepare recorded.
    manifest["files"]["weights.safetensors"] = "0" * 64
    (out / "gpt2-decode" / "manifest.json").write_text(json.dumps(manifest))
    report = _run_without_compiler(out, "--only", "gpt2-decode", status=1)
    assert "ArtifactError" in report and "rebuilt from the seeded model" in report
    assert "failed runs: gpt2-decode wafer jax" in report
