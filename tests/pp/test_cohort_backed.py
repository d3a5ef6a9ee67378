"""A backed cohort (counts on disk, read in chunks) gives what the in-memory cohort gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin.errors import CountsError
from omicstwin.io import read_data
from omicstwin.pp.cohort import Cohort
from omicstwin.pp.normalise import log_normalise
from omicstwin.pp.qc import qc_masks


@pytest.fixture(scope="module")
def cohort_file(small_cohort_path):
    return small_cohort_path


@pytest.fixture(scope="module")
def pair(cohort_file):
    memory = Cohort.from_data(read_data(cohort_file)).filter(min_genes=10, min_cells=3)
    backed = Cohort.from_data(read_data(cohort_file, backed=True))
    backed.chunk_cells = 700  # several chunks, the last one short
    return memory, backed.filter(min_genes=10, min_cells=3)


def test_backed_qc_matches_scanpy_masks(pair, cohort_file):
    memory, backed = pair
    assert backed.backed and not memory.backed
    assert list(backed.genes) == list(memory.genes)
    assert backed.obs.equals(memory.obs)
    assert backed.qc.equals(memory.qc)
    raw = read_data(cohort_file).X
    _, _, genes_per_cell = qc_masks(raw, min_genes=10, min_cells=3)
    assert np.array_equal(backed.cell_qc["n_genes"].to_numpy(), genes_per_cell)
    assert np.allclose(backed.cell_qc["n_counts"], np.asarray(raw.sum(axis=1)).ravel())


def test_backed_pseudobulk_is_identical(pair):
    memory, backed = pair
    a, b = memory.pseudobulk, backed.pseudobulk
    assert a.obs.equals(b.obs)
    assert np.array_equal(a.X, b.X)


def test_backed_log_summaries_match_a_loop(pair):
    memory, backed = pair
    got, want = backed.log_summaries, memory.log_summaries
    assert got.arms.equals(want.arms) and got.donors.equals(want.donors)
    for name in ("arm_mean", "arm_fraction", "donor_mean"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-14)
    # slow reference: one donor group, cell by cell
    row = got.donors.iloc[3]
    cells = np.flatnonzero(
        (backed.obs["cell_type"] == row["cell_type"]).to_numpy()
        & (backed.obs["time"] == row["time"]).to_numpy()
        & (backed.obs["donor"] == row["donor"]).to_numpy()
    )
    total = np.zeros(len(backed.genes))
    for cell in cells:
        counts = backed.rows(np.array([cell])).toarray().ravel().astype(float)
        total += np.log1p(counts / counts.sum() * 1e4)
    np.testing.assert_allclose(got.donor_mean[3], total / len(cells), rtol=1e-10)


def test_backed_rows_in_any_order_and_the_context_cap(pair):
    memory, backed = pair
    rows = np.array([900, 5, 3, 17, 2000])
    assert (memory.rows(rows) != backed.rows(rows)).nnz == 0
    assert (memory.log_normalised(rows) != backed.log_normalised(rows)).nnz == 0
    context = np.arange(100, 400)
    backed.context_cells = 50
    try:
        picked = backed.capped(context)
        assert len(picked) == 50 and np.all(np.diff(picked) > 0)
        assert np.array_equal(picked, backed.capped(context))  # seeded: the same cells again
        got = backed.log_normalised(context)
        assert (got != log_normalise(memory.rows(picked))).nnz == 0
    finally:
        backed.context_cells = None
    assert backed.log_normalised(context).shape[0] == 300


def test_backed_validation_finds_a_bad_value_in_a_late_chunk(tmp_path, small_cohort, monkeypatch):
    import omicstwin.io.validate as validate

    bad = small_cohort.copy()
    x = sparse.csr_matrix(bad.X, copy=True)
    row = 2900
    x.data[x.indptr[row]] = 0.5
    bad.X = x
    path = tmp_path / "bad.h5ad"
    bad.write_h5ad(path)
    monkeypatch.setattr(validate, "SPARSE_CHUNK_ROWS", 1000)
    with pytest.raises(CountsError, match=f"non-integer values .*'{bad.obs_names[row]}'"):
        Cohort.from_data(read_data(path, backed=True))


def test_backed_run_context_reads_on_disk(tmp_path, cohort_file):
    from omicstwin.io.read import h5ad_n_obs
    from omicstwin.pipeline.config import RunConfig
    from omicstwin.pipeline.stage import RunContext

    assert h5ad_n_obs(cohort_file) == read_data(cohort_file).n_obs
    assert h5ad_n_obs(tmp_path / "missing.h5ad") is None

    config = RunConfig(data=str(cohort_file), compute={"backed": True, "chunk_cells": 1000})
    cohort = RunContext(config, tmp_path, cohort_file).cohort
    assert cohort.backed and cohort.chunk_cells == 1000 and cohort.context_cells == 10_000
    small = RunContext(RunConfig(data=str(cohort_file)), tmp_path, cohort_file).cohort
    assert not small.backed  # fewer cells than a chunk: read whole
    assert isinstance(small.obs, pd.DataFrame) and small.obs.equals(cohort.obs)
