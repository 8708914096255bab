"""Front end: `torch.export` to core ATen, with the decompositions Wafer wants.

What enters here is checked first: the model is an `nn.Module` with dense weights, the example
inputs have concrete sizes and sit on the weights' device, and (by a forward hook during the
trace) the model returns only dense tensors and plain Python constants. Anything else
`torch.export` refuses becomes an `ExportError` that gives torch's reason.
"""

from __future__ import annotations

import functools
import math
import re

import torch
from torch.export import ExportedProgram
from torch.utils import _pytree as pytree

from compiler.complex_pairs import rewrite_complex
from compiler.hf_rewrites import apply_rewrites
from core.errors import (
    DynamicShapeError,
    ExportError,
    TensorTooLargeError,
    UnsupportedValueError,
    WaferError,
)

aten = torch.ops.aten

# Ops the default table would decompose but `wse` keeps whole (one fused op on the wafer).
KEPT_WHOLE = (
    aten.silu.default,
    aten.softplus.default,
    aten.rms_norm.default,
    aten.scaled_dot_product_attention.default,
)
CONSTANT_OUTPUTS = (bool, int, float, str, type(None))
_OVERFLOW = re.compile(r"Storage size calculation overflowed with sizes=\[(?P<sizes>[\d, ]*)\]")


def _eye(n, m=None, *, dtype=None, layout=None, device=None, pin_memory=None):
    """`torch.eye` from int64 positions (the default decomposition compares uint8 ones,
    a dtype `wse` has not)."""
    rows = torch.arange(n, device=device).unsqueeze(-1)
    columns = torch.arange(n if m is None else m, device=device)
    return (rows == columns).to(dtype or torch.get_default_dtype())


@functools.cache
def decompositions() -> dict:
    """The core-ATen decomposition table minus the ops `wse` keeps whole, with `eye` in int64."""
    table = torch.export.default_decompositions()
    for op in KEPT_WHOLE:
        table.pop(op, None)
    table[aten.eye.default] = table[aten.eye.m] = _eye
    return table


def export(model: torch.nn.Module, args: tuple, kwargs: dict) -> ExportedProgram:
    """Export `model(*args, **kwargs)` and decompose it to the ops the lowering knows.

    A model whose weights are on the meta device is exported with meta inputs too, so
    large models compile without memory. Complex values become real pairs
    (`compiler.complex_pairs`).
    """
    _check_model(model)
    meta_weights = any(p.is_meta for p in model.parameters())
    _check_inputs(model, args, kwargs, meta_weights)
    if meta_weights:
        args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
    hook = model.register_forward_hook(_check_outputs)
    try:
        with torch.no_grad(), apply_rewrites(model):
            ep = torch.export.export(model, args, kwargs, strict=False)
    except WaferError:
        raise
    except Exception as exc:  # torch raises many types here; name the cause and stop.
        raise _export_error(exc) from exc
    finally:
        hook.remove()
    return rewrite_complex(ep.run_decompositions(decompositions()))


def _check_model(model: object) -> None:
    """An `nn.Module` whose weights are dense tensors."""
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedValueError(
            f"Wafer compiles a torch.nn.Module, got {type(model).__name__}; wrap a function "
            "in a Module whose forward calls it"
        )
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.layout != torch.strided:
            raise UnsupportedValueError(
                f"weight {name!r} is a {tensor.layout} tensor; Wafer compiles dense tensors: "
                f"store it dense (.to_dense())"
            )


def _check_inputs(model: torch.nn.Module, args: tuple, kwargs: dict, meta_weights: bool) -> None:
    """Concrete sizes, and no meta inputs beside real weights."""
    leaves = pytree.tree_leaves((args, kwargs))
    symbolic = [leaf for leaf in leaves if isinstance(leaf, torch.SymInt | torch.SymFloat)]
    if symbolic:
        raise DynamicShapeError(
            f"an example input is the symbolic size {symbolic[0]}: Wafer compiles static "
            "shapes only. Use torch.compile(..., dynamic=False) or concrete example inputs."
        )
    real_weights = any(not t.is_meta for t in [*model.parameters(), *model.buffers()])
    meta_inputs = any(isinstance(leaf, torch.Tensor) and leaf.is_meta for leaf in leaves)
    if meta_inputs and real_weights and not meta_weights:
        raise UnsupportedValueError(
            "the example inputs are on the meta device but the model's weights are real: pass "
            "real example inputs (torch.zeros of the same shapes), or build the model on the "
            "meta device to compile without memory"
        )


def _check_outputs(module: torch.nn.Module, args: tuple, output: object) -> None:
    """Forward hook: every output is a dense tensor or a plain Python constant."""
    leaves, _ = pytree.tree_flatten_with_path(output)
    for path, leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if leaf.layout == torch.strided:
                continue
            what = f"a {leaf.layout} tensor (store it dense: .to_dense())"
        elif isinstance(leaf, CONSTANT_OUTPUTS):
            continue
        else:
            shown = "" if " object at 0x" in repr(leaf) else f" ({leaf!r:.60})"
            what = f"a {type(leaf).__module__}.{type(leaf).__qualname__}{shown}"
        raise UnsupportedValueError(
            f"the model's output{pytree.keystr(path)} is {what}; a compiled program returns "
            "dense tensors and None, bool, int, float or str: return it outside the model"
        )


def _export_error(exc: Exception) -> WaferError:
    """The named error for an exception `torch.export` raised."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "data-dependent" in text or "GuardOnDataDependentSymNode" in type(exc).__name__:
        return DynamicShapeError(
            f"the model has a data-dependent shape or control flow: {first}\n"
            "Wafer compiles static graphs: replace .item()/nonzero()/boolean masks that "
            "decide shapes with torch.where or fixed-size ops."
        )
    overflow = _OVERFLOW.search(text)
    if overflow:
        sizes = [int(s) for s in overflow["sizes"].split(",") if s.strip()]
        return TensorTooLargeError(
            f"the model builds a tensor of shape {tuple(sizes)}: {math.prod(sizes):.3g} "
            "elements, more bytes than a 64-bit size can count; no machine can hold it: "
            "check the sizes the model computes"
        )
    return ExportError(
        f"torch.export could not trace the model with these example inputs: "
        f"{type(exc).__name__}: {first}"
    )
