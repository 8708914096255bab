"""Catalogue rows for call arguments: non-tensor inputs that differ from the ones compiled for,
indices out of range on every runtime, and unknown options. Each would once have returned a
wrong answer silently (or raised a bare error); now each raises a named `WaferError`."""

from __future__ import annotations

import dataclasses
import functools

import torch
from catalogue import Case

import compiler
from core.errors import IndexOutOfRangeError, InputMismatchError, MetaDeviceError, OptionError


class _Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, x, offset, *, scale=1.0, flag=False, n=1):
        y = self.proj(x) * scale + offset
        return (-y if flag else y) * n


class _Lookup(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, ids, rows, picks):
        h = self.emb(ids)
        return h[:, rows] + torch.index_select(h, 1, picks)


_X = torch.rand(2, 4)
_KWARGS = {"scale": 2.0, "flag": True, "n": 3}
_IDS, _ROWS, _PICKS = torch.tensor([[1, 2, 3]]), torch.tensor([0, -1, 2]), torch.tensor([0, 1, 2])
_ROWS_PICKS = ([0, 1, 2], [0, 1, 2])


@functools.cache
def _scaled() -> compiler.CompiledModule:
    return compiler.compile(_Scaled().eval(), (_X, 1.0), _KWARGS, target=None)


@functools.cache
def _lookup() -> compiler.CompiledModule:
    return compiler.compile(_Lookup().eval(), (_IDS, _ROWS, _PICKS), target="mesh-8x8")


def _call(offset=1.0, **changes):
    return lambda tmp: _scaled()(_X, offset, **{**_KWARGS, **changes})


def _lookup_on(runtime: str, ids, rows=(0, 1, 2), picks=(0, 1, 2), device="cpu"):
    args = tuple(torch.tensor(a, device=device) for a in (ids, rows, picks))
    return lambda tmp: _lookup().using(runtime)(*args)


def _wrong_dtype_weight(tmp):
    compiled = _lookup().using("simulator")
    compiled = dataclasses.replace(
        compiled,
        weights={**compiled.weights, "emb.weight": compiled.weights["emb.weight"].double()},
    )
    return compiled(_IDS, _ROWS, _PICKS)


def _saved_then_changed(tmp):
    import runtime

    loaded = runtime.load(_scaled().save(tmp / "scaled"), runtime="reference")
    return loaded(_X, 1.0, **{**_KWARGS, "scale": 3.0})


_WRONG = "silent-wrong-answer"
_NAMED = "named-error"

CASES: list[Case] = [
    Case(
        _WRONG,
        "changed float keyword argument",
        _call(scale=3.0),
        InputMismatchError,
        "compile again with scale=3.0, or pass the value as a tensor",
    ),
    Case(
        _WRONG,
        "changed positional float",
        _call(offset=1.5),
        InputMismatchError,
        "argument args[1] is 1.5, but the program was compiled for args[1]=1.0",
    ),
    Case(_WRONG, "flipped bool flag", _call(flag=False), InputMismatchError, "flag=False"),
    Case(_WRONG, "changed int", _call(n=4), InputMismatchError, "argument n is 4"),
    Case(_WRONG, "int for float", _call(scale=2), InputMismatchError, "compiled for scale=2.0"),
    Case(_WRONG, "1 for True", _call(flag=1), InputMismatchError, "compiled for flag=True"),
    Case(
        _WRONG,
        "tensor for a compiled-in float",
        _call(offset=torch.tensor(1.0)),
        InputMismatchError,
        "compile again with args[1] given as a tensor",
    ),
    Case(
        _WRONG,
        "verify with a changed value",
        lambda tmp: _scaled().verify(_X, 1.0, **{**_KWARGS, "scale": 3.0}),
        InputMismatchError,
        "compile again with scale=3.0",
    ),
    Case(
        _WRONG,
        "saved artifact called with a changed value",
        _saved_then_changed,
        InputMismatchError,
        "compile again with scale=3.0",
    ),
    *(
        Case(
            _WRONG if runtime == "jax" else _NAMED,
            f"embedding index past the table on {runtime}",
            _lookup_on(runtime, [[1, 99, 3]]),
            IndexOutOfRangeError,
            "index 99 is outside [0, 9], the 10 rows of the embedding table",
        )
        for runtime in ("reference", "simulator", "jax")
    ),
    Case(
        _WRONG,
        "negative embedding index on jax",
        _lookup_on("jax", [[1, -1, 3]]),
        IndexOutOfRangeError,
        "index -1 is outside [0, 9]",
    ),
    Case(
        _WRONG,
        "advanced index below -n on jax",
        _lookup_on("jax", [[1, 2, 3]], (0, -4, 2)),
        IndexOutOfRangeError,
        "index -4 is outside [-3, 2], dim 1 of size 3",
    ),
    Case(
        _NAMED,
        "weight of the wrong dtype on the tile-by-tile runtime",
        _wrong_dtype_weight,
        InputMismatchError,
        "weight 'emb.weight' is [10, 4] torch.float64, but the program was compiled for [10, 4]",
    ),
    Case(
        _NAMED,
        "meta tensor at call time",
        _lookup_on("reference", [[1, 2, 3]], device="meta"),
        MetaDeviceError,
        "input 0 is on the meta device and holds no data",
    ),
    Case(
        _NAMED,
        "verify with an embedding index past the table",
        lambda tmp: _lookup().verify(torch.tensor([[1, 12, 3]]), *map(torch.tensor, _ROWS_PICKS)),
        IndexOutOfRangeError,
        "index 12 is outside [0, 9]",
    ),
    Case(
        _NAMED,
        "negative index_select index on reference",
        _lookup_on("reference", [[1, 2, 3]], picks=(0, -1, 2)),
        IndexOutOfRangeError,
        "index -1 is outside [0, 2], dim 1 of size 3",
    ),
    Case(
        _NAMED,
        "unknown mode without a target",
        lambda tmp: compiler.compile(_Scaled(), (_X, 1.0), target=None, mode="bogus"),
        OptionError,
        "unknown mode 'bogus'; choose one of auto, pipelined, streaming",
    ),
]
