"""Median wall time of each compile stage (export, lowering, total) and FX node counts.

Run: `.venv/bin/python benchmarks/compile_time.py [--repeat N] [--only NAME ...]`.
Export includes torch.export and the core-ATen decompositions; lowering covers building and
verifying the wse module, printing it, and deriving the runtime program. `cpu s` is this
process's CPU time for both (wall time inflates on a loaded machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

import models
from compiler import frontend
from compiler.lowering import lower
from compiler.mlir import print_module
from compiler.serialize import to_program

HF_KWARGS = {"use_cache": False}


def hf_gpt2_small():
    return models.build_hf("gpt2-small"), models.example_inputs("gpt2-small", seq=128), HF_KWARGS


def hf_mamba_130m():
    return models.build_hf("mamba-130m"), models.example_inputs("mamba-130m", seq=1024), HF_KWARGS


def hf_mamba2_130m_meta():
    """state-spaces/mamba2-130m's shape (24 layers, 24 heads of 64, state 128, chunk 256)."""
    config = transformers.Mamba2Config(
        vocab_size=50288, hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64,
        state_size=128, n_groups=1, chunk_size=256, expand=2,
    )  # fmt: skip
    with torch.device("meta"):
        model = transformers.Mamba2ForCausalLM(config).eval()
    return model, (torch.zeros(1, 1024, dtype=torch.long),), HF_KWARGS


def llama_8b_meta():
    model = models.build("llama-8b", device="meta")
    return model, models.example_inputs("llama-8b", seq=128), {}


WORKLOADS = {
    "hf-gpt2-small seq128": hf_gpt2_small,
    "hf-mamba-130m seq1024": hf_mamba_130m,
    "hf-mamba2-130m (meta) seq1024": hf_mamba2_130m_meta,
    "llama-8b (meta) seq128": llama_8b_meta,
}


def measure(model, args, kwargs) -> tuple[float, float, int, int, float]:
    cpu, start = time.process_time(), time.perf_counter()
    ep = frontend.export(model, args, kwargs)
    exported = time.perf_counter()
    lowered = lower(ep)
    print_module(lowered.module)
    program = to_program(lowered.module, lowered.node_values)
    lowered = time.perf_counter()
    nodes = sum(1 for n in ep.graph.nodes if n.op == "call_function")
    cpu = time.process_time() - cpu
    return exported - start, lowered - exported, nodes, len(program.instructions), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(WORKLOADS))
    opts = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {opts.repeat}")
    print(
        f"{'workload':30} {'export s':>9} {'lowering s':>11} {'total s':>8} {'cpu s':>6} "
        f"{'FX nodes':>9} {'wse ops':>8}"
    )
    for name in opts.only:
        model, args, kwargs = WORKLOADS[name]()
        runs = [measure(model, args, kwargs) for _ in range(opts.repeat)]
        export = statistics.median(r[0] for r in runs)
        lowering = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        cpu = statistics.median(r[4] for r in runs)
        print(
            f"{name:30} {export:9.2f} {lowering:11.2f} {total:8.2f} {cpu:6.2f} {runs[0][2]:9d} "
            f"{runs[0][3]:8d}"
        )


if __name__ == "__main__":
    main()
