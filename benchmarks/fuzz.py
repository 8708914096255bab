"""Fuzzing: `benchmarks/fuzz.py [--mode MODE] [--minutes N] [--seed S]` (CI runs a bounded
number of random models).

- `random-model` (default): random models (`models.random_models`) are compiled and run on
  every runtime, and each output is checked against eager with the model-output tolerances of
  `core.numerics`. Prints how many models matched, and on failure the minimal model as
  runnable code.
- `hostile-artifact`: a tiny compiled GPT-2 is saved once; each round damages a copy (bit
  flips, truncation, inserted bytes, JSON edits with the hashes left alone or forged,
  symlinks, `..` and absolute file names, unknown files, deep nesting, a payload module) and
  loads it. Each must raise `ArtifactError` (or a `WaferError` when called) or run exactly as
  the original; no payload may run.
- `bad-argument`: a module compiled with non-tensor arguments (`forward(x, scale: float,
  flag: bool)`) is called with perturbed arguments (other values and types, wrong shapes and
  dtypes, extra and missing arguments); each call must raise a `WaferError` or match eager for
  those arguments.

The last two print throughput and mismatches with examples. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils import _pytree as pytree

import compiler
import runtime
from core.errors import WaferError
from core.numerics import check_conditioned_output, check_output
from models.random_models import float64_output, random_recipe
from runtime import artifact, artifact_checks
from runtime.execution import RUNTIMES

BATCH = 20
TARGET = "mesh-8x8"
EXAMPLES = 5  # mismatches printed per mode
REFUSED, SAME = "refused", "same as the original"
OK = (REFUSED, SAME)


# ---------------------------------------------------------------------------- random-model


def check(recipe) -> None:
    """Compile the recipe's model; raise AssertionError naming a runtime that differs from
    eager beyond tolerance."""
    note(recipe.to_code())
    model, x = recipe.build()
    with torch.no_grad():
        expected = model(x)
    exact = float64_output(model, x)
    compiled = compiler.compile(model, (x,), target=TARGET)
    for runtime_name in RUNTIMES:
        problem = check_conditioned_output(compiled.using(runtime_name)(x), expected, exact)
        if problem is not None:
            raise AssertionError(f"{runtime_name}: {problem}")


def random_models(deadline: float, seed: int) -> int:
    checked = 0

    @settings(
        max_examples=BATCH, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.randoms(use_true_random=False).map(random_recipe))
    def batch(recipe):
        nonlocal checked
        check(recipe)
        checked += 1

    try:
        while time.monotonic() < deadline:
            batch()  # each batch draws fresh random examples
    except Exception as exc:  # hypothesis notes the minimal failing recipe and its code
        print(*getattr(exc, "__notes__", ()), sep="\n")
        print(f"FAILED after {checked} models: {exc}")
        return 1
    print(f"{checked} random models matched eager on runtimes {', '.join(RUNTIMES)}")
    return 0


# ------------------------------------------------------------------------ hostile-artifact

Corruption = Callable[[Path, random.Random], str]


def _forge(path: Path) -> None:
    """Recompute the manifest's file records and checksum, as a forger would."""
    manifest = json.loads((path / artifact.MANIFEST).read_text())
    for name in artifact.DATA_FILES:
        if name in manifest.get("files", {}) and (path / name).is_file():
            data = (path / name).read_bytes()
            manifest["files"][name] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
    text = json.dumps(manifest).encode()
    (path / artifact.MANIFEST).write_bytes(text)
    line = f"{hashlib.sha256(text).hexdigest()}  {artifact.MANIFEST}\n"
    (path / artifact.CHECKSUM).write_text(line)


def _bytes(path: Path, rng: random.Random) -> str:
    name = rng.choice(artifact.FILES)
    data = bytearray((path / name).read_bytes())
    at = rng.randrange(len(data))
    kind = rng.choice(["flip", "truncate", "insert"])
    if kind == "flip":
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[at:]
    else:
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    (path / name).write_bytes(bytes(data))
    return f"{kind} {name} at byte {at}"


def _walk(value: Any, rng: random.Random) -> tuple[Any, Any]:
    """A random (container, key) inside a JSON value."""
    container, key = None, None
    while isinstance(value, dict | list) and value and (container is None or rng.random() < 0.7):
        key = rng.choice(list(value)) if isinstance(value, dict) else rng.randrange(len(value))
        container, value = value, value[key]
    return container, key


def _other_type(value: object) -> object:
    """A JSON value of another type than `value`."""
    for candidate in ("text", 7, [1], {"k": 1}, None):
        if type(candidate) is not type(value):
            return candidate
    return None


def _json_edit(path: Path, rng: random.Random, forge: bool) -> str:
    """A random edit anywhere in the manifest or program; `forge` recomputes the hashes,
    and then edits only where Wafer's schema decides validity (not signature values or
    attributes, whose other values are other valid programs)."""
    name = rng.choice([artifact.MANIFEST, artifact.PROGRAM])
    data = json.loads((path / name).read_text())
    container, key = _schema_field(data, rng) if forge else _walk(data, rng)
    if container is None:
        return f"no edit of {name}"
    old = container[key]
    if forge or rng.random() < 0.5:
        container[key] = _other_type(old)
    elif isinstance(old, int) and not isinstance(old, bool):
        container[key] = old + rng.choice([-1, 1])
    elif isinstance(old, list) and len(old) > 1:
        old[0], old[-1] = old[-1], old[0]
    else:
        del container[key]
    (path / name).write_text(json.dumps(data))
    if forge:
        _forge(path)
    return f"{'forged ' * forge}edit of {name} at {key!r}: {old!r:.60}"


def _schema_field(data: dict, rng: random.Random) -> tuple[Any, Any]:
    """A field whose type Wafer's loader checks: top level (the file records excepted, which
    forging rewrites), an instruction's field, operand or result spec."""
    choices: list[tuple[Any, Any]] = [(data, k) for k in data if k != "signature"]
    for ins in data.get("instructions", [])[:50]:
        choices += [(ins, k) for k in ins if k != "attrs"]
        choices += [(ins["operands"], 0)] * bool(ins["operands"])
        choices += [(ins["result_specs"][0], k) for k in ("shape", "dtype")]
    return rng.choice(choices)


def _forged(path: Path, rng: random.Random) -> str:
    """A structural lie with recomputed hashes, which the loader must refuse."""
    manifest = json.loads((path / artifact.MANIFEST).read_text())
    program = json.loads((path / artifact.PROGRAM).read_text())
    top = max(v for ins in program["instructions"] for v in ins["results"])
    ins = rng.choice([i for i in program["instructions"] if i["operands"]])
    name = rng.choice(["../../etc/passwd", "/etc/hostname", "payload.py", "sub/program.json"])
    edits = {
        "operand after its definition": lambda: ins["operands"].__setitem__(0, top + 1),
        "repeated result": lambda: ins["results"].__setitem__(0, ins["operands"][0] or 0),
        "output out of range": lambda: program["outputs"].__setitem__(0, top + 5),
        "signature output out of range": lambda: manifest["signature"].update(outputs=[9]),
        "file outside the artifact": lambda: manifest["files"].update({name: {}}),
        "tied weight naming nothing": lambda: manifest["tied_weights"].update(x="nothing"),
        "extra output leaf": lambda: manifest["out_tree"]["model_output"]["fields"].append(
            ["more", {"leaf": None}]
        ),
        "unknown op": lambda: ins.update(op="system"),
        "deep nesting": lambda: manifest.update(deep=json.loads("[" * 200 + "]" * 200)),
    }
    what = rng.choice(list(edits))
    edits[what]()
    (path / artifact.MANIFEST).write_text(json.dumps(manifest))
    (path / artifact.PROGRAM).write_text(json.dumps(program))
    _forge(path)
    return f"forged {what}"


def _weights(path: Path, rng: random.Random) -> str:
    """Weights of another shape or dtype, missing or extra, with recomputed hashes."""
    tensors = load_file(str(path / artifact.WEIGHTS))
    name = rng.choice(sorted(tensors))
    what = rng.choice(["shape", "dtype", "missing", "extra"])
    if what == "shape":
        tensors[name] = torch.cat([tensors[name].reshape(-1), tensors[name].reshape(-1)[:1]])
    elif what == "dtype":
        tensors[name] = tensors[name].double()
    elif what == "missing":
        del tensors[name]
    else:
        tensors["evil"] = tensors[name].clone()
    save_file(tensors, str(path / artifact.WEIGHTS))
    _forge(path)
    return f"forged weights: {what} {name}"


def _files(path: Path, rng: random.Random) -> str:
    """A file swapped for a symlink to an identical copy, or a payload next to the files, or
    named as the output class (hashes forged): never imported."""
    what = rng.choice(["symlink", "payload beside", "payload class"])
    (path / "payload.py").write_text(f"open({str(path.parent / 'ran')!r}, 'w')\n")
    if what == "symlink":
        name = rng.choice(artifact.FILES)
        (path / name).rename(path.parent / "outside")
        (path / name).symlink_to(path.parent / "outside")
        return f"{name} is a symlink"
    if what == "payload class":
        manifest = json.loads((path / artifact.MANIFEST).read_text())
        manifest["out_tree"]["model_output"].update(module="payload", qualname="Evil")
        (path / artifact.MANIFEST).write_text(json.dumps(manifest))
        _forge(path)
    return what


def _oversize(path: Path, rng: random.Random) -> str:
    text = (path / artifact.MANIFEST).read_bytes() + b" " * (artifact_checks.MAX_MANIFEST_BYTES + 1)
    (path / artifact.MANIFEST).write_bytes(text)
    return "oversize manifest"


CORRUPTIONS: list[tuple[Corruption, int]] = [
    (_bytes, 30),
    (lambda p, rng: _json_edit(p, rng, forge=False), 15),
    (lambda p, rng: _json_edit(p, rng, forge=True), 20),
    (_forged, 20),
    (_weights, 8),
    (_files, 6),
    (_oversize, 1),
]


def _tiny_gpt2() -> tuple[nn.Module, torch.Tensor]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    return GPT2LMHeadModel(config).eval(), torch.randint(0, 64, (1, 8))


def _judge(path: Path, ids: torch.Tensor, expected: list[torch.Tensor]) -> str:
    """REFUSED or SAME when the damaged artifact is refused or runs exactly as the original,
    else what went wrong."""
    sys.path.insert(0, str(path))  # where a payload.py beside the manifest would be imported
    try:
        got = pytree.tree_leaves(runtime.load(path, runtime="reference")(ids, use_cache=False))
    except WaferError:
        got = None
    except Exception as exc:
        return f"raised {type(exc).__name__}: {exc}"[:300]
    finally:
        sys.path.remove(str(path))
    if (path.parent / "ran").exists() or "payload" in sys.modules:
        return "the payload ran"
    if got is None:
        return REFUSED
    if len(got) == len(expected) and all(map(torch.equal, got, expected)):
        return SAME
    return "loaded and returned a wrong result"


def hostile_artifacts(deadline: float, seed: int) -> int:
    rng = random.Random(seed)
    model, ids = _tiny_gpt2()
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
    with tempfile.TemporaryDirectory() as work:
        original = compiled.save(Path(work) / "original")
        expected = pytree.tree_leaves(
            runtime.load(original, runtime="reference")(ids, use_cache=False)
        )
        case = Path(work) / "case"
        outcomes: list[tuple[str, str]] = []
        start = time.monotonic()
        functions, weights = zip(*CORRUPTIONS, strict=True)
        while time.monotonic() < deadline:
            shutil.rmtree(case, ignore_errors=True)
            (Path(work) / "outside").unlink(missing_ok=True)
            shutil.copytree(original, case)
            what = rng.choices(functions, weights)[0](case, rng)
            outcomes.append((what, _judge(case, ids, expected)))
    return _summary("hostile-artifact", "corruptions", outcomes, time.monotonic() - start)


# ------------------------------------------------------------------------------ bad-argument


class Scaled(nn.Module):
    """A module with non-tensor arguments, compiled for scale=0.5, flag=True."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, scale: float, flag: bool) -> torch.Tensor:
        y = self.linear(x) * scale
        return torch.relu(y) if flag else y


SCALES = [0.5, 0.25, -1.0, 0.0, -0.0, 1e30, math.nan, math.inf, 1, True, None, "0.5"]
FLAGS = [True, False, 1, 0, None, "yes", 1.0]
SHAPES = [(2, 4), (3, 4), (4,), (2, 4, 1), (2, 5), (1, 4)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool]


def _arguments(rng: random.Random) -> tuple[list, dict, str]:
    """Perturbed call arguments and what was changed."""
    x, scale, flag, extra = torch.randn(2, 4), 0.5, True, []
    changes, keywords, arity = [], rng.random() < 0.1, 3
    for _ in range(rng.randint(1, 2)):
        what = rng.choice(["scale", "flag", "shape", "dtype", "layout", "arity", "keywords"])
        if what == "scale":
            scale = rng.choice(SCALES)
        elif what == "flag":
            flag = rng.choice(FLAGS)
        elif what == "shape":
            x = torch.randn(rng.choice(SHAPES))
        elif what == "dtype":
            x = (torch.randn(2, 4) * 3).to(rng.choice(DTYPES))
        elif what == "layout":
            x = torch.randn(4, 2).T  # non-contiguous, same shape
        elif what == "arity":
            arity = rng.randrange(3)
            extra = [1.0] if rng.random() < 0.5 else []
        keywords |= what == "keywords"
        changes.append(what)
    args = [x, scale, flag][:arity] + extra
    described = f"{', '.join(changes)}: {args!r:.120}"
    if keywords:
        return [], dict(zip(["x", "scale", "flag", "extra"], args, strict=False)), described
    return args, {}, described


def _compare(compiled, model: nn.Module, args: list, kwargs: dict) -> str:
    """REFUSED when the call raises a WaferError, SAME when it matches eager for these
    arguments, else what went wrong."""
    try:
        out = compiled(*args, **kwargs)
    except WaferError:
        return REFUSED
    except Exception as exc:
        return f"raised {type(exc).__name__}: {exc}"[:300]
    try:
        with torch.no_grad():
            expected = model(*args, **kwargs)
    except Exception as exc:
        return f"eager raises {type(exc).__name__}, Wafer returned a result"
    return check_output(out, expected) or SAME


def bad_arguments(deadline: float, seed: int) -> int:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = Scaled().eval()
    compiled = compiler.compile(model, (torch.randn(2, 4), 0.5, True), target=None)
    outcomes: list[tuple[str, str]] = []
    start = time.monotonic()
    while time.monotonic() < deadline:
        args, kwargs, what = _arguments(rng)
        outcomes.append((what, _compare(compiled, model, args, kwargs)))
    return _summary("bad-argument", "calls", outcomes, time.monotonic() - start)


def _summary(mode: str, unit: str, outcomes: list[tuple[str, str]], seconds: float) -> int:
    """Print throughput, outcome counts and a few mismatches; 1 if there were any."""
    mismatches = [f"{what}: {outcome}" for what, outcome in outcomes if outcome not in OK]
    refused = sum(outcome == REFUSED for _, outcome in outcomes)
    print(
        f"{mode}: {len(outcomes)} {unit} in {seconds:.1f} s ({len(outcomes) / seconds:.0f}/s): "
        f"{refused} refused, {len(outcomes) - refused - len(mismatches)} {SAME}, "
        f"{len(mismatches)} mismatches"
    )
    for example in mismatches[:EXAMPLES]:
        print(f"  {example}")
    return 1 if mismatches else 0


MODES = {
    "random-model": random_models,
    "hostile-artifact": hostile_artifacts,
    "bad-argument": bad_arguments,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=list(MODES), default="random-model")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0, help="hostile-artifact, bad-argument")
    opts = parser.parse_args()
    return MODES[opts.mode](time.monotonic() + 60 * opts.minutes, opts.seed)


if __name__ == "__main__":
    sys.exit(main())
