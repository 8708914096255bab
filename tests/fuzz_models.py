"""Random small models from the supported ops, for differential fuzzing against eager.

A model is a `Recipe`: an input shape, a dtype and a list of `Step`s applied to one running
tensor. Hypothesis shrinks failures to a minimal recipe, and `Recipe.to_code()` prints it as
a runnable PyTorch module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

UNARY = ("exp", "tanh", "sigmoid", "neg", "abs", "relu")
ACTIVATIONS = ("silu", "gelu", "softplus")
BINARY = ("add", "sub", "mul", "maximum")


@dataclass(frozen=True)
class Step:
    """One op: `kind` and its integer arguments."""

    kind: str
    args: tuple = ()

    def code(self, i: int) -> str:
        k, a = self.kind, self.args
        if k in UNARY:
            return f"x = torch.{k}(x)"
        if k in ACTIVATIONS:
            return f"x = F.{k}(x)"
        if k in BINARY:
            return f"x = torch.{k}(x, self.p{i})"
        if k == "scale":
            return f"x = x * {a[0] / 4}"
        if k == "linear":
            return f"x = self.l{i}(x)"
        if k == "layer_norm":
            return f"x = F.layer_norm(x, x.shape[-1:], self.p{i}, self.p{i} * 0.5)"
        if k == "rms_norm":
            return f"x = F.rms_norm(x, x.shape[-1:], self.p{i}, 1e-6)"
        if k == "softmax":
            return "x = torch.softmax(x, -1)"
        if k == "mean":
            return "x = x - x.mean(-1, keepdim=True)"
        if k == "transpose":
            return "x = x.transpose(-1, -2)"
        if k == "split_cat":
            return "x = torch.cat(torch.split(x, [1, x.shape[-1] - 1], -1)[::-1], -1)"
        if k == "reshape":
            return "x = x.reshape(*x.shape[:-2], x.shape[-1], x.shape[-2])"
        if k == "where":
            return "x = torch.where(x > 0, x, x * 0.1)"
        if k == "cumsum":
            return "x = x.cumsum(-1) / x.shape[-1]"
        if k == "scan":
            return f"x = self.scan{i}(x)"
        raise ValueError(k)


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
            "from tests.fuzz_models import Scan",
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
        """The module and an input, by executing `to_code()`."""
        namespace: dict = {}
        exec(compile(self.to_code(), "<fuzzed>", "exec"), namespace)  # noqa: S102
        return namespace["model"].eval(), namespace["x"]


class Scan(torch.nn.Module):
    """A Mamba-style selective scan over the last dim (time) of a (B, D, L) tensor."""

    def __init__(self, channels: int, state: int):
        super().__init__()
        self.a_log = torch.nn.Parameter(torch.rand(channels, state))
        self.proj = torch.nn.Linear(channels, 2 * state + 1)
        self.d = torch.nn.Parameter(torch.randn(channels))

    def forward(self, x):
        import models  # noqa: F401  (registers the custom op)

        n = self.a_log.shape[1]
        params = self.proj(x.transpose(1, 2)).transpose(1, 2)
        delta = params[:, :1].expand(-1, x.shape[1], -1)
        b, c = params[:, 1 : 1 + n], params[:, 1 + n :]
        a = -torch.exp(self.a_log.float())
        return torch.ops.wafer.selective_scan(x, delta, a, b, c, self.d, None, None, True)[0]


@st.composite
def recipes(draw) -> Recipe:
    """Random recipes over 3-D inputs (batch, channels, length)."""
    shape = [draw(st.integers(1, 2)), draw(st.integers(2, 6)), draw(st.integers(2, 8))]
    dtype = draw(st.sampled_from(["float32", "bfloat16"]))
    initial = tuple(shape)
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(
            st.sampled_from(
                [
                    *UNARY,
                    *ACTIVATIONS,
                    *BINARY,
                    "scale",
                    "linear",
                    "layer_norm",
                    "rms_norm",
                    "softmax",
                    "mean",
                    "transpose",
                    "split_cat",
                    "reshape",
                    "where",
                    "cumsum",
                    "scan",
                ]
            )
        )
        args: tuple = ()
        if kind in BINARY:
            mask = draw(st.lists(st.booleans(), min_size=3, max_size=3))
            args = (tuple(n if keep else 1 for n, keep in zip(shape, mask, strict=True)),)
        elif kind == "scale":
            args = (draw(st.integers(-8, 8)),)
        elif kind == "linear":
            args = (draw(st.integers(2, 8)),)
            shape[-1] = args[0]
        elif kind in ("transpose", "reshape"):
            shape[-1], shape[-2] = shape[-2], shape[-1]
        elif kind == "split_cat" and shape[-1] < 2:
            continue
        elif kind == "scan":
            if dtype != "float32":
                continue
            args = (draw(st.integers(1, 4)),)
        steps.append(Step(kind, args))
    return Recipe(initial, dtype, tuple(steps))
