"""GRN evaluation metrics exactly as BEELINE computes them (Pratapa et al., Nature Methods 2020).

BEELINE (``BLEval/computeAUC.py`` and ``computeEarlyPrec.py``) scores a ranked edge list
against a reference network as follows, and so do we:

- the candidate pairs are all ordered pairs of distinct genes of the reference network
  (``itertools.permutations(genes, 2)``: directed, no self-edges); self-edges in the reference
  or the prediction are ignored;
- a prediction's weight is its absolute value; a pair missing from the prediction weighs 0; if a
  pair is predicted twice, the first row wins;
- AUPRC is the trapezoid area under sklearn's ``precision_recall_curve`` (``auc(recall,
  precision)``), *not* average precision; we reimplement that curve (same thresholds, same
  final (recall 0, precision 1) point) so the metric does not import sklearn;
- AUPRC ratio = AUPRC / edge density, with density = true edges / (n (n - 1));
- early precision: the predictions are rounded to 6 decimals, and every prediction whose
  |weight| is >= the k-th largest (k = number of true edges, capped by the number of
  predictions) and > 0 is kept, so ties at the cut are all kept; early precision is the fraction
  of kept edges that are true, and the early precision *ratio* (EPR) divides it by the density.
  BEELINE's published ``<model>-EPr.csv`` holds the early *precision*, not the ratio.

Only pairs among the reference genes are scored; predictions involving other genes are
dropped. That is BEELINE's AUPRC; its early precision keeps every predicted pair, which gives
the same number whenever every expressed gene is in the reference (true of all BEELINE data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omicstwin.errors import MissingKeyError, ParameterError

__all__ = [
    "GRNScores",
    "auprc",
    "auprc_ratio",
    "early_precision",
    "early_precision_ratio",
    "edge_labels",
    "precision_recall_curve",
    "score_grn",
]


@dataclass(frozen=True)
class GRNScores:
    """The BEELINE scores of one prediction against one reference network."""

    auprc: float
    auprc_ratio: float
    early_precision: float
    early_precision_ratio: float
    density: float
    n_true_edges: int
    n_genes: int


def _standardise(edges: pd.DataFrame, what: str, *, need_weight: bool) -> pd.DataFrame:
    """Accept BEELINE (Gene1, Gene2[, EdgeWeight]) or omicstwin (source, target[, weight])."""
    rename = {"Gene1": "source", "Gene2": "target", "EdgeWeight": "weight"}
    frame = edges.rename(columns=rename)
    needed = ["source", "target", *(["weight"] if need_weight else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MissingKeyError(
            f"the {what} lacks the columns {missing} (columns present: {list(edges.columns)}); "
            "fix: pass columns source, target, weight (or BEELINE's Gene1, Gene2, EdgeWeight)"
        )
    frame = frame.loc[:, needed].copy()
    frame["source"] = frame["source"].astype(str)
    frame["target"] = frame["target"].astype(str)
    return frame[frame["source"] != frame["target"]]


def edge_labels(
    reference: pd.DataFrame,
    predicted: pd.DataFrame,
    genes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (truth 0/1, |weight|) over every ordered pair of distinct genes.

    Parameters
    ----------
    reference
        True edges: columns ``source, target`` (or ``Gene1, Gene2``).
    predicted
        Predicted edges: ``source, target, weight`` (or ``Gene1, Gene2, EdgeWeight``).
    genes
        Genes spanning the candidate pairs; default (BEELINE): the genes of ``reference``.

    Returns
    -------
    tuple of numpy.ndarray
        ``truth`` (int8) and ``score`` (float64), one entry per ordered pair, in
        ``permutations(sorted(genes), 2)`` order.
    """
    ref = _standardise(reference, "reference network", need_weight=False)
    pred = _standardise(predicted, "prediction", need_weight=True)
    if genes is None:
        # np.unique over both columns, as BEELINE does (self-edge genes included)
        genes = np.unique(
            reference.rename(columns={"Gene1": "source", "Gene2": "target"})[["source", "target"]]
            .astype(str)
            .to_numpy()
        )
    genes = np.asarray(sorted(set(map(str, genes))))
    n = len(genes)
    if n < 2:
        raise ParameterError(
            f"the reference network spans {n} gene(s); fix: pass a network with >= 2 genes"
        )
    index = {g: i for i, g in enumerate(genes)}
    truth = np.zeros((n, n), dtype=np.int8)
    src = ref["source"].map(index)
    tgt = ref["target"].map(index)
    ok = src.notna() & tgt.notna()
    truth[src[ok].astype(int).to_numpy(), tgt[ok].astype(int).to_numpy()] = 1
    score = np.zeros((n, n), dtype=np.float64)
    # the first occurrence of a duplicated pair wins (BEELINE takes values[0])
    pred = pred.drop_duplicates(subset=["source", "target"], keep="first")
    src = pred["source"].map(index)
    tgt = pred["target"].map(index)
    ok = src.notna() & tgt.notna()
    weights = np.abs(pred["weight"].to_numpy(dtype=np.float64)[ok.to_numpy()])
    weights = np.where(np.isfinite(weights), weights, 0.0)
    score[src[ok].astype(int).to_numpy(), tgt[ok].astype(int).to_numpy()] = weights
    off = ~np.eye(n, dtype=bool)
    return truth[off], score[off]


def precision_recall_curve(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, as ``sklearn.metrics`` returns them.

    Same convention as sklearn: one point per distinct score (descending, ties grouped), the
    sequence reversed so recall decreases, and a final point (precision 1, recall 0) appended.

    Returns
    -------
    tuple of numpy.ndarray
        ``precision``, ``recall``.
    """
    truth = np.asarray(truth, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if truth.sum() == 0:
        raise ParameterError(
            "the reference network has no edge among the scored pairs; fix: check that the "
            "prediction and the reference use the same gene names"
        )
    order = np.argsort(score, kind="mergesort")[::-1]
    score, truth = score[order], truth[order]
    # the last index of every group of tied scores
    distinct = np.where(np.diff(score))[0]
    last = np.r_[distinct, truth.size - 1]
    tps = np.cumsum(truth)[last]
    fps = (1 + last) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def _trapezoid_auc(x: np.ndarray, y: np.ndarray) -> float:
    # sklearn.metrics.auc: the curve is monotonic in x (here decreasing), so take the sign
    area = float(np.trapezoid(y, x))
    return -area if x[0] > x[-1] else area


def auprc(reference: pd.DataFrame, predicted: pd.DataFrame) -> float:
    """Area under BEELINE's precision-recall curve (trapezoid rule, not average precision)."""
    truth, score = edge_labels(reference, predicted)
    precision, recall = precision_recall_curve(truth, score)
    return _trapezoid_auc(recall, precision)


def _density(truth: np.ndarray) -> float:
    return float(truth.sum()) / truth.size


def auprc_ratio(reference: pd.DataFrame, predicted: pd.DataFrame) -> float:
    """AUPRC divided by the edge density (the AUPRC of a random predictor)."""
    truth, _ = edge_labels(reference, predicted)
    return auprc(reference, predicted) / _density(truth)


def early_precision(reference: pd.DataFrame, predicted: pd.DataFrame) -> float:
    """BEELINE's early precision: precision of the top-k edges (ties at the cut kept).

    k is the number of true non-self edges (capped by the number of predictions); weights are
    rounded to 6 decimals and taken as absolute values; zero-weight edges never count as
    predicted.
    """
    ref = _standardise(reference, "reference network", need_weight=False)
    pred = _standardise(predicted, "prediction", need_weight=True).drop_duplicates()
    genes = set(ref["source"]) | set(ref["target"])
    genes |= set(
        reference.rename(columns={"Gene1": "source", "Gene2": "target"})[["source", "target"]]
        .astype(str)
        .to_numpy()
        .ravel()
    )
    pred = pred[pred["source"].isin(genes) & pred["target"].isin(genes)]
    true_edges = set(zip(ref["source"], ref["target"], strict=True))
    if not true_edges:
        raise ParameterError("the reference network has no non-self edge; fix: check its rows")
    weight = pred["weight"].to_numpy(dtype=np.float64).round(6)
    weight = np.abs(np.where(np.isfinite(weight), weight, 0.0))
    if weight.size == 0 or not (weight > 0).any():
        return 0.0
    # BEELINE takes the k-th row of the file as ranked; rank by |weight| here so an unsorted
    # prediction gives the same answer as a sorted one
    ranked = np.sort(weight)[::-1]
    k = min(weight.size, len(true_edges))
    cut = max(ranked[k - 1], ranked[ranked > 0].min())
    keep = weight >= cut
    kept = set(zip(pred["source"].to_numpy()[keep], pred["target"].to_numpy()[keep], strict=True))
    return len(kept & true_edges) / len(kept)


def early_precision_ratio(reference: pd.DataFrame, predicted: pd.DataFrame) -> float:
    """Early precision divided by the edge density (true edges / (n (n - 1)))."""
    truth, _ = edge_labels(reference, predicted)
    return early_precision(reference, predicted) / _density(truth)


def score_grn(reference: pd.DataFrame, predicted: pd.DataFrame) -> GRNScores:
    """All BEELINE scores of one prediction against one reference network."""
    truth, score = edge_labels(reference, predicted)
    density = _density(truth)
    precision, recall = precision_recall_curve(truth, score)
    area = _trapezoid_auc(recall, precision)
    ep = early_precision(reference, predicted)
    n = round(float((1 + np.sqrt(1 + 4 * truth.size)) / 2))
    return GRNScores(
        auprc=area,
        auprc_ratio=area / density,
        early_precision=ep,
        early_precision_ratio=ep / density,
        density=density,
        n_true_edges=int(truth.sum()),
        n_genes=n,
    )
