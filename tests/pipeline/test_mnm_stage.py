"""The regulators stage writes the MNM and the cell-type centrality from its own tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omicstwin.pipeline import STAGES, RunConfig
from omicstwin.pipeline.stage import RunContext
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.tl.regulators import cell_type_centrality, multicellular_network_model

GENES = [f"G{i:02d}" for i in range(40)]
TARGETS = GENES[:8]  # TF1's prior targets


def _de() -> pd.DataFrame:
    """B's DEGs are TF1's targets; TF1 is up in Mono; NK changes nothing (isolated)."""
    rows = []
    for cell_type in ("B", "Mono", "NK"):
        for gene in [*GENES, "TF1"]:
            deg = (cell_type == "B" and gene in TARGETS) or (cell_type == "Mono" and gene == "TF1")
            rows.append((cell_type, 6.0, gene, 1.5 if deg else 0.01, 1e-4 if deg else 0.8))
    de = pd.DataFrame(rows, columns=["cell_type", "time", "gene", "log_fc", "p_value"])
    de["q_value"] = np.minimum(de["p_value"] * 10, 1.0)
    de["mean_case"] = de["mean_control"] = 10.0
    de["n_donors_case"] = de["n_donors_control"] = 3
    return conform(de, "de")


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch) -> Path:
    _de().to_parquet(tmp_path / "de.parquet", index=False)
    design = pd.DataFrame(
        {
            "condition": "case",
            "donor": "d1",
            "time": 6.0,
            "cell_type": ["B", "Mono", "NK", "pDC"],  # pDC: in the cohort, no DE context
            "n_cells": 10,
        }
    )
    design.to_parquet(tmp_path / "design.parquet", index=False)
    prior = pd.DataFrame({"source": "TF1", "target": TARGETS, "weight": 1.0})
    monkeypatch.setattr("omicstwin.io.manifests.load_table", lambda name: prior)
    return tmp_path


def test_regulators_stage_writes_the_mnm_and_centrality(run_dir: Path) -> None:
    stage = next(s for s in STAGES if s.name == "regulators")
    assert {"mnm.parquet", "centrality.parquet"} <= set(stage.outputs)
    stage.run(RunContext(RunConfig(data="cohort.h5ad"), run_dir, run_dir / "cohort.h5ad"))
    assert {p.name for p in stage.output_paths(run_dir)} <= {
        p.name for p in run_dir.glob("*.parquet")
    }
    mnm = pd.read_parquet(run_dir / "mnm.parquet")
    assert list(mnm.columns) == list(SCHEMAS["mnm"])
    edges = list(
        mnm[["source_cell_type", "target_cell_type", "regulators"]].itertuples(index=False)
    )
    assert edges == [("Mono", "B", "TF1")]  # TF1 is up in Mono and regulates B's DEGs
    # the same as the tl functions on the stage's own tables
    regulators = pd.read_parquet(run_dir / "regulators.parquet")
    expected = conform(multicellular_network_model(_de(), regulators), "mnm")
    pd.testing.assert_frame_equal(mnm, expected)
    centrality = pd.read_parquet(run_dir / "centrality.parquet")
    assert list(centrality.columns) == list(SCHEMAS["centrality"])
    pd.testing.assert_frame_equal(
        centrality,
        conform(
            cell_type_centrality(expected, cell_types=["B", "Mono", "NK", "pDC"]), "centrality"
        ),
    )
    # every cell type of the cohort is ranked; those without an edge at 0, after the others
    scores = dict(zip(centrality["cell_type"], centrality["centrality"], strict=True))
    assert scores == {"B": 1.0, "Mono": 1.0, "NK": 0.0, "pDC": 0.0}
    assert centrality["rank"].tolist() == [1, 2, 3, 4]
