"""The screens stage on a small fitted twin, run on a given compute backend (cluster tests).

The twin is fitted once (in process); each backend then runs only the ``screens`` stage into a
run directory of its own, from the same saved twin, so its tables can be compared exactly with
the in-process run's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

import omicstwin
from omicstwin.errors import InsufficientReplicationWarning

REPO = Path(__file__).resolve().parents[2]
SCREEN_TABLES = (
    "perturbations",
    "rank_targets",
    "rank_disease_genes",
    "rank_drugs",
    "patients",
    "null_calibration",
)
# small enough for seconds per backend, large enough that every screen has many work units
_STAGES = (
    "stages:\n  n_permutations: 49\n  n_bootstrap: 10\n"
    "  enrichment_prerank: []\n  enrichment_ora: []\n"
)


def fit_small_twin(folder: Path) -> Path:
    """Simulate the ``small`` cohort and run the stages before ``screens``, in process.

    Returns the config file; the fitted run directory is ``folder / "fitted"``.
    """
    from omicstwin.datasets import simulate_cohort
    from omicstwin.pipeline import load_config
    from omicstwin.pipeline.runner import Runner
    from omicstwin.pipeline.stages import STAGES

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "small.h5ad"
    simulate_cohort("small", seed=0).write_h5ad(data)
    config_path = folder / "study.yaml"
    config_path.write_text(f"data: {data}\nseed: 1\n{_STAGES}")
    runner = Runner(load_config(config_path, {}), folder / "fitted")
    with warnings.catch_warnings():
        # the small cohort has contexts with too few donors for DE: expected, and not tested here
        warnings.simplefilter("ignore", InsufficientReplicationWarning)
        for stage in STAGES:
            if stage.name == "screens":
                break
            runner.run_stage(stage)
    return config_path


def run_screens(config_path: Path, out: Path, **compute: Any) -> Path:
    """Run the ``screens`` stage on the fitted twin with ``compute`` settings into ``out``.

    ``compute`` is ``workers=0``, ``scheduler=ADDRESS`` or ``profile=NAME_OR_PATH`` (the
    config's ``compute`` section, as the CLI's flags set it).
    """
    from omicstwin.pipeline import load_config
    from omicstwin.pipeline.stage import RunContext, data_path
    from omicstwin.pipeline.stages import screens
    from omicstwin.tl.twin import load_twin

    config = load_config(config_path, compute)
    out.mkdir(parents=True, exist_ok=True)
    fitted = config_path.parent / "fitted"
    ctx = RunContext(config, out, data_path(config, fitted))
    ctx.twin = load_twin(fitted / "twin")
    screens(ctx)
    return out


def assert_identical(run: Path, reference: Path) -> None:
    """Every screen table of ``run`` equal to the ``reference`` run's: values, dtypes, order and
    index with no tolerance, and the parquet files byte for byte."""
    for name in SCREEN_TABLES:
        table, expected = (pd.read_parquet(d / f"{name}.parquet") for d in (run, reference))
        assert len(expected) > 0, f"{name} is empty: the comparison would prove nothing"
        pd.testing.assert_frame_equal(table, expected, check_exact=True, obj=name)
        assert table.equals(expected), name
        written = (run / f"{name}.parquet").read_bytes()
        assert written == (reference / f"{name}.parquet").read_bytes(), name


def worker_facts(dask_worker) -> dict[str, Any]:
    """What a worker reports about itself (run on each worker through ``client.run``)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "omicstwin": omicstwin.__file__,
        "executed": dask_worker.state.executed_count,
    }


@contextlib.contextmanager
def spying_resolve_client(record: list[dict[str, Any]]):
    """Wrap ``omicstwin.parallel.resolve_client``: before the client closes, record the facts of
    every worker and the cluster's type (the screens stage imports the name at call time)."""
    import omicstwin.parallel as parallel

    real = parallel.resolve_client

    @contextlib.contextmanager
    def spy(**kwargs):
        with real(**kwargs) as client:
            try:
                yield client
            finally:
                if client is not None:
                    cluster = getattr(client, "cluster", None)
                    record.append(
                        {
                            "workers": client.run(worker_facts),
                            "cluster": type(cluster).__name__ if cluster else None,
                        }
                    )

    parallel.resolve_client = spy
    try:
        yield
    finally:
        parallel.resolve_client = real
