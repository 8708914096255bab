"""Run many independent points (a sweep's) one after another, in worker processes, or on a Dask
cluster, with retries; results come back in the order of the points.

`run(fn, specs, engine=...)` calls `fn(spec)` once per spec: "serial" in this process,
"processes" in a `concurrent.futures.ProcessPoolExecutor` of `workers` spawned processes,
"dask" through `dask.distributed` (the `cluster` extra): on the scheduler at `scheduler`, or a
`LocalCluster` of `workers` processes when none is given. A call that raises (or whose worker
dies) is submitted again up to `retries` times; one that still fails comes back as an `Outcome`
with its error. `fn` and the specs must pickle: a module-level function and plain data.

`SweepSpec` and `simulate_point` are a sweep's points: a registered model and its `SimOptions`,
simulated with one `PlacementCache` per process.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import multiprocessing
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core.errors import ClusterError, OptionError
from core.target import Target
from simulator.disk_cache import DiskCache
from simulator.phases import PlacementCache, SimOptions
from simulator.sweep_points import SweepPoint, sweep_point

ENGINES = ("serial", "processes", "dask")
SCHEDULER_TIMEOUT_S = 10.0
CLUSTER_EXTRA = "pip install -e '.[cluster]'"


@dataclass(frozen=True)
class Outcome:
    """What one spec gave: `value` (None when it failed), or `error` after `attempts` calls."""

    spec: Any
    value: Any
    error: str | None
    attempts: int

    @property
    def failed(self) -> bool:
        return self.error is not None


def run(
    fn: Callable[[Any], Any],
    specs: Sequence[Any],
    *,
    engine: str = "serial",
    workers: int = 1,
    retries: int = 0,
    scheduler: str | None = None,
    timeout: float = SCHEDULER_TIMEOUT_S,
    progress: Callable[[str], None] = lambda step: None,
) -> list[Outcome]:
    """`fn(spec)` for every spec on `engine`, each retried up to `retries` times; one
    `Outcome` per spec, in the order of `specs`. `progress(label)` is called once per spec as
    it finishes; `timeout` bounds connecting to `scheduler` (seconds)."""
    if engine not in ENGINES:
        raise OptionError(f"engine must be one of {list(ENGINES)}, got {engine!r:.40}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError(f"workers must be a whole number >= 1, got {workers!r:.40}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise OptionError(f"retries must be a whole number >= 0, got {retries!r:.40}")
    if scheduler is not None and engine != "dask":
        raise OptionError(f"a scheduler address needs engine 'dask', not {engine!r}")
    specs = list(specs)
    attempts = [0] * len(specs)
    outcomes: list[Outcome | None] = [None] * len(specs)
    with _open(engine, workers, scheduler, timeout) as pool:
        pending: dict[Any, int] = {}

        def start(index: int) -> None:
            attempts[index] += 1
            pending[pool.submit(fn, specs[index])] = index

        for index in range(len(specs)):
            start(index)
        while pending:
            for future in sorted(pool.wait(list(pending)), key=pending.__getitem__):
                index = pending.pop(future)
                value, error = _settle(future)
                if error is not None and attempts[index] <= retries:
                    start(index)
                    continue
                reason = None if error is None else _one_line(error)
                outcomes[index] = Outcome(specs[index], value, reason, attempts[index])
                progress(f"{specs[index]}{' failed' if error is not None else ''}")
    return [outcome for outcome in outcomes if outcome is not None]


def _settle(future) -> tuple[Any, Exception | None]:
    """A finished future's (value, None), or (None, the error): its call's, or the engine's
    when it lost the call (a cancelled or undeliverable result)."""
    try:
        return future.result(), None
    except Exception as exc:  # reported in the point's Outcome
        return None, exc


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:400]


# ---------------------------------------------------------------------------- engines


class _Serial:
    """Runs each submitted call when waited on, lowest submission first."""

    def __init__(self) -> None:
        self._calls: dict[concurrent.futures.Future, Callable[[], Any]] = {}

    def submit(self, fn: Callable[[Any], Any], spec: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls[future] = functools.partial(fn, spec)
        return future

    def wait(self, futures: list) -> set:
        waited = set(futures)
        future = next(f for f in self._calls if f in waited)
        call = self._calls.pop(future)
        try:
            future.set_result(call())
        except Exception as exc:  # reported in the point's Outcome
            future.set_exception(exc)
        return {future}


# What a worker process starts with: no FutureWarnings, as in `wafersim` itself.
_QUIET = functools.partial(warnings.filterwarnings, "ignore", category=FutureWarning)


class _Processes:
    """A pool of spawned processes; a pool broken by a dying worker is replaced."""

    def __init__(self, workers: int):
        self._workers = workers
        self._pool = self._new()

    def _new(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return concurrent.futures.ProcessPoolExecutor(
            self._workers, mp_context=context, initializer=_QUIET
        )

    def submit(self, fn: Callable[[Any], Any], spec: Any) -> concurrent.futures.Future:
        try:
            return self._pool.submit(fn, spec)
        except BrokenProcessPool:
            self._pool.shutdown(cancel_futures=True)
            self._pool = self._new()
            return self._pool.submit(fn, spec)

    def wait(self, futures: list) -> set:
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        return done

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class _Dask:
    """A `dask.distributed` client of the scheduler at `scheduler`, or of a new local cluster."""

    def __init__(self, workers: int, scheduler: str | None, timeout: float):
        try:
            import distributed
        except ImportError as exc:
            raise ClusterError(
                f"engine 'dask' needs dask.distributed, which is not installed ({exc}); "
                f"install the cluster extra: {CLUSTER_EXTRA}"
            ) from exc
        self._distributed = distributed
        self._cluster = None
        if scheduler is None:
            self._cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
            self._client = distributed.Client(self._cluster)
            self._client.run(_QUIET)
            return
        try:
            self._client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach a Dask scheduler at {scheduler!r:.80} within {timeout:g} s "
                f"({_one_line(exc)[:120]}); start one (`dask scheduler`, then `dask worker "
                "ADDRESS` on each host) and pass its tcp://host:port, or leave out --scheduler "
                "for a local cluster"
            ) from exc

    def submit(self, fn: Callable[[Any], Any], spec: Any):
        return self._client.submit(fn, spec, pure=False)

    def wait(self, futures: list) -> set:
        return self._distributed.wait(futures, return_when="FIRST_COMPLETED").done

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


@contextmanager
def _open(engine: str, workers: int, scheduler: str | None, timeout: float) -> Iterator[Any]:
    if engine == "serial":
        yield _Serial()
        return
    pool = _Processes(workers) if engine == "processes" else _Dask(workers, scheduler, timeout)
    try:
        yield pool
    finally:
        pool.close()


# ---------------------------------------------------------------------------- sweep points


@dataclass(frozen=True)
class SweepSpec:
    """One point of a sweep: registered model `model` simulated with `options`, placements
    cached in the `DiskCache` at `cache_dir` (None: not on disk)."""

    model: str
    options: SimOptions
    cache_dir: str | None = None

    @property
    def target_name(self) -> str:
        target = self.options.target
        return target.name if isinstance(target, Target) else target

    @property
    def where(self) -> str:
        """The target, and the wafers when given ("wse3, 4 wafers")."""
        wafers = self.options.wafers
        return self.target_name + (f", {wafers} wafer{'s' if wafers > 1 else ''}" if wafers else "")

    def __str__(self) -> str:
        return f"{self.model} at {self.options.seq:,} tokens on {self.where}"


@functools.cache
def _placements(cache_dir: str | None) -> PlacementCache:
    """This process's placements, kept for every point it simulates."""
    return PlacementCache(None if cache_dir is None else DiskCache(cache_dir))


def simulate_point(spec: SweepSpec) -> SweepPoint:
    """`sweep_point` of `spec`, with this process's `PlacementCache`."""
    return sweep_point(spec.model, spec.options, _placements(spec.cache_dir))
