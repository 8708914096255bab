"""The `wse` dialect: tensor-level operations of a wafer-scale engine program.

Defined with MLIR's Python `dialects.ext` (IRDL underneath): every op is a real MLIR
operation that verifies, prints (in generic form) and parses back. All values are ranked
tensors with static shapes; element types are f32, f16, bf16, f64, i64, i32 or i1.

Conventions shared by all ops:
- Attributes holding integer lists (dims, permutations) are `ArrayAttr`s of i64.
- Elementwise binary ops broadcast their operands numpy-style to the result shape; their
  operands already carry the result's element type (the lowering inserts `wse.convert`).
- Weights are never literals: `wse.param` names a tensor of the model's state dict.

One module per op family, each op with its docstring and verifier: `sources`, `elementwise`,
`linalg`, `reductions` (with the normalisations), `movement`, `scans`, `moe`, and `fabric` (the
ops placement adds), over `base` (the dialect object `Wse` and the verifiers' helpers). Every
public name is re-exported here: name ops as `wse.AddOp` after `from compiler.dialects import wse`.
"""

# Importing a family registers its ops with `Wse`, so this order is the registration order:
# the families in the order above, placement's ops last.
# isort: off
from compiler.dialects.wse.base import Wse as Wse
from compiler.dialects.wse.sources import *  # noqa: F403
from compiler.dialects.wse.elementwise import *  # noqa: F403
from compiler.dialects.wse.linalg import *  # noqa: F403
from compiler.dialects.wse.reductions import *  # noqa: F403
from compiler.dialects.wse.movement import *  # noqa: F403
from compiler.dialects.wse.scans import *  # noqa: F403
from compiler.dialects.wse.moe import *  # noqa: F403
from compiler.dialects.wse.fabric import *  # noqa: F403
# isort: on
