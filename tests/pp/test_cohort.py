"""The Cohort: its shared pieces equal the whole-matrix computations they replace, bit for bit."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.pp.cohort import Cohort, as_cohort
from omicstwin.pp.normalise import group_summaries, log_normalise
from omicstwin.pp.pseudobulk import pseudobulk
from omicstwin.pp.qc import filter_cohort
from tests.conftest import TINY_KEYS, make_tiny

KEYS = dict(cell_type_key="cell_type", time_key="time", condition_key="condition")
KEYS |= dict(donor_key="donor", case="case", control="control")


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return Cohort.from_data(small_cohort, **KEYS)


def test_counts_are_held_once(small_cohort, cohort):
    assert cohort.counts is small_cohort.X  # CSR input: the matrix itself, no copy
    assert cohort.filter(min_genes=0, min_cells=0).counts is small_cohort.X  # nothing dropped
    assert cohort.summary is not None and cohort.summary.n_cells == small_cohort.n_obs
    assert list(cohort.obs.columns) == ["cell_type", "time", "condition", "donor"]


def test_pseudobulk_equals_the_function(small_cohort, cohort):
    expected = pseudobulk(small_cohort, min_cells=1)
    np.testing.assert_array_equal(cohort.pseudobulk.X, expected.X)
    pd.testing.assert_frame_equal(cohort.pseudobulk.obs, expected.obs)
    assert cohort.pseudobulk is cohort.pseudobulk  # computed once


def test_log_summaries_equal_the_whole_matrix_bit_for_bit(cohort):
    arms = cohort.in_arms
    whole = log_normalise(cohort.counts[arms])
    obs = cohort.obs[arms].reset_index(drop=True)
    keys, mean, fraction, _ = group_summaries(whole, obs[["cell_type", "time", "condition"]])
    dkeys, dmean, _, _ = group_summaries(whole, obs[["cell_type", "time", "donor", "condition"]])
    got = cohort.log_summaries
    pd.testing.assert_frame_equal(got.arms, keys)
    pd.testing.assert_frame_equal(got.donors, dkeys)
    np.testing.assert_array_equal(got.arm_mean, mean)
    np.testing.assert_array_equal(got.arm_fraction, fraction)
    np.testing.assert_array_equal(got.donor_mean, dmean)
    rows = np.flatnonzero(arms)[5:40]
    np.testing.assert_array_equal(
        cohort.log_normalised(rows).toarray(), whole[5:40].toarray()
    )  # a block holds the whole matrix's values


def test_filter_equals_filter_cohort():
    adata = make_tiny(n_per_group=4)
    dense = adata.X.toarray()
    dense[:3] = 0  # three empty cells
    dense[:, 0] = 0  # an undetected gene
    adata.X = sparse.csr_matrix(dense)
    filtered, qc = filter_cohort(
        adata, **{k: v for k, v in TINY_KEYS.items() if k.endswith("_key")}, min_genes=1
    )
    cohort = Cohort.from_data(adata, **TINY_KEYS).filter(min_genes=1, min_cells=3)
    pd.testing.assert_frame_equal(cohort.qc, qc)
    assert (cohort.counts != filtered.X).nnz == 0
    assert list(cohort.genes) == list(filtered.var_names)
    assert list(cohort.obs.index) == list(filtered.obs_names)
    with pytest.raises(errors.ParameterError, match="quality control keeps"):
        cohort.filter(min_genes=10_000)


def test_analysis_functions_take_a_cohort(small_cohort, cohort):
    from omicstwin.tl.de import differential_expression
    from omicstwin.tl.networks import temporal_edges

    for function in (differential_expression, temporal_edges):
        options = {"n_bootstrap": 2} if function is temporal_edges else {}
        from_cohort = function(cohort, key_added="result", **options)
        from_anndata = function(small_cohort.copy(), key_added=None, **options)
        pd.testing.assert_frame_equal(from_cohort, from_anndata, check_exact=True)
        assert "result" in cohort.uns  # key_added lands in the cohort's uns
    assert as_cohort(cohort, {}) is cohort


def test_validation_errors_at_the_door():
    adata = make_tiny()
    with pytest.raises(errors.ConditionError):
        Cohort.from_data(adata, **(TINY_KEYS | {"control": "healthy"}))
    adata.obs.loc[adata.obs_names[0], "patient"] = np.nan
    unvalidated = Cohort.from_data(adata, **TINY_KEYS, validate=False)
    with pytest.raises(errors.MissingKeyError, match="missing values"):
        unvalidated.pseudobulk  # noqa: B018
