"""Front end: `torch.export` to core ATen, with the decompositions Wafer wants."""

from __future__ import annotations

import functools

import torch
from torch.export import ExportedProgram
from torch.utils import _pytree as pytree

from compiler.hf_rewrites import apply_rewrites
from core.errors import DynamicShapeError, WaferError

aten = torch.ops.aten

# Ops the default table would decompose but `wse` keeps whole (one fused op on the wafer).
KEPT_WHOLE = (
    aten.silu.default,
    aten.softplus.default,
    aten.rms_norm.default,
    aten.scaled_dot_product_attention.default,
)


@functools.cache
def decompositions() -> dict:
    """The core-ATen decomposition table minus the ops `wse` keeps whole."""
    table = torch.export.default_decompositions()
    for op in KEPT_WHOLE:
        table.pop(op, None)
    return table


def export(model: torch.nn.Module, args: tuple, kwargs: dict) -> ExportedProgram:
    """Export `model(*args, **kwargs)` and decompose it to the ops the lowering knows.

    A model whose weights are on the meta device is exported with meta inputs too, so
    large models compile without memory.
    """
    if any(p.is_meta for p in model.parameters()):
        args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
    try:
        with torch.no_grad(), apply_rewrites(model):
            ep = torch.export.export(model, args, kwargs, strict=False)
    except WaferError:
        raise
    except Exception as exc:  # torch raises many types here; name the cause and stop.
        text = str(exc)
        if "data-dependent" in text or "GuardOnDataDependentSymNode" in type(exc).__name__:
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise DynamicShapeError(
                f"the model has a data-dependent shape or control flow: {first}\n"
                "Wafer compiles static graphs: replace .item()/nonzero()/boolean masks that "
                "decide shapes with torch.where or fixed-size ops."
            ) from exc
        raise
    return ep.run_decompositions(decompositions())
