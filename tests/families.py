"""The family matrix: every decoder-only causal-LM family of the installed `transformers`.

Families come from transformers' causal-LM auto mapping (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`);
`exclusions()` says why each one left out is not a decoder-only transformer, SSM or hybrid
(`EXCLUDED`, plus aliases of a class already kept). Each kept family runs through `STAGES`:

- `reference`, `tiled`, `jax-fp32`: a tiny seeded config (`family_configs.tiny_config`: batch 2,
  seq 16, fp32) compiled once and run on the reference runtime, tile by tile on `TEST_MESH`,
  and on JAX, against eager;
- `jax-bf16`: the same config in bf16 on JAX, at `core.numerics`' bf16 output tolerance (or
  as close to the float64 model as eager is, or as its weights' bf16 rounding alone moves it);
- `place`: the default config on the meta device in bf16 placed on `wse3` (`auto`: up to 16
  wafers, else weights streamed), or why not, with the bytes;
- `prefill-sim`, `decode-sim`: that placement simulated, and an HF decode step with its cache.

`run_family` returns one `Cell` per stage; `benchmarks/families.py` prints the table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from family_configs import default_config, tiny_config

import compiler
import models
from compiler.passes import place_program
from core.numerics import check_conditioned_output, check_output, rounding_reruns
from core.target import load_target
from models import hf_own_state, hf_state
from simulator.phases import SimOptions, simulate_placed

if TYPE_CHECKING:
    from transformers import PreTrainedModel

STAGES = ("reference", "tiled", "jax-fp32", "jax-bf16", "place", "prefill-sim", "decode-sim")
TEST_MESH = "mesh-8x8"
BATCH, SEQ = 2, 16
DEFAULT_SEQ = 128  # tokens of the default-size prefill (batch 1), as `wafersim run`
SEED = 0

# Why each family of the mapping that is not kept is left out (aliases are found by class).
_ENCODER = "bidirectional encoder (masked-LM) with an optional causal mask, not a decoder-only LM"
_SEQ2SEQ = "decoder half of an encoder-decoder model (cross-attention to an encoder)"
_MULTIMODAL = "multimodal composite (vision/audio tower + text decoder)"
EXCLUDED: dict[str, str] = {
    **dict.fromkeys(
        ("bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra",
         "ernie", "megatron-bert", "rembert", "roberta", "roberta-prelayernorm", "roc_bert",
         "roformer", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod"),
        _ENCODER,
    ),
    "xlnet": "permutation-LM encoder with segment recurrence, no fixed sequence length",
    "reformer": "LSH / chunked attention encoder needing is_decoder, not a decoder-only LM",
    **dict.fromkeys(
        ("bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart", "mvp",
         "pegasus", "plbart", "prophetnet"),
        _SEQ2SEQ,
    ),
    "trocr": f"{_SEQ2SEQ}: the text decoder of an image-to-text model",
    "whisper": f"{_SEQ2SEQ}: the text decoder of a speech model",
    **dict.fromkeys(
        ("fuyu", "gemma3", "gemma4", "gemma4_unified", "git", "got_ocr2", "mllama",
         "moss_transcribe_diarize", "phi4_multimodal", "emu3"),
        _MULTIMODAL,
    ),
    "gemma3n": f"{_MULTIMODAL}; also needs timm (its text decoder is gemma3n_text)",
    "gemma4_unified_assistant": f"{_MULTIMODAL} draft model (gemma4_unified_text is kept)",
    "gemma4_assistant": "speculative-decoding draft head: its forward takes the target model's "
    "hidden states and shared KV states, not token ids (gemma4_text is kept)",
    "llama4": f"{_MULTIMODAL} config (its text decoder is llama4_text)",
    "qwen3_5": f"{_MULTIMODAL} config (its text decoder is qwen3_5_text)",
    "qwen3_5_moe": f"{_MULTIMODAL} config (its text decoder is qwen3_5_moe_text)",
    "qwen4_exp": f"{_MULTIMODAL} config (its text decoder is qwen4_exp_text)",
    "dots3_note": f"{_MULTIMODAL} config (its text decoder is dots3_note_text)",
    "musicgen": "audio-codebook decoder of a text-to-music model (several token streams)",
    "musicgen_melody": "audio-codebook decoder of a text-to-music model (several token streams)",
    "moshi": "audio-codebook speech decoder (several token streams)",
    "blt": "byte latent transformer: local byte encoder/decoder around a patcher, not one LM",
}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One stage of one family: `ok`, or `reason` (short, for the table) and `error` (full)."""

    ok: bool
    reason: str = ""
    error: str = ""
    note: str = ""

    @property
    def mark(self) -> str:
        return "✔" if self.ok else self.reason


def _mapping() -> dict[str, str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def exclusions() -> dict[str, str]:
    """Every family of the mapping left out, with why: `EXCLUDED`, and aliases: a family whose
    model class another family owns (the one whose name the class spells, e.g. `llama` for
    `LlamaForCausalLM`, else the first)."""
    mapping = _mapping()
    order = {t: i for i, t in enumerate(mapping)}

    def rank(t: str) -> tuple[bool, int]:
        return t.replace("_", "").replace("-", "") not in mapping[t].lower(), order[t]

    owner: dict[str, str] = {}
    for model_type in sorted((t for t in mapping if t not in EXCLUDED), key=rank):
        owner.setdefault(mapping[model_type], model_type)
    out: dict[str, str] = {}
    for model_type, cls in mapping.items():
        if model_type in EXCLUDED:
            out[model_type] = EXCLUDED[model_type]
        elif owner[cls] != model_type:
            out[model_type] = f"alias: same model class {cls} as {owner[cls]}"
    return out


def families() -> list[str]:
    """The kept families (model types), in the mapping's order."""
    excluded = exclusions()
    return [t for t in _mapping() if t not in excluded]


def tiny_model(model_type: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The family at tiny sizes with seeded random weights, in eval mode, in `dtype`."""
    config = tiny_config(model_type)
    if dtype == torch.float64:  # HF's grouped_mm has no float64: its eager expert loop
        config._experts_implementation = "eager"
    model = models.build_hf(config, seed=SEED)
    keep = _float32_parameters(config, dtype)
    kept = {n: p.detach().clone() for n, p in model.named_parameters() if n in keep}
    model.to(dtype)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():  # a router HF inits to 0 (AFMoE) ties every expert: seeded N(0, 0.2)
        for name, param in model.named_parameters():
            if name in kept:
                param.data = kept[name]
            if ".router." in name and param.dim() == 2 and not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return cast("PreTrainedModel", model)


def _float32_parameters(config, dtype: torch.dtype) -> set[str]:
    """The parameters a family creates in float32 whatever the model's dtype (routers, gates,
    decays of Inkling-2, DeepSeek, Zamba...), as `from_config(dtype=...)` builds a bf16 model:
    they stay float32 there (none for a float32 or float64 model)."""
    from transformers import AutoModelForCausalLM

    if dtype not in (torch.bfloat16, torch.float16):
        return set()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return {name for name, p in model.named_parameters() if p.dtype == torch.float32}


def tiny_inputs(model: PreTrainedModel) -> torch.Tensor:
    """Seeded token ids (batch 2, seq 16) within the model's vocabulary."""
    vocab = cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (BATCH, SEQ), generator=gen)


@torch.no_grad()
def tiny_logits(model_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(compiled, eager) logits of the family's tiny model on its tiny inputs, the compiled
    ones on the reference runtime."""
    model = tiny_model(model_type)
    ids = tiny_inputs(model)
    expected = _logits(model(ids, use_cache=False))
    compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
    return _logits(compiled(ids, use_cache=False)), expected


def default_model(model_type: str) -> PreTrainedModel:
    """The family's default config, on the meta device, in bf16."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(default_config(model_type), dtype=torch.bfloat16)
    return model.eval()


def short_reason(error: BaseException) -> str:
    """A table cell for `error`: its type and the start of its first line."""
    ops = sorted(set(re.findall(r"^ +(\S+) x\d+ at ", str(error), re.M)))  # unsupported ops
    if ops:
        return "unsupported: " + ", ".join(ops[:4]) + (" …" if len(ops) > 4 else "")
    first = (str(error).strip().splitlines() or [""])[0]
    text = f"{type(error).__name__}: {first}"
    return text if len(text) <= 70 else text[:69] + "…"


def _failed(error: BaseException) -> Cell:
    return Cell(False, short_reason(error), f"{type(error).__name__}: {error}")


def _logits(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out[0]


@torch.no_grad()
def _tiny_stages(model_type: str, stages: tuple[str, ...]) -> dict[str, Cell]:
    """`reference`, `tiled`, `jax-fp32` (one compile) and `jax-bf16` (another)."""
    cells: dict[str, Cell] = {}
    fp32 = [s for s in ("reference", "tiled", "jax-fp32") if s in stages]
    if fp32:
        try:
            model = tiny_model(model_type)
            ids = tiny_inputs(model)
            expected = _logits(model(ids, use_cache=False))
            compiled = compiler.compile(model, (ids,), {"use_cache": False}, target=None)
        except Exception as error:  # noqa: BLE001  (every failure is a cell of the table)
            return dict.fromkeys(fp32, _failed(error)) | _bf16(model_type, stages)
        float64 = functools.partial(tiny_model, model_type, torch.float64)
        exact = functools.cache(lambda: _logits(float64()(ids, use_cache=False)))
        for stage in fp32:
            cells[stage] = _run_fp32(compiled, stage, ids, expected, exact)
    return cells | _bf16(model_type, stages)


def _run_fp32(
    compiled, stage: str, ids: torch.Tensor, expected: torch.Tensor, exact: Callable
) -> Cell:
    """One float32 stage against eager; beyond tolerance, within 4x eager's own distance
    from the float64 model (`exact()`) still passes, as for bf16."""
    try:
        if stage == "tiled":
            target = load_target(TEST_MESH)
            placed = place_program(compiled.mlir, target, mode="auto")
            compiled = dataclasses.replace(compiled, placed=placed, target=target)
        runtime = {"reference": "reference", "tiled": "simulator", "jax-fp32": "jax"}[stage]
        actual = _logits(compiled.using(runtime)(ids, use_cache=False))
        first = check_output(actual, expected)
        problem = None if first is None else check_conditioned_output(actual, expected, exact())
    except Exception as error:  # noqa: BLE001
        return _failed(error)
    if problem is not None:
        return Cell(False, f"mismatch: {problem}", problem)
    return Cell(True, note="" if first is None else f"ill-conditioned, passes on float64: {first}")


def _bf16(model_type: str, stages: tuple[str, ...]) -> dict[str, Cell]:
    if "jax-bf16" not in stages:
        return {}
    try:
        model = tiny_model(model_type, torch.bfloat16)
        ids = tiny_inputs(model)
        module, kwargs = _low_precision_forward(model)
        expected = _logits(module(ids, **kwargs))
        compiled = compiler.compile(module, (ids,), kwargs, target=None)
        actual = _logits(compiled.using("jax")(ids, **kwargs))
        first = problem = check_output(actual, expected, compute_dtype=torch.bfloat16)
        if problem is not None:  # as close to float64 as eager, or as bf16 weights, passes
            exact_model = _low_precision_forward(tiny_model(model_type, torch.float64))[0]

            def run(model: torch.nn.Module) -> torch.Tensor:
                return _logits(model(ids, **kwargs))

            reruns = rounding_reruns(exact_model, run, torch.bfloat16)
            problem = check_conditioned_output(
                actual, expected, run(exact_model), compute_dtype=torch.bfloat16, reruns=reruns
            )
    except Exception as error:  # noqa: BLE001
        return {"jax-bf16": _failed(error)}
    if problem is None:
        note = "" if first is None else f"ill-conditioned, passes on float64: {first}"
        return {"jax-bf16": Cell(True, note=note)}
    return {"jax-bf16": Cell(False, f"mismatch: {problem}"[:70], problem)}


def _low_precision_forward(model: PreTrainedModel) -> tuple[torch.nn.Module, dict]:
    """What the bf16 stage runs and compiles, with its keyword arguments: the model without a
    cache; for xLSTM, its forward from zero state in the model's dtype, as its prefill runs
    (`hf_own_state.XLSTMFromZeroState`: without a cache, transformers' kernels mix float32
    state with bf16 keys and fail; in float32 the two are one computation)."""
    if model.config.model_type == "xlstm":
        return hf_own_state.XLSTMFromZeroState(model), {}
    return model, {"use_cache": False}


def _placed(module: torch.nn.Module, inputs: tuple, options: SimOptions):
    """`module` compiled and placed as `wafersim run` would (`auto`, up to 16 x wse3)."""
    compiled = compiler.compile(module, inputs, target=None)
    return place_program(compiled.mlir, options.placement_target, mode=options.mode)


def _simulated(placed, decode: bool = False) -> Cell:
    try:
        report = placed.report
        names = [layer.name for layer in report.layers]
        sim = simulate_placed(placed.program, report.target, dtype="bf16", stage_names=names)
    except Exception as error:  # noqa: BLE001
        return _failed(error)
    what = "per token" if decode else f"for {DEFAULT_SEQ} tokens"
    return Cell(True, note=f"{sim.cycles:,} cycles {what}")


def _default_stages(model_type: str, stages: tuple[str, ...]) -> dict[str, Cell]:
    """`place`, `prefill-sim` and `decode-sim` of the default config (meta, bf16): prefill
    and decode over an explicit KV cache (`models.hf_state`), or, for a family without a
    plain KV cache, the prefill as one forward pass (and decode says why not)."""
    wanted = [s for s in ("place", "prefill-sim", "decode-sim") if s in stages]
    if not wanted:
        return {}
    options = SimOptions(target="wse3", seq=DEFAULT_SEQ, decode_steps=16, dtype="bf16")
    ids = torch.zeros((1, DEFAULT_SEQ), dtype=torch.int64)
    decode: Cell | None = None
    try:
        model = default_model(model_type)
        try:
            state = hf_state.init_state(model, 1, options.cache_tokens)
            prefill: torch.nn.Module = hf_state.HFPrefill(model, options.cache_tokens)
        except Exception as error:  # noqa: BLE001  (no plain KV cache: the forward pass)
            decode, state = _failed(error), ()
            prefill = hf_state.HFForward(model)
        placed = _placed(prefill, (ids,), options)
    except Exception as error:  # noqa: BLE001
        return dict.fromkeys(wanted, _failed(error))
    report = placed.report
    cells = {"place": Cell(True, note=report.mode_reason)}  # it starts with the mode
    if "prefill-sim" in wanted:
        cells["prefill-sim"] = _simulated(placed)
    if "decode-sim" in wanted and decode is None:
        try:
            token = torch.zeros((1, 1), dtype=torch.int64)
            position = torch.tensor([options.decode_position], dtype=torch.int64)
            step = _placed(hf_state.HFDecode(model), (token, position, *state), options)
            decode = _simulated(step, decode=True)
        except Exception as error:  # noqa: BLE001
            decode = _failed(error)
    if decode is not None:
        cells["decode-sim"] = decode
    return {stage: cells[stage] for stage in wanted}


def run_family(model_type: str, stages: tuple[str, ...] = STAGES) -> dict[str, Cell]:
    """Every stage in `stages` for `model_type`, each a `Cell` (failures are caught)."""
    with _quiet():
        cells = _tiny_stages(model_type, stages) | _default_stages(model_type, stages)
    return {stage: cells[stage] for stage in stages}


@contextlib.contextmanager
def _quiet():
    """transformers' warnings off while a family runs."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
