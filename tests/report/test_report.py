"""The HTML report: every section, embedded figures only, missing tables, determinism, atomicity."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from omicstwin.report import ReportError, build_report, render_report
from omicstwin.schemas import conform

SECTION_TITLES = [
    "2. Study design",
    "3. Differential expression",
    "4. Multicellular network",
    "5. Upstream regulators",
    "6. Disease genes, targets and drugs",
    "7. Perturbation effects by context",
    "8. Per-patient targets",
    "9. Pathway enrichment",
    "10. Validation against known biology",
    "11. Methods",
    "12. Provenance",
]
OPTIONAL = ("enrichment", "validation", "patient_states")
DATE_LINE = re.compile(r'<dd id="date-line">.*?</dd>')
IMG = re.compile(r"<img\b[^>]*>")


# The browser tests import these session fixtures; a fixture defined in two modules is set up
# once per module, so the expensive results are memoised here and shared by both.
_SHARED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def pipeline_run(small_cohort_path, tmp_path_factory):
    """A run directory of the small cohort (few null twins, to stay fast); read-only."""
    if "pipeline_run" not in _SHARED:
        from omicstwin.pipeline import RunConfig, Stages, run_pipeline

        out = tmp_path_factory.mktemp("report") / "run"
        config = RunConfig(data=str(small_cohort_path), stages=Stages(n_null=2, null_size=20))
        run_pipeline(config, out)
        _SHARED["pipeline_run"] = out
    return _SHARED["pipeline_run"]


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
    conform(states, "patient_states").to_parquet(run_dir / "patient_states.parquet")

    # an intercellular edge without a time: it applies at every time point
    edges = pd.read_parquet(run_dir / "edges.parquet")
    extra = edges[edges["layer"] == "intercellular"].head(1).copy()
    extra[["time_from", "time_to"]] = np.nan
    extra["weight"] = 5.0
    pd.concat([edges, extra], ignore_index=True).to_parquet(run_dir / "edges.parquet")


@pytest.fixture(scope="session")
def full_run(pipeline_run, tmp_path_factory):
    """A copy of the run with every optional table present; read-only."""
    if "full_run" not in _SHARED:
        run_dir = tmp_path_factory.mktemp("report_full") / "run"
        shutil.copytree(pipeline_run, run_dir)
        (run_dir / "report.html").unlink(missing_ok=True)  # the pipeline's own report
        _fabricate_optional(run_dir)
        _SHARED["full_run"] = run_dir
    return _SHARED["full_run"]


@pytest.fixture
def bare_run(pipeline_run, tmp_path):
    """A copy of the run without the optional tables (and without a few result tables)."""
    run_dir = tmp_path / "run"
    shutil.copytree(pipeline_run, run_dir)
    for name in (*OPTIONAL, "rank_drugs", "rank_regulators", "patients"):
        (run_dir / f"{name}.parquet").unlink(missing_ok=True)
    return run_dir


@pytest.fixture(scope="session")
def full_report_path(full_run, tmp_path_factory):
    """The report of ``full_run``, built once (outside the run directory: it stays read-only)."""
    if "full_report" not in _SHARED:
        out = tmp_path_factory.mktemp("report_html") / "report.html"
        _SHARED["full_report"] = build_report(full_run, out=out)
    return _SHARED["full_report"]


@pytest.fixture(scope="session")
def full_report(full_report_path):
    return full_report_path.read_text(encoding="utf-8")


def test_every_section_and_figure(full_report):
    assert "<h1>omicstwin report: small.h5ad</h1>" in full_report
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in full_report, title
        anchor = re.search(rf'<section id="([a-z]+)">\s*<h2>{re.escape(title)}</h2>', full_report)
        assert anchor and f'href="#{anchor.group(1)}"' in full_report  # listed in the contents
    # design, DE, network, regulators, target bars, perturbations, patient ranks, patient
    # states, enrichment prerank + ora
    images = IMG.findall(full_report)
    assert len(images) == 10
    for tag in images:
        payload = re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1)
        assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
        assert re.search(r'width="\d+" height="\d+"', tag) and 'alt="' in tag
    assert len(full_report) < 10e6
    assert "random_p95" not in full_report and "Random 95th pct" in full_report
    assert "DOID:4481" in full_report
    assert "… (+" in full_report  # the long gene lists are truncated
    assert "<h3>Targets</h3>" in full_report and "<h3>Drugs</h3>" in full_report


def test_no_external_resources(full_report):
    # nothing may be fetched: no URLs at all, no protocol-relative links, no CSS imports
    assert "http://" not in full_report and "https://" not in full_report
    assert not re.search(r"""(?:src|href)\s*=\s*["']?//""", full_report)
    assert "@import" not in full_report and "url(" not in full_report
    assert "<script" not in full_report and "<link" not in full_report
    for target in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", full_report):
        assert target.startswith(("#", "data:image/png;base64,")), target


def test_missing_optional_tables_are_explained(bare_run):
    html = build_report(bare_run).read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html, title
    assert "The enrichment stage did not run" in html
    assert "no disease named in the config" in html
    assert "No patient_states.parquet" in html
    assert "no patients.parquet" in html and "no rank_drugs.parquet" in html
    # the regulator heatmap still shows the best regulators by overlap p, unranked
    assert "No regulator is predicted" in html
    assert len(IMG.findall(html)) == 6  # no patient, patient-state or enrichment figures


def test_empty_optional_tables(full_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(full_run, run_dir)
    for name in ("enrichment", "validation"):
        table = pd.read_parquet(run_dir / f"{name}.parquet")
        table.iloc[:0].to_parquet(run_dir / f"{name}.parquet")
    html = render_report(run_dir)
    assert "The enrichment stage ran and found nothing to report." in html
    assert "No validation results: the table is empty." in html


def test_deterministic_read_only_and_leaves_matplotlib_alone(full_run, full_report, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in full_run.rglob("*")}
    rc = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    again = render_report(full_run)
    assert len(DATE_LINE.findall(again)) == 1
    assert DATE_LINE.sub("", again) == DATE_LINE.sub("", full_report)
    assert {p: p.stat().st_mtime_ns for p in full_run.rglob("*")} == before  # nothing written
    assert dict(matplotlib.rcParams) == rc and matplotlib.get_backend() == backend


FAKE_HTML = "<!DOCTYPE html>\n<html><body>report</body></html>\n"


def test_written_atomically(full_run, tmp_path, monkeypatch):
    import omicstwin.report.build as build

    monkeypatch.setattr(build, "render_report", lambda run_dir: FAKE_HTML)  # writing only
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(full_run / "run.json", run_dir / "run.json")
    target = run_dir / "report.html"
    target.write_text("old report")
    seen = {}
    real_replace = os.replace

    def spy(source, destination):
        seen["old_until_replaced"] = Path(destination).read_text() == "old report"
        seen["source"] = Path(source)
        seen["complete"] = Path(source).read_text(encoding="utf-8") == FAKE_HTML
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    assert build_report(run_dir) == target
    assert target.read_text(encoding="utf-8") == FAKE_HTML
    assert seen["old_until_replaced"] and seen["complete"]
    assert seen["source"].parent == run_dir and seen["source"].name.endswith(".partial")
    assert not list(run_dir.glob(".*partial"))

    # a failure while writing leaves neither a partial file nor a report behind
    target.unlink()

    def boom(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        build_report(run_dir)
    assert not target.exists() and not list(run_dir.glob(".*partial"))


def test_output_location_and_errors(full_run, tmp_path, monkeypatch):
    import omicstwin.report.build as build

    monkeypatch.setattr(build, "render_report", lambda run_dir: FAKE_HTML)
    folder = tmp_path / "out"
    folder.mkdir()
    assert build_report(full_run, out=folder) == folder / "report.html"
    assert build_report(full_run, out=tmp_path / "x" / "r.html").read_text() == FAKE_HTML
    monkeypatch.undo()
    with pytest.raises(ReportError, match="not a run directory"):
        build_report(tmp_path / "nowhere")


def test_methods_and_provenance_come_from_run_json(full_report, full_run):
    run = json.loads((full_run / "run.json").read_text())
    assert f"min_donors={run['config']['stages']['min_donors']}" in full_report
    assert "negative binomial" in full_report
    assert run["inputs"][run["config"]["data"]] in full_report  # the input checksum
    assert f"<td>numpy</td><td>{run['versions']['numpy']}</td>" in full_report
    assert "Wall time per stage" in full_report and "total" in full_report
    assert str(escape(run["cohort"])) in full_report


def test_run_json_alone_gives_a_report_of_notes(full_run, tmp_path):
    shutil.copy(full_run / "run.json", tmp_path / "run.json")
    html = render_report(tmp_path)
    assert not IMG.findall(html)
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html, title
    assert html.count('class="note"') >= 10
