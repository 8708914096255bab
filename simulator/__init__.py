"""Cycle-approximate simulation of placed `wse` programs on one wafer, one module per stage:
`cost` (a cost per op class) -> `collectives` (fabric collectives) -> `kernels` (single
kernels) -> `tasks` and `translate` (a placed program to engine tasks) -> `engine` (events) ->
`summary` (per stage, per op class) -> `report` (JSON reports) -> `phases` (the driver: a
model's prefill and decode). `trace` builds reports from events; `cli` is `wafersim`.

The tile-by-tile numerical executor lives in `runtime.tiled`."""
