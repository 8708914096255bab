"""Hugging Face causal LMs from a `config.json` or a model directory, safely.

A model directory holds `config.json` and, optionally, `*.safetensors` weights. Everything in
it is untrusted: the config is read as JSON (at most `MAX_CONFIG_BYTES`), never run; a config
that asks for remote code (`auto_map`, `trust_remote_code`) is refused, since building it would
import code it names; weights are read with `safetensors` (no pickle), and only from regular
files directly in the directory. Nothing is downloaded. Without weights the model gets seeded
random weights, or none at all on the meta device (enough to place and simulate it).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from core.errors import HFConfigError, HFWeightsError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MAX_CONFIG_BYTES = 1 << 20
# Random weights are built in host memory only up to this many bytes; larger models go on
# the meta device (`wafersim run` places and simulates them without any weights).
MAX_RANDOM_WEIGHT_BYTES = 8 << 30
_REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code")
# Kernel choices a config may carry; a Hub name here would make transformers fetch and import
# code, so they are dropped and the model runs PyTorch's SDPA attention and its own experts.
_KERNEL_KEYS = (
    "attn_implementation",
    "_attn_implementation",
    "experts_implementation",
    "_experts_implementation",
)
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
MAX_LAYERS = 1024


def config_path(spec: str | Path) -> Path | None:
    """The `config.json` that `spec` names (the file itself, or one in a directory), or None
    when `spec` does not look like a Hugging Face config (a registered name, say)."""
    path = Path(spec)
    if path.is_dir():
        return path / "config.json"
    return path if path.suffix == ".json" else None


def _read_json(path: Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise HFConfigError(
            f"{path}: cannot open it as a regular file ({exc.strerror}; symbolic links are not "
            "followed); give a config.json or a model directory"
        ) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise HFConfigError(f"{path}: not a regular file; give a config.json")
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise HFConfigError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes; not a model config")
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise HFConfigError(f"{path}: JSON nested too deeply; not a model config") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, over-long integers
        raise HFConfigError(
            f"{path}: not valid UTF-8 JSON ({exc}); fix or replace the file"
        ) from None
    if not isinstance(data, dict):
        raise HFConfigError(
            f"{path}: the top level must be a JSON object, got {type(data).__name__}"
        )
    return data


def load_config(spec: str | Path):
    """The transformers config of `spec` (a config.json or a model directory), checked: a
    known causal-LM `model_type`, no remote code, fields that build a model."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = config_path(spec)
    if path is None:
        raise HFConfigError(f"{spec}: expected a config.json path or a model directory")
    data = _read_json(path)
    remote = [key for key in _REMOTE_CODE_KEYS if key in data]
    if remote:
        raise HFConfigError(
            f"{path}: asks for remote code ({', '.join(remote)}); Wafer never imports code a "
            "config names: use a model whose architecture transformers ships"
        )
    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        raise HFConfigError(f"{path}: missing the field 'model_type' (e.g. \"llama\")")
    if model_type not in CONFIG_MAPPING or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise HFConfigError(
            f"{path}: model_type {model_type!r} is not a causal language model of the installed "
            "transformers; use one of its decoder families (llama, qwen2, gpt2, ...)"
        )
    if "quantization_config" in data:
        raise HFConfigError(
            f"{path}: a quantized checkpoint (quantization_config); Wafer compiles the float "
            "model: remove quantization_config and give float weights, or none"
        )
    for key in _LAYER_COUNT_KEYS:
        count = data.get(key)
        if isinstance(count, int) and not 0 < count <= MAX_LAYERS:
            raise HFConfigError(
                f"{path}: {key} = {count}, outside 1..{MAX_LAYERS}; check the config"
            )
    dropped = ("model_type", "architectures", *_KERNEL_KEYS)
    fields = {k: v for k, v in data.items() if k not in dropped}
    try:
        return CONFIG_MAPPING[model_type](**fields)
    except Exception as exc:  # the config class validates untrusted fields its own way
        reason = " ".join(str(exc).split())
        raise HFConfigError(f"{path}: bad {model_type} config: {reason}") from None


def _construct(config, device: str, dtype: torch.dtype, seed: int) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # the model class checks the config's sizes its own way
        raise HFConfigError(
            f"cannot build a {config.model_type} model from this config: {exc}; "
            "check its sizes (heads divide the hidden size, positive counts)"
        ) from None
    return model.to(dtype).eval()


def build(
    spec: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> PreTrainedModel:
    """The causal LM of `spec` (config.json or model directory) in eval mode: its safetensors
    weights when the directory has them (checked against the config), else seeded random ones;
    on the meta device only shapes (weights are checked, not read)."""
    config = load_config(spec)
    if device != "meta":
        sized = _construct(config, "meta", dtype, seed)
        nbytes = sum(p.numel() * p.element_size() for p in sized.parameters())
        if nbytes > MAX_RANDOM_WEIGHT_BYTES:
            raise HFConfigError(
                f"{spec}: {nbytes / 2**30:.1f} GiB of weights, over the "
                f"{MAX_RANDOM_WEIGHT_BYTES / 2**30:.0f} GiB built in host memory; simulate it "
                "without weights (wafersim run places it on the meta device)"
            )
    model = _construct(config, device, dtype, seed)
    if Path(spec).is_dir():
        files = _weight_files(Path(spec))
        if files:
            _load_weights(model, files, read=device != "meta")
    return model


def _weight_files(directory: Path) -> list[Path]:
    """The `*.safetensors` files directly in `directory`; a link among them is refused, not
    skipped (the model would silently get random weights)."""
    found = sorted(directory.glob("*.safetensors"))
    links = [p.name for p in found if p.is_symlink() or not p.is_file()]
    if links:
        raise HFWeightsError(
            f"{directory}: {', '.join(links)} not regular files (symbolic links are not "
            "followed); copy the weights into the directory"
        )
    return found


def _load_weights(model: PreTrainedModel, files: list[Path], *, read: bool) -> None:
    """Check the tensors in `files` against `model` (names and shapes), and load them when
    `read`. Tied aliases (an LM head sharing the embedding) may be absent."""
    from safetensors import SafetensorError, safe_open

    state = model.state_dict()
    found: dict[str, Path] = {}
    loaded: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    if key in found:
                        raise HFWeightsError(f"{key} is in both {found[key].name} and {path.name}")
                    found[key] = path
                    _check_tensor(key, list(f.get_slice(key).get_shape()), state, path)
                    if read:
                        loaded[key] = f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise HFWeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    missing = [name for name, _ in model.named_parameters() if name not in found]
    if missing:
        raise HFWeightsError(
            f"{len(missing)} weight(s) missing from {', '.join(p.name for p in files)}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; give every weight "
            "of the checkpoint, or none (random weights)"
        )
    if read:
        dtype = next(model.parameters()).dtype
        model.load_state_dict({k: v.to(dtype) for k, v in loaded.items()}, strict=False)


def _check_tensor(key: str, shape: list[int], state: dict, path: Path) -> None:
    if key not in state:
        raise HFWeightsError(
            f"{path.name}: unexpected weight {key!r} for this config; the weights belong to "
            "another model (check config.json)"
        )
    expect = list(state[key].shape)
    if shape != expect:
        raise HFWeightsError(
            f"{path.name}: weight {key!r} has shape {shape}, the config needs {expect}; the "
            "weights and config.json disagree"
        )
