"""BEELINE metrics: against slow reference implementations and BEELINE's published scores."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from omicstwin.bench import metrics
from omicstwin.errors import MissingKeyError


def _reference_auprc(truth: np.ndarray, score: np.ndarray) -> float:
    """Obviously-correct PR area: one point per distinct threshold, trapezoid, (0, 1) end."""
    points = [(0.0, 1.0)]
    for thr in sorted(set(score.tolist()), reverse=True):
        predicted = score >= thr
        tp = float((predicted & (truth == 1)).sum())
        points.append((tp / truth.sum(), tp / predicted.sum()))
    area = 0.0
    for (r0, p0), (r1, p1) in itertools.pairwise(points):
        area += (r1 - r0) * (p0 + p1) / 2
    return area


def _random_case(seed: int, n_genes: int = 8):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    pairs = list(itertools.permutations(genes, 2))
    true = [p for p in pairs if rng.random() < 0.25] or [pairs[0]]
    ref = pd.DataFrame(true, columns=["Gene1", "Gene2"])
    # rounded scores make ties; some pairs missing (weight 0); signs must not matter
    kept = [p for p in pairs if rng.random() < 0.8]
    weight = np.round(rng.normal(size=len(kept)), 1)
    pred = pd.DataFrame(kept, columns=["Gene1", "Gene2"]).assign(EdgeWeight=weight)
    return ref, pred


@pytest.mark.parametrize("seed", range(6))
def test_auprc_matches_slow_reference(seed):
    ref, pred = _random_case(seed)
    truth, score = metrics.edge_labels(ref, pred)
    assert metrics.auprc(ref, pred) == pytest.approx(_reference_auprc(truth, score), abs=1e-12)
    density = truth.mean()
    assert metrics.auprc_ratio(ref, pred) == pytest.approx(metrics.auprc(ref, pred) / density)


@pytest.mark.parametrize("seed", range(3))
def test_precision_recall_curve_matches_sklearn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    ref, pred = _random_case(seed)
    truth, score = metrics.edge_labels(ref, pred)
    precision, recall = metrics.precision_recall_curve(truth, score)
    p_sk, r_sk, _ = sk.precision_recall_curve(truth, score)
    np.testing.assert_allclose(precision, p_sk)
    np.testing.assert_allclose(recall, r_sk)
    assert metrics.auprc(ref, pred) == pytest.approx(sk.auc(r_sk, p_sk))


def test_edge_labels_use_abs_weights_first_duplicate_and_skip_self_edges():
    ref = pd.DataFrame({"Gene1": ["a", "a", "b"], "Gene2": ["a", "b", "c"]})
    pred = pd.DataFrame(
        {
            "source": ["a", "a", "c", "b"],
            "target": ["b", "b", "c", "a"],
            "weight": [-3.0, 9.0, 5.0, 1.0],
        }
    )
    truth, score = metrics.edge_labels(ref, pred)
    # pairs of (a, b, c) in permutation order: ab ac ba bc ca cb
    np.testing.assert_array_equal(truth, [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(score, [3.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def test_early_precision_keeps_ties_at_the_cut():
    ref = pd.DataFrame({"Gene1": ["a", "b"], "Gene2": ["b", "c"]})  # k = 2
    pred = pd.DataFrame(
        {
            "Gene1": ["a", "c", "b", "b"],
            "Gene2": ["b", "a", "c", "a"],
            "EdgeWeight": [0.9, 0.5, 0.5, 0.1],
        }
    )
    # top-2 cut is 0.5, tied: three edges kept, two true
    assert metrics.early_precision(ref, pred) == pytest.approx(2 / 3)
    density = 2 / 6
    assert metrics.early_precision_ratio(ref, pred) == pytest.approx(2 / 3 / density)


def test_missing_columns_name_the_fix():
    with pytest.raises(MissingKeyError, match="EdgeWeight"):
        metrics.auprc(pd.DataFrame({"Gene1": ["a"], "Gene2": ["b"]}), pd.DataFrame({"x": [1]}))


@pytest.mark.parametrize(
    ("method", "expected_auprc", "expected_ep"),
    [("GRNBOOST2", 0.4166, 0.5385), ("GENIE3", 0.4619, 0.4231), ("PIDC", 0.4639, 0.5385)],
)
def test_reproduces_beeline_published_hsc(method, expected_auprc, expected_ep):
    from omicstwin.datasets import beeline

    data = beeline.load_beeline_dataset("HSC", 0)
    edges = beeline.load_published_ranked_edges("HSC", method, 0)
    scores = metrics.score_grn(data.reference, edges)
    published = beeline.load_published_scores("HSC", "AUPRC").loc[method, "HSC_2000_0"]
    published_ep = beeline.load_published_scores("HSC", "EPr").loc[method, "HSC_2000_0"]
    assert round(scores.auprc, 4) == expected_auprc
    assert scores.auprc == pytest.approx(published, abs=1e-9)
    assert round(scores.early_precision, 4) == expected_ep
    assert scores.early_precision == pytest.approx(published_ep, abs=1e-9)
    assert scores.n_genes == 11 and scores.n_true_edges == 26
