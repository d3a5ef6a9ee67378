import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

from omicstwin import errors, get
from omicstwin.pp.pseudobulk import pseudobulk
from omicstwin.schemas import SCHEMAS
from omicstwin.tl.de import (
    DE_METHODS,
    cox_reid_apl,
    estimate_dispersion,
    fit_glm,
    fit_oneway,
    nb_glm_two_group,
    nb_timecourse,
    reduced_timecourse_design,
    timecourse_de,
)
from omicstwin.tl.de import differential_expression as de
from tests.conftest import TINY_KEYS, make_tiny

# Agreement with statsmodels: absolute difference <= 1e-6 for log_fc (log2 units) and for
# p-values, and relative difference <= 1e-6 for likelihood-ratio statistics and APL values.
TOL = 1e-6


@pytest.fixture(scope="module")
def small_pb(small_cohort):
    return pseudobulk(small_cohort, min_cells=3)


def _context(pb, cell_type, time):
    rows = np.flatnonzero((pb.obs["cell_type"] == cell_type) & (pb.obs["time"] == time))
    obs = pb.obs.iloc[rows]
    return pb.X[rows], obs["library_size"].to_numpy(), (obs["condition"] == "case").to_numpy()


def _sm_fit(y, design, offset, alpha):
    family = sm.families.NegativeBinomial(alpha=alpha)
    return sm.GLM(y, design, family=family, offset=offset).fit(tol=1e-14, maxiter=500)


def test_two_group_matches_statsmodels_per_gene(small_pb):
    counts, lib, is_case = _context(small_pb, "CD14 Mono", 24.0)
    res = nb_glm_two_group(counts, lib, is_case)
    offset = np.log(lib)
    design = np.column_stack([np.ones(len(lib)), is_case.astype(float)])
    both_arms = (counts[is_case].sum(0) > 0) & (counts[~is_case].sum(0) > 0)
    genes = np.flatnonzero(both_arms)[:40]
    assert genes.size >= 30
    max_fc = max_p = max_stat = 0.0
    for g in genes:
        alpha = res.dispersion[g]
        full = _sm_fit(counts[:, g], design, offset, alpha)
        null = _sm_fit(counts[:, g], design[:, :1], offset, alpha)
        stat = 2.0 * (full.llf - null.llf)
        p = stats.chi2.sf(stat, 1)
        max_fc = max(max_fc, abs(full.params[1] / np.log(2) - res.log_fc[g]))
        max_p = max(max_p, abs(p - res.p_value[g]))
        max_stat = max(max_stat, abs(stat - res.statistic[g]) / max(1.0, stat))
    assert max_fc <= TOL and max_p <= TOL and max_stat <= TOL, (max_fc, max_p, max_stat)


def test_cox_reid_apl_matches_statsmodels(small_pb):
    counts, lib, is_case = _context(small_pb, "CD4 T", 12.0)
    offset = np.log(lib)
    design = np.column_stack([np.ones(len(lib)), is_case.astype(float)])
    genes = np.flatnonzero(counts.sum(0) > 0)[:10]
    alphas = np.array([1e-3, 0.05, 0.7])
    ours = cox_reid_apl(
        counts[:, genes], offset, is_case.astype(int), np.repeat(alphas[:, None], genes.size, 1)
    )
    for k, alpha in enumerate(alphas):
        for j, g in enumerate(genes):
            fit = _sm_fit(counts[:, g], design, offset, alpha)
            w = fit.mu / (1.0 + alpha * fit.mu)
            apl = fit.llf - 0.5 * np.linalg.slogdet(design.T @ (w[:, None] * design))[1]
            assert abs(apl - ours[k, j]) <= TOL * max(1.0, abs(apl))


def test_dispersion_without_shrinkage_maximises_the_cox_reid_likelihood(small_pb):
    from scipy.optimize import minimize_scalar

    counts, lib, is_case = _context(small_pb, "CD14 Mono", 12.0)
    genes = np.flatnonzero(counts.sum(0) > 20)[:6]
    offset, groups = np.log(lib), is_case.astype(int)
    fine = np.logspace(-4, 1, 301)
    ours = estimate_dispersion(counts[:, genes], offset, groups, prior_df=0, grid=fine)
    for j, g in enumerate(genes):

        def neg_apl(log_alpha, g=g):
            return -cox_reid_apl(counts[:, [g]], offset, groups, np.exp([log_alpha]))[0]

        best = minimize_scalar(neg_apl, bounds=(np.log(1e-4), np.log(10)), method="bounded")
        # same maximum of the APL (the curve can be flat: compare heights, not locations)
        assert -neg_apl(np.log(ours[j])) >= -best.fun - 1e-4


def test_shrinkage_pulls_dispersions_towards_the_trend(small_pb):
    counts, lib, is_case = _context(small_pb, "CD14 Mono", 12.0)
    keep = counts.sum(0) > 0
    args = (counts[:, keep], np.log(lib), is_case.astype(int))
    raw = np.log(estimate_dispersion(*args, prior_df=0))
    shrunk = np.log(estimate_dispersion(*args, prior_df=10))
    assert np.std(shrunk) < np.std(raw)


def test_timecourse_matches_statsmodels_per_gene(small_pb):
    obs = small_pb.obs
    rows = np.flatnonzero(obs["cell_type"] == "CD14 Mono")
    counts = small_pb.X[rows]
    lib = obs["library_size"].to_numpy()[rows]
    is_case = (obs["condition"] == "case").to_numpy()[rows]
    levels = np.sort(obs["time"].unique())
    time_index = np.searchsorted(levels, obs["time"].to_numpy()[rows])
    res = nb_timecourse(counts, lib, is_case, time_index)
    assert res["df"] == len(levels) - 1
    reduced = reduced_timecourse_design(is_case, time_index)
    interaction = reduced[:, 2:] * is_case[:, None]
    full = np.column_stack([reduced, interaction])
    offset = np.log(lib)
    for g in np.flatnonzero(counts.min(0) > 0)[:12]:
        alpha = res["dispersion"][g]
        stat = 2.0 * (
            _sm_fit(counts[:, g], full, offset, alpha).llf
            - _sm_fit(counts[:, g], reduced, offset, alpha).llf
        )
        assert abs(stat - res["statistic"][g]) <= TOL * max(1.0, stat)
        assert abs(stats.chi2.sf(stat, res["df"]) - res["p_value"][g]) <= TOL


def test_irls_and_oneway_fitters_agree(small_pb):
    counts, lib, is_case = _context(small_pb, "NK", 24.0)
    keep = counts.sum(0) > 0
    y, offset = counts[:, keep], np.log(lib)
    alpha = np.full(y.shape[1], 0.05)
    coef, mu_oneway = fit_oneway(y, offset, is_case.astype(int), alpha)
    design = np.column_stack([np.ones(len(lib)), is_case.astype(float)])
    beta, mu_irls, converged = fit_glm(y, offset, design, alpha)
    regular = np.isfinite(coef).all(axis=0)
    assert converged.all()
    np.testing.assert_allclose(beta[0, regular], coef[0, regular], atol=1e-8)
    np.testing.assert_allclose(mu_irls[:, regular], mu_oneway[:, regular], rtol=1e-7)


def test_wrapper_table_schema_and_uns(small_cohort):
    adata = small_cohort.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.InsufficientReplicationWarning)
        table = de(adata, min_cells=3)
    assert list(table.columns) == list(SCHEMAS["de"])
    assert table.dtypes.astype(str).tolist() == list(SCHEMAS["de"].values())
    stored = adata.uns["de"]
    pd.testing.assert_frame_equal(get.de(adata), table)  # stored h5ad-writable, read back equal
    params = stored["params"]
    assert params["method"] == "nb_glm" and params["fallback"] is False
    assert params["n_contexts_tested"] == table.groupby(["cell_type", "time"]).ngroups
    # a context of the table equals the kernel run on the same pseudobulk
    pb = pseudobulk(small_cohort, min_cells=3)
    counts, lib, is_case = _context(pb, "NK", 12.0)
    res = nb_glm_two_group(counts, lib, is_case)
    sub = table[(table["cell_type"] == "NK") & (table["time"] == 12.0)]
    np.testing.assert_allclose(sub["log_fc"], res.log_fc, equal_nan=True)
    np.testing.assert_allclose(sub["p_value"], res.p_value, equal_nan=True)
    q = multipletests(res.p_value[np.isfinite(res.p_value)], method="fdr_bh")[1]
    np.testing.assert_allclose(sub["q_value"].dropna(), q)
    cpm = counts / lib[:, None] * 1e6
    np.testing.assert_allclose(sub["mean_case"], cpm[is_case].mean(0))
    assert (sub["n_donors_case"] == is_case.sum()).all()


@pytest.fixture(scope="module")
def powered_cohort():
    from omicstwin.datasets import simulate_cohort

    # 4 patients per endotype and 6 controls: enough donors to see a planted driver
    return simulate_cohort("small", n_case=8, n_control=6, n_cells=6000, seed=0)


def test_planted_drivers_are_upregulated_at_onset_and_baseline_is_quiet(powered_cohort):
    adata = powered_cohort
    drivers = adata.uns["truth"]["drivers"]
    n_baseline_hits = n_baseline_tests = 0
    for _, patients in drivers.groupby("endotype"):
        # each endotype's drivers act in its own patients: compare those with the controls
        keep = (adata.obs["condition"] == "control") | adata.obs["donor"].isin(
            patients["patient_id"]
        )
        table = de(adata[keep.to_numpy()].copy(), min_cells=3)
        onset = table[
            (table["cell_type"] == patients["initiating_cell_type"].iloc[0])
            & (table["time"] == patients["onset_time"].iloc[0])
        ].set_index("gene")
        for gene in patients["driver_genes"].iloc[0].split(";"):
            assert onset.loc[gene, "q_value"] < 0.05, gene
            assert onset.loc[gene, "log_fc"] > 0.5, gene
        baseline = table[table["time"] == 0.0]
        n_baseline_hits += int((baseline["q_value"] < 0.05).sum())
        n_baseline_tests += int(baseline["q_value"].notna().sum())
    assert n_baseline_hits <= 0.01 * n_baseline_tests


def test_underreplicated_contexts_warn_and_are_listed():
    adata = make_tiny()
    obs = adata.obs
    drop = (obs["patient"] == "d2") & (obs["celltype"] == "T") & (obs["hours"] == 24.0)
    adata = adata[~drop.to_numpy()].copy()
    with pytest.warns(errors.InsufficientReplicationWarning, match=r"1 cell type x time.*T@24"):
        table = de(adata, **TINY_KEYS, min_cells=1)
    skipped = adata.uns["de"]["params"]["skipped"]
    assert skipped[["cell_type", "time"]].to_numpy().tolist() == [["T", 24.0]]
    assert skipped["n_donors_case"].tolist() == [1]
    assert ((table["cell_type"] == "T") & (table["time"] == 24.0)).sum() == 0
    assert table.groupby(["cell_type", "time"]).ngroups == 3


def test_no_donor_replication_falls_back_to_cells_with_a_warning():
    adata = make_tiny(n_per_group=12)
    adata = adata[adata.obs["patient"].isin(["d1", "d3"]).to_numpy()].copy()
    with pytest.warns(errors.InsufficientReplicationWarning, match="no donor replication"):
        table = de(adata, **TINY_KEYS, min_cells=5)
    params = adata.uns["de"]["params"]
    assert params["fallback"] and params["method"] == "wilcoxon_cells"
    assert "Wilcoxon" in params["fallback_reason"]
    assert len(table) == 4 * 8 and table["p_value"].between(0, 1).all()
    assert (table["n_donors_case"] == 1).all()


def test_all_zero_genes_give_nan_not_errors():
    adata = make_tiny()
    x = adata.X.toarray()
    x[:, 2] = 0  # a gene with no counts anywhere
    mono = (adata.obs["celltype"] == "Mono").to_numpy()
    x[np.ix_(mono, [5])] = 0  # no counts in the Mono contexts only
    x[np.ix_((adata.obs["status"] == "ctrl").to_numpy(), [6])] = 0  # control arm all zero
    adata.X = x
    table = de(adata, **TINY_KEYS, min_cells=1)
    g2 = table[table["gene"] == "G2"]
    assert g2[["log_fc", "p_value", "q_value"]].isna().all().all()
    assert (g2["mean_case"] == 0).all()
    g5 = table[table["gene"] == "G5"].set_index("cell_type")
    assert g5.loc["Mono", "p_value"].isna().all() and g5.loc["T", "p_value"].notna().all()
    g6 = table[table["gene"] == "G6"]  # separated: finite continuity-corrected log_fc
    assert np.isfinite(g6["log_fc"]).all() and (g6["log_fc"] > 0).all()
    assert g6["p_value"].between(0, 1).all()
    tested = table.dropna(subset=["p_value"])
    assert tested["q_value"].notna().all()


def test_deterministic_and_independent_of_cell_order(small_cohort):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.InsufficientReplicationWarning)
        first = de(small_cohort.copy(), min_cells=3)
        again = de(small_cohort.copy(), min_cells=3)
        order = np.random.default_rng(0).permutation(small_cohort.n_obs)
        shuffled = de(small_cohort[order].copy(), min_cells=3)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, shuffled, check_exact=False, rtol=1e-9)


def test_mudata_input_stores_results_on_the_mudata():
    md = pytest.importorskip("mudata")
    adata = make_tiny()
    mdata = md.MuData({"rna": adata})
    mdata.obs = mdata.obs.join(adata.obs.add_prefix("g_"))
    table = de(mdata, **TINY_KEYS, min_cells=1)
    assert "de" in mdata.uns and len(table) == 4 * 8


def test_timecourse_wrapper_schema():
    adata = make_tiny(n_per_group=5)
    table = timecourse_de(adata, **TINY_KEYS, min_cells=1)
    assert list(table.columns) == list(SCHEMAS["de_timecourse"])
    assert (table["df"] == 1).all() and len(table) == 2 * 8
    assert adata.uns["de_timecourse"]["params"]["skipped"].empty


def test_registry_and_parameter_errors():
    assert {"nb_glm", "wilcoxon_cells"} <= set(DE_METHODS)
    for entry in DE_METHODS.values():
        assert entry.reference and entry.description and entry.level in ("pseudobulk", "cells")
    with pytest.raises(errors.ParameterError, match="unknown DE method"):
        de(make_tiny(), **TINY_KEYS, method="t_test")
    with pytest.raises(errors.ParameterError, match="min_donors"):
        de(make_tiny(), **TINY_KEYS, min_donors=1)
    with pytest.raises(errors.ConditionError):
        de(make_tiny(), **(TINY_KEYS | {"control": "healthy"}))
