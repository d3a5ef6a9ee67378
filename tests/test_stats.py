"""The shared kernels of omicstwin._stats against slow references (statsmodels, loops)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from omicstwin._stats import (
    benjamini_hochberg,
    name_order,
    ridge,
    ridge_dual,
    ridge_operator,
    ridge_per_target,
    top_k_mask,
)


def test_benjamini_hochberg_matches_statsmodels():
    p = np.random.default_rng(3).uniform(size=50) ** 3
    p[[4, 9]] = np.nan
    q = benjamini_hochberg(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.isnan(q[~ok]).all()
    with_nan = benjamini_hochberg(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], [0.02, 0.02])
    assert np.isnan(benjamini_hochberg(np.array([np.nan]))).all()


def _standardise(x, y):
    return (x - x.mean(0)) / x.std(0), y - y.mean(0)


@pytest.mark.parametrize("n", [12, 60])  # fewer and more samples than the 30 features
def test_the_three_ridge_solvers_solve_one_problem(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 30)), rng.normal(size=(n, 7))
    xs, ys = _standardise(x, y)
    alpha = 0.5
    reference = np.linalg.solve(xs.T @ xs / n + alpha * np.eye(30), xs.T @ ys / n)
    np.testing.assert_allclose(ridge(x, y, alpha), reference, atol=1e-10)
    standard, dual = ridge_dual(x, y, alpha)
    np.testing.assert_allclose(standard.T @ dual, reference, atol=1e-10)
    np.testing.assert_allclose(ridge_operator(xs, alpha)(xs.T @ ys / n), reference, atol=1e-10)
    # every target on all 30 features through the per-target solver: the same coefficients
    sources = np.tile(np.arange(30), 7)
    targets = np.repeat(30 + np.arange(7), 30)
    rows, cols, coef = ridge_per_target(np.hstack([xs, ys]), sources, targets, alpha=alpha)
    dense = np.zeros((37, 37))
    dense[rows, cols] = coef
    np.testing.assert_allclose(dense[:30, 30:], reference, atol=1e-10)


def test_ridge_per_target_uses_only_each_targets_sources():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 6))
    sources = np.array([0, 1, 2, 0, 3, 0, 4])  # (0, 5) twice, (4, 4) a self-edge
    targets = np.array([5, 5, 5, 4, 4, 5, 4])
    rows, cols, coef = ridge_per_target(z, sources, targets, alpha=0.01)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [
        (0, 4),
        (0, 5),
        (1, 5),
        (2, 5),
        (3, 4),
    ]
    zc = z - z.mean(0)
    for t, srcs in ((5, [0, 1, 2]), (4, [0, 3])):
        x = zc[:, srcs]
        beta = np.linalg.solve(x.T @ x / 200 + 0.01 * np.eye(len(srcs)), x.T @ zc[:, t] / 200)
        got = [coef[(rows == s) & (cols == t)].item() for s in srcs]
        np.testing.assert_allclose(got, beta, atol=1e-10)
    assert ridge_per_target(z[:2], sources, targets)[2].size == 0  # < 3 samples
    assert ridge_per_target(z, np.array([1]), np.array([1]))[2].size == 0  # self-edge only


def _top_by_sorting(scores, names, k, exclude, nonzero):
    """The tie rule stated as a table sort: per column, (|score| desc, name asc), head(k)."""
    rows, cols = np.indices(scores.shape)
    table = pd.DataFrame(
        {"row": rows.ravel(), "col": cols.ravel(), "abs": np.abs(scores).ravel()}
    ).assign(name=np.asarray(names)[rows.ravel()])
    table = table[~exclude.ravel()]
    if nonzero:
        table = table[table["abs"] > 0]
    table = table.sort_values(["col", "abs", "name"], ascending=[True, False, True])
    kept = table.groupby("col").head(k)
    mask = np.zeros(scores.shape, bool)
    mask[kept["row"], kept["col"]] = True
    return mask


@pytest.mark.parametrize("nonzero", [False, True])
def test_top_k_mask_is_a_stable_sort_by_score_then_name(nonzero):
    rng = np.random.default_rng(1)
    scores = rng.integers(-3, 4, size=(9, 15)).astype(float)  # many ties, zeros, signs
    names = ["g", "c", "a", "i", "e", "b", "h", "d", "f"]
    exclude = np.zeros(scores.shape, bool)
    exclude[np.arange(9), np.arange(9)] = True
    for k in (1, 2, 4, 9, 20):
        mask = top_k_mask(scores, k, order=name_order(names), exclude=exclude, nonzero=nonzero)
        np.testing.assert_array_equal(mask, _top_by_sorting(scores, names, k, exclude, nonzero))


def test_top_k_mask_default_order_is_the_row_index():
    scores = np.array([[1.0], [-1.0], [1.0]])
    assert top_k_mask(scores, 2).ravel().tolist() == [True, True, False]
    assert name_order(["b", "c", "a"]).tolist() == [1, 2, 0]
