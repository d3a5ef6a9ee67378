"""Pseudobulk: sum raw counts per donor x cell type x time point.

Donor-level pseudobulk turns cells (pseudo-replicates) into the real experimental units
(donors), which is what makes differential expression across conditions honest (Squair et al.,
Nat Commun 2021). The kernel :func:`aggregate_counts` is a sparse indicator-matrix product
(groups x cells) @ (cells x genes); the wrapper :func:`pseudobulk` does the AnnData plumbing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin.errors import MissingKeyError, ParameterError
from omicstwin.io.validate import (
    CohortKeys,
    check_raw_counts,
    cohort_obs,
    counts_matrix,
    resolve_time,
)

_BLOCK_ROWS = 4096  # cells summed per sparse product (bounds the float64 block copy)

PSEUDOBULK_OBS = (
    "cell_type",
    "time",
    "condition",
    "donor",
    "n_cells",
    "library_size",
    "n_genes_detected",
)


def aggregate_counts(matrix: Any, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``matrix`` by group.

    Parameters
    ----------
    matrix
        Cells x genes, dense or scipy sparse.
    groups
        Group index of each cell, in ``0 .. n_groups - 1``; negative values drop the cell.
    n_groups
        Number of groups (rows of the result).

    Returns
    -------
    numpy.ndarray
        ``(n_groups, n_genes)`` float64 sums (exact for integer counts below 2**53).
    """
    groups = np.asarray(groups, dtype=np.int64)
    keep = np.flatnonzero(groups >= 0)
    # A (groups x cells) 0/1 matrix times the counts sums each group's rows in one sparse
    # product: O(nnz), no Python loop over cells or groups. Blocks of rows keep the float64
    # copy of the counts to one block (integer sums are exact in any order).
    indicator = sparse.csr_matrix(
        (np.ones(keep.size), (groups[keep], keep)), shape=(n_groups, matrix.shape[0])
    ).tocsc()
    summed = np.zeros((n_groups, matrix.shape[1]), dtype=np.float64)
    for start in range(0, matrix.shape[0], _BLOCK_ROWS):
        block = matrix[start : start + _BLOCK_ROWS]
        part = indicator[:, start : start + _BLOCK_ROWS]
        if sparse.issparse(block):
            summed += (part @ sparse.csr_matrix(block, dtype=np.float64)).toarray()
        else:
            summed += part @ np.asarray(block, dtype=np.float64)
    return summed


def schema_time(
    values: pd.Series, *, key: str, unit: str | None = None
) -> tuple[np.ndarray, list[str], Any]:
    """Per-cell time as the schemas' float: numeric time, or an ordered level's position.

    Parameters
    ----------
    values
        The per-cell time column.
    key
        Column name, for messages.
    unit
        Unit of numeric time.

    Returns
    -------
    values : numpy.ndarray
        float64 per cell.
    labels : list of str
        Printable label of each time level, in order (index = position for ordered
        categorical time).
    axis : omicstwin.io.validate.TimeAxis
        The resolved axis.
    """
    axis = resolve_time(values, key=key, unit=unit)
    if axis.numeric:
        return (
            axis.values.to_numpy(dtype=np.float64),
            [axis.label(level) for level in axis.levels],
            axis,
        )
    position = {level: float(i) for i, level in enumerate(axis.levels)}
    return (
        axis.values.map(position).to_numpy(dtype=np.float64),
        [str(level) for level in axis.levels],
        axis,
    )


def pseudobulk(
    data: Any,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    layer: str | None = None,
    min_cells: int = 10,
    time_unit: str | None = None,
    check_counts: bool = True,
):
    """Sum raw counts per donor x cell type x time point.

    Parameters
    ----------
    data
        AnnData, or MuData with an ``rna`` modality (obs keys are looked up in the RNA obs
        first, then in MuData's global obs).
    cell_type_key, time_key, condition_key, donor_key
        obs columns.
    layer
        Layer with raw counts; ``None`` uses ``X``.
    min_cells
        Pseudobulk samples built from fewer cells are dropped (too noisy to be a replicate).
    time_unit
        Unit of numeric time (stored in ``uns``).
    check_counts
        Check that the matrix holds raw counts (skip only when the caller already validated).

    Returns
    -------
    anndata.AnnData
        One observation per donor x cell type x time with at least ``min_cells`` cells; ``X``
        is a dense float64 matrix of summed counts; obs columns ``cell_type``, ``time``
        (float: numeric time, or the level position of an ordered categorical time),
        ``condition``, ``donor``, ``n_cells``, ``library_size`` (total counts) and
        ``n_genes_detected`` (genes with a non-zero sum). Rows are sorted by cell type, time,
        condition and donor. ``uns["pseudobulk"]`` holds the parameters, the time levels
        (labels) and the number of dropped samples.

    Raises
    ------
    MissingKeyError
        An obs key is absent or has missing values.
    CountsError
        The matrix does not hold raw counts.
    ParameterError
        ``min_cells`` below 1.
    """
    from omicstwin.io.read import rna_modality

    if min_cells < 1:
        raise ParameterError(f"min_cells must be >= 1, got {min_cells}; fix: pass 1 or more")
    keys = CohortKeys(
        cell_type=cell_type_key,
        time=time_key,
        condition=condition_key,
        donor=donor_key,
        layer=layer,
        time_unit=time_unit,
    )
    obs = cohort_obs(data, keys)
    for column, key in (
        ("cell_type", cell_type_key),
        ("condition", condition_key),
        ("donor", donor_key),
    ):
        n_missing = int(obs[column].isna().sum())
        if n_missing:
            raise MissingKeyError(
                f"obs column '{key}' has {n_missing} missing values; fix: label those cells or "
                "drop them before pseudobulking"
            )
    if check_counts:
        check_raw_counts(data, layer)
    time_values, time_labels, time_axis = schema_time(obs["time"], key=time_key, unit=time_unit)

    frame = pd.DataFrame(
        {
            "cell_type": obs["cell_type"].astype(str).to_numpy(),
            "time": time_values,
            "condition": obs["condition"].astype(str).to_numpy(),
            "donor": obs["donor"].astype(str).to_numpy(),
        }
    )
    genes = rna_modality(data).var_names
    result = summed_counts(frame, counts_matrix(data, layer), genes, min_cells=min_cells)
    result.uns["pseudobulk"] = {
        "cell_type_key": cell_type_key,
        "time_key": time_key,
        "condition_key": condition_key,
        "donor_key": donor_key,
        "layer": layer if layer is not None else "X",
        "min_cells": int(min_cells),
        "time_numeric": bool(time_axis.numeric),
        "time_unit": time_axis.unit or "",
        "time_levels": np.asarray(time_labels, dtype=object),
        "n_dropped": result.uns.pop("n_dropped"),
    }
    return result


def summed_counts(cells: pd.DataFrame, counts: Any, genes: pd.Index, *, min_cells: int = 1):
    """Sum counts per cell type x time x condition x donor (the kernel of :func:`pseudobulk`).

    Parameters
    ----------
    cells
        One row per cell: ``cell_type``, ``time`` (float), ``condition``, ``donor`` (str).
    counts
        Cells x genes raw counts (sparse or dense).
    genes
        Gene names (``var_names`` of the result).
    min_cells
        Samples of fewer cells are dropped (their number in ``uns["n_dropped"]``).

    Returns
    -------
    anndata.AnnData
        As :func:`pseudobulk`, without its ``uns["pseudobulk"]``.
    """
    group_index, table = sample_groups(cells)
    sums = aggregate_counts(counts, group_index, len(table))
    return summed_samples(table, sums, genes, min_cells=min_cells)


def sample_groups(cells: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Pseudobulk sample of every cell and the samples' keys (cell type, time, condition, donor).

    Returns
    -------
    group_index, table
        Sample index per cell (sorted keys: independent of the cells' order) and one row per
        sample with ``n_cells``.
    """
    columns = ["cell_type", "time", "condition", "donor"]
    # sort=True on plain str/float columns makes the order independent of input order and
    # of categorical category order
    grouped = cells[columns].groupby(columns, sort=True, observed=True)
    group_index = grouped.ngroup().to_numpy()
    table = grouped.size().rename("n_cells").reset_index()
    return group_index, table


def summed_samples(table: pd.DataFrame, sums: np.ndarray, genes: pd.Index, *, min_cells: int = 1):
    """Build the pseudobulk AnnData of :func:`sample_groups`' table and its summed counts.

    Parameters
    ----------
    table, sums
        Samples (from :func:`sample_groups`) and their summed counts (samples x genes).
    genes
        Gene names.
    min_cells
        Samples of fewer cells are dropped (their number in ``uns["n_dropped"]``).
    """
    import anndata as ad

    columns = ["cell_type", "time", "condition", "donor"]
    keep = table["n_cells"].to_numpy() >= min_cells
    n_dropped = int((~keep).sum())
    if n_dropped:
        logger.info(
            "pseudobulk: dropped %d of %d donor x cell type x time samples with < %d cells",
            n_dropped,
            len(table),
            min_cells,
        )
    table = table.loc[keep].reset_index(drop=True)
    sums = sums[keep]
    table["n_cells"] = table["n_cells"].astype(np.int64)
    table["library_size"] = sums.sum(axis=1)
    table["n_genes_detected"] = (sums > 0).sum(axis=1).astype(np.int64)
    table.index = [
        f"{r.cell_type}|{r.time:g}|{r.condition}|{r.donor}"
        for r in table[columns].itertuples(index=False)
    ]
    result = ad.AnnData(
        X=sums, obs=table.loc[:, list(PSEUDOBULK_OBS)], var=pd.DataFrame(index=genes.copy())
    )
    result.uns["n_dropped"] = n_dropped
    return result
