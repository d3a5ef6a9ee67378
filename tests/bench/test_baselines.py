"""Baseline target rankings on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omicstwin.bench import baselines as bl
from omicstwin.errors import MissingKeyError, ParameterError


def _de() -> pd.DataFrame:
    rows = [
        # cell_type, time, gene, log_fc, p_value
        ("A", 0, "g1", 2.0, 0.001),
        ("A", 0, "g2", -0.5, 0.01),
        ("A", 0, "g3", 0.1, 0.9),
        ("B", 0, "g1", 0.3, 0.2),
        ("B", 0, "g2", -0.4, 0.02),
        ("B", 0, "g3", 3.0, np.nan),  # untested: ignored
    ]
    de = pd.DataFrame(rows, columns=["cell_type", "time", "gene", "log_fc", "p_value"])
    de["q_value"] = de["p_value"]
    return de


def test_de_log_fc_uses_largest_absolute_change_of_tested_rows():
    ranking = bl.de_log_fc(_de())
    assert ranking["gene"].tolist() == ["g1", "g2", "g3"]
    assert ranking["rank"].tolist() == [1, 2, 3]
    assert ranking["score"].tolist() == pytest.approx([2.0, 0.5, 0.1])


def test_de_contexts_counts_degs_and_breaks_ties_by_fold_change():
    ranking = bl.de_contexts(_de())
    # g2 is a DEG in 2 contexts, g1 in 1 (B: p 0.2), g3 in none
    assert ranking["gene"].tolist() == ["g2", "g1", "g3"]
    assert np.floor(ranking["score"]).tolist() == [2, 1, 0]
    strict = bl.de_contexts(_de(), deg_alpha=0.005)
    assert strict["gene"].tolist() == ["g1", "g2", "g3"]


def test_ulm_is_the_t_value_of_the_slope():
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(30)]
    statistic = pd.Series(rng.normal(size=30), index=genes)
    net = pd.DataFrame(
        {
            "source": ["T1"] * 6 + ["T2"] * 2,
            "target": genes[:6] + genes[6:8],
            "weight": [1, 1, -1, 0.5, 1, -1, 1, 1],
        }
    )
    activity = bl.ulm(statistic, net, tmin=5)
    assert activity.index.tolist() == ["T1"]  # T2 has fewer than tmin targets
    x = np.zeros(30)
    x[:6] = [1, 1, -1, 0.5, 1, -1]
    fit = __import__("scipy").stats.linregress(x, statistic.to_numpy())
    assert activity["T1"] == pytest.approx(fit.slope / fit.stderr, rel=1e-9)


def test_ulm_matches_decoupler():
    dc = pytest.importorskip("decoupler")
    rng = np.random.default_rng(1)
    genes = [f"g{i}" for i in range(60)]
    net = pd.DataFrame(
        {
            "source": np.repeat(["T1", "T2", "T3"], 10),
            "target": rng.choice(genes, 30, replace=False),
            "weight": rng.choice([-1.0, 1.0], 30),
        }
    )
    statistic = pd.Series(rng.normal(size=60), index=genes)
    ours = bl.ulm(statistic, net)
    es, _ = dc.mt.ulm(pd.DataFrame([statistic.to_numpy()], columns=genes, index=["s"]), net)
    theirs = es.iloc[0].reindex(ours.index)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-8)


def test_tf_activity_ranks_the_tf_whose_targets_move_together():
    genes = [f"g{i}" for i in range(20)]
    lfc = np.r_[np.full(5, 2.0), np.zeros(15)] + np.linspace(-0.1, 0.1, 20)
    de = pd.DataFrame({"cell_type": "A", "time": 0, "gene": genes, "log_fc": lfc, "p_value": 0.5})
    de.loc[:4, "p_value"] = 1e-6
    net = pd.DataFrame(
        {"source": ["UP"] * 5 + ["NULL"] * 5, "target": genes[:5] + genes[10:15], "weight": 1.0}
    )
    ranking = bl.tf_activity_ulm(de, net)
    assert ranking["gene"].tolist() == ["UP", "NULL"]
    assert ranking["score"].iloc[0] > 5


def test_li2022_count_orders_by_predicted_contexts():
    regulators = pd.DataFrame(
        {
            "cell_type": ["A", "B", "A", "A"],
            "time": [0.0, 0.0, 0.0, 6.0],
            "regulator": ["R1", "R1", "R2", "R3"],
            "activation_z": [2.5, 2.0, 1.0, 0.0],
            "p_value": [1e-4, 1e-3, 1e-6, 0.5],
            "q_value": [1e-3, 1e-2, 1e-5, 0.9],
            "predicted": [True, True, True, False],
            "n_targets": [5, 4, 6, 1],
            "direction": ["activated", "activated", "undetermined", "undetermined"],
        }
    )
    ranking = bl.li2022_count(regulators)
    assert ranking["gene"].tolist() == ["R1", "R2"]  # R3 is never predicted
    assert bl.li2022_count(regulators.assign(q_value=1.0, predicted=False)).empty


def test_out_degree_counts_distinct_targets_without_self_loops():
    edges = pd.DataFrame(
        {
            "layer": ["intracellular", "intracellular", "temporal", "intercellular", "temporal"],
            "source": ["a", "a", "a", "b", "b"],
            "target": ["x", "y", "x", "c", "b"],
        }
    )
    ranking = bl.out_degree(edges)
    assert dict(zip(ranking["gene"], ranking["score"], strict=True)) == {"a": 2.0, "b": 1.0}
    only = bl.out_degree(edges, layers=["intercellular"])
    assert only["gene"].tolist() == ["b"]


def test_random_ranking_is_seeded_and_complete():
    genes = [f"g{i}" for i in range(50)]
    one, two = bl.random_ranking(genes, seed=3), bl.random_ranking(genes, seed=3)
    assert one["gene"].tolist() == two["gene"].tolist()
    assert sorted(one["gene"]) == sorted(genes)
    assert one["gene"].tolist() != bl.random_ranking(genes, seed=4)["gene"].tolist()


def test_rank_average_combines_and_penalises_missing_genes():
    a = bl.ranking_from_scores({"x": 3.0, "y": 2.0, "z": 1.0})
    b = bl.ranking_from_scores({"y": 2.0, "x": 1.0})
    combined = bl.rank_average({"a": a, "b": b})
    # x: (1 + 2) / 2, y: (2 + 1) / 2, z: (3 + 3) / 2; x and y tie, broken by name
    assert combined["gene"].tolist() == ["x", "y", "z"]
    weighted = bl.rank_average({"a": a, "b": b}, weights={"a": 0.0})
    assert weighted["gene"].tolist()[0] == "y"
    with pytest.raises(ParameterError):
        bl.rank_average({})


def test_recall_at_k():
    ranking = bl.ranking_from_scores({"a": 3.0, "b": 2.0, "c": 1.0})
    assert bl.recall_at(ranking, {"a", "c", "d"}, k=2) == pytest.approx(1 / 3)
    assert np.isnan(bl.recall_at(ranking, set(), k=2))


def test_missing_columns_are_named():
    with pytest.raises(MissingKeyError, match="log_fc"):
        bl.de_log_fc(pd.DataFrame({"gene": ["a"]}))
