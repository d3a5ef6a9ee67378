"""Parallel execution: dask client resolution, work units, batching and failure rows.

The layer every parallel stage goes through (DESIGN.md, convention 5):

- :func:`resolve_client` gives a client from nothing (a LocalCluster we own), a scheduler
  address (a cluster we never close) or a cluster profile (``pipelines/cluster/*.yaml``:
  local, SLURM or PBS through dask-jobqueue), or ``None`` for the in-process path;
- :func:`run_units` runs one function over coarse :class:`WorkUnit` s with shared inputs
  scattered once, failures returned as rows, and results in unit order so that they are
  identical for any number of workers given the seeds (:func:`derive_seed`);
- :func:`batched` groups cheap items (genes) into tasks of >= ~100 ms.

``distributed`` and ``dask_jobqueue`` are imported only when a client or profile is used.
"""

from __future__ import annotations

from omicstwin.parallel.client import (
    PROFILE_DIR_ENV,
    ClusterProfile,
    JobqueueProfile,
    LocalProfile,
    job_script,
    load_profile,
    profile_dirs,
    resolve_client,
)
from omicstwin.parallel.tasks import (
    FAILURE_COLUMNS,
    ClusterDependencyError,
    ParallelError,
    WorkUnit,
    batched,
    derive_seed,
    run_units,
)

__all__ = [
    "FAILURE_COLUMNS",
    "PROFILE_DIR_ENV",
    "ClusterDependencyError",
    "ClusterProfile",
    "JobqueueProfile",
    "LocalProfile",
    "ParallelError",
    "WorkUnit",
    "batched",
    "derive_seed",
    "job_script",
    "load_profile",
    "profile_dirs",
    "resolve_client",
    "run_units",
]
