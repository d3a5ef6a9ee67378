"""BEELINE readers and benchmark runner (files resolved offline through the manifests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omicstwin.datasets import beeline
from omicstwin.errors import DataFileError, ParameterError, ResourceNotFoundError


def test_load_dataset_aligns_expression_pseudotime_and_reference():
    data = beeline.load_beeline_dataset("HSC", 0)
    assert data.name == "HSC_2000_0"
    assert data.expression.shape == (2000, 11)
    assert data.pseudotime.shape == (2000, 4)
    assert set(data.genes) == set(data.reference["Gene1"]) | set(data.reference["Gene2"])
    assert np.isnan(data.pseudotime).any() and np.isfinite(data.pseudotime).any()
    # first cell of the file: E2_2_003, on branch 1 only (80.289...)
    assert data.cells[0] == "E2_2_003"
    assert data.pseudotime[0, 0] == pytest.approx(80.2890093593064)
    assert np.isnan(data.pseudotime[0, 1:]).all()


def test_synthetic_model_loads():
    data = beeline.load_beeline_dataset("dyn-LI", 3)
    assert data.expression.shape == (2000, 7)
    assert data.pseudotime.shape == (2000, 1)


def test_unknown_model_and_replicate():
    with pytest.raises(ParameterError, match="dyn-BF"):
        beeline.load_beeline_dataset("HSCX", 0)
    with pytest.raises(ParameterError, match=r"0\.\.9"):
        beeline.load_beeline_dataset("HSC", 10)


def test_published_scores_and_missing_epr():
    auprc = beeline.load_published_scores("HSC", "AUPRC")
    assert list(auprc.columns) == [f"HSC_2000_{i}" for i in range(10)]
    assert auprc.loc["GRNBOOST2", "HSC_2000_0"] == pytest.approx(0.41664, abs=1e-5)
    with pytest.raises(ResourceNotFoundError):
        beeline.load_published_scores("dyn-BF", "EPr")  # BEELINE did not publish it
    with pytest.raises(ParameterError, match="AUPRC"):
        beeline.load_published_scores("HSC", "F1")


def test_reproduce_published_hsc():
    table = beeline.reproduce_published("HSC", 0).set_index("method")
    assert table.loc["GRNBOOST2", "auprc"] == pytest.approx(0.4166, abs=5e-5)
    assert table.loc["GENIE3", "auprc"] == pytest.approx(0.4619, abs=5e-5)
    assert table.loc["PIDC", "auprc"] == pytest.approx(0.4639, abs=5e-5)
    np.testing.assert_allclose(table["auprc"], table["published_auprc"], atol=1e-9)
    text = beeline.format_reproduction(table.reset_index())
    assert "0.4166" in text


def test_readers_reject_bad_files(tmp_path):
    bad = tmp_path / "ExpressionData.csv"
    bad.write_text(",c1,c2\ng1,1,x\ng2,0,1\n")
    with pytest.raises(DataFileError, match="non-numeric"):
        beeline.read_expression(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text(",c1,c2\ng1,1,2\ng1,0,1\n")
    with pytest.raises(DataFileError, match="duplicated gene"):
        beeline.read_expression(dup)
    with pytest.raises(DataFileError, match="cannot read"):
        beeline.read_expression(tmp_path / "missing.csv")
    pt = tmp_path / "PseudoTime.csv"
    pt.write_text(",PseudoTime1\nzz,1.0\n")
    with pytest.raises(DataFileError, match="same dataset"):
        beeline.read_pseudotime(pt, ["c1", "c2"])


def test_write_ranked_edges_round_trip(tmp_path):
    edges = pd.DataFrame(
        {"source": ["a", "b", "c"], "target": ["b", "c", "a"], "weight": [-2.0, 1.0, 0.5]}
    )
    path = beeline.write_ranked_edges(edges, tmp_path / "rankedEdges.csv")
    back = beeline.read_ranked_edges(path)
    assert list(back.columns) == ["Gene1", "Gene2", "EdgeWeight"]
    assert list(back["EdgeWeight"]) == [1.0, 0.5, -2.0]  # weight descending, as BEELINE


def test_benchmark_runner_and_summary_on_one_replicate():
    results = beeline.run_beeline_benchmark(["HSC"], replicates=1, n_bags=2)
    assert set(results["variant"]) == {"observed", "shuffled"}
    observed = results[results["variant"] == "observed"].iloc[0]
    shuffled = results[results["variant"] == "shuffled"].iloc[0]
    assert observed["auprc_ratio"] > 1.5  # random is 1; published GRNBoost2 ~1.76 here
    assert shuffled["auprc_ratio"] < observed["auprc_ratio"]
    summary = beeline.summarise_benchmark(results)
    row = summary.iloc[0]
    assert row["model"] == "HSC" and row["n_replicates"] == 1
    assert row["grnboost2_auprc_ratio"] == pytest.approx(0.41664 / (26 / 110), abs=1e-4)
    assert row["best_method"] in {"PIDC", "GENIE3"}
    assert row["grnboost2_epr"] == pytest.approx(0.5385 / (26 / 110), abs=1e-3)
    text = beeline.format_benchmark_table(summary, "lagged_ridge")
    assert "HSC" in text and "GRNBoost2" in text
    with pytest.raises(ParameterError, match="replicates"):
        beeline.run_beeline_benchmark(["HSC"], replicates=0)


def test_shuffle_keeps_each_gene_marginal():
    x = np.arange(20.0).reshape(10, 2)
    shuffled = beeline.shuffle_expression(x, seed=1)
    assert not np.array_equal(shuffled, x)
    np.testing.assert_array_equal(np.sort(shuffled, axis=0), x)
