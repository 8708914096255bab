"""`compile()`: the pipeline as one short list of named steps, and the torch.compile backend."""

from __future__ import annotations

import time

import torch
from torch._dynamo import register_backend

from compiler import frontend
from compiler.compiled import CompiledModule
from compiler.lowering import lower
from compiler.mlir import print_module
from compiler.passes import place_program
from compiler.passes.common import MODES
from compiler.serialize import to_program
from core.errors import OptionError
from core.target import Target, load_target
from runtime.execution import check_devices, check_runtime


def compile(  # noqa: A001  (the public name the design asks for)
    model: torch.nn.Module,
    example_inputs=(),
    example_kwargs: dict | None = None,
    *,
    target: str | Target | None = "wse3",
    mode: str = "auto",
    runtime: str = "reference",
    devices=None,
) -> CompiledModule:
    """Compile `model` for `example_inputs` (a tuple, or one tensor) to a `CompiledModule`.

    `target` is a preset name (see `core.target.presets()`) or a path to a target file;
    `None` skips placement, for running on the reference or JAX runtime only.
    `mode` places it "pipelined" (all weights in PE SRAM), "streaming" (weights streamed
    in layer by layer) or "auto" (pipelined when it fits); `.report` says what was chosen
    and why. `runtime` executes the program: "reference" (CPU, one torch kernel per op),
    "simulator" (tile by tile as placed, on the simulated PEs' SRAM) or "jax" (the whole
    program compiled by XLA, on a GPU when JAX sees one). `devices` (a count or a
    `jax.sharding.Mesh`) shards the JAX runtime's program over that many devices
    (`docs/sharding.md`).

    Non-tensor inputs (`scale=2.0`, flags) are constants of the program: calls must pass the
    same values. Weights tied in the model stay one tensor in `.weights`.
    """
    if mode not in ("auto", *MODES):
        raise OptionError(f"unknown mode {mode!r}; choose one of {', '.join(('auto', *MODES))}")
    check_runtime(runtime, placed=target is not None)
    check_devices(runtime, devices)
    target = None if target is None else load_target(target)
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    kwargs = dict(example_kwargs or {})
    clock = time.perf_counter()
    ep = frontend.export(model, args, kwargs)
    exported = time.perf_counter()
    lowered = lower(ep)
    mlir = print_module(lowered.module)
    program = to_program(lowered.module, lowered.node_values)
    lowered_at = time.perf_counter()
    stage_seconds = {"export": exported - clock, "lowering": lowered_at - exported}
    placed = None
    if target is not None:
        placed = place_program(mlir, target, mode=mode)
        stage_seconds["placement"] = time.perf_counter() - lowered_at
    sources = {**ep.state_dict, **ep.constants}
    return CompiledModule(
        name=type(model).__name__,
        mlir=mlir,
        program=program,
        weights=_own_copies({name: sources[name] for name in lowered.weight_names}),
        signature=lowered.signature,
        exported=ep,
        in_spec=ep.call_spec.in_spec,
        out_spec=ep.call_spec.out_spec,
        runtime=runtime,
        target=target,
        stage_seconds=stage_seconds,
        placed=placed,
        devices=devices,
    )


def _own_copies(sources: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The program's copies of the weights, so the eager model stays the reference for
    `verify`. Each storage is copied once and weights viewing it view the copy alike: tied
    weights (one tensor under two names) stay one tensor. Meta tensors hold no data and are
    shared."""
    storages: dict[int, torch.UntypedStorage] = {}
    views: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in sources.items():
        if tensor.is_meta:
            out[name] = tensor
            continue
        ptr = tensor.untyped_storage().data_ptr()
        key = (ptr, tensor.dtype, tensor.storage_offset(), tensor.shape, tensor.stride())
        if key not in views:
            if ptr not in storages:
                storages[ptr] = tensor.untyped_storage().clone()
            views[key] = torch.empty(0, dtype=tensor.dtype, device=tensor.device).set_(
                storages[ptr], tensor.storage_offset(), tensor.shape, tensor.stride()
            )
        out[name] = views[key]
    return out


@register_backend(name="wafer")
def wafer_backend(gm: torch.fx.GraphModule, example_inputs):
    """`torch.compile(model, backend="wafer")`: each captured graph runs as a wse program."""
    compiled = compile(gm, tuple(example_inputs))
    return lambda *args: compiled(*args)
