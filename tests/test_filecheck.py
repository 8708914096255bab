"""FileCheck tests as files: every `tests/filecheck/*.mlir` runs its `// RUN:` lines
(`compiler.opt ARGS %s | filecheck %s ARGS`, `compiler.opt` in-process); plus the errors
`compiler.opt` reports, and that it runs the passes exactly as the placement pipeline does."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from compiler import opt
from compiler.passes import PlacementOptions, passes, place

CASES = Path(__file__).with_name("filecheck")
FILECHECK = Path(sys.executable).with_name("filecheck")


def run_opt(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """`python -m compiler.opt ARGV` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            status = opt.main(argv)
    finally:
        sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


def run_lines(path: Path) -> list[tuple[list[str], list[str]]]:
    """The file's RUN lines as (compiler.opt arguments, filecheck arguments), `%s` replaced."""
    runs = []
    for line in path.read_text().splitlines():
        if not line.startswith("// RUN:"):
            continue
        left, bar, right = line.removeprefix("// RUN:").partition("|")
        command, check = (
            [str(path) if arg == "%s" else arg for arg in shlex.split(part)]
            for part in (left, right)
        )
        assert bar and command[:1] == ["compiler.opt"] and check[:1] == ["filecheck"], (
            f"{path.name}: a RUN line is `compiler.opt ARGS %s | filecheck %s ARGS`, not {line!r}"
        )
        runs.append((command[1:], check[1:]))
    assert runs, f"{path.name} has no // RUN: line"
    return runs


@pytest.mark.parametrize("path", sorted(CASES.glob("*.mlir")), ids=lambda p: p.name)
def test_filecheck_file(path):
    for command, check in run_lines(path):
        status, out, err = run_opt(command)
        assert status == 0, f"compiler.opt {shlex.join(command)}: {err}"
        result = subprocess.run(
            [str(FILECHECK), *check], input=out, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (
            f"compiler.opt {shlex.join(command)} | filecheck {shlex.join(check)}\n"
            + result.stdout
            + result.stderr
        )


def test_every_pass_has_a_filecheck_file():
    names = {step.name for step in passes(PlacementOptions())}
    assert names <= {path.stem for path in CASES.glob("*.mlir")}


def test_each_pass_alone_gives_what_the_pipeline_prints_after_it(capsys):
    """Running the passes one at a time, each on the text the previous one printed, gives the
    IR `place(..., print_after="all")` prints after each pass."""
    text = (CASES / "pipeline.mlir").read_text()
    place(text, "mesh-8x8", "pipelined", print_after="all")
    dumps = capsys.readouterr().out.split("// -----// IR Dump After ")[1:]
    steps = passes(PlacementOptions())
    assert len(dumps) == len(steps)
    for step, dump in zip(steps, dumps, strict=True):
        header, _, expected = dump.partition("\n")
        assert header == f"{step.name} //----- //"
        status, text, err = run_opt(["--pass", step.name, "-"], stdin=text)
        assert status == 0, err
        assert text.strip() == expected.strip(), step.name


BIG = """module {
  func.func @forward(%arg0: tensor<1x4096xf32>) -> tensor<1x4096xf32> {
    %0 = "wse.param"() {sym_name = "layers.0.weight"} : () -> tensor<4096x4096xf32>
    %1 = "wse.matmul"(%arg0, %0) {operandSegmentSizes = array<i32: 1, 1, 0>}
      : (tensor<1x4096xf32>, tensor<4096x4096xf32>) -> tensor<1x4096xf32>
    return %1 : tensor<1x4096xf32>
  }
}"""
PLACED = (CASES / "layout-regions.mlir").read_text().split("\n// -----\n")[0]


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["--pass", "tile-weight", "-"], BIG, "unknown pass 'tile-weight': name one of"),
        (["--pass", "split-matmuls{rows=2}", "-"], BIG, "split-matmuls has no option 'rows=2'"),
        (["-"], "module { garbage", "cannot parse <stdin>: error: <stdin>:1:10: custom op"),
        (["no/such/file.mlir"], "", "cannot read no/such/file.mlir: No such file or directory"),
        (
            ["--target", "mesh-4x4", "--pass", "partition-stages,layout-regions", "-"],
            BIG,
            "pipelined placement needs 67.13 MB of SRAM",
        ),
        (
            ["--mode", "streaming", "-"],
            PLACED,
            'the module is placed for {grid = [8, 8], mode = "p',
        ),
    ],
    ids=["unknown-pass", "unknown-option", "malformed", "missing-file", "too-big", "other-mode"],
)
def test_errors_are_one_line_and_exit_status_2(argv, stdin, message):
    status, out, err = run_opt(argv, stdin)
    assert (status, out) == (2, "")
    assert err.startswith("compiler.opt: error: ") and err.count("\n") == 1, err
    assert message in err


def test_list_passes_names_every_pass_in_order_with_its_summary():
    status, out, _ = run_opt(["--list-passes"])
    assert status == 0
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == [step.name for step in passes(PlacementOptions())]
    assert "split-matmuls      turn every matmul on a tiled weight into per-PE products" in out
    assert "reduce_algorithm=auto rows_per_pass=8" in out


def test_repeated_and_comma_separated_passes_agree_and_o_writes_the_file(tmp_path):
    source = str(CASES / "partition-stages.mlir")
    written = tmp_path / "out.mlir"
    argv = ["--pass", "partition-stages", "--pass", "layout-regions", source, "-o", str(written)]
    assert run_opt(argv) == (0, "", "")
    status, out, _ = run_opt(["--pass", "partition-stages,layout-regions", source])
    assert status == 0 and written.read_text() == out
    assert "wse.stage_regions" in out
