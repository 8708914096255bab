"""Random small models from the supported ops, for differential fuzzing against eager.

A model is a `Recipe`: an input shape, a dtype and a list of `Step`s applied to one running
tensor. `random_recipe(rng)` draws one from a `random.Random`, so a seed reproduces it (and a
Hypothesis-controlled `Random` shrinks it); `Recipe.to_code()` prints it as a runnable module.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch

from core.custom_ops import selective_scan

UNARY = ("exp", "tanh", "sigmoid", "neg", "abs", "relu")
ACTIVATIONS = ("silu", "gelu", "softplus")
BINARY = ("add", "sub", "mul", "maximum")
# The other steps' code; `{i}` is the step's index (naming its parameters).
OTHER = {
    "scale": "x = x * {scale}",
    "linear": "x = self.l{i}(x)",
    "layer_norm": "x = F.layer_norm(x, x.shape[-1:], self.p{i}, self.p{i} * 0.5)",
    "rms_norm": "x = F.rms_norm(x, x.shape[-1:], self.p{i}, 1e-6)",
    "softmax": "x = torch.softmax(x, -1)",
    "mean": "x = x - x.mean(-1, keepdim=True)",
    "transpose": "x = x.transpose(-1, -2)",
    "split_cat": "x = torch.cat(torch.split(x, [1, x.shape[-1] - 1], -1)[::-1], -1)",
    "reshape": "x = x.reshape(*x.shape[:-2], x.shape[-1], x.shape[-2])",
    "where": "x = torch.where(x > 0, x, x * 0.1)",
    "cumsum": "x = x.cumsum(-1) / x.shape[-1]",
    "scan": "x = self.scan{i}(x)",
}
KINDS = (*UNARY, *ACTIVATIONS, *BINARY, *OTHER)


@dataclass(frozen=True)
class Step:
    """One op: `kind` and its integer arguments."""

    kind: str
    args: tuple = ()

    def code(self, i: int) -> str:
        """The line of `forward` applying this step, the `i`-th."""
        if self.kind in UNARY:
            return f"x = torch.{self.kind}(x)"
        if self.kind in ACTIVATIONS:
            return f"x = F.{self.kind}(x)"
        if self.kind in BINARY:
            return f"x = torch.{self.kind}(x, self.p{i})"
        scale = self.args[0] / 4 if self.kind == "scale" else None
        return OTHER[self.kind].format(i=i, scale=scale)


@dataclass(frozen=True)
class Recipe:
    """Input shape, dtype name and steps of a random model."""

    shape: tuple[int, ...]
    dtype: str
    steps: tuple[Step, ...]

    def to_code(self) -> str:
        """A runnable module reproducing this recipe (printed on failure)."""
        init, body = [], []
        shape = list(self.shape)
        for i, step in enumerate(self.steps):
            if step.kind in BINARY:
                init.append(f"self.p{i} = nn.Parameter(torch.randn({step.args[0]}))")
            elif step.kind in ("layer_norm", "rms_norm"):
                init.append(f"self.p{i} = nn.Parameter(torch.randn({shape[-1]}))")
            elif step.kind == "linear":
                init.append(f"self.l{i} = nn.Linear({shape[-1]}, {step.args[0]})")
                shape[-1] = step.args[0]
            elif step.kind == "scan":
                init.append(f"self.scan{i} = Scan({shape[-2]}, {step.args[0]})")
            elif step.kind in ("transpose", "reshape"):
                shape[-1], shape[-2] = shape[-2], shape[-1]
            body.append(step.code(i))
        lines = [
            "import torch, torch.nn as nn, torch.nn.functional as F",
            "from models.random_models import Scan",
            "",
            "class Fuzzed(nn.Module):",
            "    def __init__(self):",
            "        super().__init__()",
            "        torch.manual_seed(0)",
            *(f"        {line}" for line in init or ["pass"]),
            "",
            "    def forward(self, x):",
            *(f"        {line}" for line in body),
            "        return x",
            "",
            f"model = Fuzzed().to(torch.{self.dtype})",
            f"x = torch.randn({self.shape}).to(torch.{self.dtype})",
        ]
        return "\n".join(lines)

    def build(self) -> tuple[torch.nn.Module, torch.Tensor]:
        """The module (eval mode) and an input, by executing `to_code()`; the caller's torch
        RNG state is left as it was."""
        namespace: dict = {}
        with torch.random.fork_rng(devices=[]):
            exec(compile(self.to_code(), "<fuzzed>", "exec"), namespace)  # noqa: S102
        return namespace["model"].eval(), namespace["x"]


def float64_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A float64 copy of `model` run on `x` upcast: the reference a random model's rounding
    is measured against."""
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double() if x.is_floating_point() else x)


class Scan(torch.nn.Module):
    """A Mamba-style selective scan over the last dim (time) of a (B, D, L) tensor."""

    def __init__(self, channels: int, state: int):
        super().__init__()
        self.a_log = torch.nn.Parameter(torch.rand(channels, state))
        self.proj = torch.nn.Linear(channels, 2 * state + 1)
        self.d = torch.nn.Parameter(torch.randn(channels))

    def forward(self, x):
        n = self.a_log.shape[1]
        params = self.proj(x.transpose(1, 2)).transpose(1, 2)
        delta = params[:, :1].expand(-1, x.shape[1], -1)
        b, c = params[:, 1 : 1 + n], params[:, 1 + n :]
        a = -torch.exp(self.a_log.float())
        return selective_scan(x, delta, a, b, c, self.d, None, None, True)[0]


def random_recipe(rng: random.Random) -> Recipe:
    """A random recipe over a 3-D input (batch, channels, length) of 1 to 6 steps."""
    shape = [rng.randint(1, 2), rng.randint(2, 6), rng.randint(2, 8)]
    dtype = rng.choice(["float32", "bfloat16"])
    initial = tuple(shape)
    steps = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(KINDS)
        args: tuple = ()
        if kind in BINARY:
            args = (tuple(n if rng.random() < 0.5 else 1 for n in shape),)
        elif kind == "scale":
            args = (rng.randint(-8, 8),)
        elif kind == "linear":
            args = (rng.randint(2, 8),)
            shape[-1] = args[0]
        elif kind in ("transpose", "reshape"):
            shape[-1], shape[-2] = shape[-2], shape[-1]
        elif kind == "split_cat" and shape[-1] < 2:
            continue
        elif kind == "scan":
            if dtype != "float32":
                continue
            args = (rng.randint(1, 4),)
        steps.append(Step(kind, args))
    return Recipe(initial, dtype, tuple(steps))
