"""Work units, per-unit seeds, batching and the unit runner (in-process or on a dask client).

A *work unit* is one coarse task (e.g. one context x null replicate): a stable key, small
picklable arguments and a seed derived from the run's base seed and the key. :func:`run_units`
calls one function on every unit, in this process or on a :class:`distributed.Client`, and
returns one long table in the order of the units (never completion order) plus one row per
failed unit, so its output does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from omicstwin._logging import logger
from omicstwin.errors import (
    ClusterDependencyError,
    InputTypeError,
    ParallelError,
    ParameterError,
)

if TYPE_CHECKING:  # distributed is imported only when a client is actually used
    import distributed

__all__ = [
    "FAILURE_COLUMNS",
    "ClusterDependencyError",
    "ParallelError",
    "WorkUnit",
    "batched",
    "derive_seed",
    "run_units",
]

FAILURE_COLUMNS = ("unit", "error_type", "message")
"""Columns of the failure table returned by :func:`run_units`."""

# 63 bits: fits int64 (parquet, run.json, numpy) and never collides in practice; APIs limited
# to 32-bit seeds (``np.random.seed``, scikit-learn) take ``seed % 2**32``.
_SEED_BITS = 63


@dataclass(frozen=True)
class WorkUnit:
    """One coarse task of a parallel run.

    Attributes
    ----------
    key
        Unique, stable id of the unit (e.g. ``"CD4 T|24.0|null-3"``); the ``unit`` column of
        the results and failures.
    payload
        Small, picklable arguments of this unit (large shared inputs go to ``shared`` of
        :func:`run_units` instead, so they travel once).
    seed
        Per-unit seed, usually ``derive_seed(base_seed, key)``.
    """

    key: str
    payload: Any
    seed: int


def derive_seed(base_seed: int, key: str) -> int:
    """Derive a unit's seed from the run's base seed and the unit key.

    Stable across processes, machines and Python runs (``hash()`` is salted per process, so it
    is not used), and independent of the order or number of units: adding a unit never changes
    the seeds of the others.

    Parameters
    ----------
    base_seed
        The run's seed (any integer).
    key
        The unit's key.

    Returns
    -------
    int
        A non-negative 63-bit integer (pass ``seed % 2**32`` to APIs limited to 32 bits).
    """
    if isinstance(base_seed, bool) or not isinstance(base_seed, int):
        raise InputTypeError(f"base_seed must be an int, got {type(base_seed).__name__}")
    if not isinstance(key, str):
        raise InputTypeError(f"key must be a str, got {type(key).__name__}")
    digest = hashlib.blake2b(f"{base_seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


def batched(items: Sequence[Any], size: int) -> list[list[Any]]:
    """Split ``items`` into consecutive batches of at most ``size`` (order kept).

    Used to group cheap per-gene work into tasks of >= ~100 ms, below which dask's per-task
    overhead (~1 ms scheduling plus serialisation) dominates.

    Parameters
    ----------
    items
        The items to group.
    size
        Largest batch; the last batch may be smaller.

    Returns
    -------
    list of list
        ``ceil(len(items) / size)`` batches; empty when ``items`` is empty.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ParameterError(f"batch size must be an integer >= 1, got {size!r}")
    items = list(items)
    return [items[start : start + size] for start in range(0, len(items), size)]


class _Outcome(NamedTuple):
    """What one unit sends back: a table, or the failure (with its traceback for the log)."""

    table: pd.DataFrame | None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None


# id(original) -> (weak reference to the original, its aligned copy); one copy per process
_ALIGNED: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _aligned(value: Any) -> Any:
    """Return a misaligned numpy array as an aligned copy, made once per worker process.

    distributed hands scattered arrays to process workers as views into the received message,
    at addresses that need not be multiples of the item size; numpy then skips BLAS for them
    (``matmul`` on a scattered 400 x 400 float64 matrix measured ~1.4x slower). Copying once
    per process, not per task, keeps "scatter once" cheap; arrays nested in other objects
    (AnnData, DataFrames) are not touched.
    """
    if not isinstance(value, np.ndarray) or value.flags.aligned:
        return value
    entry = _ALIGNED.get(id(value))
    if entry is not None and entry[0]() is value:
        return entry[1]
    copy = np.array(value, copy=True)  # numpy allocations are aligned
    copy.flags.writeable = value.flags.writeable
    # the entry is dropped when the scattered original is freed, before its id can be reused
    key = id(value)
    _ALIGNED[key] = (weakref.ref(value, lambda _: _ALIGNED.pop(key, None)), copy)
    return copy


def _run_unit(func: Callable[..., pd.DataFrame], key: str, payload: Any, seed: int, **shared):
    """Run one unit and catch its exception, on the worker or in this process.

    Catching here (rather than letting the future error) keeps failures small and picklable:
    tracebacks of arbitrary exceptions do not always unpickle on the client.
    """
    try:
        shared = {name: _aligned(value) for name, value in shared.items()}
        table = func(payload, seed=seed, **shared)
        if not isinstance(table, pd.DataFrame):
            raise TypeError(
                f"the unit function returned {type(table).__name__}, expected a pandas DataFrame"
            )
        if "unit" in table.columns:
            raise ValueError("the unit function's table already has a 'unit' column")
        table = table.reset_index(drop=True)
        table.insert(0, "unit", key)
        return _Outcome(table)
    except Exception as exc:  # every unit error becomes a failure row (convention 5)
        return _Outcome(None, type(exc).__name__, str(exc) or repr(exc), traceback.format_exc())


def _check_units(units: Sequence[WorkUnit], max_failure_fraction: float) -> None:
    if not 0.0 <= max_failure_fraction <= 1.0:
        raise ParameterError(
            f"max_failure_fraction must be in [0, 1], got {max_failure_fraction!r}"
        )
    seen: set[str] = set()
    for unit in units:
        if not isinstance(unit, WorkUnit):
            raise InputTypeError(f"units must be WorkUnit objects, got {type(unit).__name__}")
        if unit.key in seen:
            raise ParameterError(
                f"work unit key {unit.key!r} is not unique; fix: give every unit its own key "
                "(results are labelled and ordered by it)"
            )
        seen.add(unit.key)


class _Collector:
    """Gather outcomes by unit position, count failures and stop once the threshold is passed."""

    def __init__(self, units: Sequence[WorkUnit], max_failure_fraction: float, progress):
        self.units = units
        self.outcomes: list[_Outcome | None] = [None] * len(units)
        self.allowed = max_failure_fraction * len(units)
        self.max_failure_fraction = max_failure_fraction
        self.progress = progress
        self.done = self.failed = 0

    def add(self, position: int, outcome: _Outcome) -> None:
        self.outcomes[position] = outcome
        self.done += 1
        if outcome.table is None:
            self.failed += 1
            logger.warning(
                "work unit %r failed: %s: %s",
                self.units[position].key,
                outcome.error_type,
                outcome.message,
            )
            if outcome.traceback:
                logger.debug(
                    "traceback of work unit %r:\n%s", self.units[position].key, outcome.traceback
                )
        if self.progress is not None:
            self.progress(self.done, len(self.units))
        if self.failed > self.allowed:
            raise self._too_many()

    def _too_many(self) -> ParallelError:
        first = next(
            (self.units[i].key, o)
            for i, o in enumerate(self.outcomes)
            if o is not None and o.table is None
        )
        unfinished = len(self.units) - self.done
        stopped = f" (run stopped with {unfinished} units unfinished)" if unfinished else ""
        return ParallelError(
            f"{self.failed} of {len(self.units)} work units failed{stopped}, more than "
            f"max_failure_fraction={self.max_failure_fraction:g} allows; first failure: unit "
            f"{first[0]!r}: {first[1].error_type}: {first[1].message}; fix: correct the cause "
            "(set the log level to DEBUG for tracebacks) or raise max_failure_fraction"
        )

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        tables = [o.table for o in self.outcomes if o is not None and o.table is not None]
        failures = [
            (unit.key, o.error_type, o.message)
            for unit, o in zip(self.units, self.outcomes, strict=True)
            if o is not None and o.table is None
        ]
        # empty tables are left out of the concat: pandas is deprecating their influence on
        # dtypes, and they would make the dtypes depend on which units happened to be empty
        nonempty = [t for t in tables if len(t)]
        if nonempty:
            results = pd.concat(nonempty, ignore_index=True)
        elif tables:
            results = tables[0].iloc[0:0].reset_index(drop=True)
        else:
            results = pd.DataFrame({"unit": pd.Series(dtype=object)})
        failure_table = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)).astype(object)
        return results, failure_table


def run_units(
    func: Callable[..., pd.DataFrame],
    units: Sequence[WorkUnit],
    *,
    shared: Mapping[str, Any] | None = None,
    client: distributed.Client | None = None,
    max_failure_fraction: float = 0.1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Call ``func(unit.payload, seed=unit.seed, **shared)`` for every unit.

    Parameters
    ----------
    func
        A picklable (module-level) function returning a :class:`pandas.DataFrame`.
    units
        The work units; keys must be unique.
    shared
        Large inputs every unit needs (e.g. the cohort, the networks). With a client they are
        scattered once to all workers (``broadcast=True``) and passed to the tasks as futures,
        instead of being pickled into every task. Values that already are futures are passed
        as they are.
    client
        A :class:`distributed.Client` (see :func:`omicstwin.parallel.resolve_client`); ``None``
        runs the units one after another in this process.
    max_failure_fraction
        Failed units beyond this fraction of all units raise :class:`ParallelError` (as soon as
        the threshold is passed; unfinished units are cancelled).
    progress
        Called as ``progress(done, total)`` after each finished unit (completion order).

    Returns
    -------
    results : pandas.DataFrame
        The units' tables concatenated in the order of ``units``, with a first column ``unit``
        (the unit key); identical for any number of workers given the seeds.
    failures : pandas.DataFrame
        One row per failed unit (``unit``, ``error_type``, ``message``), in the order of
        ``units``.

    Raises
    ------
    ParallelError
        More than ``max_failure_fraction`` of the units failed.
    """
    units = list(units)
    _check_units(units, max_failure_fraction)
    shared = dict(shared or {})
    collector = _Collector(units, max_failure_fraction, progress)
    start = time.perf_counter()
    if not units:
        return collector.tables()
    if client is None:
        logger.info("running %d work units in this process", len(units))
        for position, unit in enumerate(units):
            collector.add(position, _run_unit(func, unit.key, unit.payload, unit.seed, **shared))
    else:
        _run_on_client(client, func, units, shared, collector)
    logger.info(
        "%d work units done in %.1f s (%d failed)",
        len(units),
        time.perf_counter() - start,
        collector.failed,
    )
    return collector.tables()


def _run_on_client(client, func, units, shared, collector: _Collector) -> None:
    from distributed import Future, as_completed

    to_scatter = {name: value for name, value in shared.items() if not isinstance(value, Future)}
    if to_scatter and not client.scheduler_info().get("workers"):
        # scatter gives up after the client timeout when no worker exists yet (batch jobs may
        # sit in a queue for hours), so wait for the first worker explicitly
        logger.info("waiting for the first dask worker to start")
        client.wait_for_workers(1)
    shared_futures = dict(shared)
    futures: dict[Any, int] = {}
    try:
        if to_scatter:
            # a list (not a dict) so that the keys are fresh (hash=False: no tokenising of
            # large objects, no collision with another run on the same scheduler)
            scattered = client.scatter(list(to_scatter.values()), broadcast=True, hash=False)
            shared_futures.update(zip(to_scatter, scattered, strict=True))
        name = getattr(func, "__name__", "unit")
        token = uuid.uuid4().hex[:8]
        logger.info(
            "submitting %d work units to %d dask workers",
            len(units),
            len(client.scheduler_info().get("workers", {})),
        )
        for position, unit in enumerate(units):
            future = client.submit(
                _run_unit,
                func,
                unit.key,
                unit.payload,
                unit.seed,
                key=f"omicstwin-{name}-{token}-{position}",
                pure=False,
                **shared_futures,
            )
            futures[future] = position
        for future in as_completed(list(futures)):
            position = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # infrastructure errors (KilledWorker, lost data) -> rows
                outcome = _Outcome(None, type(exc).__name__, str(exc) or repr(exc))
            future.release()  # free the result on the cluster as soon as it is here
            collector.add(position, outcome)
    finally:
        # on success everything is already released; on error or interrupt this cancels the
        # units still queued and drops the scattered inputs we created
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        created = [shared_futures[name] for name in to_scatter if name in shared_futures]
        created = [f for f in created if isinstance(f, Future)]
        if created:
            client.cancel(created)
