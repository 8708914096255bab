"""Bad-input cases: Hugging Face config.json files and model directories given to the CLIs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from catalogue import Case
from catalogue_inputs import CliFailed, _after, _compiler, _wafersim


def _config(content: str | dict) -> Callable[[Path], object]:
    text = content if isinstance(content, str) else json.dumps(content)
    return lambda tmp: (tmp / "config.json").write_text(text)


_LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 32}  # fmt: skip
_ITEM = "hf-config-untrusted"

CASES: list[Case] = [
    Case(
        _ITEM,
        "config asking for remote code",
        _after(
            _config({**_LLAMA, "auto_map": {"AutoModelForCausalLM": "evil.Model"}}),
            _wafersim("run", "{tmp}/config.json", "--decode", "0"),
        ),
        CliFailed,
        "asks for remote code (auto_map); Wafer never imports code a config names",
    ),
    Case(
        _ITEM,
        "config that is not JSON",
        _after(_config("{'model_type': 'llama'"), _compiler("{tmp}")),
        CliFailed,
        "not valid UTF-8 JSON",
    ),
    Case(
        _ITEM,
        "unknown model_type",
        _after(_config({**_LLAMA, "model_type": "llama-9000"}), _compiler("{tmp}/config.json")),
        CliFailed,
        "model_type 'llama-9000' is not a causal language model of the installed transformers",
    ),
    Case(
        _ITEM,
        "config.json path that does not exist",
        _wafersim("run", "{tmp}/missing/config.json"),
        CliFailed,
        "cannot open it as a regular file (No such file or directory; symbolic links are not",
    ),
]
