"""Shared fixtures. Tests run offline: resources come from ../shared/data via the search path."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMICSTWIN_DATA_PATH", str(REPO.parent / "shared" / "data"))
os.environ["OMICSTWIN_OFFLINE"] = "1"  # a test must never download


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OMICSTWIN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def small_cohort():
    """The `small` simulated cohort (seed 0); treat as read-only."""
    from omicstwin.datasets import simulate_cohort

    return simulate_cohort("small", seed=0)


@pytest.fixture(scope="session")
def small_cohort_path(small_cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "small.h5ad"
    small_cohort.write_h5ad(path)
    return path


def make_tiny(n_per_group: int = 3, seed: int = 0) -> ad.AnnData:
    """A hand-made valid cohort: 2 cell types x 2 times x 4 donors (2 per arm), 8 genes."""
    rng = np.random.default_rng(seed)
    rows = []
    for donor, condition in [("d1", "case"), ("d2", "case"), ("d3", "ctrl"), ("d4", "ctrl")]:
        for time in (0.0, 24.0):
            for cell_type in ("T", "Mono"):
                rows += [(cell_type, time, condition, donor)] * n_per_group
    obs = pd.DataFrame(rows, columns=["celltype", "hours", "status", "patient"])
    obs.index = [f"c{i}" for i in range(len(obs))]
    counts = rng.poisson(3.0, size=(len(obs), 8)).astype(np.float32)
    var = pd.DataFrame(index=[f"G{i}" for i in range(8)])
    adata = ad.AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var)
    adata.layers["counts"] = adata.X.copy()
    return adata


TINY_KEYS = dict(
    cell_type_key="celltype",
    time_key="hours",
    condition_key="status",
    donor_key="patient",
    case="case",
    control="ctrl",
)
TINY_FLAGS = [
    "--cell-type-key",
    "celltype",
    "--time-key",
    "hours",
    "--condition-key",
    "status",
    "--donor-key",
    "patient",
    "--case",
    "case",
    "--control",
    "ctrl",
]
