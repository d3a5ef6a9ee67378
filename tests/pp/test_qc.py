"""Quality control: scanpy's counting against a per-cell / per-gene loop, and the QC table."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.pp.qc import filter_cohort, qc_masks
from omicstwin.schemas import SCHEMAS
from tests.conftest import TINY_KEYS, make_tiny


def test_masks_match_a_slow_loop():
    rng = np.random.default_rng(3)
    dense = rng.poisson(0.3, size=(60, 25))
    dense[:5] = 0  # empty cells
    keep_cells, keep_genes, per_cell = qc_masks(sparse.csr_matrix(dense), min_genes=4, min_cells=6)
    expected_cells = np.array([sum(v > 0 for v in row) >= 4 for row in dense])
    kept = dense[expected_cells]
    expected_genes = np.array([sum(kept[:, j] > 0) >= 6 for j in range(dense.shape[1])])
    np.testing.assert_array_equal(keep_cells, expected_cells)
    np.testing.assert_array_equal(keep_genes, expected_genes)
    np.testing.assert_array_equal(per_cell, (dense > 0).sum(axis=1))


def test_filter_cohort_counts_kept_cells_per_group():
    adata = make_tiny(n_per_group=4)
    dense = adata.X.toarray()
    dense[:3] = 0  # three cells of donor d1, 0 h, T with no counts
    adata.layers["counts"] = sparse.csr_matrix(dense)
    keys = {k: v for k, v in TINY_KEYS.items() if k.endswith("_key")}
    filtered, qc = filter_cohort(adata, **keys, layer="counts", min_genes=1, min_cells=1)
    assert filtered.n_obs == adata.n_obs - 3
    assert list(qc.columns)[:7] == [  # the columns before mito / ribo / doublets came
        "condition",
        "donor",
        "time",
        "cell_type",
        "n_cells",
        "n_cells_kept",
        "median_genes",
    ]
    assert list(qc.columns) == list(SCHEMAS["qc"])
    row = qc[(qc["donor"] == "d1") & (qc["time"] == 0.0) & (qc["cell_type"] == "T")]
    assert row[["n_cells", "n_cells_kept"]].to_numpy().tolist() == [[4, 1]]
    assert qc["n_cells"].sum() == adata.n_obs
    assert set(filtered.obs.columns) >= set(keys.values())
    assert isinstance(qc["time"].dtype, type(pd.Series([0.0]).dtype))


def test_filter_that_keeps_nothing_says_how_to_fix():
    adata = make_tiny()
    keys = {k: v for k, v in TINY_KEYS.items() if k.endswith("_key")}
    with pytest.raises(errors.ParameterError, match="min_genes"):
        filter_cohort(adata, **keys, min_genes=10_000)
