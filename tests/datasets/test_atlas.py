"""The atlas preset: a real-shaped cohort streamed to h5ad in chunks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from omicstwin.datasets.atlas import RNG_BLOCK, simulate_atlas, write_atlas
from omicstwin.errors import ParameterError

TINY = {"n_cells": 2500, "n_genes": 500, "seed": 3}


@pytest.fixture(scope="module")
def tiny():
    return simulate_atlas(**TINY)


def test_file_equals_memory_whatever_the_chunk_size(tmp_path, tiny):
    small, large = tmp_path / "a.h5ad", tmp_path / "b.h5ad"
    write_atlas(small, chunk_cells=RNG_BLOCK, **TINY)
    write_atlas(large, chunk_cells=10 * RNG_BLOCK, **TINY)
    a, b = ad.read_h5ad(small), ad.read_h5ad(large)
    for read in (a, b):
        assert (read.X != tiny.X).nnz == 0
        assert read.obs.equals(tiny.obs)
        assert list(read.var_names) == list(tiny.var_names)
    backed = ad.read_h5ad(small, backed="r")
    rows = backed.X[100:300]
    assert (sparse.csr_matrix(rows) != tiny.X[100:300]).nnz == 0
    assert set(a.uns["truth"]) >= {"drivers", "degs", "genes", "networks", "endotypes"}
    backed.file.close()


def test_shape_design_and_counts(tiny):
    x = tiny.X
    assert x.shape == (TINY["n_cells"], TINY["n_genes"])
    assert sparse.isspmatrix_csr(x) and x.has_sorted_indices
    assert np.array_equal(x.data, np.round(x.data)) and x.data.min() >= 1
    obs = tiny.obs
    assert obs["cell_type"].nunique() == 10 and obs["time"].nunique() == 7
    assert obs.groupby("condition", observed=True)["donor"].nunique().to_dict() == {
        "control": 10,
        "case": 10,
    }
    # composition differs between donors (Dirichlet per donor)
    share = obs.groupby(["donor", "cell_type"], observed=True).size().unstack()
    share = share.div(share.sum(axis=1), axis=0)
    assert share["CD4 T"].std() > 0.02
    names = tiny.var_names
    assert names.str.startswith("MT-").sum() == 13
    assert names.str.match(r"^RP[LS]\d").sum() >= 5


def test_sparsity_library_and_mt_fraction(tiny):
    x = tiny.X
    library = np.asarray(x.sum(axis=1)).ravel()
    assert 1500 < np.median(library) < 3000  # ~2,200 UMIs per cell, log-normal
    mt = np.asarray(x[:, tiny.var_names.str.startswith("MT-")].sum(axis=1)).ravel() / library
    assert 0.01 < np.median(mt) < 0.08 and mt.std() > 0.005
    mean = np.asarray(x.mean(axis=0)).ravel()
    # a long tail: most genes are far below the mean gene
    assert np.median(mean) < 0.2 * mean.mean()


def test_planted_drivers_are_up_in_case_cells_after_onset(tiny):
    truth = tiny.uns["truth"]
    drivers = truth["drivers"]
    assert len(drivers) == 10
    row = drivers.iloc[0]
    gene = row["driver_genes"].split(";")[0]
    obs = tiny.obs
    x = tiny.X[:, tiny.var_names.get_loc(gene)].toarray().ravel()
    library = np.asarray(tiny.X.sum(axis=1)).ravel()
    where = (obs["cell_type"] == row["initiating_cell_type"]) & (obs["time"] > row["onset_time"])
    case = where & obs["donor"].isin(
        drivers.loc[drivers["endotype"] == row["endotype"], "patient_id"]
    )
    control = where & (obs["condition"] == "control")
    rate = lambda m: x[m.to_numpy()].sum() / library[m.to_numpy()].sum()  # noqa: E731
    assert rate(case) > 2 * rate(control)
    degs = truth["degs"]
    assert ((degs["gene"] == gene) & (degs["cell_type"] == row["initiating_cell_type"])).any()
    assert set(truth["genes"].loc[truth["genes"]["is_driver"], "gene"]) >= {gene}


def test_no_disease_and_bad_parameters():
    calm = simulate_atlas(n_cells=1500, n_genes=300, disease=False)
    assert calm.uns["truth"]["drivers"].empty and calm.uns["truth"]["degs"].empty
    with pytest.raises(ParameterError, match="n_cells"):
        simulate_atlas(n_cells=100, n_genes=300)
    with pytest.raises(ParameterError, match="unknown atlas parameter"):
        simulate_atlas(n_cells=1500, n_genez=300)
