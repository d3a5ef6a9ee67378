"""BEELINE readers and loaders (files resolved offline through the manifests)."""

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
