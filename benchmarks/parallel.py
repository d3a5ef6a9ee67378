"""Scaling of `omicstwin.parallel.run_units`: in-process vs a 1- and a 2-worker LocalCluster.

Workload: ~16 CPU-bound work units of ~0.5 s each (repeated products of a per-unit random
matrix with one shared orthogonal matrix, scattered once), BLAS pinned to one thread inside
every unit (threadpoolctl) so that the only parallelism is dask's. The unit cost is
calibrated in this process first. Measured in one run:

- wall seconds of `run_units` in-process, with 1 worker and with 2 worker processes (cluster
  start-up timed separately: it is paid once per run, not per unit);
- speed-up vs in-process (ideal: ~1 for 1 worker, ~2 for 2 workers on >= 2 free cores);
- that the three result tables are identical (the same seeds give the same numbers for any
  worker count).

Run: `python benchmarks/parallel.py [--units 16] [--seconds 0.5] [--seed 0]`. Timings are
noisy on a shared machine.

Why the products write into preallocated buffers: worker processes start with distributed's
`MALLOC_TRIM_THRESHOLD_=65536` (config `distributed.nanny.pre-spawn-environ`), which turns off
glibc's adaptive mmap threshold, so every array above 128 KiB is mmapped and page-faulted anew;
an allocation-heavy unit (fresh 160x160 products) measured ~1.5x slower in a worker than
in-process, which would hide dask's scaling behind a malloc setting. (The shared matrix itself
arrives misaligned on process workers; `run_units` realigns such arrays once per worker, which
removed a further ~1.4x per-unit slowdown of this workload.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from omicstwin.parallel import WorkUnit, derive_seed, resolve_client, run_units

SIZE = 400  # matrix side: compute (n^3) dominates allocation (n^2) and Python overhead


def linalg_unit(payload: dict, *, seed: int, basis: np.ndarray) -> pd.DataFrame:
    """Rotate a per-unit random matrix by the shared orthogonal `basis` `payload["reps"]` times.

    Products go into preallocated buffers: the unit is pure BLAS work, with no allocation whose
    cost would depend on the process's malloc settings (see the module docstring).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # one BLAS thread: dask's workers are the parallelism
        x = np.random.default_rng(seed).normal(size=basis.shape)
        y = np.empty_like(x)
        for _ in range(payload["reps"]):
            np.matmul(x, basis, out=y)  # orthogonal: norms stay put, no overflow
            x, y = y, x
    return pd.DataFrame(
        {"reps": [payload["reps"]], "total": [float(x.sum())], "corner": [float(x[0, 0])]}
    )


def calibrate(seconds: float, basis: np.ndarray) -> int:
    """Repetitions that make one unit take about `seconds` in this process."""
    linalg_unit({"reps": 5}, seed=0, basis=basis)  # warm-up: first BLAS calls and imports
    reps, elapsed = 20, 0.0
    while elapsed < 0.25:  # time enough repetitions for a stable per-repetition cost
        reps *= 2
        start = time.perf_counter()
        linalg_unit({"reps": reps}, seed=0, basis=basis)
        elapsed = time.perf_counter() - start
    return max(1, round(seconds * reps / elapsed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=0.5, help="target seconds per unit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    basis = np.linalg.qr(np.random.default_rng(args.seed).normal(size=(SIZE, SIZE)))[0]
    reps = calibrate(args.seconds, basis)
    units = [
        WorkUnit(key, {"reps": reps}, derive_seed(args.seed, key))
        for key in (f"context-{i // 4}|null-{i % 4}" for i in range(args.units))
    ]
    print(f"{args.units} units x {reps} reps (~{args.seconds:g} s each), shared {SIZE}x{SIZE}")

    rows, tables = [], {}
    for label, n_workers in (("in-process", 0), ("1 worker", 1), ("2 workers", 2)):
        start = time.perf_counter()
        with resolve_client(n_workers=n_workers) as client:
            ready = time.perf_counter()
            results, failures = run_units(
                linalg_unit, units, shared={"basis": basis}, client=client
            )
            done = time.perf_counter()
        assert failures.empty, failures
        tables[label] = results
        rows.append({"run": label, "startup_s": ready - start, "wall_s": done - ready})

    report = pd.DataFrame(rows)
    base = report.loc[report["run"] == "in-process", "wall_s"].iloc[0]
    report["speedup_vs_in_process"] = base / report["wall_s"]
    print(report.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    reference = tables["in-process"]
    identical = all(t.equals(reference) for t in tables.values())
    print(f"result tables identical across in-process / 1 / 2 workers: {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
