"""Cell and gene quality control before the statistics (the pipeline's preprocess stage).

Per cell (:func:`cell_qc_metrics`, scanpy's ``calculate_qc_metrics`` semantics, on any CSR
block of cells so a chunked pass can call it): counts, detected genes, and the percentage of
counts on mitochondrial (``MT-``) and ribosomal protein (``RPS``/``RPL``) genes. Doublets are
scored per sample (donor x time) with scanpy's scrublet (:func:`doublet_calls`). A cell is kept
when it has ``min_genes`` detected genes, at most ``max_pct_mito`` / ``max_pct_ribo`` percent
and is not a called doublet; a gene when it is detected in ``min_cells`` kept cells
(:func:`quality_control`). The thresholds follow scanpy's ``filter_cells`` / ``filter_genes``
(which do the counting); the defaults are deliberately mild (cells with >= 10 detected genes,
genes detected in >= 3 cells, at most 20% mitochondrial counts, no ribosomal cut) because
targeted panels and simulated cohorts have far fewer genes per cell than whole
transcriptomes, where scanpy's tutorial uses 200 genes and 5% mitochondrial counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin.errors import ParameterError
from omicstwin.schemas import conform

MITO_PREFIX = "MT-"
#: ribosomal protein genes: RPS/RPL numbered genes, RPLP0-2, RPSA (not the RPS6K kinases)
RIBO_PATTERN = re.compile(r"^RP[SL](?:\d+[A-JL-Z]{0,2}\d*|P\d|A)$")
#: scrublet needs a sample large enough for its PCA (30 components) and neighbours
MIN_SCRUBLET_CELLS = 50
_KEYS = ["condition", "donor", "time", "cell_type"]


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
    **qc_options: Any,
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
    qc_options
        ``max_pct_mito``, ``max_pct_ribo``, ``doublets``, ``doublet_threshold``, ``seed``
        (see :func:`quality_control`).

    Returns
    -------
    filtered : anndata.AnnData
        A copy with the kept cells and genes.
    qc : pandas.DataFrame
        ``qc.parquet`` rows per condition x donor x time x cell type (see :func:`qc_table`).

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
    keep_cells, keep_genes, qc = quality_control(
        counts, frame, rna.var_names, min_genes=min_genes, min_cells=min_cells, **qc_options
    )
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
    cells: pd.DataFrame,
    keep_cells: np.ndarray,
    genes_per_cell: np.ndarray,
    metrics: pd.DataFrame | None = None,
    reasons: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``qc.parquet`` rows per condition x donor x time x cell type.

    Parameters
    ----------
    cells
        One row per cell (before filtering): ``condition``, ``donor``, ``time`` (float),
        ``cell_type``.
    keep_cells, genes_per_cell
        From :func:`qc_masks` (or :func:`quality_control`).
    metrics
        :func:`cell_qc_metrics` of the same cells (None: the medians are NaN).
    reasons
        Per cell, one boolean column per filter (``low_genes``, ``high_mito``, ``high_ribo``,
        ``doublet``) and ``doublet_scored`` (None: nothing removed but by genes, unscored).

    Returns
    -------
    pandas.DataFrame
        n_cells, n_cells_kept, median_genes (detected genes per cell before filtering), the
        cells each filter removed, the medians of counts and percentages, the doublet rate.
    """
    frame = pd.DataFrame({k: np.asarray(cells[k]) for k in _KEYS})
    frame["kept"] = keep_cells
    frame["genes"] = genes_per_cell
    n = len(frame)
    metrics = (
        metrics if metrics is not None else pd.DataFrame(np.nan, index=range(n), columns=_METRICS)
    )
    if reasons is None:
        reasons = pd.DataFrame(False, index=range(n), columns=[*_REASONS, "doublet_scored"])
        reasons["low_genes"] = ~np.asarray(keep_cells)
    for column in _METRICS[:1] + _METRICS[2:]:
        frame[column] = np.asarray(metrics[column], dtype=np.float64)
    for column in [*_REASONS, "doublet_scored"]:
        frame[column] = np.asarray(reasons[column], dtype=bool)
    qc = (
        frame.groupby(_KEYS, observed=True)
        .agg(
            n_cells=("kept", "size"),
            n_cells_kept=("kept", "sum"),
            median_genes=("genes", "median"),
            n_low_genes=("low_genes", "sum"),
            n_high_mito=("high_mito", "sum"),
            n_high_ribo=("high_ribo", "sum"),
            n_doublets=("doublet", "sum"),
            n_scored=("doublet_scored", "sum"),
            median_counts=("n_counts", "median"),
            median_pct_mito=("pct_mito", "median"),
            median_pct_ribo=("pct_ribo", "median"),
        )
        .reset_index()
    )
    scored = qc["n_scored"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        qc["doublet_rate"] = np.where(scored > 0, qc["n_doublets"] / scored, np.nan)
    return conform(qc, "qc")


_METRICS = ["n_counts", "n_genes", "pct_mito", "pct_ribo"]
_REASONS = ["low_genes", "high_mito", "high_ribo", "doublet"]


def gene_classes(genes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the mitochondrial (``MT-``) and ribosomal protein genes."""
    names = pd.Index(genes).astype(str)
    mito = np.asarray(names.str.startswith(MITO_PREFIX), dtype=bool)
    ribo = np.array([RIBO_PATTERN.match(name) is not None for name in names], dtype=bool)
    return mito, ribo


def cell_qc_metrics(counts_block: Any, genes: Any) -> pd.DataFrame:
    """Per-cell QC metrics of a block of cells (scanpy's ``calculate_qc_metrics`` semantics).

    Parameters
    ----------
    counts_block
        Raw counts of some cells, cells x genes (CSR, or anything scipy can make CSR); a
        chunked pass calls this per block and concatenates.
    genes
        Gene names of the columns (mitochondrial: ``MT-``; ribosomal: ``RPS``/``RPL``
        numbered genes, :data:`RIBO_PATTERN`).

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``n_counts`` (scanpy's ``total_counts``), ``n_genes``
        (``n_genes_by_counts``: non-zero counts), ``pct_mito`` and ``pct_ribo``
        (``pct_counts_<qc_var>``, in percent; 0 for a cell with no counts).
    """
    block = sparse.csr_matrix(counts_block)
    mito, ribo = gene_classes(genes)
    totals = np.asarray(block.sum(axis=1, dtype=np.float64)).ravel()
    detected = sparse.csr_matrix((block.data > 0, block.indices, block.indptr), shape=block.shape)
    n_genes = np.asarray(detected.sum(axis=1)).ravel().astype(np.int64)
    shares = block @ np.column_stack([mito, ribo]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(totals[:, None] > 0, 100.0 * shares / totals[:, None], 0.0)
    return pd.DataFrame(
        {"n_counts": totals, "n_genes": n_genes, "pct_mito": pct[:, 0], "pct_ribo": pct[:, 1]}
    )


def doublet_calls(
    counts: Any,
    samples: Any,
    *,
    threshold: float | None = None,
    seed: int = 0,
    min_cells: int = MIN_SCRUBLET_CELLS,
) -> pd.DataFrame:
    """Scrublet doublet scores and calls per sample (scanpy's ``sc.pp.scrublet``).

    Each sample (donor x time: one library) is scored on its own, as ``sc.pp.scrublet`` does
    with ``batch_key`` (a test checks they agree); one sample is in memory at a time.

    Parameters
    ----------
    counts
        Raw counts, cells x genes (cells with at least 3 detected genes: scrublet drops
        others).
    samples
        Sample label per cell.
    threshold
        Doublet score above which a cell is called; None: scrublet's automatic threshold
        (the minimum between the two modes of the simulated doublets' scores; needs
        scikit-image, ``pip install 'omicstwin[qc]'``).
    seed
        Scrublet's ``random_state``.
    min_cells
        Samples with fewer cells are not scored (too few for its PCA and neighbours).

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``doublet_score`` (NaN: not scored), ``predicted_doublet`` (bool),
        ``scored`` (bool).
    """
    import anndata as ad
    import scanpy as sc

    if threshold is None:
        from omicstwin._optional import require

        require(
            "skimage", what="scrublet's automatic doublet threshold (or set qc.doublet_threshold)"
        )
    samples = pd.Series(np.asarray(samples)).astype(str)
    n = len(samples)
    score = np.full(n, np.nan)
    called = np.zeros(n, dtype=bool)
    matrix = sparse.csr_matrix(counts)
    for rows in samples.groupby(samples, sort=True).indices.values():
        if len(rows) < min_cells:
            continue
        part = ad.AnnData(matrix[rows].astype(np.float32))
        sc.pp.scrublet(part, threshold=threshold, random_state=seed, verbose=False)
        score[rows] = part.obs["doublet_score"].to_numpy(np.float64)
        # the automatic threshold can fail on a unimodal sample: no call there
        called[rows] = part.obs["predicted_doublet"].fillna(False).to_numpy(bool)
    return pd.DataFrame(
        {"doublet_score": score, "predicted_doublet": called, "scored": ~np.isnan(score)}
    )


def quality_control(
    counts: Any,
    cells: pd.DataFrame,
    genes: Any,
    *,
    min_genes: int = 10,
    min_cells: int = 3,
    max_pct_mito: float | None = 20.0,
    max_pct_ribo: float | None = None,
    doublets: bool = False,
    doublet_threshold: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Cells and genes that pass, with the ``qc.parquet`` table.

    Parameters
    ----------
    counts
        Raw counts, cells x genes (CSR).
    cells
        One row per cell: ``condition``, ``donor``, ``time``, ``cell_type``.
    genes
        Gene names.
    min_genes, min_cells
        See :func:`qc_masks`.
    max_pct_mito, max_pct_ribo
        Highest percentage of a cell's counts on mitochondrial / ribosomal genes (None: no
        cut).
    doublets
        Score doublets per donor x time with scrublet and remove the called ones (among the
        cells that pass the other filters).
    doublet_threshold, seed
        See :func:`doublet_calls`.

    Returns
    -------
    keep_cells, keep_genes, qc

    Raises
    ------
    ParameterError
        No cell or no gene passes.
    """
    metrics = cell_qc_metrics(counts, genes)
    reasons = _cell_reasons(metrics, min_genes, max_pct_mito, max_pct_ribo)
    keep = ~reasons.any(axis=1).to_numpy()
    reasons["doublet"] = False
    reasons["doublet_scored"] = False
    if doublets:
        rows = np.flatnonzero(keep & (metrics["n_genes"].to_numpy() >= 3))
        samples = cells["donor"].astype(str).to_numpy() + "|" + cells["time"].astype(str).to_numpy()
        calls = doublet_calls(
            sparse.csr_matrix(counts)[rows], samples[rows], threshold=doublet_threshold, seed=seed
        )
        reasons.loc[rows, "doublet"] = calls["predicted_doublet"].to_numpy()
        reasons.loc[rows, "doublet_scored"] = calls["scored"].to_numpy()
        keep &= ~reasons["doublet"].to_numpy()
    kept = counts if keep.all() else counts[keep]  # no copy when all pass
    import scanpy as sc

    keep_genes = np.asarray(sc.pp.filter_genes(kept, min_cells=min_cells, inplace=False)[0])
    check_kept(keep, keep_genes, min_genes, min_cells)
    genes_per_cell = metrics["n_genes"].to_numpy()
    return keep, keep_genes, qc_table(cells, keep, genes_per_cell, metrics, reasons)


def chunked_quality_control(
    chunks: Iterable[tuple[int, int, Any]],
    read_rows: Callable[[np.ndarray], Any],
    cells: pd.DataFrame,
    genes: Any,
    *,
    min_genes: int = 10,
    min_cells: int = 3,
    max_pct_mito: float | None = 20.0,
    max_pct_ribo: float | None = None,
    doublets: bool = False,
    doublet_threshold: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """:func:`quality_control` from one pass over blocks of cells (counts kept on disk).

    The same decisions: per-cell metrics and cuts block by block, detected cells per gene
    counted over the kept cells as the pass goes; doublets, when asked, are scored one sample
    (donor x time) at a time from ``read_rows`` and their detected genes taken back out.

    Parameters
    ----------
    chunks
        ``(start, stop, counts)`` blocks covering every cell in order.
    read_rows
        Raw counts of given cell positions (for the doublet samples).
    cells, genes, min_genes, min_cells, max_pct_mito, max_pct_ribo
        As in :func:`quality_control`.
    doublets, doublet_threshold, seed
        As in :func:`quality_control`.

    Returns
    -------
    keep_cells, keep_genes, qc, metrics
        ``metrics``: :func:`cell_qc_metrics` of every cell.
    """
    metric_parts, reason_parts = [], []
    cells_per_gene = np.zeros(len(genes), np.int64)
    for _start, _stop, chunk in chunks:
        chunk = sparse.csr_matrix(chunk)
        metrics = cell_qc_metrics(chunk, genes)
        reasons = _cell_reasons(metrics, min_genes, max_pct_mito, max_pct_ribo)
        cells_per_gene += _detected_cells(chunk[~reasons.any(axis=1).to_numpy()])
        metric_parts.append(metrics)
        reason_parts.append(reasons)
    metrics = pd.concat(metric_parts, ignore_index=True)
    reasons = pd.concat(reason_parts, ignore_index=True)
    keep = ~reasons.any(axis=1).to_numpy()
    reasons["doublet"] = False
    reasons["doublet_scored"] = False
    if doublets:
        samples = cells["donor"].astype(str).to_numpy() + "|" + cells["time"].astype(str).to_numpy()
        candidates = pd.Series(samples[keep & (metrics["n_genes"].to_numpy() >= 3)])
        positions = np.flatnonzero(keep & (metrics["n_genes"].to_numpy() >= 3))
        for rows in candidates.groupby(candidates, sort=True).indices.values():
            rows = positions[rows]
            calls = doublet_calls(
                read_rows(rows), samples[rows], threshold=doublet_threshold, seed=seed
            )
            reasons.loc[rows, "doublet"] = calls["predicted_doublet"].to_numpy()
            reasons.loc[rows, "doublet_scored"] = calls["scored"].to_numpy()
        called = np.flatnonzero(reasons["doublet"].to_numpy())
        if called.size:
            cells_per_gene -= _detected_cells(sparse.csr_matrix(read_rows(called)))
        keep &= ~reasons["doublet"].to_numpy()
    keep_genes = cells_per_gene >= min_cells
    check_kept(keep, keep_genes, min_genes, min_cells)
    genes_per_cell = metrics["n_genes"].to_numpy()
    return keep, keep_genes, qc_table(cells, keep, genes_per_cell, metrics, reasons), metrics


def _detected_cells(block: sparse.csr_matrix) -> np.ndarray:
    """Cells with a positive count, per gene (scanpy's ``filter_genes`` count)."""
    return np.asarray((block > 0).sum(axis=0)).ravel().astype(np.int64)


def _cell_reasons(
    metrics: pd.DataFrame, min_genes: int, max_pct_mito: float | None, max_pct_ribo: float | None
) -> pd.DataFrame:
    """Boolean columns low_genes, high_mito, high_ribo: why each cell fails (before doublets)."""
    reasons = pd.DataFrame({"low_genes": metrics["n_genes"].to_numpy() < min_genes})
    reasons["high_mito"] = _above(metrics["pct_mito"], max_pct_mito)
    reasons["high_ribo"] = _above(metrics["pct_ribo"], max_pct_ribo)
    return reasons


def _above(values: pd.Series, limit: float | None) -> np.ndarray:
    if limit is None:
        return np.zeros(len(values), dtype=bool)
    return values.to_numpy() > limit
