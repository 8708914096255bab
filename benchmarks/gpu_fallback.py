"""GPU fallback check: eager PyTorch vs torch.compile vs the Wafer JAX runtime, on one device.

Two phases, because the GPU machine has no torch-mlir (so no `compiler`):

    PYTHONPATH=. python benchmarks/gpu_fallback.py prepare --out artifacts/gpu [--quick]
    PYTHONPATH=. python benchmarks/gpu_fallback.py run --artifacts artifacts/gpu \
        [--device cuda|cpu] [--repeat N] [--only CASE ...] [--quick]

`prepare` compiles every case and writes `CASE/program.json` and `CASE/manifest.json` plus an
`index.json`, all without weights (GPT-2-small alone is ~500 MB in fp32). `run` imports neither
`compiler` nor `torch_mlir`: it rebuilds each model from its config with the same seed, checks the
state_dict's sha256 against the one `prepare` recorded, and binds the eager model's own tensors
to the program by state_dict name, so eager and Wafer always read identical weights. It prints
median latencies, max errors against eager and against a float64 copy of the model, and a
summary of the goals. Exit status 1 when an eager or Wafer run fails or an output differs grossly
from eager while being further than eager from float64 (see TOL, GROSS).
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU with torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from configs; the GPU host is offline

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils import _pytree as pytree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from runtime.program import Program, Signature  # noqa: E402

FORMAT = 1
SEED = 0  # model weights
INPUT_SEED = 1  # token ids
DECODE_STEPS = {False: 64, True: 8}
MEASURE_BUDGET_S = 5.0  # per measurement, warm-up included; at least one timed run
SLOW_CALL_S = 1.0  # a first call slower than this gets no second warm-up
# Max |x - eager| / max(1, |eager|): expected at most TOL, a failure above GROSS unless x is at
# most ILL_COND times further than eager from a float64 run ("ill-cond": the model amplifies
# rounding; the randomly initialised HF Mamba-130M's residual stream reaches ~1e3, and its fp32
# eager logits are ~6e-3 from float64 at seq 512 on the CPU).
TOL = {"float32": 1e-4, "bfloat16": 5e-2}
GROSS = {"float32": 1e-2, "bfloat16": 5e-1}
ILL_COND = 4.0
EAGER, COMPILE, WAFER = "eager", "torch.compile", "wafer jax"
REF_MODELS = {"ref-gpt2": ("gpt2-small", "tiny-gpt2"), "ref-mamba": ("mamba-130m", "tiny-mamba")}


# ---------------------------------------------------------------------------- models and cases


@dataclass(frozen=True)
class Case:
    """One benchmarked graph. `kind` is "hf" (`model(ids, use_cache=False)`), "prefill" or
    "decode" (the reference model's graphs); `seq` is the prompt length, or decode steps."""

    name: str
    label: str
    model: str
    dtype: str
    kind: str
    seq: int

    @property
    def model_key(self) -> str:
        return f"{self.model}/{self.dtype}"


def cases(quick: bool) -> list[Case]:
    """Every case, grouped by model so each model is built once per phase."""
    gpt2, mamba = ("tiny-gpt2", "tiny-mamba") if quick else ("gpt2-small", "mamba-130m")
    g, short, long = (32, 32, 64) if quick else (1024, 512, 2048)
    n = DECODE_STEPS[quick]
    f32 = "float32"
    return [
        Case("gpt2-fp32", f"{gpt2} HF fp32 seq{g}", "hf-gpt2", f32, "hf", g),
        Case("gpt2-bf16", f"{gpt2} HF bf16 seq{g}", "hf-gpt2", "bfloat16", "hf", g),
        *(
            Case(f"mamba-hf-{s}", f"{mamba} HF seq{s}", "hf-mamba", f32, "hf", s)
            for s in (short, long)
        ),
        *(
            Case(f"mamba-ref-{s}", f"{mamba} ref seq{s}", "ref-mamba", f32, "prefill", s)
            for s in (short, long)
        ),
        Case("mamba-decode", f"{mamba} ref decode x{n}", "ref-mamba", f32, "decode", n),
        Case("gpt2-decode", f"{gpt2} ref decode x{n}", "ref-gpt2", f32, "decode", n),
    ]


def build_model(name: str, dtype: str, quick: bool) -> nn.Module:
    """The eager model `name`, seeded with SEED, on the CPU in eval mode."""
    torch.manual_seed(SEED)
    if name == "hf-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        tiny = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64)
        tiny.update(bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(GPT2Config(**tiny) if quick else GPT2Config())
    elif name == "hf-mamba":
        from transformers import MambaConfig, MambaForCausalLM

        width, layers, vocab = (64, 2, 256) if quick else (768, 24, 50280)
        config = MambaConfig(hidden_size=width, num_hidden_layers=layers, vocab_size=vocab)
        model = MambaForCausalLM(config)
    else:
        model = models.build(REF_MODELS[name][quick])
    return model.to(getattr(torch, dtype)).eval()


def state_sha256(model: nn.Module) -> str:
    """sha256 over the state_dict's names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def example(case: Case, model: nn.Module, device: str) -> tuple[nn.Module, tuple, dict]:
    """(module, args, kwargs) of one call of `case` on `device`."""
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(INPUT_SEED)
    if case.kind == "decode":
        ids = torch.randint(vocab, (1, 1), generator=gen).to(device)
        position = torch.zeros(1, dtype=torch.int64, device=device)
        return model.decode_module(), (ids, position, *model.init_state(1)), {}
    ids = torch.randint(vocab, (1, case.seq), generator=gen).to(device)
    if case.kind == "hf":
        return model, (ids,), {"use_cache": False}
    return model.prefill_module(), (ids,), {}


def tensor_inputs(args: tuple, kwargs: dict, signature: Signature) -> list[torch.Tensor]:
    """The program's inputs: the call's flat leaves that were tensors at export."""
    flat = pytree.tree_leaves((args, kwargs))
    return [x for x, keep in zip(flat, signature.input_is_tensor, strict=True) if keep]


# ---------------------------------------------------------------------------- prepare


def prepare(out: Path, quick: bool) -> None:
    """Compile every case and write weightless artifacts to `out`."""
    import compiler

    if out.exists():
        if not (out / "index.json").is_file():
            sys.exit(f"{out} exists and is not a gpu_fallback artifact directory")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index = {"format": FORMAT, "quick": quick, "seed": SEED, "models": {}, "cases": []}
    start = time.perf_counter()
    model, key = None, None
    for case in cases(quick):
        if case.model_key != key:
            model, key = build_model(case.model, case.dtype, quick), case.model_key
            index["models"][key] = state_sha256(model)
        module, args, kwargs = example(case, model, "cpu")
        clock = time.perf_counter()
        compiled = compiler.compile(module, args, kwargs)
        seconds = time.perf_counter() - clock
        names = set(module.state_dict())
        missing = [p for p in compiled.program.params() if p not in names]
        if missing:
            sys.exit(f"{case.name}: program weight {missing[0]!r} is not in the state_dict")
        folder = out / case.name
        folder.mkdir()
        text = json.dumps(compiled.program.to_json()).encode()
        (folder / "program.json").write_bytes(text)
        manifest = {
            "case": asdict(case),
            "program_sha256": hashlib.sha256(text).hexdigest(),
            "signature": compiled.signature.to_json(),
            "weights": len(compiled.program.params()),
            "compile_s": round(seconds, 2),
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
        index["cases"].append(case.name)
        ops = len(compiled.program.instructions)
        print(f"{case.name:14} {ops:6} ops  compiled in {seconds:6.1f} s", flush=True)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 2**20:.2f} MiB) in {time.perf_counter() - start:.0f} s")


# ---------------------------------------------------------------------------- run


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
        if self.err <= TOL[self.case.dtype]:
            return "ok"
        if self.err <= GROSS[self.case.dtype]:
            return "high"
        if None not in (self.err64, self.floor) and self.err64 <= ILL_COND * self.floor:
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


def max_error(actual: list, expected: list) -> float:
    """Max |actual - expected| / max(1, |expected|) over all tensor outputs (inf when an integer
    output or a NaN position differs)."""
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        if not isinstance(e, torch.Tensor):
            continue
        a = a.to(e.device)
        if not e.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(a, e) else float("inf"))
            continue
        dtype = torch.float64 if e.dtype == torch.float64 else torch.float32
        a, e = a.to(dtype), e.to(dtype)
        if not torch.equal(a.isnan(), e.isnan()):
            return float("inf")
        err = ((a - e).abs() / e.abs().clamp(min=1.0)).nan_to_num(0.0)
        worst = max(worst, err.max().item())
    return worst


def fp64_outputs(module: nn.Module, args: tuple, kwargs: dict) -> list | None:
    """Flat outputs of a float64 copy of `module`, or None when it cannot run in float64."""
    try:
        return pytree.tree_leaves(copy.deepcopy(module).double()(*args, **kwargs))
    except Exception as exc:  # a model may not support float64 on this device
        print(f"   float64 reference failed: {type(exc).__name__}: {exc}"[:300], flush=True)
        return None


class Runner:
    """Runs the cases of one artifact directory on one torch device and one JAX device."""

    def __init__(self, artifacts: Path, device: str, repeat: int):
        import jax
        import jax.numpy as jnp

        from runtime.jax_runtime import JaxExecutable

        self.jax, self.jnp, self.Executable = jax, jnp, JaxExecutable
        self.artifacts, self.device, self.repeat = artifacts, device, repeat
        self.index = json.loads((artifacts / "index.json").read_text())
        self.jax_device = jax.devices("cpu" if device == "cpu" else None)[0]
        if device == "cuda" and self.jax_device.platform != "gpu":
            sys.exit(f"--device cuda, but JAX sees no GPU (devices: {jax.devices()})")
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
        print(
            f"torch fp32 matmul precision: {torch.get_float32_matmul_precision()}, "
            f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}; "
            f"jax_default_matmul_precision={precision} (Wafer rules pass precision=HIGHEST)"
        )
        print(f"errors: max |x - eager| / max(1, |eager|); ok <= {TOL}, MISMATCH > {GROSS}")

    def sync_torch(self, _result) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def to_jax(self, t: torch.Tensor):
        with self.jax.enable_x64(True):
            return self.jax.device_put(self.jnp.from_dlpack(t.contiguous()), self.jax_device)

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
        quick = self.index["quick"]
        unknown = sorted(set(only or ()) - set(self.index["cases"]))
        if unknown:
            sys.exit(f"unknown cases {unknown}; the artifacts hold {self.index['cases']}")
        model, key = None, None
        for name in self.index["cases"]:
            if only and name not in only:
                continue
            folder = self.artifacts / name
            manifest = json.loads((folder / "manifest.json").read_text())
            case = Case(**manifest["case"])
            text = (folder / "program.json").read_bytes()
            if hashlib.sha256(text).hexdigest() != manifest["program_sha256"]:
                sys.exit(f"{folder / 'program.json'}: sha256 differs from the manifest")
            program = Program.from_json(json.loads(text))
            signature = Signature.from_json(manifest["signature"])
            if case.model_key != key:
                model = key = None
                gc.collect()
                if self.device == "cuda":
                    torch.cuda.empty_cache()
                model, key = build_model(case.model, case.dtype, quick), case.model_key
                same = state_sha256(model) == self.index["models"][key]
                note = "matches prepare" if same else "DIFFERS from prepare (both paths share them)"
                print(f"{key}: weights sha256 {note}")
                model.to(self.device)
            print(f"-- {case.label}", flush=True)
            with torch.no_grad():
                if case.kind == "decode":
                    self.decode(case, model, program)
                else:
                    self.forward(case, model, program, signature)
            self.jax.clear_caches()

    def forward(self, case: Case, model: nn.Module, program: Program, signature: Signature):
        """Eager, torch.compile (not for HF Mamba) and Wafer latency of one forward call."""
        module, args, kwargs = example(case, model, self.device)

        def eager(row: Row) -> list:
            out = measure(row, lambda: module(*args, **kwargs), self.sync_torch, self.repeat)
            return pytree.tree_leaves(out)

        def compiled(row: Row) -> list:
            torch._dynamo.reset()
            fn = torch.compile(module)
            out = measure(row, lambda: fn(*args, **kwargs), self.sync_torch, self.repeat)
            return pytree.tree_leaves(out)

        def wafer(row: Row) -> list:
            exe = self.Executable(program, module.state_dict(), device=self.jax_device)
            inputs = [self.to_jax(t) for t in tensor_inputs(args, kwargs, signature)]
            out = measure(
                row, lambda: exe.run_device(inputs), self.jax.block_until_ready, self.repeat
            )
            return signature.flat_outputs([torch.from_dlpack(a) for a in out])

        truth = fp64_outputs(module, args, kwargs)
        eager_row = Row(case, EAGER)
        expected = self.attempt(eager_row, eager, required=True)
        if expected is not None and truth is not None:
            eager_row.err64 = max_error(expected, truth)
        impls = [(WAFER, wafer, True)]
        if case.model != "hf-mamba":
            impls.insert(0, (COMPILE, compiled, False))
        for impl, body, required in impls:
            row = Row(case, impl, floor=eager_row.err64)
            out = self.attempt(row, body, required)
            if out is not None and expected is not None:
                row.err = max_error(out, expected)
            if out is not None and truth is not None:
                row.err64 = max_error(out, truth)

    def decode(self, case: Case, model: nn.Module, program: Program):
        """Greedy decode of `case.seq` tokens from an empty state: eager decode module vs the
        Wafer program with its state kept on the JAX device. Errors are checked with both fed
        eager's tokens (teacher forcing), so a near-tie cannot make the two paths diverge."""
        jax, jnp = self.jax, self.jnp
        module, (ids, _, *state), _ = example(case, model, self.device)
        steps = case.seq
        positions = [torch.tensor([t], device=self.device) for t in range(steps)]

        def eager_loop():
            token, current = ids, state
            for position in positions:
                logits, *current = module(token, position, *current)
                token = logits[:, -1].argmax(-1, keepdim=True)
            return token

        def eager(row: Row) -> None:
            measure(row, eager_loop, self.sync_torch, self.repeat)

        def wafer(row: Row) -> None:
            exe = self.Executable(program, module.state_dict(), device=self.jax_device)
            with jax.enable_x64(True):
                next_token = jax.jit(lambda x: jnp.argmax(x[:, -1], axis=-1, keepdims=True))
            jax_positions = [self.to_jax(p) for p in positions]
            jax_state = [self.to_jax(s) for s in state]

            def loop():
                token, current = self.to_jax(ids), jax_state
                for position in jax_positions:
                    logits, *current = exe.run_device([token, position, *current])
                    with jax.enable_x64(True):
                        token = next_token(logits)
                return token

            measure(row, loop, jax.block_until_ready, self.repeat)
            token, eager_state, wafer_state, errors = ids, state, jax_state, []
            for position, jax_position in zip(positions, jax_positions, strict=True):
                expected = list(module(token, position, *eager_state))
                out = exe.run_device([self.to_jax(token), jax_position, *wafer_state])
                errors.append(max_error([torch.from_dlpack(a) for a in out], expected))
                eager_state, wafer_state = expected[1:], out[1:]
                token = expected[0][:, -1].argmax(-1, keepdim=True)
            row.err = max(errors)

        for impl, body in ((EAGER, eager), (WAFER, wafer)):
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


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("prepare", help="compile and write weightless artifacts (needs compiler)")
    p.add_argument("--out", type=Path, default=Path("artifacts/gpu"))
    p.add_argument("--quick", action="store_true", help="tiny models and short sequences")
    r = sub.add_parser("run", help="time eager, torch.compile and Wafer JAX (no compiler)")
    r.add_argument("--artifacts", type=Path, default=Path("artifacts/gpu"))
    r.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if seen")
    r.add_argument("--repeat", type=int, default=None, help="timed runs (default 10, quick 2)")
    r.add_argument("--only", nargs="*", help="case names (see index.json)")
    r.add_argument("--quick", action="store_true", help="the artifacts were prepared --quick")
    opts = parser.parse_args()
    if opts.phase == "prepare":
        prepare(opts.out, opts.quick)
        return
    runner = Runner(
        opts.artifacts,
        opts.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        opts.repeat or (2 if opts.quick else 10),
    )
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
