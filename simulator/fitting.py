"""Fitting the cost model's whole-number constants to published figures.

A figure is a range [low, high] (a single value when low == high). Its residual is the log of
the ratio between the simulated value and the nearest end of the range (0 inside it), so a
figure 2x too high and one 2x too low weigh the same. `fit` minimises the sum of squared
residuals with a deterministic pattern search over whole numbers; `leave_one_out` refits
without each figure in turn and returns the residual of the figure left out; `error_bar_pct`
turns held-out residuals into the +/- percentage the reports quote.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Params = tuple[int, ...]
# Residuals of every figure at one choice of the constants.
Residuals = Callable[[Params], Mapping[str, float]]


def log_residual(value: float, low: float, high: float) -> float:
    """log(value / nearest end of [low, high]); 0 inside the range."""
    if value <= 0:
        raise ValueError(f"a simulated figure must be positive, got {value}")
    if value < low:
        return math.log(value / low)
    if value > high:
        return math.log(value / high)
    return 0.0


def error_pct(value: float, low: float, high: float) -> float:
    """0 inside [low, high], else the relative distance to the nearest end, in percent."""
    if value < low:
        return 100 * (value - low) / low
    if value > high:
        return 100 * (value - high) / high
    return 0.0


def loss(residuals: Mapping[str, float], names: Sequence[str]) -> float:
    return sum(residuals[n] ** 2 for n in names)


def fit(
    residuals: Residuals,
    names: Sequence[str],
    start: Params,
    bounds: Sequence[tuple[int, int]],
    steps: Sequence[int],
) -> tuple[Params, float]:
    """Least squares over whole numbers: from `start`, move one constant by its step while that
    lowers the loss over `names` (first improving move in a fixed order), halve the steps when
    none does, stop when every step is at its floor of 1 (or its own unit). Deterministic."""
    x, best = tuple(start), loss(residuals(tuple(start)), names)
    step = list(steps)
    while True:
        moved = False
        for i in range(len(x)):
            for sign in (-1, 1):
                lo, hi = bounds[i]
                value = x[i] + sign * step[i]
                if not lo <= value <= hi:
                    continue
                trial = x[:i] + (value,) + x[i + 1 :]
                trial_loss = loss(residuals(trial), names)
                if trial_loss < best - 1e-12:
                    x, best, moved = trial, trial_loss, True
                    break
            if moved:
                break
        if moved:
            continue
        if all(s <= unit for s, unit in zip(step, _units(steps), strict=True)):
            return x, best
        step = [max(unit, s // 2) for s, unit in zip(step, _units(steps), strict=True)]


def _units(steps: Sequence[int]) -> list[int]:
    """The smallest step of each constant: its initial step's lowest factor of 2 removed until
    odd (a step of 20 refines to 5, of 16 to 1)."""
    units = []
    for s in steps:
        while s % 2 == 0 and s > 1:
            s //= 2
        units.append(max(1, s))
    return units


def equally_good(
    residuals: Residuals,
    names: Sequence[str],
    x: Params,
    bounds: Sequence[tuple[int, int]],
    units: Sequence[int],
    tolerance: float = 1e-6,
) -> list[Params]:
    """`x` and the constants reached from it by moving one constant in whole units while the
    loss over `names` stays within `tolerance` of x's: the fits the figures cannot tell apart
    (ranges leave a flat valley)."""
    best = loss(residuals(x), names)
    found = [x]
    for i, unit in enumerate(units):
        for sign in (-1, 1):
            value = x[i] + sign * unit
            while bounds[i][0] <= value <= bounds[i][1]:
                trial = x[:i] + (value,) + x[i + 1 :]
                if loss(residuals(trial), names) > best + tolerance:
                    break
                found.append(trial)
                value += sign * unit
    return found


def leave_one_out(
    residuals: Residuals,
    names: Sequence[str],
    start: Params,
    bounds: Sequence[tuple[int, int]],
    steps: Sequence[int],
) -> dict[str, tuple[Params, float]]:
    """For each figure: refit without it, then its residual at the worst of the fits the other
    figures cannot tell apart (`equally_good`), and those constants. Taking the worst keeps a
    figure that alone pins a constant from looking predicted."""
    out = {}
    for name in names:
        rest = [n for n in names if n != name]
        params, _ = fit(residuals, rest, start, bounds, steps)
        candidates = equally_good(residuals, rest, params, bounds, _units(steps))
        worst = max(candidates, key=lambda c: (abs(residuals(c)[name]), c))
        out[name] = (worst, residuals(worst)[name])
    return out


def error_bar_pct(held_out: Sequence[float]) -> float:
    """The +/- percentage of a figure from held-out log residuals: exp(RMS) - 1."""
    if not held_out:
        raise ValueError("no held-out residuals to make an error bar from")
    rms = math.sqrt(sum(r * r for r in held_out) / len(held_out))
    return 100 * math.expm1(rms)


def pct(residual: float) -> float:
    """A log residual as a signed percentage."""
    return 100 * math.expm1(residual)
