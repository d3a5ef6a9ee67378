"""BEELINE benchmark runner (files resolved offline through the manifests)."""

from __future__ import annotations

import numpy as np
import pytest

from omicstwin.bench import beeline
from omicstwin.errors import ParameterError


def test_reproduce_published_hsc():
    table = beeline.reproduce_published("HSC", 0).set_index("method")
    assert table.loc["GRNBOOST2", "auprc"] == pytest.approx(0.4166, abs=5e-5)
    assert table.loc["GENIE3", "auprc"] == pytest.approx(0.4619, abs=5e-5)
    assert table.loc["PIDC", "auprc"] == pytest.approx(0.4639, abs=5e-5)
    np.testing.assert_allclose(table["auprc"], table["published_auprc"], atol=1e-9)
    text = beeline.format_reproduction(table.reset_index())
    assert "0.4166" in text


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
