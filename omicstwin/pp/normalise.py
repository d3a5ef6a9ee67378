"""Library-size normalisation and per-group expression summaries (sparse-aware)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

TARGET_SUM = 1e4


def log_normalise(counts, *, target_sum: float = TARGET_SUM):
    """Return ``log1p(counts / library size * target_sum)`` (CSR stays CSR), as scanpy does.

    Cells with no counts stay zero.

    Parameters
    ----------
    counts
        Raw counts, cells x genes (scipy sparse or dense).
    target_sum
        Counts per cell after scaling.

    Returns
    -------
    scipy.sparse.csr_matrix or numpy.ndarray
        float64 log-normalised expression, sparse when ``counts`` is sparse.
    """
    if sparse.issparse(counts):
        matrix = sparse.csr_matrix(counts, dtype=np.float64, copy=True)
        totals = np.asarray(matrix.sum(axis=1)).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        matrix = sparse.diags(scale) @ matrix
        matrix.data = np.log1p(matrix.data)
        return matrix.tocsr()
    dense = np.asarray(counts, dtype=np.float64)
    totals = dense.sum(axis=1)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(dense * scale[:, None])


def group_summaries(
    matrix, groups: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and fraction of non-zero cells of every gene per group of cells.

    Parameters
    ----------
    matrix
        cells x genes (log-normalised expression), sparse or dense.
    groups
        One row per cell; every column is a grouping key.

    Returns
    -------
    keys, mean, fraction, n_cells
        ``keys`` has one row per group (sorted); ``mean`` and ``fraction`` are groups x genes.
    """
    codes, keys = _group_codes(groups)
    indicator = sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(keys), len(codes))
    )
    n_cells = np.asarray(indicator.sum(axis=1)).ravel()
    sums = indicator @ matrix
    nonzero = indicator @ (matrix != 0 if sparse.issparse(matrix) else (np.asarray(matrix) != 0))
    sums = sums.toarray() if sparse.issparse(sums) else np.asarray(sums)
    nonzero = nonzero.toarray() if sparse.issparse(nonzero) else np.asarray(nonzero)
    return keys, sums / n_cells[:, None], nonzero / n_cells[:, None], n_cells


def _group_codes(groups: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    keys = groups.drop_duplicates().sort_values(list(groups.columns)).reset_index(drop=True)
    lookup = pd.MultiIndex.from_frame(keys)
    codes = lookup.get_indexer(pd.MultiIndex.from_frame(groups))
    return codes, keys
