"""Hugging Face models simulated: from a config.json or model directory, prefill and decode with
an explicit KV cache (`models.hf_state`), Gemma's 0-d buffers, and untrusted files refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers
from conftest import assert_matches
from safetensors.torch import save_file

import compiler
import models
from compiler.__main__ import main as compiler_main
from core.errors import HFConfigError, HFWeightsError
from models import hf_files, hf_state
from simulator.cli import main as wafersim_main
from simulator.phases import simulate_placed

SMALL = dict(
    vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
)  # fmt: skip
CONFIGS = {
    "llama": {"model_type": "llama", **SMALL},
    "qwen2": {"model_type": "qwen2", **SMALL},
    "gpt2": {"model_type": "gpt2", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4,
             "n_positions": 64},
    "gemma": {"model_type": "gemma", "head_dim": 16, **SMALL},
    "gemma2": {"model_type": "gemma2", "head_dim": 16, **SMALL},  # eager attention: additive mask
}  # fmt: skip
IDS = torch.randint(256, (2, 9), generator=torch.Generator().manual_seed(3))


def _write(tmp_path, data) -> str:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _model(tmp_path, family: str) -> torch.nn.Module:
    return hf_files.build(_write(tmp_path, CONFIGS[family]))


def _prefill_then_decode(model, prefill, decode):
    """Logits of prefilling 8 tokens into a 12-slot cache, then of a decode step at position
    8; the cache before and after that step."""
    logits, *state = prefill(IDS[:, :8])
    step_logits, *new_state = decode(IDS[:, 8:], torch.tensor([8]), *state)
    return logits, step_logits, state, new_state


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gemma2"])
def test_explicit_state_matches_eager_hf(tmp_path, family):
    """The pure prefill and decode functions give eager Hugging Face's logits for the whole
    9-token sequence; the step writes slot 8 only. (tests/test_matrix.py compiles the decode
    of HF GPT-2 and Llama on every runtime and dtype.)"""
    model = _model(tmp_path, family)
    with torch.no_grad():
        expected = model(IDS, use_cache=False).logits
        got = _prefill_then_decode(model, hf_state.HFPrefill(model, 12), hf_state.HFDecode(model))
    logits, step_logits, state, new_state = got
    assert len(state) == 4 and state[0].shape[-2] == 12
    assert_matches(logits[:, -1], expected[:, 7])
    assert_matches(step_logits[:, -1], expected[:, 8])
    assert not torch.equal(new_state[0][:, :, 8], state[0][:, :, 8])
    torch.testing.assert_close(new_state[0][:, :, :8], state[0][:, :, :8], rtol=0, atol=0)


def test_compiled_qwen2_decode_matches_eager_hf(tmp_path):
    model = _model(tmp_path, "qwen2")
    with torch.no_grad():
        expected = model(IDS, use_cache=False).logits
        state = hf_state.HFPrefill(model, 12)(IDS[:, :8])[1:]
    prefill = compiler.compile(hf_state.HFPrefill(model, 12), (IDS[:, :8],))
    decode = compiler.compile(hf_state.HFDecode(model), (IDS[:, 8:], torch.tensor([8]), *state))
    logits, step_logits, _, new_state = _prefill_then_decode(model, prefill, decode)
    assert_matches(logits[:, -1], expected[:, 7])
    assert_matches(step_logits[:, -1], expected[:, 8])
    assert len(new_state) == 4


def test_gemma_zero_dim_buffer_places_and_runs_tile_by_tile(tmp_path):
    """Gemma's 0-d `embed_scale` gets weight tiles (an empty tile shape) and the placed
    program matches eager, PE by PE."""
    model = _model(tmp_path, "gemma")
    model.config.use_cache = False
    compiled = compiler.compile(model, (IDS,), target="mesh-16x16", runtime="simulator")
    scalar = [
        i for i in compiled.placed.program.instructions if i.op == "weight_tiles" and
        not i.result_specs[0].shape
    ]  # fmt: skip
    assert scalar and scalar[0].attrs["tile_shape"] == []
    with torch.no_grad():
        expected = model(IDS).logits
    assert_matches(compiled(IDS).logits, expected)


def test_untiled_attention_simulates(tmp_path):
    """An attention op without flash tiling (the path that once handed a value to an
    all-reduce as its predecessor) is translated, and costs more than the tiled one here."""
    model = _model(tmp_path, "llama")
    ids = torch.zeros((1, 16), dtype=torch.int64)
    placed = compiler.compile(hf_state.HFPrefill(model, 16), (ids,), target="wse3").placed
    flash = ("q_block", "kv_block", "kv_parts")
    untiled = dataclasses.replace(
        placed.program,
        instructions=tuple(
            dataclasses.replace(i, attrs={k: v for k, v in i.attrs.items() if k not in flash})
            for i in placed.program.instructions
        ),
    )
    cycles = [
        simulate_placed(p, placed.report.target, dtype="fp16").cycles
        for p in (placed.program, untiled)
    ]
    assert all(c > 0 for c in cycles) and cycles[0] != cycles[1]


def test_wafersim_run_config_prefill_and_decode(tmp_path, capsys):
    path = _write(tmp_path, CONFIGS["qwen2"])
    argv = ["run", path, "--seq", "16", "--decode", "4", "--no-cache", "--json"]
    assert wafersim_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prefill"]["cycles"] > 0 and report["decode"]["cycles"] > 0
    assert report["prefill"]["tokens"] == 16 and report["decode"]["steps"] == 4


def test_ssm_config_simulates_prefill_and_decode(tmp_path, capsys):
    """A Mamba config: prefill, and decode steps over its explicit conv/SSM state
    (tests/test_hf_recurrent.py checks that state against eager)."""
    mamba = {"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2,
             "vocab_size": 128, "state_size": 4, "intermediate_size": 64}  # fmt: skip
    path = _write(tmp_path, mamba)
    assert wafersim_main(["run", path, "--seq", "16", "--decode", "2", "--no-cache", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prefill"]["cycles"] > 0 and report["decode"]["cycles"] > 0
    assert report["decode"]["steps"] == 2


def test_weights_from_safetensors(tmp_path, capsys):
    """A model directory's safetensors weights are loaded (tied head absent), and
    `python -m compiler DIR` compiles and checks it."""
    reference = models.build_hf(transformers.LlamaConfig(**SMALL, tie_word_embeddings=True), seed=5)
    weights = {k: v for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    save_file(weights, str(tmp_path / "model.safetensors"))
    _write(tmp_path, {**CONFIGS["llama"], "tie_word_embeddings": True})
    loaded = hf_files.build(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, reference(IDS).logits, rtol=0, atol=0)
    on_meta = hf_files.build(tmp_path, device="meta")
    assert next(on_meta.parameters()).is_meta
    assert compiler_main([str(tmp_path), "--seq", "8", "--target", "mesh-16x16"]) == 0
    assert "max |compiled - eager|" in capsys.readouterr().out


BAD_CONFIGS = {
    "not json": ("{model_type: llama", "not valid UTF-8 JSON"),
    "not an object": ("[1, 2]", "must be a JSON object"),
    "no model_type": ({"hidden_size": 64}, "missing the field 'model_type'"),
    "unknown model_type": ({"model_type": "nosuchlm"}, "not a causal language model"),
    "not a causal LM": ({"model_type": "vit"}, "not a causal language model"),
    "remote code": ({"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "x.Y"}},
                    "remote code"),
    "bad sizes": ({**CONFIGS["llama"], "hidden_size": 66}, "llama"),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "huge integer": ('{"model_type": "llama", "hidden_size": ' + "9" * 5000 + "}",
                     "not valid UTF-8 JSON"),
    "too many layers": ({**CONFIGS["llama"], "num_hidden_layers": 10**8}, "outside 1..1024"),
    "quantized": ({**CONFIGS["llama"], "quantization_config": {"quant_method": "gptq"}},
                  "quantized checkpoint"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_a_named_error(tmp_path, case):
    data, message = BAD_CONFIGS[case]
    with pytest.raises(HFConfigError, match=message):
        hf_files.build(_write(tmp_path, data), device="meta")


def test_missing_config_and_bad_weights(tmp_path):
    with pytest.raises(HFConfigError, match="cannot open it as a regular file"):
        hf_files.load_config(tmp_path)
    (tmp_path / "elsewhere.json").write_text(json.dumps(CONFIGS["llama"]))
    (tmp_path / "config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(HFConfigError, match="symbolic links are not followed"):
        hf_files.load_config(tmp_path)
    (tmp_path / "config.json").unlink()
    _write(tmp_path, CONFIGS["llama"])
    weights = {"model.embed_tokens.weight": torch.zeros(256, 32)}
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(HFWeightsError, match=r"shape \[256, 32\], the config needs \[256, 64\]"):
        hf_files.build(tmp_path, device="meta")
    save_file({"other.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(HFWeightsError, match="unexpected weight 'other.weight'"):
        hf_files.build(tmp_path)
    save_file({"model.norm.weight": torch.ones(64)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(HFWeightsError, match="missing"):
        hf_files.build(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")
    with pytest.raises(HFWeightsError, match="not a readable safetensors file"):
        hf_files.build(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(HFWeightsError, match="symbolic links are not followed"):
        hf_files.build(tmp_path, device="meta")


def test_kernel_choices_in_a_config_are_dropped(tmp_path):
    """A config naming an attention or experts kernel (a Hub repository would be fetched and
    imported) builds with transformers' own implementations."""
    data = {**CONFIGS["llama"], "attn_implementation": "someone/kernel-repo"}
    model = hf_files.build(_write(tmp_path, data), device="meta")
    assert model.config._attn_implementation in ("sdpa", "eager")


class _PerHead(torch.nn.Module):
    """A rank-3 weight with a long middle dim, as Zamba's per-head Mamba projections."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(2, 96, 3))

    def forward(self, x):
        return x * self.weight


@pytest.mark.parametrize("mode", ["pipelined", "streaming"])
def test_rank3_weight_splits_its_two_largest_dims(mode):
    """Zamba's lm_head-stage overflow came from such weights keeping their long middle dim
    whole on each PE; now it is split, and the tiles still compute the right values."""
    model, x = _PerHead().eval(), torch.randn(2, 96, 3)
    compiled = compiler.compile(model, (x,), target="mesh-8x8", mode=mode, runtime="simulator")
    tiles = next(i for i in compiled.placed.program.instructions if i.op == "weight_tiles")
    assert tiles.attrs["tile_dims"] == [1, 2] and tiles.attrs["tile_shape"][1] < 96
    assert_matches(compiled(x), x * model.weight.detach())
