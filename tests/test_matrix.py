"""The verification matrix: every model x runtime x dtype x phase against eager PyTorch.

Models: the reference `models/` tiny configs (prefill and decode graphs) and tiny Hugging Face
GPT-2, Llama and Mamba (prefill), and the decode step of HF GPT-2 and Llama with their KV cache
as explicit state (`models.hf_state`). Each case compiles once, placed on a
16x16 test mesh, and runs on every runtime in `RUNTIMES`.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import assert_matches
from hf_models import build as build_hf
from hf_models import input_ids

import compiler
import models
from models import hf_state
from runtime.execution import RUNTIMES

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET = "mesh-16x16"  # small enough for the tile-by-tile simulator's per-PE SRAM images
CASES = [
    (name, phase)
    for name in ("tiny-gpt2", "tiny-llama", "tiny-mamba", "tiny-hybrid")
    for phase in ("prefill", "decode")
] + [(f"hf-{n}", "prefill") for n in ("gpt2", "llama", "mamba")]
CASES += [(f"hf-{n}", "decode") for n in ("gpt2", "llama")]  # explicit KV cache: models.hf_state


@functools.cache
def compiled_case(name: str, phase: str, dtype: str):
    """(compiled module, inputs, kwargs, eager outputs as a flat list)."""
    torch_dtype = DTYPES[dtype]
    if name.startswith("hf-") and phase == "decode":
        hf = build_hf(name.removeprefix("hf-"), torch_dtype)
        with torch.no_grad():
            state = hf_state.HFPrefill(hf, 12)(input_ids())[1:]
        model: torch.nn.Module = hf_state.HFDecode(hf)
        inputs, kwargs = (input_ids(seq=1), torch.tensor([8]), *state), {}
        with torch.no_grad():
            expected = list(model(*inputs))
    elif name.startswith("hf-"):
        model = build_hf(name.removeprefix("hf-"), torch_dtype)
        inputs, kwargs = (input_ids(),), {"use_cache": False}
        with torch.no_grad():
            expected = [model(*inputs, **kwargs).logits]
    else:
        base = models.build(name, dtype=torch_dtype)
        model = base.prefill_module() if phase == "prefill" else base.decode_module()
        inputs = models.example_inputs(name, batch=2, seq=8, phase=phase, dtype=torch_dtype)
        kwargs = {}
        with torch.no_grad():
            expected = list(model(*inputs))
    compiled = compiler.compile(model, inputs, kwargs, target=TARGET)
    return compiled, inputs, kwargs, expected


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name, phase", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_matrix(name, phase, dtype, runtime):
    compiled, inputs, kwargs, expected = compiled_case(name, phase, dtype)
    out = compiled.using(runtime)(*inputs, **kwargs)
    actual = [out.logits] if name.startswith("hf-") and phase == "prefill" else list(out)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert_matches(a, e, compute_dtype=DTYPES[dtype])
