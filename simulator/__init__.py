"""Cycle-approximate simulation of placed `wse` programs on one wafer: cost functions, fabric
kernels, the event engine, model-level phases and their reports; the `wafersim` CLI.

The tile-by-tile numerical executor lives in `runtime.tiled`."""
