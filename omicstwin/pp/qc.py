"""Cell and gene quality control before the statistics (the pipeline's preprocess stage).

Thresholds follow scanpy's ``filter_cells`` / ``filter_genes`` (which do the counting); the
defaults are deliberately mild (cells with >= 10 detected genes, genes detected in >= 3 cells)
because targeted panels and simulated cohorts have far fewer genes per cell than whole
transcriptomes, where scanpy's tutorial uses 200.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from omicstwin.errors import ParameterError
from omicstwin.schemas import conform


def qc_masks(
    counts: Any, *, min_genes: int = 10, min_cells: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks of the cells and genes that pass, and the detected genes per cell.

    Parameters
    ----------
    counts
        Raw counts, cells x genes (sparse or dense).
    min_genes
        A cell needs at least this many detected genes.
    min_cells
        A gene needs to be detected in at least this many of the kept cells.

    Returns
    -------
    keep_cells, keep_genes, genes_per_cell
    """
    import scanpy as sc

    keep_cells, genes_per_cell = sc.pp.filter_cells(counts, min_genes=min_genes, inplace=False)
    kept = counts if np.all(keep_cells) else counts[keep_cells]  # no copy when all pass
    keep_genes, _ = sc.pp.filter_genes(kept, min_cells=min_cells, inplace=False)
    return np.asarray(keep_cells), np.asarray(keep_genes), np.asarray(genes_per_cell)


def filter_cohort(
    data: Any,
    *,
    cell_type_key: str,
    time_key: str,
    condition_key: str,
    donor_key: str,
    layer: str | None = None,
    min_genes: int = 10,
    min_cells: int = 3,
) -> tuple[Any, pd.DataFrame]:
    """Drop low-quality cells and undetected genes from the RNA modality.

    Parameters
    ----------
    data
        AnnData, or MuData with an ``rna`` modality (the other modalities are not used by the
        twin's stages, so the result is the filtered RNA AnnData with the key columns in obs).
    cell_type_key, time_key, condition_key, donor_key
        obs columns, looked up in the RNA obs first, then in MuData's global obs.
    layer
        Layer with raw counts; ``None`` for ``X``.
    min_genes, min_cells
        See :func:`qc_masks`.

    Returns
    -------
    filtered : anndata.AnnData
        A copy with the kept cells and genes.
    qc : pandas.DataFrame
        ``qc.parquet`` rows per condition x donor x time x cell type: n_cells, n_cells_kept,
        median_genes (detected genes per cell before filtering).

    Raises
    ------
    ParameterError
        No cell or no gene passes.
    """
    from omicstwin.io.read import rna_modality

    rna = rna_modality(data)
    keys = [condition_key, donor_key, time_key, cell_type_key]
    obs = rna.obs.copy()
    for key in keys:
        if key not in obs.columns:  # MuData: the keys may live in the global obs only
            obs[key] = data.obs.loc[rna.obs_names, key].to_numpy()
    counts = rna.layers[layer] if layer is not None else rna.X
    keep_cells, keep_genes, genes_per_cell = qc_masks(
        counts, min_genes=min_genes, min_cells=min_cells
    )
    check_kept(keep_cells, keep_genes, min_genes, min_cells)
    from omicstwin.pp.pseudobulk import schema_time

    times, _, _ = schema_time(obs[time_key], key=time_key)
    frame = pd.DataFrame(
        {
            "condition": obs[condition_key].astype(str).to_numpy(),
            "donor": obs[donor_key].astype(str).to_numpy(),
            "time": times,
            "cell_type": obs[cell_type_key].astype(str).to_numpy(),
        }
    )
    qc = qc_table(frame, keep_cells, genes_per_cell)
    filtered = rna[keep_cells, keep_genes].copy()
    filtered.obs = obs.loc[filtered.obs_names]
    return filtered, qc


def check_kept(
    keep_cells: np.ndarray, keep_genes: np.ndarray, min_genes: int, min_cells: int
) -> None:
    """Raise :class:`~omicstwin.errors.ParameterError` when no cell or no gene passes."""
    if not keep_cells.any() or not keep_genes.any():
        raise ParameterError(
            f"quality control keeps {int(keep_cells.sum())} cells and {int(keep_genes.sum())} "
            f"genes (min_genes={min_genes}, min_cells={min_cells}); fix: lower "
            "stages.min_genes / stages.min_cells in the run config"
        )


def qc_table(
    cells: pd.DataFrame, keep_cells: np.ndarray, genes_per_cell: np.ndarray
) -> pd.DataFrame:
    """``qc.parquet`` rows per condition x donor x time x cell type.

    Parameters
    ----------
    cells
        One row per cell (before filtering): ``condition``, ``donor``, ``time`` (float),
        ``cell_type``.
    keep_cells, genes_per_cell
        From :func:`qc_masks`.

    Returns
    -------
    pandas.DataFrame
        n_cells, n_cells_kept, median_genes (detected genes per cell before filtering).
    """
    keys = ["condition", "donor", "time", "cell_type"]
    frame = pd.DataFrame({k: np.asarray(cells[k]) for k in keys})
    frame["kept"] = keep_cells
    frame["genes"] = genes_per_cell
    grouped = frame.groupby(keys, observed=True)
    qc = grouped.agg(
        n_cells=("kept", "size"), n_cells_kept=("kept", "sum"), median_genes=("genes", "median")
    ).reset_index()
    return conform(qc, "qc")
