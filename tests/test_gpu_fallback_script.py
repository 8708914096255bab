"""benchmarks/gpu_fallback.py --quick: prepare with the compiler, then run in a process where
`compiler` and `torch_mlir` cannot be imported, and check the report; on one device, and
sharded over two host devices (`--devices 2`)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "gpu"
    _run(sys.executable, str(SCRIPT), "prepare", "--quick", "--out", str(out))
    return out


def _check(row: str) -> None:
    assert "failed" not in row, row
    assert re.search(r"\s(ok|high|ill-cond)(\s|$)", row), row


def test_quick_prepare_and_run_without_compiler(prepared, tmp_path):
    out = shutil.copytree(prepared, tmp_path / "gpu")
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
                _check(row[0])
    assert sum("PASS" in line or "FAIL" in line for line in lines) == 5
    assert "gross mismatches: none" in report and "failed runs: none" in report
    assert "GPU figures: not measured (this run is on the cpu, not a GPU)" in report

    # The runtime checks the rebuilt weights against the sha256 that prepare recorded.
    manifest["files"]["weights.safetensors"] = "0" * 64
    (out / "gpt2-decode" / "manifest.json").write_text(json.dumps(manifest))
    report = _run_without_compiler(out, "--only", "gpt2-decode", status=1)
    assert "ArtifactError" in report and "rebuilt from the seeded model" in report
    assert "failed runs: gpt2-decode wafer jax" in report


def test_sharded_over_two_host_devices(prepared):
    """`--devices 2`: each case also runs sharded over two CPU devices (XLA_FLAGS set by the
    script), prefill and decode, and matches eager."""
    cases = ["mamba-hf-32", "mamba-decode", "gpt2-decode"]
    report = _run_without_compiler(prepared, "--devices", "2", "--only", *cases)
    assert "wafer jax x2: the Wafer program sharded over 2 JAX devices" in report
    for label in ("tiny-mamba HF seq32", "tiny-mamba ref decode x8", "tiny-gpt2 ref decode x8"):
        rows = [line for line in report.splitlines() if line.startswith(f"{label}  ")]
        assert [re.split(r"\s{2,}", r)[1] for r in rows if "wafer" in r] == [
            "wafer jax", "wafer jax x2"
        ], report  # fmt: skip
        for row in rows[1:]:
            _check(row)
    assert "gross mismatches: none" in report and "failed runs: none" in report

    argv = [sys.executable, str(SCRIPT), "run", "--quick", "--device", "cpu", "--devices", "4"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [*argv, "--artifacts", str(prepared)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1 and "--devices 4, but JAX sees 2" in done.stderr
