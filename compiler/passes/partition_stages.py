"""`partition-stages`: give every op a pipeline stage, one model layer per stage.

A layer is named by its weights' common prefix up to the first numeric part
("model.blocks.3.attn.q.weight" -> "model.blocks.3"; otherwise the module, "model.lm_head").
Stages are numbered in the order the program first reads their weights. Ops that read a weight
(or a view of one) belong to its layer, as does a `wse.moe_combine` of its experts' rows; every
other op goes to the earliest stage that consumes it, or, when only the function returns it, to
the latest stage it depends on. A layer that holds only vectors (a norm) joins the layer after
it, or the one before it when it comes last.

Before:
    %w = "wse.param"() {sym_name = "model.blocks.0.mlp.fc.weight"} : () -> tensor<256x64xf32>
    %t = "wse.transpose"(%w) {permutation = [1, 0]} : (tensor<256x64xf32>) -> tensor<64x256xf32>
    %y = "wse.matmul"(%x, %t) : (tensor<8x64xf32>, tensor<64x256xf32>) -> tensor<8x256xf32>
After:
    module attributes {wse.stages = ["model.lm_head", "model.blocks.0", ...]}
    %w = "wse.param"() {stage = 1 : i64, sym_name = "model.blocks.0.mlp.fc.weight"} ...
    %t = "wse.transpose"(%w) {permutation = [1, 0], stage = 1 : i64} ...
    %y = "wse.matmul"(%x, %t) {stage = 1 : i64} ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.mlir import ir, shape_of, str_attr
from compiler.passes.common import (
    PassContext,
    body_ops,
    get_str,
    kind,
    layer_key,
    producer,
    set_int,
    set_module_attr,
    users,
    weight_param,
)


@dataclass(frozen=True)
class PartitionStagesOptions:
    """`merge_vector_layers`: fold layers without matrices into a neighbouring layer."""

    merge_vector_layers: bool = True


class PartitionStages:
    name = "partition-stages"

    def __init__(self, options: PartitionStagesOptions = PartitionStagesOptions()):
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        ops = body_ops(module)
        readers = users(module)
        order: list[str] = []
        vector_only: dict[str, bool] = {}
        fixed: dict = {}
        for op in ops:
            if kind(op) == "param":
                if op.result not in readers:
                    continue
                key = layer_key(get_str(op, "sym_name"))
                vector_only[key] = vector_only.get(key, True) and len(shape_of(op.result)) <= 1
                fixed[op] = key
                continue
            params = [w[0] for w in map(weight_param, op.operands) if w is not None]
            for param in params:
                if fixed[param] not in order:
                    order.append(fixed[param])
            if params:
                fixed[op] = fixed[max(params, key=lambda p: math.prod(shape_of(p.result)))]
            elif kind(op) == "moe_combine" and producer(op.operands[0]) in fixed:
                fixed[op] = fixed[producer(op.operands[0])]  # with its experts, not the next layer
        stage_of_key, names = self._number(order, vector_only)
        stage: dict = {}
        for op in ops:
            if op in fixed:
                stage[op] = stage_of_key[fixed[op]]
            elif kind(op) != "param":
                stage[op] = max(
                    (stage[p] for p in map(producer, op.operands) if p is not None),
                    default=0,
                )
        for op in reversed(ops):
            if op in fixed:
                continue
            consumers = [
                u for r in op.results for u in readers.get(r, ()) if u.name != "func.return"
            ]
            if consumers:
                stage[op] = min(stage[u] for u in consumers)
        for op, s in stage.items():
            set_int(op, "stage", s)
        set_module_attr(module, "wse.stages", ir.ArrayAttr.get([str_attr(n) for n in names]))

    def _number(self, order: list[str], vector_only: dict[str, bool]):
        """Stage index per layer key (vector-only layers merged into the next one, or the
        previous one at the end) and the stage names ("model.norm+model.lm_head"); a program
        without weights is one stage, "forward"."""
        numbers: dict[str, int] = {}
        names: list[str] = []
        pending: list[str] = []
        merge = self.options.merge_vector_layers
        for key in order:
            pending.append(key)
            if merge and vector_only[key] and key != order[-1]:
                continue
            if merge and names and all(vector_only[k] for k in pending):
                numbers.update((k, len(names) - 1) for k in pending)
                names[-1] = "+".join([names[-1], *pending])
            else:
                numbers.update((k, len(names)) for k in pending)
                names.append("+".join(pending))
            pending = []
        return numbers, names or ["forward"]
