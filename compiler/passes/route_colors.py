"""`route-colors`: give every stream between regions a colour per PE, relaying when none is left.

A router has the target's `colors` routable colours, and a colour names one route through it.
Each region's own kernels (multicast and reduce along rows and columns) keep `kernel_colors` of
them on every PE; the rest carry the `wse.fabric_stream` routes that cross the PE (the
L-shaped route the simulator charges, `core.geometry.l_route`: along the source's rows, then
the destination's columns), one colour each. Streams take colours in program order, the
lowest one free along as much of the route as possible; where no colour is free on the next
PE, the route ends at a relay (a PE that receives and resends on another colour) and goes on
from there. A stream that needs relays gets `relays = N : i64` (the simulator adds the
target's `relay_latency_cycles` for each). A PE with no colour free at all is crossed anyway
(its routes share a colour in turn) and counts as a relay too. Streams between wafers leave
through the I/O edge and are not routed here.

Before:
    %s = "wse.fabric_stream"(%h) {hops = 40 : i64, region = [40, 0, 8, 8], src_region = [0, 0,
        8, 8], stage = 5 : i64} ...
After (with the colours on its route all taken by earlier streams):
    %s = "wse.fabric_stream"(%h) {hops = 40 : i64, region = [40, 0, 8, 8], relays = 1 : i64,
        src_region = [0, 0, 8, 8], stage = 5 : i64} ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.mlir import ir
from compiler.passes.common import PassContext, body_ops, kind, region_of, set_int
from core.geometry import Rect, l_route


@dataclass(frozen=True)
class RouteColorsOptions:
    """`kernel_colors`: colours every PE keeps for its region's own collectives."""

    kernel_colors: int = 4

    def __post_init__(self):
        if self.kernel_colors < 0:
            raise ValueError(f"kernel_colors must be >= 0, got {self.kernel_colors}")


class RouteColors:
    name = "route-colors"

    def __init__(self, options: RouteColorsOptions = RouteColorsOptions()):
        self.options = options

    def run(self, module: ir.Module, ctx: PassContext) -> None:
        target = ctx.target
        free_colours = max(0, min(target.colors, 63) - self.options.kernel_colors)
        used = np.zeros((target.grid_height_pes, target.grid_width_pes), dtype=np.uint64)
        for op in body_ops(module):
            if kind(op) != "fabric_stream":
                continue
            src, dst = region_of(op, "src_region"), region_of(op)
            if target.wafer_of(src.y) != target.wafer_of(dst.y):
                continue
            relays = _take_colours(used, l_route(src, dst), free_colours)
            if relays:
                set_int(op, "relays", relays)


def _take_colours(used: np.ndarray, legs: list[tuple[str, Rect]], colours: int) -> int:
    """Mark one colour on every PE of the route (a new one after each relay); the relays.
    The route is the legs' cross-sections in the order it crosses them."""
    every = (1 << colours) - 1
    free: list[int] = []
    starts = []
    for direction, rect in legs:
        taken = np.bitwise_or.reduce(used[rect.slices], axis=0 if direction in "EW" else 1)
        starts.append(len(free))
        free += [every & ~int(t) for t in (taken[::-1] if direction in "WN" else taken).tolist()]
    relays, available = 0, every
    runs: list[tuple[int, int]] = []  # the current segment: runs of cuts with a colour free
    run = -1  # where the open run began
    for i, here in enumerate(free):
        if here and (runs or run >= 0) and not available & here:  # a relay: new colour on
            _mark(used, legs, starts, runs + [(run, i)] * (run >= 0), available)
            relays, runs, run, available = relays + 1, [], -1, every
        if here:
            run = i if run < 0 else run
            available &= here
        else:  # no colour at all on this PE: crossed in turn on a shared one
            runs += [(run, i)] * (run >= 0)
            relays, run = relays + 1, -1
    _mark(used, legs, starts, runs + [(run, len(free))] * (run >= 0), available)
    return relays


def _mark(used: np.ndarray, legs, starts: list[int], runs: list[tuple[int, int]], available: int):
    """Take the lowest of the `available` colours on the route's cross-sections in `runs`
    ((first, end) indices along the route)."""
    if not available:
        return
    lowest = np.uint64(available & -available)
    for first, end in runs:
        for (direction, rect), start in zip(legs, starts, strict=True):
            length = rect.width if direction in "EW" else rect.height
            lo, hi = max(first - start, 0), min(end - start, length)
            if lo >= hi:
                continue
            if direction in "WN":
                lo, hi = length - hi, length - lo
            if direction in "EW":
                used[Rect(rect.x + lo, rect.y, hi - lo, rect.height).slices] |= lowest
            else:
                used[Rect(rect.x, rect.y + lo, rect.width, hi - lo).slices] |= lowest
