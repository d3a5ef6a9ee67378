import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.io import validate_cohort
from omicstwin.io.validate import resolve_time
from tests.conftest import TINY_KEYS, make_tiny


def test_valid_tiny_cohort_summary():
    summary = validate_cohort(make_tiny(), **TINY_KEYS)
    assert (summary.n_cells, summary.n_genes) == (48, 8)
    assert summary.cell_types == ["Mono", "T"]
    assert summary.time.levels == [0.0, 24.0]
    assert summary.donors_case == ["d1", "d2"] and summary.donors_control == ["d3", "d4"]
    assert summary.skipped_groups.empty
    assert summary.design["n_cells"].sum() == 48
    assert summary.one_line().startswith("ok: 48 cells x 8 genes; 2 cell types; 2 time points")


def test_validation_does_not_modify_the_data():
    adata = make_tiny()
    before_obs, before_x = adata.obs.copy(), adata.X.copy()
    validate_cohort(adata, **TINY_KEYS)
    pd.testing.assert_frame_equal(adata.obs, before_obs)
    assert (adata.X != before_x).nnz == 0


def test_missing_key_lists_columns():
    with pytest.raises(errors.MissingKeyError, match=r"'cell_type'.*columns present.*celltype"):
        validate_cohort(make_tiny(), **(TINY_KEYS | {"cell_type_key": "cell_type"}))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1.0, "negative"),
        (np.nan, "NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (0.5, "non-integer"),
    ],
)
def test_bad_counts_name_value_and_suggest_layer(value, problem):
    adata = make_tiny()
    x = adata.X.toarray()
    x[5, 3] = value
    adata.X = sparse.csr_matrix(x)
    with pytest.raises(errors.CountsError) as info:
        validate_cohort(adata, **TINY_KEYS)
    message = str(info.value)
    assert problem in message and "cell 'c5'" in message and "gene 'G3'" in message
    assert "layer 'counts'" in message  # the layer that does hold counts is suggested


def test_normalised_x_without_counts_layer_says_what_to_store():
    adata = make_tiny()
    del adata.layers["counts"]
    adata.X = sparse.csr_matrix(np.log1p(adata.X.toarray()))
    with pytest.raises(errors.CountsError, match="store the unnormalised integer"):
        validate_cohort(adata, **TINY_KEYS)


def test_dense_and_integer_matrices_are_checked():
    adata = make_tiny()
    adata.X = adata.X.toarray().astype(np.int64)
    validate_cohort(adata, **TINY_KEYS)
    adata.X[0, 0] = -2
    with pytest.raises(errors.CountsError, match="negative"):
        validate_cohort(adata, **TINY_KEYS)


def test_counts_layer_is_used_when_given():
    adata = make_tiny()
    adata.X = sparse.csr_matrix(np.log1p(adata.X.toarray()))
    assert validate_cohort(adata, layer="counts", **TINY_KEYS).counts_source == "layers['counts']"
    with pytest.raises(errors.MissingKeyError, match=r"layer 'raw' not found.*counts"):
        validate_cohort(adata, layer="raw", **TINY_KEYS)


def test_duplicated_names():
    adata = make_tiny()
    adata.var_names = ["G0", "G0", *adata.var_names[2:]]
    with pytest.raises(
        errors.DuplicateNamesError, match=r"gene names.*'G0'.*var_names_make_unique"
    ):
        validate_cohort(adata, **TINY_KEYS)
    adata = make_tiny()
    adata.obs_names = ["c0", "c0", *adata.obs_names[2:]]
    with pytest.raises(errors.DuplicateNamesError, match=r"cell names.*obs_names_make_unique"):
        validate_cohort(adata, **TINY_KEYS)


def test_condition_labels():
    with pytest.raises(
        errors.ConditionError, match=r"\['healthy'\].*labels present: \['case', 'ctrl'\]"
    ):
        validate_cohort(make_tiny(), **(TINY_KEYS | {"control": "healthy"}))
    adata = make_tiny()
    adata.obs["status"] = "case"
    with pytest.raises(errors.ConditionError, match="only one condition"):
        validate_cohort(adata, **TINY_KEYS)


def test_donor_in_both_arms():
    adata = make_tiny()
    adata.obs.loc[adata.obs["patient"] == "d3", "patient"] = "d1"
    with pytest.raises(errors.ConditionError, match=r"\['d1'\] appear in both"):
        validate_cohort(adata, **TINY_KEYS)


def test_unorderable_time():
    adata = make_tiny()
    adata.obs["hours"] = np.where(adata.obs["hours"] > 0, "late", "early")
    with pytest.raises(errors.TimeOrderError, match=r"\['early', 'late'\].*ordered categorical"):
        validate_cohort(adata, **TINY_KEYS)


def test_time_forms():
    numeric = resolve_time(pd.Series([24.0, 0.0, 6.0]), key="t", unit="h")
    assert numeric.levels == [0.0, 6.0, 24.0] and numeric.label(6.0) == "6 h"
    labels = resolve_time(pd.Series(["6h", "0h", "24 h"]), key="t")
    assert labels.levels == [0.0, 6.0, 24.0] and labels.unit == "h"
    days = resolve_time(pd.Series(["day 3", "day 1"]), key="t")
    assert days.levels == [1.0, 3.0] and days.unit == "day"
    ordered = resolve_time(
        pd.Series(pd.Categorical(["late", "early"], categories=["early", "late"], ordered=True)),
        key="t",
    )
    assert ordered.levels == ["early", "late"] and not ordered.numeric
    with pytest.raises(errors.TimeOrderError, match="missing values"):
        resolve_time(pd.Series([0.0, np.nan]), key="t")
    with pytest.raises(errors.TimeOrderError, match="cannot be ordered"):
        resolve_time(pd.Series(["6h", "2d"]), key="t")  # mixed units: no guessing


def test_empty_matrix():
    adata = make_tiny()[:, []].copy()
    with pytest.raises(errors.EmptyDataError, match="empty"):
        validate_cohort(adata, **TINY_KEYS)


def test_underreplicated_groups_are_skipped_with_warning():
    adata = make_tiny()
    keep = ~((adata.obs["celltype"] == "Mono") & (adata.obs["patient"] == "d4"))
    adata = adata[keep.to_numpy()].copy()
    with pytest.warns(errors.InsufficientReplicationWarning, match="Mono"):
        summary = validate_cohort(adata, **TINY_KEYS)
    assert set(summary.skipped_groups["cell_type"]) == {"Mono"}
    assert summary.skipped_groups["n_donors_control"].tolist() == [1, 1]
    assert "2 of 4 cell type x time groups skipped" in summary.one_line()


def test_other_conditions_are_ignored_not_lost():
    adata = make_tiny()
    adata.obs["status"] = adata.obs["status"].astype(str)
    adata.obs.iloc[:3, adata.obs.columns.get_loc("status")] = "recovered"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.InsufficientReplicationWarning)
        summary = validate_cohort(adata, **TINY_KEYS)
    assert summary.n_cells_other == 3 and summary.n_cells == 48


def test_errors_are_value_or_type_errors():
    for name in dir(errors):
        obj = getattr(errors, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, errors.OmicstwinError)
            and obj is not errors.OmicstwinError
        ):
            assert issubclass(obj, ValueError | TypeError), name
