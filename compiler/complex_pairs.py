"""Complex-valued tensors as pairs of real tensors: a pass over the exported graph.

`wse` has no complex dtype. Models that write rotary embeddings with complex numbers
(DeepSeek-V2, Llama-4: ``polar``, ``view_as_complex``, complex ``mul``, ``view_as_real``) are
rewritten here, after decomposition and before lowering: every complex node becomes two real
nodes ``(re, im)`` of the same shape, computed with ordinary ATen ops. A complex value that
reaches an op without a rule here, a graph input or an output raises `ComplexValueError`
naming the op. A graph without complex values is left as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
from torch._guards import detect_fake_mode
from torch.export import ExportedProgram

from compiler.lowering.driver import describe_location, op_problem
from compiler.lowering.registry import op_name
from core.errors import ComplexValueError, OpProblem

aten = torch.ops.aten

# A real operand: a node, a Python number, or None for a zero imaginary part.
Part = fx.Node | float | None
Pair = tuple[Part, Part]

# Ops whose result, for a complex input, is the same op applied to each half.
_PER_HALF = (
    aten.alias.default,
    aten.clone.default,
    aten.expand.default,
    aten.permute.default,
    aten.select.int,
    aten.slice.Tensor,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.transpose.int,
    aten.unsqueeze.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
)
_REASON = (
    "a complex value: Wafer turns complex tensors into real (re, im) pairs through polar, "
    "view_as_complex, view_as_real, complex, mul, add, sub, cat, dtype casts and shape ops "
    "only; compute this part with real tensors (cos/sin pairs) instead"
)


def is_complex(value: object) -> bool:
    """Whether `value` is an FX node whose value is a complex tensor."""
    val = value.meta.get("val") if isinstance(value, fx.Node) else None
    return isinstance(val, torch.Tensor) and val.is_complex()


def rewrite_complex(ep: ExportedProgram) -> ExportedProgram:
    """`ep` with every complex node replaced by real pairs (in place); raises
    `ComplexValueError` listing every complex value it cannot rewrite."""
    graph = ep.graph
    touched = [n for n in graph.nodes if is_complex(n) or any(map(is_complex, n.all_input_nodes))]
    if not touched:
        return ep
    _check_rewritable(graph, touched)
    pairs = _Pairs(graph)
    for node in touched:
        with graph.inserting_before(node):
            pairs.rewrite(node)
    for node in reversed(touched):
        graph.erase_node(node)
    for node in reversed(pairs.created):
        if not node.users:
            graph.erase_node(node)
    ep.graph_module.recompile()
    return ep


def _check_rewritable(graph: fx.Graph, touched: list[fx.Node]) -> None:
    """`ComplexValueError` for every complex value without a rule here, listing with them
    every other op the lowering would reject (all unsupported ops are named at once)."""
    problems = [
        _problem(n)
        for n in touched
        if n.op != "call_function" or (n.target not in _PER_HALF and n.target not in _RULES)
    ]
    if problems:
        seen = set(touched)
        rest = [n for n in graph.nodes if n.op == "call_function" and n not in seen]
        raise ComplexValueError(problems + [p for n in rest if (p := op_problem(n))])


def _problem(node: fx.Node) -> OpProblem:
    """The problem of `node`; an output is named at the complex value it returns."""
    op = {"placeholder": "input", "output": "output"}.get(node.op, op_name(node.target))
    if node.op == "output":
        node = next(n for n in node.all_input_nodes if is_complex(n))
    return OpProblem(op, node.name, describe_location(node), _REASON)


class _Pairs:
    """The real pair of each complex node, and the real nodes it emitted."""

    def __init__(self, graph: fx.Graph):
        self.graph = graph
        self.pairs: dict[fx.Node, tuple[fx.Node, fx.Node]] = {}
        self.created: list[fx.Node] = []
        self.fake_mode = detect_fake_mode(
            [n.meta["val"] for n in graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
        )
        self.like: fx.Node | None = None

    def rewrite(self, node: fx.Node) -> None:
        """Replace `node`'s uses by real nodes: a pair if complex, else one node."""
        self.like = node
        if node.target in _PER_HALF:
            re, im = self.pair(node.args[0])
            rest, kwargs = node.args[1:], node.kwargs
            result: fx.Node | Pair | None = (
                self.emit(node.target, (re, *rest), kwargs),
                self.emit(node.target, (im, *rest), kwargs),
            )
        else:
            result = _RULES[node.target](self, node, *node.args, **node.kwargs)
        if result is None:  # an assertion pinning a complex dtype that no longer exists
            return
        if isinstance(result, tuple):
            self.pairs[node] = (self.node(result[0], node), self.node(result[1], node))
        else:
            node.replace_all_uses_with(result)

    def pair(self, arg: object) -> Pair:
        """`arg` as (re, im): a complex node's pair, a real node or number with no imaginary
        part, or a Python complex number's parts."""
        if isinstance(arg, fx.Node):
            return self.pairs[arg] if arg in self.pairs else (arg, None)
        if isinstance(arg, complex):
            return arg.real, arg.imag
        if isinstance(arg, int | float):
            return float(arg), None
        assert self.like is not None
        raise ComplexValueError([_problem(self.like)])

    def emit(self, target: Callable, args: tuple, kwargs: dict | None = None) -> fx.Node:
        """A new real node `target(*args, **kwargs)` with its fake value and `like`'s source."""
        kwargs = kwargs or {}
        node = self.graph.call_function(target, args, kwargs)
        values = fx.node.map_arg((args, kwargs), lambda n: n.meta["val"])
        with self.fake_mode or contextlib.nullcontext():
            node.meta["val"] = target(*values[0], **values[1])
        assert self.like is not None
        for key in ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn"):
            if key in self.like.meta:
                node.meta[key] = self.like.meta[key]
        self.created.append(node)
        return node

    def node(self, part: Part, like: fx.Node) -> fx.Node:
        """`part` as a node of the shape and real dtype of `like`'s halves (a full tensor for
        a number or zero, broadcast and cast where the op did so)."""
        val = like.meta["val"]
        shape, dtype = list(val.shape), val.dtype.to_real()
        if not isinstance(part, fx.Node):
            kwargs = {"dtype": dtype, "device": val.device}
            return self.emit(aten.full.default, (shape, part or 0.0), kwargs)
        if list(part.meta["val"].shape) != shape:
            part = self.emit(aten.expand.default, (part, shape))
        if part.meta["val"].dtype != dtype:
            part = self.emit(aten._to_copy.default, (part,), {"dtype": dtype})
        return part

    def product(self, a: Part, b: Part) -> Part:
        if a is None or b is None:
            return None
        if isinstance(a, fx.Node) or isinstance(b, fx.Node):
            return self.emit(aten.mul.Tensor, (a, b) if isinstance(a, fx.Node) else (b, a))
        return a * b

    def total(self, a: Part, b: Part, sign: float = 1.0) -> Part:
        """`a + sign * b`."""
        if b is None:
            return a
        if isinstance(a, fx.Node) and sign in (1.0, -1.0):
            return self.emit(aten.add.Tensor if sign == 1.0 else aten.sub.Tensor, (a, b))
        b = b if sign == 1.0 else self.product(b, sign)
        if a is None or b is None:
            return b if a is None else a
        if isinstance(a, fx.Node) or isinstance(b, fx.Node):
            return self.emit(aten.add.Tensor, (a, b) if isinstance(a, fx.Node) else (b, a))
        return a + b


def _polar(p: _Pairs, node: fx.Node, magnitude: fx.Node, angle: fx.Node) -> Pair:
    if _is_one(magnitude, node):  # polar(ones_like(angle), angle): HF's rotary frequencies
        return p.emit(aten.cos.default, (angle,)), p.emit(aten.sin.default, (angle,))
    return (
        p.product(magnitude, p.emit(aten.cos.default, (angle,))),
        p.product(magnitude, p.emit(aten.sin.default, (angle,))),
    )


def _is_one(magnitude: fx.Node, node: fx.Node) -> bool:
    """`magnitude` is a float tensor of ones (`full`/`full_like` of 1) of `node`'s shape."""
    val = magnitude.meta["val"]
    fills = (aten.full.default, aten.full_like.default)
    return bool(
        magnitude.target in fills
        and magnitude.args[1] == 1
        and val.dtype.is_floating_point
        and val.shape == node.meta["val"].shape
    )


def _complex(p: _Pairs, node: fx.Node, re: Part, im: Part) -> Pair:
    return re, im


def _view_as_complex(p: _Pairs, node: fx.Node, x: fx.Node) -> Pair:
    return p.emit(aten.select.int, (x, -1, 0)), p.emit(aten.select.int, (x, -1, 1))


def _view_as_real(p: _Pairs, node: fx.Node, z: fx.Node) -> fx.Node:
    halves = [p.emit(aten.unsqueeze.default, (p.node(part, z), -1)) for part in p.pair(z)]
    return p.emit(aten.cat.default, (halves, -1))


def _mul(p: _Pairs, node: fx.Node, x: object, y: object) -> Pair:
    (a, b), (c, d) = p.pair(x), p.pair(y)
    re = p.total(p.product(a, c), p.product(b, d), -1.0)
    return re, p.total(p.product(a, d), p.product(b, c))


def _add_sub(p: _Pairs, node: fx.Node, x: object, y: object, *, alpha: float = 1) -> Pair:
    sign = float(alpha) * (-1.0 if node.target is aten.sub.Tensor else 1.0)
    (a, b), (c, d) = p.pair(x), p.pair(y)
    return p.total(a, c, sign), p.total(b, d, sign)


def _cat(p: _Pairs, node: fx.Node, tensors: list[fx.Node], *rest: object) -> Pair:
    parts = [[p.node(part, t) for part in p.pair(t)] for t in tensors]
    return (
        p.emit(aten.cat.default, ([re for re, _ in parts], *rest)),
        p.emit(aten.cat.default, ([im for _, im in parts], *rest)),
    )


def _to_copy(p: _Pairs, node: fx.Node, x: fx.Node, **kwargs: Any) -> fx.Node | Pair:
    """A cast: complex -> complex casts each half, complex -> real keeps the real part (as
    torch does), real -> complex has a zero imaginary part."""
    re, im = p.pair(x)
    dtype = node.meta["val"].dtype
    kwargs["dtype"] = dtype.to_real()
    real = p.emit(aten._to_copy.default, (re,), kwargs)
    if not is_complex(node):
        return real
    return real, None if im is None else p.emit(aten._to_copy.default, (im,), kwargs)


_RULES: dict[object, Callable[..., fx.Node | Pair | None]] = {
    aten._assert_tensor_metadata.default: lambda p, node, *args, **kwargs: None,
    aten.polar.default: _polar,
    aten.complex.default: _complex,
    aten.view_as_complex.default: _view_as_complex,
    aten.view_as_real.default: _view_as_real,
    aten.mul.Tensor: _mul,
    aten.add.Tensor: _add_sub,
    aten.sub.Tensor: _add_sub,
    aten.cat.default: _cat,
    aten._to_copy.default: _to_copy,
}
