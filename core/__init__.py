"""Wafer's ground floor: the concepts every layer shares, importing none of the layers.

- `core.arguments`: command-line argument types and the parser both CLIs share.
- `core.errors`: the one error hierarchy (every bad-input error subclasses `WaferError`).
- `core.target`: hardware targets as data, the bundled presets and their validation.
- `core.geometry`: `Rect`, a rectangle of PEs.
- `core.dtypes`: the one table of element types.
- `core.custom_ops`: PyTorch custom ops Wafer lowers whole (`wafer::selective_scan`).
- `core.ssd`: Mamba-2's chunked SSD scan as one custom op (`wafer::ssd_scan`).
- `core.numerics`: the dtype-aware tolerances and error metrics of every comparison with eager.
- `core.outputs`: output paths a command writes, checked before the work starts.
- `core.ops`: the op registry, one entry per `wse` op, that every layer's table is checked against.
"""
