"""Export-friendly reference models (GPT-2, Llama, Mamba, hybrid) with explicit prefill/decode state.

Importing this package registers the ``wafer::selective_scan`` custom op.
"""

from core.custom_ops import selective_scan, selective_scan_reference
from models.base import CausalLM, Decode, Prefill
from models.generate import generate, greedy_reference
from models.gpt2 import GPT2Config, GPT2Model
from models.hf import build_hf, config_from_hf, config_to_hf, from_hf_state_dict
from models.hybrid import HybridConfig, HybridModel
from models.llama import LlamaConfig, LlamaModel
from models.mamba import MambaConfig, MambaModel
from models.registry import build, check_context, config, example_inputs, names

__all__ = [
    "CausalLM",
    "Decode",
    "GPT2Config",
    "GPT2Model",
    "HybridConfig",
    "HybridModel",
    "LlamaConfig",
    "LlamaModel",
    "MambaConfig",
    "MambaModel",
    "Prefill",
    "build",
    "check_context",
    "build_hf",
    "config",
    "config_from_hf",
    "config_to_hf",
    "example_inputs",
    "from_hf_state_dict",
    "generate",
    "greedy_reference",
    "names",
    "selective_scan",
    "selective_scan_reference",
]
