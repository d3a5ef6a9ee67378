"""Scoring the twin's outputs against a simulated cohort's truth (``adata.uns["truth"]``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def planted_lr_recall(adata, edges: pd.DataFrame, *, top: int = 20) -> tuple[float, int, int]:
    """Recall of the planted ligand-receptor edges among the top edges of each time point.

    A planted edge of hop k should be found at every time point from onset + k on (when its
    ligand is up in the sender); ``edges`` must be sorted by weight within each time point, as
    :func:`omicstwin.tl.networks.intercellular_edges` returns them.

    Returns
    -------
    recall, found, total
    """
    truth = adata.uns["truth"]
    planted = truth["lr_edges"][truth["lr_edges"]["endotype"] != ""]
    times = sorted(adata.obs["time"].unique())
    onset = times.index(truth["drivers"]["onset_time"].iloc[0])
    found = total = 0
    for r in planted.itertuples():
        for t in times[onset + r.hop :]:
            best = edges[edges["time_from"] == t].head(top)
            found += bool(
                (
                    (best["source_cell_type"] == r.sender)
                    & (best["target_cell_type"] == r.receiver)
                    & (best["source"] == r.ligand)
                    & (best["target"] == r.receptor)
                ).any()
            )
            total += 1
    return found / max(total, 1), found, total


def network_auprc_ratio(adata, edges: pd.DataFrame, candidates: Sequence[str]) -> dict[str, float]:
    """Per cell type, AUPRC ratio of inferred edges against the planted network.

    Pairs are every candidate regulator x gene (no self-pairs); an edge's score is its largest
    absolute weight over time points and conditions; the AUPRC is BEELINE's (trapezoid under
    the precision-recall curve) divided by the density of true edges.
    """
    from omicstwin.bench.metrics import _trapezoid_auc, precision_recall_curve

    truth = adata.uns["truth"]["networks"]
    genes = list(adata.var_names)
    g_index = {g: i for i, g in enumerate(genes)}
    candidates = [c for c in dict.fromkeys(candidates) if c in g_index]
    r_index = {g: i for i, g in enumerate(candidates)}
    not_self = np.ones((len(candidates), len(genes)), bool)
    not_self[np.arange(len(candidates)), [g_index[c] for c in candidates]] = False
    out = {}
    for cell_type, block in edges.groupby("source_cell_type"):
        score = np.zeros((len(candidates), len(genes)))
        strength = block.assign(w=block["weight"].abs()).groupby(["source", "target"])["w"].max()
        for (s, t), w in strength.items():
            if s in r_index and t in g_index:
                score[r_index[s], g_index[t]] = w
        label = np.zeros_like(score, dtype=np.int8)
        true = truth[truth["cell_type"] == cell_type]
        for s, t in zip(true["source"], true["target"], strict=True):
            if s in r_index:
                label[r_index[s], g_index[t]] = 1
        y, s = label[not_self], score[not_self]
        if y.sum() == 0:
            continue
        precision, recall = precision_recall_curve(y, s)
        out[cell_type] = _trapezoid_auc(recall, precision) / (y.sum() / y.size)
    return out
