from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omicstwin.errors import ParameterError
from omicstwin.schemas import SCHEMAS
from omicstwin.tl.enrich import (
    context_ranking,
    enrichment,
    gsea_prerank,
    log2_odds_ratio,
    ora_top,
    prerank_contexts,
    ranked_items,
    signed_statistic,
)

GENES = [f"G{i}" for i in range(300)]


def _random_sets(rng, n_sets=12, size=(15, 40)):
    return {
        f"SET_{i}": list(rng.choice(GENES, rng.integers(*size), replace=False))
        for i in range(n_sets)
    }


def _de_table(seed=0, planted=None, shift=3.0):
    """Two contexts x 300 genes; genes of ``planted`` get large positive statistics in T@0."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell_type, time in (("T", 0.0), ("Mono", 24.0)):
        log_fc = rng.normal(size=len(GENES))
        p = rng.uniform(size=len(GENES))
        if planted and cell_type == "T":
            idx = [GENES.index(g) for g in planted]
            log_fc[idx] = np.abs(log_fc[idx]) + shift
            p[idx] = 10 ** -rng.uniform(4, 8, size=len(idx))
        rows.append(
            pd.DataFrame(
                {
                    "cell_type": cell_type,
                    "time": time,
                    "gene": GENES,
                    "log_fc": log_fc,
                    "p_value": p,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _es_reference(statistic: np.ndarray, in_set: np.ndarray) -> float:
    """GSEA enrichment score, weight p = 1: hits step up by |r| / N_R, misses down by 1/N_miss."""
    weight = np.abs(statistic) * in_set
    up = np.cumsum(weight) / weight.sum()
    down = np.cumsum(~in_set) / (~in_set).sum()
    running = up - down
    return float(running[np.argmax(np.abs(running))])


def _assert_schema(table):
    assert list(table.columns) == list(SCHEMAS["enrichment"])
    assert {c: str(t) for c, t in table.dtypes.items()} == SCHEMAS["enrichment"]


# ----------------------------------------------------------------------------- ranking


def test_signed_statistic_handles_zero_and_one():
    stat = signed_statistic([2.0, -1.0, 0.5, 0.0], [0.01, 0.001, 1.0, 0.2])
    np.testing.assert_allclose(stat, [2.0, -3.0, 0.0, 0.0])
    assert not np.signbit(stat[2])
    assert np.isfinite(signed_statistic([1.0], [0.0])).all()


def test_context_ranking_is_deterministic_and_breaks_ties():
    frame = pd.DataFrame(
        {
            "gene": ["B", "A", "C", "D", "E", "F"],
            "log_fc": [1.0, 1.0, 2.0, -1.0, 0.5, np.nan],
            "p_value": [0.01, 0.01, 0.01, 0.5, np.nan, 0.1],
        }
    )
    ranking = context_ranking(frame)
    # C ties A and B on the statistic but has the larger log_fc; A before B by name
    assert list(ranking.index) == ["C", "A", "B", "D"]
    shuffled = context_ranking(frame.sample(frac=1.0, random_state=3))
    pd.testing.assert_series_equal(ranking, shuffled)


# ----------------------------------------------------------------------------- prerank kernel


@pytest.mark.parametrize("method", ["multilevel", "permutation"])
def test_prerank_es_matches_running_sum_reference(method):
    rng = np.random.default_rng(1)
    stat = np.sort(rng.normal(size=len(GENES)) * 2)[::-1]
    ranking = pd.Series(stat, index=GENES)
    sets = _random_sets(rng, n_sets=4)
    result = gsea_prerank(ranking, sets, permutations=100, method=method).set_index("term")
    assert list(result.index) == list(sets)
    for term, genes in sets.items():
        in_set = np.isin(GENES, genes)
        assert result.loc[term, "es"] == pytest.approx(_es_reference(stat, in_set), abs=1e-9)
        assert result.loc[term, "set_size"] == len(genes)
        # leading edge: set genes at or before the peak (positive ES) / after it (negative ES)
        weight = np.abs(stat) * in_set
        running = np.cumsum(weight) / weight.sum() - np.cumsum(~in_set) / (~in_set).sum()
        peak = np.argmax(np.abs(running))
        side = slice(0, peak + 1) if running[peak] >= 0 else slice(peak, None)
        assert result.loc[term, "n_overlap"] == in_set[side].sum()
        assert set(result.loc[term, "genes"].split(";")) == set(np.array(GENES)[side][in_set[side]])


def test_prerank_permutation_p_is_never_zero():
    rng = np.random.default_rng(2)
    stat = np.sort(rng.normal(size=len(GENES)))[::-1]
    planted = GENES[:20]
    result = gsea_prerank(
        pd.Series(stat, index=GENES), {"TOP": planted}, permutations=50, method="permutation"
    )
    assert result["p_value"].iloc[0] == pytest.approx(1 / 51)


def test_prerank_filters_sets_to_the_universe():
    ranking = pd.Series(np.linspace(3, -3, 100), index=GENES[:100])
    sets = {"IN": GENES[:30], "MOSTLY_OUT": GENES[90:300], "SMALL": GENES[:5]}
    result = gsea_prerank(ranking, sets, permutations=50, min_size=15)
    assert list(result["term"]) == ["IN"]  # MOSTLY_OUT has 10 genes in the universe, SMALL 5
    assert gsea_prerank(ranking, {"SMALL": GENES[:5]}, min_size=15).empty


def test_prerank_rejects_bad_parameters():
    ranking = pd.Series([1.0, 0.0], index=["A", "B"])
    with pytest.raises(ParameterError, match="method"):
        gsea_prerank(ranking, {}, method="fast")
    with pytest.raises(ParameterError, match="min_size"):
        gsea_prerank(ranking, {}, min_size=10, max_size=5)
    with pytest.raises(ParameterError, match="lacks columns"):
        prerank_contexts(pd.DataFrame({"gene": ["A"]}), {"c": {}})


# ----------------------------------------------------------------------------- prerank contexts


def test_planted_set_comes_out_top_with_small_q():
    rng = np.random.default_rng(0)
    sets = _random_sets(rng)
    planted = list(rng.choice(GENES, 25, replace=False))
    sets["PLANTED"] = planted
    de = _de_table(planted=planted)
    table = prerank_contexts(de, {"toy": sets}, permutations=200)
    _assert_schema(table)
    t_rows = table[table["cell_type"] == "T"].sort_values("p_value")
    top = t_rows.iloc[0]
    assert top["term"] == "PLANTED"
    assert top["score"] > 1.5
    assert top["q_value"] < 1e-3
    assert top["n_overlap"] >= 20
    mono = table[(table["cell_type"] == "Mono") & (table["term"] == "PLANTED")].iloc[0]
    assert mono["q_value"] > 0.05
    assert set(table["analysis"]) == {"prerank"}
    assert set(table["ranking"]) == {"de"}
    assert sorted(table["time"].unique()) == [0.0, 24.0]
    # BH within collection x context
    for _, group in table.groupby(["cell_type", "time"]):
        from omicstwin._stats import benjamini_hochberg

        np.testing.assert_allclose(
            group["q_value"].to_numpy(), benjamini_hochberg(group["p_value"].to_numpy())
        )


def test_prerank_is_deterministic_given_seed():
    rng = np.random.default_rng(5)
    sets = {"toy": _random_sets(rng)}
    de = _de_table(seed=5)
    first = prerank_contexts(de, sets, permutations=100, seed=7)
    again = prerank_contexts(de.sample(frac=1.0, random_state=1), sets, permutations=100, seed=7)
    pd.testing.assert_frame_equal(first, again)


def test_small_contexts_are_skipped_with_a_warning(caplog):
    de = _de_table()
    de = de[(de["cell_type"] == "T") | (de.index % 10 == 0)]  # Mono keeps 30 genes
    with caplog.at_level(logging.WARNING, logger="omicstwin"):
        table = prerank_contexts(de, {"toy": {"S": GENES[:20]}}, permutations=50, min_genes=50)
    assert set(table["cell_type"]) == {"T"}
    assert "skipped 1 context" in caplog.text


def test_prerank_with_real_hallmark_sets():
    from omicstwin.io.manifests import load_gene_sets

    hallmark = load_gene_sets("msigdb_hallmark")
    genes = sorted(set(hallmark["HALLMARK_INTERFERON_GAMMA_RESPONSE"]))
    background = sorted({g for s in hallmark.values() for g in s} - set(genes))[:400]
    universe = genes + background
    rng = np.random.default_rng(0)
    log_fc = np.r_[rng.uniform(1, 2, len(genes)), rng.normal(size=len(background))]
    p = np.r_[10 ** -rng.uniform(3, 6, len(genes)), rng.uniform(size=len(background))]
    de = pd.DataFrame(
        {"cell_type": "B", "time": 0.0, "gene": universe, "log_fc": log_fc, "p_value": p}
    )
    table = prerank_contexts(de, ("msigdb_hallmark",), permutations=100, method="permutation")
    _assert_schema(table)
    best = table.sort_values("score", ascending=False).iloc[0]
    assert best["term"] == "HALLMARK_INTERFERON_GAMMA_RESPONSE"
    assert best["p_value"] == pytest.approx(1 / 101)  # the permutation floor
    assert set(table["collection"]) == {"msigdb_hallmark"}


# ----------------------------------------------------------------------------- ORA


def _ranking_table(genes):
    names = [f"KO:{g}" for g in genes]
    table = pd.DataFrame({"name": names, "rank": np.arange(1, len(genes) + 1), "genes": genes})
    return table.sample(frac=1.0, random_state=0)  # rank, not row order, decides


def test_ranked_items_orders_splits_and_deduplicates():
    table = pd.DataFrame(
        {
            "name": ["KO:B", "KD:A", "COMBO:A+C", "OE:B", "drug:x"],
            "rank": [2, 1, 3, 4, 5],
            "genes": ["B", "A", "A;C", "B", None],
        }
    )
    assert ranked_items(table, "genes") == ["A", "B", "C"]
    drugs = pd.DataFrame({"name": ["drug:DB1", "drug:DB2"], "rank": [2, 1]})
    assert ranked_items(drugs, "name", split=None, strip_prefix="drug:") == ["DB2", "DB1"]
    with pytest.raises(ParameterError, match="no column"):
        ranked_items(drugs, "genes")


def test_ora_p_values_match_fisher_exact_loop():
    rng = np.random.default_rng(3)
    order = list(rng.permutation(GENES[:200]))
    sets = _random_sets(rng, n_sets=25, size=(5, 60))
    sets["PLANTED"] = order[:12] + order[150:160]
    k = 30
    table = ora_top(_ranking_table(order), {"toy": sets}, k=k, min_size=5)
    _assert_schema(table)
    top, universe = set(order[:k]), set(order)
    table = table.set_index("term")
    for term, genes in sets.items():
        members = set(genes) & universe
        if not 5 <= len(members) <= 500:
            assert term not in table.index
            continue
        a = len(members & top)
        b = len(members) - a
        c = k - a
        d = len(universe) - a - b - c
        _, p = stats.fisher_exact([[a, b], [c, d]], alternative="greater")
        row = table.loc[term]
        assert row["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert row["n_overlap"] == a
        assert row["set_size"] == len(members)
        hits = [g for g in order[:k] if g in members]
        assert row["genes"] == ";".join(hits)
    assert table["p_value"].idxmin() == "PLANTED"
    assert set(table["cell_type"]) == {"all"}
    assert table["time"].isna().all()
    assert set(table["ranking"]) == {"rank_targets"}


def test_log2_odds_ratio_and_continuity_correction():
    # a=4, b=6, c=6, d=84: plain log2 odds ratio
    assert log2_odds_ratio(4, 10, 10, 100) == pytest.approx(np.log2(4 * 84 / (6 * 6)))
    # a zero cell: 0.5 added to every cell
    expected = np.log2(0.5 * 80.5 / (10.5 * 10.5))
    assert log2_odds_ratio(0, 10, 10, 100) == pytest.approx(expected)
    assert np.isfinite(log2_odds_ratio([0, 10], [10, 10], [10, 10], [100, 100])).all()


def test_ora_uses_name_for_disease_genes_and_skips_tiny_rankings(caplog):
    table = pd.DataFrame({"name": GENES[:100], "rank": np.arange(1, 101)})
    result = ora_top(table, {"toy": {"S": GENES[:10] + GENES[50:60]}}, k=10)
    assert result["ranking"].tolist() == ["rank_disease_genes"]
    assert result["n_overlap"].tolist() == [10]
    with caplog.at_level(logging.WARNING, logger="omicstwin"):
        assert ora_top(table, {"toy": {"S": GENES[:10]}}, k=100).empty
    assert "lower k" in caplog.text


def test_ora_with_real_collections():
    from omicstwin.io.manifests import load_gene_sets

    hallmark = load_gene_sets("msigdb_hallmark")
    planted = sorted(set(hallmark["HALLMARK_HYPOXIA"]))[:40]
    others = sorted({g for s in hallmark.values() for g in s} - set(hallmark["HALLMARK_HYPOXIA"]))
    order = planted + others[:960]
    result = ora_top(_ranking_table(order), ("msigdb_hallmark", "reactome_pathways"), k=40)
    _assert_schema(result)
    hall = result[result["collection"] == "msigdb_hallmark"].sort_values("p_value")
    assert hall.iloc[0]["term"] == "HALLMARK_HYPOXIA"
    assert hall.iloc[0]["q_value"] < 1e-10
    assert set(result["collection"]) == {"msigdb_hallmark", "reactome_pathways"}


# ----------------------------------------------------------------------------- study level


def test_enrichment_concatenates_prerank_and_ora():
    rng = np.random.default_rng(0)
    sets = {"toy": _random_sets(rng)}
    de = _de_table()
    targets = _ranking_table(GENES[:120])
    disease_genes = pd.DataFrame({"name": GENES[100:250], "rank": np.arange(1, 151)})
    table = enrichment(
        de,
        targets,
        disease_genes,
        prerank_collections=sets,
        ora_collections=sets,
        k=20,
        permutations=50,
    )
    _assert_schema(table)
    assert set(zip(table["analysis"], table["ranking"], strict=True)) == {
        ("prerank", "de"),
        ("ora", "rank_targets"),
        ("ora", "rank_disease_genes"),
    }
    assert enrichment().empty
