"""GPU fallback check: eager PyTorch vs torch.compile vs the Wafer JAX runtime, on one device
or sharded over several.

Two phases, because the GPU machine has no torch-mlir (so no `compiler`):

    python benchmarks/gpu_fallback.py prepare --out artifacts/gpu [--quick]
    PYTHONPATH=. python benchmarks/gpu_fallback.py run --artifacts artifacts/gpu \
        [--device cuda|cpu] [--devices N] [--repeat N] [--only CASE ...] [--quick]

(`PYTHONPATH=.` where the project is not pip-installed, as on the GPU host.)

`prepare` compiles every case and saves it as a runtime artifact (`CompiledModule.save`) in
`CASE/`, plus an `index.json` of the cases; it then deletes each `weights.safetensors`
(GPT-2-small alone is ~500 MB in fp32), keeping its sha256 in the artifact's manifest. `run`
imports neither `compiler` nor `torch_mlir`: it rebuilds each model with the same seed from
the models registry (`models.build`, or `models.build_hf` for the Hugging Face twin), writes
the program's weights from the model's state_dict into a copy of the artifact, and loads it with
`runtime.load(..., runtime="jax")`, which checks them against the sha256 `prepare` recorded; so
eager and Wafer read identical weights. It prints median latencies, errors against eager and
against a float64 copy of the model (`core.numerics.output_error`), and a summary of the goals.
`--devices N` adds a row per case ("wafer jax xN"): the same artifact loaded with
`runtime.load(..., devices=N)`, sharded over N JAX devices (`runtime.jax_sharded`); on the CPU
the script has XLA show N host devices. The goals stay one-device figures.
Exit status 1 when an eager or Wafer run fails or an output differs grossly from eager while
being further than eager from float64 (see `core.numerics`, ILL_CONDITIONED_FACTOR).
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils import _pytree as pytree

import models
import runtime
from core.errors import ArtifactError
from core.numerics import (
    GROSS_OUTPUT_ERRORS,
    ILL_CONDITIONED_FACTOR,
    OUTPUT_TOLERANCES,
    output_error,
)
from runtime import artifact
from runtime.program import Program

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU with torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from configs; the GPU host is offline

SEED = 0  # model weights
INPUT_SEED = 1  # token ids
DECODE_STEPS = {False: 64, True: 8}
MEASURE_BUDGET_S = 5.0  # per measurement, warm-up included; at least one timed run
SLOW_CALL_S = 1.0  # a first call slower than this gets no second warm-up
# An error (`output_error` against eager) above GROSS_OUTPUT_ERRORS is a mismatch unless it is at
# most ILL_CONDITIONED_FACTOR times further than eager from a float64 run ("ill-cond": the model
# amplifies rounding; the randomly initialised HF Mamba-130M's residual stream reaches ~1e3, and
# its fp32 eager logits are ~6e-3 from float64 at seq 512 on the CPU).
EAGER, COMPILE, WAFER = "eager", "torch.compile", "wafer jax"
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"
README_SECTION = "README.md, 'GPU fallback figures' (with the date and the GPU)"


# ---------------------------------------------------------------------------- models and cases


@dataclass(frozen=True)
class Case:
    """One benchmarked graph of the registered model `model`. `kind` is "hf" (its Hugging Face
    twin, `model(ids, use_cache=False)`), "prefill" or "decode" (the reference model's graphs);
    `seq` is the prompt length, or decode steps."""

    name: str
    label: str
    model: str
    dtype: str
    kind: str
    seq: int

    @property
    def model_key(self) -> str:
        return f"{'hf' if self.kind == 'hf' else 'ref'}:{self.model}/{self.dtype}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def cases(quick: bool) -> list[Case]:
    """Every case, grouped by model so each model is built once per phase."""
    gpt2, mamba = ("tiny-gpt2", "tiny-mamba") if quick else ("gpt2-small", "mamba-130m")
    g, short, long = (32, 32, 64) if quick else (1024, 512, 2048)
    n = DECODE_STEPS[quick]
    f32 = "float32"
    return [
        Case("gpt2-fp32", f"{gpt2} HF fp32 seq{g}", gpt2, f32, "hf", g),
        Case("gpt2-bf16", f"{gpt2} HF bf16 seq{g}", gpt2, "bfloat16", "hf", g),
        *(Case(f"mamba-hf-{s}", f"{mamba} HF seq{s}", mamba, f32, "hf", s) for s in (short, long)),
        *(
            Case(f"mamba-ref-{s}", f"{mamba} ref seq{s}", mamba, f32, "prefill", s)
            for s in (short, long)
        ),
        Case("mamba-decode", f"{mamba} ref decode x{n}", mamba, f32, "decode", n),
        Case("gpt2-decode", f"{gpt2} ref decode x{n}", gpt2, f32, "decode", n),
    ]


def by_model(selected: list[Case]) -> Iterator[list[Case]]:
    """`selected` in runs of cases that share one model, so each run builds it once."""
    return (list(run) for _, run in itertools.groupby(selected, key=lambda c: c.model_key))


def build_model(case: Case) -> nn.Module:
    """The eager model of `case`, seeded with SEED, on the CPU in eval mode."""
    if case.kind == "hf":
        return models.build_hf(case.model, dtype=case.torch_dtype, seed=SEED)
    return models.build(case.model, dtype=case.torch_dtype, seed=SEED)


def example(case: Case, model: nn.Module, device: str) -> tuple[nn.Module, tuple, dict]:
    """(module, args, kwargs) of one call of `case` on `device`; decode starts at position 0
    from the zero state."""
    if case.kind == "decode":
        inputs = models.example_inputs(
            case.model, seq=1, phase="decode", device=device, seed=INPUT_SEED
        )
        return model.decode_module(), inputs, {}
    (ids,) = models.example_inputs(case.model, seq=case.seq, device=device, seed=INPUT_SEED)
    if case.kind == "hf":
        return model, (ids,), {"use_cache": False}
    return model.prefill_module(), (ids,), {}


# ---------------------------------------------------------------------------- prepare


def prepare(out: Path, quick: bool) -> None:
    """Compile every case and write weightless artifacts to `out`."""
    import compiler

    if out.exists():
        if not (out / "index.json").is_file():
            sys.exit(f"{out} exists and is not a gpu_fallback artifact directory")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for group in by_model(cases(quick)):
        model = build_model(group[0])
        for case in group:
            module, args, kwargs = example(case, model, "cpu")
            clock = time.perf_counter()
            compiled = compiler.compile(module, args, kwargs, target=None)
            seconds = time.perf_counter() - clock
            names = set(module.state_dict())
            missing = [p for p in compiled.program.params() if p not in names]
            if missing:
                sys.exit(f"{case.name}: program weight {missing[0]!r} is not in the state_dict")
            (compiled.save(out / case.name) / artifact.WEIGHTS).unlink()
            ops = len(compiled.program.instructions)
            print(f"{case.name:14} {ops:6} ops  compiled in {seconds:6.1f} s", flush=True)
    index = {"quick": quick, "seed": SEED, "cases": [asdict(c) for c in cases(quick)]}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 2**20:.2f} MiB) in {time.perf_counter() - start:.0f} s")


# ---------------------------------------------------------------------------- run


def load(folder: Path, module: nn.Module, devices: int | None = None) -> runtime.LoadedModule:
    """The weightless artifact `folder` on the JAX runtime (sharded over `devices` when given),
    its weights taken from `module`'s state_dict (`runtime.load` checks them against the sha256
    that `prepare` recorded)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = shutil.copytree(folder, Path(scratch) / folder.name)
        program = Program.from_json(json.loads((path / artifact.PROGRAM).read_text()))
        state = module.state_dict()
        tied = json.loads((path / artifact.MANIFEST).read_text())["tied_weights"]
        names = [n for n in program.params() if n not in tied]  # tied weights are stored once
        weights = {n: state[n].detach().cpu().contiguous().clone() for n in names}
        save_file(weights, str(path / artifact.WEIGHTS))
        try:
            if devices is None:
                return runtime.load(path, runtime="jax")
            return runtime.load(path, runtime="jax", devices=devices)
        except ArtifactError as exc:
            hint = "rebuilt from the seeded model: does this torch build it as prepare's did?"
            raise ArtifactError(f"{exc} ({artifact.WEIGHTS} is {hint})") from exc


@dataclass
class Row:
    """One implementation of one case: median milliseconds per call (per token for decode)."""

    case: Case
    impl: str
    ms: float | None = None
    runs: int = 0
    first_s: float | None = None
    err: float | None = None
    err64: float | None = None
    floor: float | None = None  # eager's err64
    note: str = ""

    @property
    def check(self) -> str:
        if self.err is None:
            return ""
        if self.err <= OUTPUT_TOLERANCES[self.case.torch_dtype]:
            return "ok"
        if self.err <= GROSS_OUTPUT_ERRORS[self.case.torch_dtype]:
            return "high"
        if (
            self.err64 is not None
            and self.floor is not None
            and self.err64 <= ILL_CONDITIONED_FACTOR * self.floor
        ):
            return "ill-cond"
        return "MISMATCH"


def measure(row: Row, fn: Callable[[], object], sync: Callable[[object], None], repeat: int):
    """Warm up, then time `fn` (synchronised) up to `repeat` times, stopping once the whole
    measurement has taken MEASURE_BUDGET_S; fills `row` and returns the first call's result."""
    start = time.perf_counter()
    first = fn()
    sync(first)
    row.first_s = time.perf_counter() - start
    if row.first_s < SLOW_CALL_S:
        sync(fn())
    times: list[float] = []
    while len(times) < repeat and (not times or time.perf_counter() - start < MEASURE_BUDGET_S):
        clock = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - clock)
    row.ms, row.runs = statistics.median(times) * 1e3, len(times)
    return first


def max_error(actual, expected) -> float:
    """The largest `output_error` over the tensor leaves of two outputs of one structure."""
    pairs = zip(pytree.tree_leaves(actual), pytree.tree_leaves(expected), strict=True)
    return max(output_error(a, e) for a, e in pairs if isinstance(e, torch.Tensor))


def fp64_outputs(module: nn.Module, args: tuple, kwargs: dict) -> list | None:
    """Flat outputs of a float64 copy of `module`, or None when it cannot run in float64."""
    try:
        return pytree.tree_leaves(copy.deepcopy(module).double()(*args, **kwargs))
    except Exception as exc:  # a model may not support float64 on this device
        print(f"   float64 reference failed: {type(exc).__name__}: {exc}"[:300], flush=True)
        return None


class Runner:
    """Runs the cases of one artifact directory on one torch device and one JAX device, and
    with `devices`, sharded over that many JAX devices too."""

    def __init__(self, artifacts: Path, device: str, repeat: int, devices: int | None = None):
        import jax

        if device == "cpu":
            jax.config.update("jax_platforms", "cpu")  # the runtime runs on JAX's first device
        self.jax = jax
        self.artifacts, self.device, self.repeat = artifacts, device, repeat
        self.index = json.loads((artifacts / "index.json").read_text())
        self.jax_device = jax.devices()[0]
        if device == "cuda" and self.jax_device.platform != "gpu":
            sys.exit(f"--device cuda, but JAX sees no GPU (devices: {jax.devices()})")
        self.devices, self.sharded = devices, f"{WAFER} x{devices}"
        if devices is not None:
            _check_sharding(jax, devices)
        self.rows: list[Row] = []
        self.failed: list[str] = []

    def header(self) -> None:
        import transformers

        jax = self.jax
        name = torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu"
        precision = getattr(jax.config, "jax_default_matmul_precision", "?")
        versions = f"torch {torch.__version__}, jax {jax.__version__}"
        print(f"{versions}, transformers {transformers.__version__}")
        print(f"torch device: {self.device} ({name}); jax: {self.jax_device} of {jax.devices()}")
        if self.devices is not None:
            print(f"{self.sharded}: the Wafer program sharded over {self.devices} JAX devices")
        print(
            f"torch fp32 matmul precision: {torch.get_float32_matmul_precision()}, "
            f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}; "
            f"jax_default_matmul_precision={precision} (Wafer rules pass precision=HIGHEST)"
        )
        ok, gross = _by_name(OUTPUT_TOLERANCES), _by_name(GROSS_OUTPUT_ERRORS)
        print(f"errors: max |x - eager| / max(1, |eager|); ok <= {ok}, MISMATCH > {gross}")

    def sync(self, _result) -> None:
        """Wait for the device; Wafer's outputs reach torch through DLPack on its stream."""
        if self.device == "cuda":
            torch.cuda.synchronize()

    def attempt(self, row: Row, body: Callable[[Row], object], required: bool) -> object:
        """`body(row)`, or None when it fails: the failure is reported on the row (and fails the
        run when `required`)."""
        self.rows.append(row)
        try:
            return body(row)
        except Exception as exc:  # report any failure of one implementation and go on
            message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            print(f"   {row.impl} failed: {message[:400]}", flush=True)
            row.note = f"failed: {message[:80]}"
            if required:
                self.failed.append(f"{row.case.name} {row.impl}")
            return None

    def run_all(self, only: list[str] | None) -> None:
        known = [Case(**c) for c in self.index["cases"]]
        unknown = sorted(set(only or ()) - {c.name for c in known})
        if unknown:
            sys.exit(f"unknown cases {unknown}; the artifacts hold {[c.name for c in known]}")
        for group in by_model([c for c in known if not only or c.name in only]):
            gc.collect()  # the previous group's model
            if self.device == "cuda":
                torch.cuda.empty_cache()
            model = build_model(group[0]).to(self.device)
            for case in group:
                print(f"-- {case.label}", flush=True)
                with torch.no_grad():
                    if case.kind == "decode":
                        self.decode(case, model)
                    else:
                        self.forward(case, model)
                self.jax.clear_caches()
            del model

    def forward(self, case: Case, model: nn.Module):
        """Eager, torch.compile (not for HF Mamba) and Wafer latency of one forward call."""
        module, args, kwargs = example(case, model, self.device)

        def timed(fn: Callable) -> Callable[[Row], object]:
            return lambda row: measure(row, lambda: fn(*args, **kwargs), self.sync, self.repeat)

        def compiled(row: Row) -> object:
            torch._dynamo.reset()
            return timed(torch.compile(module))(row)

        def wafer(row: Row) -> object:
            return timed(load(self.artifacts / case.name, module))(row)

        truth = fp64_outputs(module, args, kwargs)
        eager_row = Row(case, EAGER)
        expected = self.attempt(eager_row, timed(module), required=True)
        if expected is not None and truth is not None:
            eager_row.err64 = max_error(expected, truth)

        def sharded(row: Row) -> object:
            return timed(load(self.artifacts / case.name, module, self.devices))(row)

        impls = [(WAFER, wafer, True)]
        if not (case.kind == "hf" and "mamba" in case.model):
            impls.insert(0, (COMPILE, compiled, False))
        if self.devices is not None:
            impls.append((self.sharded, sharded, True))
        for impl, body, required in impls:
            row = Row(case, impl, floor=eager_row.err64)
            out = self.attempt(row, body, required)
            if out is not None and expected is not None:
                row.err = max_error(out, expected)
            if out is not None and truth is not None:
                row.err64 = max_error(out, truth)

    def decode(self, case: Case, model: nn.Module):
        """Greedy decode (`models.generate`) of `case.seq` tokens from the zero state: the eager
        decode module vs the Wafer program. Errors are checked with both fed eager's tokens
        (teacher forcing), so a near-tie cannot make the two paths diverge."""
        module, (ids, _, *state), _ = example(case, model, self.device)
        steps = case.seq

        def timed(step: Callable) -> Callable[[], object]:
            return lambda: models.generate(None, step, ids, steps, init_state=state)

        def eager(row: Row) -> None:
            measure(row, timed(module), self.sync, self.repeat)

        def wafer(devices: int | None) -> Callable[[Row], None]:
            def body(row: Row) -> None:
                loaded = load(self.artifacts / case.name, module, devices)
                measure(row, timed(loaded), self.sync, self.repeat)
                token, eager_state, wafer_state, errors = ids, state, state, []
                for t in range(steps):
                    position = torch.tensor([t], device=self.device)
                    expected = module(token, position, *eager_state)
                    out = loaded(token, position, *wafer_state)
                    errors.append(max_error(out, expected))
                    eager_state, wafer_state = expected[1:], out[1:]
                    token = expected[0][:, -1].argmax(-1, keepdim=True)
                row.err = max(errors)

            return body

        impls = [(EAGER, eager), (WAFER, wafer(None))]
        if self.devices is not None:
            impls.append((self.sharded, wafer(self.devices)))
        for impl, body in impls:
            row = Row(case, impl)
            self.attempt(row, body, required=True)
            if row.ms is not None:
                row.ms /= steps
                row.note = f"{1e3 / row.ms:.1f} tok/s"

    # ------------------------------------------------------------------------ report

    def find(self, name: str, impl: str) -> Row | None:
        return next((r for r in self.rows if r.case.name == name and r.impl == impl), None)

    def report(self) -> int:
        rows = []
        for r in self.rows:
            eager = self.find(r.case.name, EAGER)
            speedup = f"{eager.ms / r.ms:.2f}x" if r.ms and eager and eager.ms else ""
            times = [_fmt(r.ms, ".3f"), str(r.runs), _fmt(r.first_s, ".2f"), speedup]
            errors = [_fmt(r.err, ".2e"), _fmt(r.err64, ".2e"), r.check]
            rows.append([r.case.label, r.impl, *times, *errors, r.note])
        print()
        headers = ["case", "impl", "median ms", "runs", "1st call s", "eager/x", "max err"]
        _table([*headers, "vs fp64", "check", "note"], rows)
        print()
        _table(["goal", "measured", "target", "result"], self.goals())
        mismatches = [f"{r.case.name} {r.impl}" for r in self.rows if r.check == "MISMATCH"]
        print(f"\ngross mismatches: {', '.join(mismatches) or 'none'}")
        print(f"failed runs: {', '.join(self.failed) or 'none'}")
        if self.device != "cuda":
            print(
                f"GPU figures: not measured (this run is on the {self.device}, not a GPU). On a "
                "GPU host, `run --device cuda` (full size, no --quick) gives the one-GPU goals "
                f"table above; it goes in {README_SECTION}."
            )
        return 1 if mismatches or self.failed else 0

    def goals(self) -> list[list[str]]:
        """GPT-2-small Wafer <= 1.0x torch.compile; Mamba-130M Wafer >= 50x HF eager at the short
        length and <= 1.0x torch.compile of the reference Mamba."""
        short, long = (32, 64) if self.index["quick"] else (512, 2048)
        specs = [
            ("gpt2-fp32", WAFER, "gpt2-fp32", COMPILE, "<=", 1.0),
            ("gpt2-bf16", WAFER, "gpt2-bf16", COMPILE, "<=", 1.0),
            (f"mamba-hf-{short}", EAGER, f"mamba-hf-{short}", WAFER, ">=", 50.0),
            (f"mamba-ref-{short}", WAFER, f"mamba-ref-{short}", COMPILE, "<=", 1.0),
            (f"mamba-ref-{long}", WAFER, f"mamba-ref-{long}", COMPILE, "<=", 1.0),
        ]
        out = []
        for case, num, den_case, den, op, target in specs:
            a, b = self.find(case, num), self.find(den_case, den)
            if a is None or b is None:
                continue
            label = f"{a.case.label}: {num} / {den} latency"
            if not (a.ms and b.ms):
                out.append([label, "n/a", f"{op} {target:g}x", "n/a"])
                continue
            ratio = a.ms / b.ms
            ok = ratio <= target if op == "<=" else ratio >= target
            out.append([label, f"{ratio:.2f}x", f"{op} {target:g}x", "PASS" if ok else "FAIL"])
        return out


def _check_sharding(jax, devices: int) -> None:
    """Exit with the reason when this checkout's runtime cannot shard over `devices` here."""
    import inspect

    if "devices" not in inspect.signature(runtime.load).parameters:
        sys.exit(
            "--devices needs the sharded JAX runtime (runtime.load(..., devices=N)), which this "
            "checkout does not have; run without --devices"
        )
    seen = jax.devices()
    if devices > len(seen):
        hint = f" (on the CPU the script sets XLA_FLAGS={CPU_DEVICES_FLAG}=N)"
        sys.exit(f"--devices {devices}, but JAX sees {len(seen)}: {seen}{hint}")


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def _by_name(table: dict[torch.dtype, float]) -> dict[str, float]:
    return {str(dtype).removeprefix("torch."): value for dtype, value in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("prepare", help="compile and write weightless artifacts (needs compiler)")
    p.add_argument("--out", type=Path, default=Path("artifacts/gpu"))
    p.add_argument("--quick", action="store_true", help="tiny models and short sequences")
    r = sub.add_parser("run", help="time eager, torch.compile and Wafer JAX (no compiler)")
    r.add_argument("--artifacts", type=Path, default=Path("artifacts/gpu"))
    r.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if seen")
    r.add_argument("--devices", type=int, help="also run the program sharded over N devices")
    r.add_argument("--repeat", type=int, default=None, help="timed runs (default 10, quick 2)")
    r.add_argument("--only", nargs="*", help="case names (see index.json)")
    r.add_argument("--quick", action="store_true", help="the artifacts were prepared --quick")
    opts = parser.parse_args()
    if opts.phase == "prepare":
        prepare(opts.out, opts.quick)
        return
    if opts.devices is not None and opts.devices < 1:
        parser.error(f"--devices must be at least 1, got {opts.devices}")
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and opts.devices and CPU_DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICES_FLAG}={opts.devices}".strip()
    runner = Runner(opts.artifacts, device, opts.repeat or (2 if opts.quick else 10), opts.devices)
    if runner.index["quick"] != opts.quick:
        sys.exit(f"{opts.artifacts} was prepared with quick={runner.index['quick']}; pass the same")
    runner.header()
    runner.run_all(opts.only)
    status = runner.report()
    sys.stdout.flush()
    # Skip interpreter teardown: XLA and CUDA teardown can abort after the report (see
    # tests/test_artifact.py).
    os._exit(status)


if __name__ == "__main__":
    main()
