"""The score registry: every score column is declared, and every ranking obeys its direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omicstwin.schemas import SCHEMAS
from omicstwin.scores import (
    DESCRIPTIVE,
    SCORES,
    ScoreError,
    argsort_scores,
    get_score,
    rank,
    sort_by_score,
    top_rows,
)

NUMERIC = ("float64", "int64")


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_every_numeric_column_of_every_schema_is_a_score_or_descriptive(table):
    numeric = {c for c, dtype in SCHEMAS[table].items() if dtype in NUMERIC}
    scores = set(SCORES.get(table, {}))
    descriptive = DESCRIPTIVE.get(table, set())
    undeclared = sorted(numeric - scores - descriptive)
    assert not undeclared, f"declare {table}.{undeclared} in omicstwin.scores (SCORES/DESCRIPTIVE)"
    assert not scores & descriptive, f"{table}: a column cannot be both score and descriptive"
    stale = sorted((scores | descriptive) - set(SCHEMAS[table]))
    assert not stale, f"{table}: {stale} are registered but not in the schema"


def test_every_score_is_fully_declared():
    for table, columns in SCORES.items():
        for column, score in columns.items():
            assert score.meaning, (table, column)
            assert bool(score.unit) == (score.kind == "calibrated"), (table, column)
            if column in ("p_value", "q_value", "rank") or column.endswith("_p"):
                assert score.direction == "lower", (table, column)


def test_sort_by_score_follows_the_direction_and_the_tie_rule():
    frame = pd.DataFrame(
        {
            "name": ["d", "c", "b", "a", "e"],
            "score": [0.5, 0.9, 0.5, np.nan, -0.2],
            "p_value": [0.2, 0.01, 0.2, 0.5, np.nan],
        }
    )
    best = sort_by_score(frame, "score", table="rank", tie_break=["name"])
    assert best["name"].tolist() == ["c", "b", "d", "e", "a"]  # NaN last, ties by name
    by_p = sort_by_score(frame, "p_value", table="rank", tie_break=["name"])
    assert by_p["name"].tolist() == ["c", "b", "d", "a", "e"]
    edges = pd.DataFrame({"source": list("abc"), "target": "t", "weight": [0.3, -0.9, 0.3]})
    assert sort_by_score(edges, "weight", table="edges")["source"].tolist() == ["b", "a", "c"]
    ranked = rank(frame, "score", table="rank", tie_break=["name"])
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    top = top_rows(edges, "weight", 1, table="edges", within=["target"], tie_break=["source"])
    assert top["source"].tolist() == ["b"]
    np.testing.assert_array_equal(
        argsort_scores(edges["weight"].to_numpy(), table="edges", column="weight"), [1, 0, 2]
    )
    with pytest.raises(ScoreError, match="not a registered score"):
        sort_by_score(frame, "name", table="rank")


def _assert_obeys(frame, columns, table, within=()):
    """Within each group, rows are in the registered order (best first, monotone)."""
    columns = [columns] if isinstance(columns, str) else columns
    assert len(frame), table
    score = get_score(table, columns[0])
    grouped = frame.groupby(list(within), sort=False, dropna=False) if within else None
    for group in [frame] if grouped is None else [g for _, g in grouped]:
        values = group[columns[0]].dropna().to_numpy(dtype=float)
        values = np.abs(values) if score.direction == "magnitude" else values
        steps = np.diff(values)
        ok = steps <= 1e-12 if score.direction in ("higher", "magnitude") else steps >= -1e-12
        assert ok.all(), f"{table}.{columns[0]} not {score.direction}-first"
        # the order equals the registry's sort of the same rows (up to ties)
        resorted = sort_by_score(group, columns, table=table)
        pd.testing.assert_frame_equal(
            group[columns].reset_index(drop=True), resorted[columns].reset_index(drop=True)
        )


@pytest.fixture(scope="module")
def run_dir(small_cohort_path, tmp_path_factory):
    from typer.testing import CliRunner

    from omicstwin.cli import app

    out = tmp_path_factory.mktemp("scores_run")
    config = out / "study.yaml"
    config.write_text(
        f"data: {small_cohort_path}\nseed: 0\ndisease: DOID:4481\nstages:\n  screen_drugs: true\n"
    )
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out / "run")])
    assert result.exit_code == 0, result.output
    return out / "run"


def test_every_ranking_of_a_run_obeys_the_registered_direction(run_dir):
    def read(name):
        return pd.read_parquet(run_dir / f"{name}.parquet")

    for name in ("rank_targets", "rank_disease_genes", "rank_drugs"):
        table = read(name)
        assert table["rank"].tolist() == list(range(1, len(table) + 1)), name
        _assert_obeys(table, "score", "rank")
    patients = read("patients")
    _assert_obeys(patients, "reversal_score", "patients", within=["patient_id"])
    regulators = read("regulators")
    _assert_obeys(regulators, "p_value", "regulators", within=["cell_type", "time"])
    ranked = read("rank_regulators")
    if len(ranked):
        _assert_obeys(ranked, ["n_contexts", "evidence"], "rank_regulators")
    enrichment = read("enrichment")
    within = ["ranking", "collection", "cell_type", "time"]
    for _, part in enrichment.groupby("analysis"):  # prerank rows, then ORA rows
        _assert_obeys(part, "p_value", "enrichment", within=within)
    layers = read("network_layers")
    inter = layers[layers["layer"] == "intercellular"]
    _assert_obeys(inter, "weight", "intercellular_edges", within=["time_from"])
    intra = layers[layers["layer"] == "intracellular"]
    context = ["source_cell_type", "time_from", "condition", "target"]
    for _, block in list(intra.groupby(context[:3], sort=False))[:3]:
        _assert_obeys(block, "weight", "edges", within=["target"])


def test_publish_context_ranks_obey_the_direction(run_dir):
    from omicstwin.store.publish import _context_targets

    ranked = _context_targets(pd.read_parquet(run_dir / "perturbations.parquet"))
    for _, group in ranked.groupby(["cell_type", "time"]):
        group = group.sort_values("context_rank")
        assert group["context_rank"].tolist() == list(range(1, len(group) + 1))
        assert (np.diff(group["reversal_score"].dropna().to_numpy()) <= 0).all()


def test_centrality_and_prerank_obey_the_direction():
    from omicstwin.tl.enrich import context_ranking
    from omicstwin.tl.regulators import cell_type_centrality

    mnm = pd.DataFrame(
        {
            "source_cell_type": ["A", "A", "B"],
            "target_cell_type": ["B", "C", "C"],
            "n_regulators": [3, 1, 1],
            "time": 0.0,
            "regulators": "",
        }
    )
    central = cell_type_centrality(mnm, cell_types=["A", "B", "C", "D"])
    _assert_obeys(central, "centrality", "centrality")
    de = pd.DataFrame(
        {
            "gene": list("abcdef"),
            "log_fc": [1.0, -2.0, 1.0, 0.5, 0.0, 1.0],
            "p_value": [0.01, 0.01, 0.01, 0.5, 1.0, 0.01],
        }
    )
    ranking = context_ranking(de)
    assert ranking.index.tolist() == ["a", "c", "f", "d", "e", "b"]


def test_prerank_keeps_each_duplicated_genes_smallest_p_as_a_lexsort_did():
    from omicstwin.tl.enrich import context_ranking, signed_statistic

    rng = np.random.default_rng(4)
    genes = rng.choice(list("abcdefgh"), size=40)
    de = pd.DataFrame(
        {
            "gene": genes,
            "log_fc": rng.choice([-1.0, 0.0, 0.5, 1.0], size=40),
            "p_value": rng.choice([0.01, 0.2, 1.0], size=40),
        }
    )
    ranking = context_ranking(de)
    # the previous implementation, verbatim
    g, lfc, p = genes.astype(object), de["log_fc"].to_numpy(), de["p_value"].to_numpy()
    best = np.lexsort((g, p))
    _, first = np.unique(g[best], return_index=True)
    keep = np.sort(best[first])
    g, lfc, p = g[keep], lfc[keep], p[keep]
    stat = signed_statistic(lfc, p)
    order = np.lexsort((g, -lfc, -stat))
    assert ranking.index.tolist() == g[order].tolist()
    np.testing.assert_array_equal(ranking.to_numpy(), stat[order])
