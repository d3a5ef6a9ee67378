"""Session fixtures of the report tests: one small pipeline run, one report built from it.

The pipeline runs once per session; the report of ``full_run`` is built once and shared by
every test module (``test_report.py`` and the browser test) through these fixtures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omicstwin.report import build_report
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.tl.regulators import cell_type_centrality

OPTIONAL = ("enrichment", "validation", "patient_states")


@pytest.fixture(scope="session")
def pipeline_run(small_cohort_path, tmp_path_factory):
    """A run directory of the small cohort (few null twins, to stay fast); read-only."""
    from omicstwin.pipeline import RunConfig, Stages, run_pipeline

    out = tmp_path_factory.mktemp("report") / "run"
    config = RunConfig(data=str(small_cohort_path), stages=Stages())
    run_pipeline(config, out)
    return out


def _fabricate_optional(run_dir: Path) -> None:
    """Write enrichment, validation and patient_states tables with their declared schemas."""
    rng = np.random.default_rng(0)
    de = pd.read_parquet(run_dir / "de.parquet")
    contexts = de[["cell_type", "time"]].drop_duplicates().head(6)
    rows = []
    for i, (cell_type, time) in enumerate(contexts.itertuples(index=False)):
        for j in range(5):
            rows.append(
                (
                    "prerank",
                    "msigdb_hallmark",
                    "de",
                    cell_type,
                    time,
                    f"HALLMARK_TERM_{(i + j) % 8}",
                )
            )
    for ranking in ("rank_targets", "rank_disease_genes"):
        for j in range(4):
            rows.append(("ora", "reactome_pathways", ranking, "all", np.nan, f"PATHWAY_{j}"))
    enrichment = pd.DataFrame(
        rows, columns=["analysis", "collection", "ranking", "cell_type", "time", "term"]
    )
    n = len(enrichment)
    enrichment["score"] = rng.normal(0, 1.5, n)
    enrichment["p_value"] = rng.uniform(1e-6, 0.5, n)
    enrichment["q_value"] = np.minimum(1.0, enrichment["p_value"] * 4)
    enrichment["set_size"] = rng.integers(10, 200, n)
    enrichment["n_overlap"] = rng.integers(1, 10, n)
    enrichment["genes"] = ";".join(f"GENE{k}" for k in range(30))  # long: truncated in tables
    conform(enrichment, "enrichment").to_parquet(run_dir / "enrichment.parquet")

    validation = pd.DataFrame(
        {
            "disease_id": "DOID:4481",
            "disease_name": "allergic rhinitis",
            "ranking": ["rank_disease_genes", "rank_targets", "rank_targets"],
            "reference": ["known disease genes", "known disease genes", "drug targets"],
            "k": [10, 10, 20],
            "n_ranked": 68,
            "n_known": [12, 12, 8],
            "hits": [4, 1, 3],
        }
    )
    validation["precision"] = validation["hits"] / validation["k"]
    validation["random_precision"] = validation["n_known"] / validation["n_ranked"]
    validation["random_p95"] = validation["random_precision"] * 2
    validation["p_value"] = [0.003, 0.6, 0.04]
    conform(validation, "validation").to_parquet(run_dir / "validation.parquet")

    design = pd.read_parquet(run_dir / "design.parquet")
    states = design.rename(columns={"donor": "patient_id", "condition": "arm"})
    states["disease_score"] = np.where(states["arm"] == "case", 1.0, 0.0) + rng.normal(
        0, 0.3, len(states)
    )
    states["disease_score_low"] = states["disease_score"] - 0.2  # bootstrap interval
    states["disease_score_high"] = states["disease_score"] + 0.2
    conform(states, "patient_states").to_parquet(run_dir / "patient_states.parquet")

    # a multicellular network model with edges (the small run predicts too few regulators for
    # one): two time points with edges, the others without, and a cell type without any edge
    cell_types = sorted(design["cell_type"].astype(str).unique())
    times = sorted(design["time"].unique())
    a, b, c = cell_types[:3]
    mnm = pd.DataFrame(
        [
            (times[0], a, b, 2, "ETS1;STAT1"),
            (times[1], b, c, 1, "IRF1"),
            (times[1], c, a, 4, "JUN;MAF;RELA;SPI1"),
        ],
        columns=list(SCHEMAS["mnm"]),
    )
    conform(mnm, "mnm").to_parquet(run_dir / "mnm.parquet")
    centrality = cell_type_centrality(mnm, cell_types=cell_types)
    conform(centrality, "centrality").to_parquet(run_dir / "centrality.parquet")

    # an intercellular edge without a time: it applies at every time point
    edges = pd.read_parquet(run_dir / "edges.parquet")
    extra = edges[edges["layer"] == "intercellular"].head(1).copy()
    extra[["time_from", "time_to"]] = np.nan
    extra["weight"] = 5.0
    pd.concat([edges, extra], ignore_index=True).to_parquet(run_dir / "edges.parquet")


@pytest.fixture(scope="session")
def full_run(pipeline_run, tmp_path_factory):
    """A copy of the run with every optional table present; read-only."""
    run_dir = tmp_path_factory.mktemp("report_full") / "run"
    shutil.copytree(pipeline_run, run_dir)
    (run_dir / "report.html").unlink(missing_ok=True)  # the pipeline's own report
    _fabricate_optional(run_dir)
    return run_dir


@pytest.fixture
def bare_run(pipeline_run, tmp_path):
    """A copy of the run without the optional tables (and without a few result tables)."""
    run_dir = tmp_path / "run"
    shutil.copytree(pipeline_run, run_dir)
    for name in (*OPTIONAL, "rank_drugs", "rank_regulators", "patients", "qc", "null_calibration"):
        (run_dir / f"{name}.parquet").unlink(missing_ok=True)
    return run_dir


@pytest.fixture(scope="session")
def full_report_path(full_run, tmp_path_factory) -> Path:
    """The report of ``full_run``, built once (outside the run directory: it stays read-only)."""
    out = tmp_path_factory.mktemp("report_html") / "report.html"
    return build_report(full_run, out=out)


@pytest.fixture(scope="session")
def full_report(full_report_path) -> str:
    return full_report_path.read_text(encoding="utf-8")
