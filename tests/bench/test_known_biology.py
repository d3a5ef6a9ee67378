from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omicstwin.bench.known_biology import (
    disease_name,
    indicated_drug_targets,
    indicated_drugs,
    known_disease_genes,
    list_diseases,
    precision_at_k,
    resolve_disease,
    validate_rankings,
)
from omicstwin.errors import ParameterError
from omicstwin.schemas import SCHEMAS

AR = "DOID:4481"


def _assert_schema(table):
    assert list(table.columns) == list(SCHEMAS["validation"])
    assert {c: str(t) for c, t in table.dtypes.items()} == SCHEMAS["validation"]


def _rank_table(names, genes=None):
    table = pd.DataFrame({"name": names, "rank": np.arange(1, len(names) + 1)})
    if genes is not None:
        table["genes"] = genes
    return table


# ----------------------------------------------------------------------------- kernel


@pytest.mark.parametrize(("n", "n_known", "k"), [(8, 3, 3), (9, 4, 5), (7, 2, 7), (6, 1, 2)])
def test_hypergeometric_p_matches_brute_force(n, n_known, k):
    items = [f"g{i}" for i in range(n)]
    known = set(items[:n_known])
    subsets = list(itertools.combinations(range(n), k))
    for order_seed in range(4):
        order = list(np.random.default_rng(order_seed).permutation(items))
        row = precision_at_k(order, known, [k], n_random=0).iloc[0]
        hits = sum(g in known for g in order[:k])
        assert row["hits"] == hits
        # P(X >= hits) over every equally likely top-k subset of the universe
        brute = np.mean([sum(i < n_known for i in s) >= hits for s in subsets])
        assert row["p_value"] == pytest.approx(brute, rel=1e-12)
        assert row["precision"] == pytest.approx(hits / k)
        assert row["random_precision"] == pytest.approx(n_known / n)


@pytest.mark.parametrize(("n", "n_known", "k"), [(200, 20, 20), (500, 25, 50), (100, 30, 10)])
def test_random_p95_matches_hypergeometric_quantile(n, n_known, k):
    items = [f"g{i}" for i in range(n)]
    table = precision_at_k(items, items[-n_known:], [k], n_random=4000, seed=1)
    analytic = stats.hypergeom.ppf(0.95, n, n_known, k) / k
    assert abs(table["random_p95"].iloc[0] - analytic) <= 1 / k + 1e-12


def test_precision_is_one_when_known_items_come_first():
    items = [f"g{i}" for i in range(100)]
    table = precision_at_k(items, items[:30], [10, 20, 30, 50], n_random=100)
    assert table.set_index("k").loc[[10, 20, 30], "precision"].tolist() == [1.0, 1.0, 1.0]
    assert table.set_index("k").loc[50, "precision"] == pytest.approx(30 / 50)
    assert (table["p_value"].iloc[:3] < 1e-5).all()


def test_k_is_capped_and_deduplicated():
    table = precision_at_k([f"g{i}" for i in range(15)], ["g0"], [10, 20, 50], n_random=10)
    assert table["k"].tolist() == [10, 15]
    assert table["p_value"].iloc[1] == pytest.approx(1.0)


def test_precision_kernel_is_deterministic():
    items = [f"g{i}" for i in range(300)]
    known = items[::7]
    a = precision_at_k(items, known, n_random=200, seed=3)
    b = precision_at_k(items, known, n_random=200, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_precision_kernel_rejects_bad_input():
    with pytest.raises(ParameterError, match="distinct"):
        precision_at_k(["a", "a"], ["a"])
    with pytest.raises(ParameterError, match="ks"):
        precision_at_k(["a"], ["a"], [0])


# ----------------------------------------------------------------------------- references


def test_disease_lookup_and_references():
    assert resolve_disease("doid:4481") == AR
    assert resolve_disease("Asthma") == "DOID:2841"
    assert disease_name(AR) == "allergic rhinitis"
    genes = known_disease_genes(AR)
    assert len(genes) == 34 and "IL13" in genes
    dm_sym = indicated_drugs(AR)
    assert len(dm_sym) == 20 and "DB00341" in dm_sym  # cetirizine
    assert len(indicated_drugs(AR, ["DM"])) == 15
    assert "HRH1" in indicated_drug_targets(AR)  # antihistamines' target
    diseases = list_diseases()
    row = diseases.set_index("disease_id").loc[AR]
    assert (row["n_disease_genes"], row["n_dm_drugs"], row["n_sym_drugs"]) == (34, 15, 5)


def test_unknown_disease_names_close_matches_and_how_to_list():
    with pytest.raises(ParameterError) as info:
        validate_rankings(disease="DOID:448", rank_disease_genes=_rank_table(["IL13"]))
    message = str(info.value)
    assert "unknown disease 'DOID:448'" in message
    assert "DOID:4481 (allergic rhinitis)" in message
    assert "list_diseases()" in message
    with pytest.raises(ParameterError, match=r"DOID:2841 \(asthma\)"):
        resolve_disease("asthm")


def test_unknown_category_is_rejected():
    with pytest.raises(ParameterError, match="categories"):
        indicated_drugs(AR, ["XYZ"])


# ----------------------------------------------------------------------------- wrapper


def test_validate_rankings_with_known_items_first():
    known = known_disease_genes(AR)
    filler = [f"FILLER{i}" for i in range(100)]
    genes = known + filler
    drugs = [f"drug:{d}" for d in indicated_drugs(AR)] + [f"drug:DBX{i:04d}" for i in range(80)]
    table = validate_rankings(
        disease=AR,
        rank_disease_genes=_rank_table(genes),
        rank_targets=_rank_table([f"KO:{g}" for g in genes], genes),
        rank_drugs=_rank_table(drugs, [""] * len(drugs)),
        n_random=200,
    )
    _assert_schema(table)
    assert set(table["disease_name"]) == {"allergic rhinitis"}
    genes_rows = table[table["reference"] == "known_disease_genes"]
    assert set(genes_rows["ranking"]) == {"rank_disease_genes", "rank_targets"}
    at = genes_rows.set_index(["ranking", "k"])["precision"]
    assert at[("rank_disease_genes", 10)] == 1.0 and at[("rank_disease_genes", 20)] == 1.0
    assert at[("rank_disease_genes", 50)] == pytest.approx(34 / 50)
    assert (genes_rows["n_known"] == 34).all() and (genes_rows["n_ranked"] == 134).all()
    drug_rows = table[table["ranking"] == "rank_drugs"].set_index("k")
    assert drug_rows["reference"].iloc[0] == "indicated_drugs:DM+SYM"
    assert drug_rows.loc[10, "precision"] == 1.0 and drug_rows.loc[20, "precision"] == 1.0
    assert (drug_rows["n_known"] == 20).all()
    np.testing.assert_allclose(drug_rows["random_precision"], 20 / 100)
    assert (table["precision"] >= table["random_p95"]).all()
    targets = table[table["reference"] == "indicated_drug_targets:DM+SYM"]
    assert len(targets) == 3 and (targets["ranking"] == "rank_targets").all()


def test_validate_rankings_rows_do_not_depend_on_other_rankings():
    genes = [f"FILLER{i}" for i in range(60)] + known_disease_genes(AR)
    targets = _rank_table([f"KO:{g}" for g in genes], genes)
    alone = validate_rankings(disease=AR, rank_targets=targets, n_random=300, seed=4)
    both = validate_rankings(
        disease=AR,
        rank_targets=targets,
        rank_disease_genes=_rank_table(genes[::-1]),
        n_random=300,
        seed=4,
    )
    pd.testing.assert_frame_equal(
        alone, both[both["ranking"] == "rank_targets"].reset_index(drop=True)
    )


def test_no_known_items_gives_zero_rows_and_a_warning(caplog):
    ranking = _rank_table([f"FILLER{i}" for i in range(40)])
    with caplog.at_level(logging.WARNING, logger="omicstwin"):
        table = validate_rankings(disease=AR, rank_disease_genes=ranking, n_random=50)
    assert (table["n_known"] == 0).all() and (table["hits"] == 0).all()
    assert (table["precision"] == 0).all() and (table["random_p95"] == 0).all()
    assert (table["p_value"] == 1).all()
    assert table["k"].tolist() == [10, 20, 40]
    assert "none of the 34 known_disease_genes" in caplog.text


def test_validate_rankings_needs_a_ranking():
    with pytest.raises(ParameterError, match="no ranking"):
        validate_rankings(disease=AR)
