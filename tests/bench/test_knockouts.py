"""Fate calling after knockouts, on a tiny two-fate toggle switch with a known answer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import sparse

from omicstwin.bench.knockouts import (
    PROGENITOR,
    assign_branch_fates,
    baseline_lost_fates,
    call_lost_fates,
    fate_coordinates,
    fate_states,
    shuffle_targets,
)
from omicstwin.errors import ParameterError

GENES = ["A", "B", "a", "b", "R", "c1", "c2"]
MARKERS = {"FateA": ["A", "a"], "FateB": ["B", "b"]}
# A and B repress each other (a toggle); A drives a, B drives b; R, on everywhere, also drives a
# (so its knockout loses fate A only); c1 -> c2 is a module that no fate depends on
TRUE_EDGES = {
    ("A", "a"): 0.8,
    ("B", "b"): 0.8,
    ("A", "B"): -0.5,
    ("B", "A"): -0.5,
    ("R", "a"): 0.6,
    ("c1", "c2"): 0.6,
}
TRUTH = {"A": {"FateA"}, "B": {"FateB"}, "R": {"FateA"}, "a": set(), "b": set()}
TRUTH |= {"c1": set(), "c2": set()}


def toggle_network() -> sparse.csr_matrix:
    index = {g: i for i, g in enumerate(GENES)}
    rows = [index[s] for s, _ in TRUE_EDGES]
    cols = [index[t] for _, t in TRUE_EDGES]
    n = len(GENES)
    return sparse.csr_matrix((list(TRUE_EDGES.values()), (rows, cols)), shape=(n, n))


def toggle_cells(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cells moving from a progenitor to fate B (branch 0) or fate A (branch 1)."""
    rng = np.random.default_rng(seed)
    #                      A     B     a     b     R    c1   c2
    progenitor = np.array([0.5, 0.5, 0.4, 0.4, 1.0, 0.5, 0.5])
    fate_a = np.array([1.2, 0.02, 1.0, 0.02, 1.0, 0.5, 0.5])
    fate_b = np.array([0.02, 1.2, 0.02, 1.0, 1.0, 0.5, 0.5])
    z, pt = [], np.full((2 * n, 2), np.nan)
    for branch, end in enumerate((fate_b, fate_a)):
        t = np.linspace(0.0, 1.0, n)
        z.append(progenitor + t[:, None] * (end - progenitor))
        pt[branch * n : (branch + 1) * n, branch] = 10.0 * t  # any scale: cuts are by rank
    z = np.vstack(z) + rng.normal(0.0, 0.02, size=(2 * n, len(GENES)))
    return np.clip(z, 0.0, None), pt


def lost(calls) -> dict[str, set[str]]:
    out = {g: set() for g in GENES}
    for row in calls[calls["lost"]].itertuples():
        out[row.perturbation_id.split(":", 1)[1]].add(row.fate)
    return out


def test_branches_are_named_by_markers():
    z, pt = toggle_cells()
    states = fate_states(z, pt, GENES, MARKERS)
    assert states.fates == ["FateB", "FateA"]  # branch order, not the markers' order
    assert states.terminal[1, 0] > 1.0 and states.terminal[0, 1] > 1.0
    assert states.progenitor[0] == pytest.approx(0.5, abs=0.1)


def test_true_network_calls_the_known_answer():
    z, pt = toggle_cells()
    states = fate_states(z, pt, GENES, MARKERS)
    calls = call_lost_fates(z, GENES, states, toggle_network())
    assert lost(calls) == TRUTH
    # knocking out A drives fate A towards fate B (the toggle flips), with a wide margin
    row = calls[(calls["perturbation_id"] == "KO:A") & (calls["fate"] == "FateA")].iloc[0]
    assert row["towards"] in ("FateB", PROGENITOR) and row["terminal_score"] > 5
    assert calls.loc[~calls["lost"], "terminal_score"].max() < 1
    # CellOracle's 3 steps and the progenitor extension agree here
    assert lost(call_lost_fates(z, GENES, states, toggle_network(), n_steps=3)) == TRUTH
    with_progenitor = call_lost_fates(z, GENES, states, toggle_network(), from_progenitor=True)
    assert lost(with_progenitor) == TRUTH
    assert with_progenitor["progenitor_score"].notna().all()


def test_shuffled_network_does_not():
    z, pt = toggle_cells()
    states = fate_states(z, pt, GENES, MARKERS)
    informative = [g for g, fates in TRUTH.items() if fates]
    everything, right = [], []
    for seed in range(20):
        calls = lost(call_lost_fates(z, GENES, states, shuffle_targets(toggle_network(), seed)))
        everything.append(all(calls[g] == TRUTH[g] for g in GENES))
        right.append(sum(calls[g] == TRUTH[g] for g in informative))
    # the true network gets all 7 (and the 3 informative ones) right; permuting targets loses
    # who drives which fate
    assert not any(everything)
    assert np.mean(right) < 2.5
    assert sum(r == len(informative) for r in right) < 10


def test_shuffle_keeps_degrees_and_weights():
    w = toggle_network()
    for seed in range(5):
        s = shuffle_targets(w, seed)
        assert s.diagonal().sum() == 0
        # each regulator keeps its weights, each target its in-degree; no edge is merged
        assert s.nnz == w.nnz
        for r in range(w.shape[0]):
            assert sorted(s.getrow(r).data) == sorted(w.getrow(r).data)
        assert Counter(s.tocoo().col) == Counter(w.tocoo().col)


def test_fate_coordinates():
    origin = np.zeros(3)
    refs = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    keep = np.array([True, True, False])
    t = fate_coordinates(np.array([[1.0, 0.0, 3.0]]), origin, refs, keep)
    # halfway to the first; the second differs only in a left-out gene: coordinate 0
    np.testing.assert_allclose(t, [[0.5, 0.0]])


def test_baselines():
    z, pt = toggle_cells()
    states = fate_states(z, pt, GENES, MARKERS)
    expressed = lost(baseline_lost_fates(states, GENES, MARKERS, rule="expressed"))
    # right for the toggle, wrong for a leaf marker (no downstream effect) and for R (on in
    # both fates, needed by one): the blind spots a network removes
    assert expressed["A"] == {"FateA"} and expressed["B"] == {"FateB"}
    assert expressed["a"] == {"FateA"} and expressed["R"] == {"FateA", "FateB"}
    marker = lost(baseline_lost_fates(states, GENES, MARKERS, rule="marker"))
    assert marker["a"] == {"FateA"} and marker["R"] == set()
    with pytest.raises(ParameterError, match="rule"):
        baseline_lost_fates(states, GENES, MARKERS, rule="nope")


def test_bad_input():
    z, pt = toggle_cells()
    with pytest.raises(ParameterError, match="one fate"):
        assign_branch_fates(np.ones((2, 7)), GENES, {"FateA": ["A"]})
    with pytest.raises(ParameterError, match="unknown markers"):
        assign_branch_fates(np.ones((2, 7)), GENES, {"FateA": ["A"], "FateB": ["Z"]})
    with pytest.raises(ParameterError, match="rows"):
        fate_states(z, pt[:10], GENES, MARKERS)
    states = fate_states(z, pt, GENES, MARKERS)
    with pytest.raises(ParameterError, match="genes"):
        call_lost_fates(z, GENES, states, sparse.eye(4))
    with pytest.raises(ParameterError, match="quantile"):
        call_lost_fates(z, GENES, states, toggle_network(), quantile=0.3)
