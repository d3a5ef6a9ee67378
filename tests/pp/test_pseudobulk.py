import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.pp.pseudobulk import PSEUDOBULK_OBS, aggregate_counts, pseudobulk
from tests.conftest import TINY_KEYS, make_tiny

PB_KEYS = {k: v for k, v in TINY_KEYS.items() if k not in ("case", "control")}


def _slow_pseudobulk(adata, keys):
    """Reference: a loop over cells, accumulating each cell into its group's row."""
    x = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    sums, n_cells = {}, {}
    obs = adata.obs
    for i in range(adata.n_obs):
        group = (
            str(obs[keys["cell_type_key"]].iloc[i]),
            float(obs[keys["time_key"]].iloc[i]),
            str(obs[keys["condition_key"]].iloc[i]),
            str(obs[keys["donor_key"]].iloc[i]),
        )
        sums[group] = sums.get(group, 0.0) + x[i].astype(np.float64)
        n_cells[group] = n_cells.get(group, 0) + 1
    return sums, n_cells


def test_sums_match_a_slow_loop_over_cells(small_cohort):
    keys = dict(
        cell_type_key="cell_type", time_key="time", condition_key="condition", donor_key="donor"
    )
    pb = pseudobulk(small_cohort, **keys, min_cells=1)
    sums, n_cells = _slow_pseudobulk(small_cohort, keys)
    assert pb.n_obs == len(sums)
    assert list(pb.obs.columns) == list(PSEUDOBULK_OBS)
    for row, (name, obs) in zip(pb.X, pb.obs.iterrows(), strict=True):
        group = (obs["cell_type"], obs["time"], obs["condition"], obs["donor"])
        np.testing.assert_array_equal(row, sums[group])
        assert obs["n_cells"] == n_cells[group], name
        assert obs["library_size"] == sums[group].sum()
        assert obs["n_genes_detected"] == (sums[group] > 0).sum()
    assert pb.X.sum() == small_cohort.X.sum()
    # sorted by cell type, time, condition, donor
    order = pb.obs.sort_values(["cell_type", "time", "condition", "donor"], kind="stable")
    assert list(order.index) == list(pb.obs_names)
    assert pb.obs["time"].dtype == np.float64
    assert list(pb.var_names) == list(small_cohort.var_names)


def test_min_cells_drops_small_samples(small_cohort):
    all_pb = pseudobulk(small_cohort, min_cells=1)
    pb = pseudobulk(small_cohort, min_cells=10)
    assert (pb.obs["n_cells"] >= 10).all()
    assert pb.n_obs == int((all_pb.obs["n_cells"] >= 10).sum())
    assert pb.uns["pseudobulk"]["n_dropped"] == all_pb.n_obs - pb.n_obs


def test_independent_of_cell_order_and_matrix_format():
    adata = make_tiny(n_per_group=4)
    reference = pseudobulk(adata, **PB_KEYS, min_cells=1)
    shuffled = adata[np.random.default_rng(1).permutation(adata.n_obs)].copy()
    shuffled.X = shuffled.X.toarray()  # dense input
    again = pseudobulk(shuffled, **PB_KEYS, min_cells=1)
    np.testing.assert_array_equal(reference.X, again.X)
    pd.testing.assert_frame_equal(reference.obs, again.obs)


def test_layer_and_ordered_categorical_time():
    adata = make_tiny()
    adata.X = adata.X * 0.5  # X no longer counts; the layer is
    adata.obs["hours"] = pd.Categorical(
        adata.obs["hours"].map({0.0: "pre", 24.0: "post"}),
        categories=["pre", "post"],
        ordered=True,
    )
    pb = pseudobulk(adata, **PB_KEYS, layer="counts", min_cells=1)
    assert sorted(pb.obs["time"].unique()) == [0.0, 1.0]  # level positions
    assert list(pb.uns["pseudobulk"]["time_levels"]) == ["pre", "post"]
    assert pb.X.sum() == adata.layers["counts"].sum()
    with pytest.raises(errors.CountsError):
        pseudobulk(adata, **PB_KEYS, min_cells=1)  # X holds halves


def test_mudata_with_keys_in_global_obs():
    md = pytest.importorskip("mudata")
    adata = make_tiny()
    global_obs = adata.obs.copy()
    rna = adata.copy()
    rna.obs = rna.obs[[]]
    mdata = md.MuData({"rna": rna})
    mdata.obs = mdata.obs.join(global_obs)
    from_mudata = pseudobulk(mdata, **PB_KEYS, min_cells=1)
    from_anndata = pseudobulk(adata, **PB_KEYS, min_cells=1)
    np.testing.assert_array_equal(from_mudata.X, from_anndata.X)
    pd.testing.assert_frame_equal(from_mudata.obs, from_anndata.obs)


def test_errors_name_the_problem():
    adata = make_tiny()
    with pytest.raises(errors.MissingKeyError, match="celltype"):
        pseudobulk(adata, **(PB_KEYS | {"cell_type_key": "nope"}))
    with pytest.raises(errors.ParameterError, match="min_cells"):
        pseudobulk(adata, **PB_KEYS, min_cells=0)
    adata.obs.loc[adata.obs_names[0], "patient"] = np.nan
    with pytest.raises(errors.MissingKeyError, match="missing values"):
        pseudobulk(adata, **PB_KEYS)


def test_aggregate_counts_kernel_drops_negative_groups():
    x = sparse.csr_matrix(np.arange(12, dtype=float).reshape(4, 3))
    out = aggregate_counts(x, np.array([1, -1, 1, 0]), 2)
    np.testing.assert_array_equal(out, [[9, 10, 11], [6, 8, 10]])
