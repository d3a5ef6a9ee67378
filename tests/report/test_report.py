"""The HTML report: every section, embedded figures only, missing tables, determinism, atomicity."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from markupsafe import escape

from omicstwin.report import ReportError, build_report, render_report

SECTION_TITLES = [
    "2. Study design",
    "3. Differential expression",
    "4. Multicellular network",
    "5. Upstream regulators",
    "6. Multicellular network model",
    "7. Disease genes, targets and drugs",
    "8. Perturbation effects by context",
    "9. Per-patient targets",
    "10. How much to trust these numbers",
    "11. Pathway enrichment",
    "12. Validation against known biology",
    "13. Methods",
    "14. Provenance",
]
DATE_LINE = re.compile(r'<dd id="date-line">.*?</dd>')
IMG = re.compile(r"<img\b[^>]*>")


def test_every_section_and_figure(full_report):
    assert "<h1>omicstwin report: small.h5ad</h1>" in full_report
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in full_report, title
        anchor = re.search(rf'<section id="([a-z]+)">\s*<h2>{re.escape(title)}</h2>', full_report)
        assert anchor and f'href="#{anchor.group(1)}"' in full_report  # listed in the contents
    # design, DE, network, regulators, MNM, target bars, perturbations, patient ranks, patient
    # states, null calibration, enrichment prerank + ora
    images = IMG.findall(full_report)
    assert len(images) == 12
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
    assert "No qc.parquet" in html  # an older run: no quality-control table
    assert "no null_calibration.parquet" in html  # an older run: no null screen histogram
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


def test_header_qc_and_network_tables(full_report, full_run):
    run = json.loads((full_run / "run.json").read_text())
    sha = run["inputs"][run["config"]["data"]]
    # the data line: file name, full path and a short checksum; the finish time as a date
    assert '<span class="mono">small.h5ad</span>' in full_report
    assert f"sha256 {sha[:12]}…" in full_report
    assert "run finished " + run["finished"][:10] in full_report
    assert "<dt>Time unit</dt><dd>h</dd>" in full_report
    # quality control per cell type, with a total row
    assert "Cells before QC" in full_report and "all cell types" in full_report
    qc = pd.read_parquet(full_run / "qc.parquet")
    assert f"{int(qc['n_cells_kept'].sum()):,} of {int(qc['n_cells'].sum()):,} cells" in full_report
    # the network summaries count every intracellular and temporal edge of the run
    edges = pd.read_parquet(full_run / "edges.parquet")
    temporal = edges[edges["layer"] == "temporal"]
    step = temporal.iloc[0]
    assert f"{step['time_from']:g} h → {step['time_to']:g} h" in full_report
    assert "Top regulators (edges)" in full_report and "Strongest edge (weight)" in full_report


def test_data_line_and_run_date(tmp_path):
    from omicstwin.report.build import _data_line, _run_date

    sha = "4532774391a44939735b7a4da6006824cc9bd021aedc5ba92f7eb9a23f3968b7"
    simulated = {
        "config": {"data": {"simulate": "demo", "seed": 0, "n_cells": None}},
        "inputs": {"/runs/demo/cohort.h5ad": sha},
    }
    line = _data_line(simulated)
    assert line["data_lead"] == "simulated cohort (preset demo, seed 0)"
    assert line["data_file"] == "cohort.h5ad" and line["data_details"] == "sha256 4532774391a4…"
    assert "None" not in str(line)
    manifest = {"config": {"data": "manifest:pbmc"}, "inputs": {"/data/pbmc.h5ad": sha}}
    line = _data_line(manifest)
    assert line["data_lead"] == "manifest:pbmc" and line["data_file"] == "pbmc.h5ad"
    path = {"config": {"data": "/x/y/cohort.h5ad"}, "inputs": {"/x/y/cohort.h5ad": sha}}
    line = _data_line(path)
    assert line["data_lead"] == "" and line["data_file"] == "cohort.h5ad"
    assert line["data_details"] == "/x/y/cohort.h5ad; sha256 4532774391a4…"
    run_json = tmp_path / "run.json"
    run_json.write_text("{}")
    assert _run_date({"finished": "2026-11-23T17:23:40+01:00"}, run_json) == "2026-11-23 16:23 UTC"
    assert _run_date({}, run_json).endswith(" UTC")


def test_time_unit_prefers_run_json(tmp_path):
    from omicstwin.report._format import time_unit_of

    cohort = "ok: 10 cells; 2 time points (0 d .. 2 d)"
    assert time_unit_of({"time_unit": "h", "config": {"time_unit": "min"}, "cohort": cohort}) == "h"
    assert time_unit_of({"config": {"time_unit": "min"}, "cohort": cohort}) == "min"
    assert time_unit_of({"config": {}, "cohort": cohort}) == "d"


def test_network_summaries_count_edges():
    from omicstwin.report.sections import _intracellular_summary, _temporal_summary

    nan = float("nan")
    rows = [
        # layer, condition, source ct, target ct, from, to, source, target, weight
        ("intracellular", "case", "T", "T", 0.0, 0.0, "A", "X", 1.0),
        ("intracellular", "case", "T", "T", 0.0, 0.0, "A", "Y", 1.0),
        ("intracellular", "control", "T", "T", 0.0, 0.0, "B", "X", 1.0),
        ("intracellular", "donors", "T", "T", nan, nan, "B", "Y", 1.0),
        ("temporal", "all", "T", "T", 0.0, 6.0, "A", "X", -0.5),
        ("temporal", "all", "T", "T", 0.0, 6.0, "B", "X", 0.7),
        ("temporal", "all", "M", "M", 6.0, 12.0, "C", "Z", 0.2),
    ]
    edges = pd.DataFrame(
        rows,
        columns=[
            "layer",
            "condition",
            "source_cell_type",
            "target_cell_type",
            "time_from",
            "time_to",
            "source",
            "target",
            "weight",
        ],
    )
    for frame in (edges, edges.astype({c: "category" for c in ("layer", "source", "target")})):
        intra, hubs = _intracellular_summary(frame, "h")
        assert intra.columns == ["Cell type", "0 h", "all times (donors)"]
        assert intra.rows == [["T", "2 / 1", "1"]]
        assert hubs.rows == [["T", "A (2), B (2)"]]
        (temporal,) = _temporal_summary(frame, "h")
        assert temporal.columns[1:3] == ["0 h → 6 h", "6 h → 12 h"]
        assert temporal.rows == [
            ["M", "0", "1", "C → Z (6 h → 12 h, 0.2)"],
            ["T", "2", "0", "B → X (0 h → 6 h, 0.7)"],
        ]


def test_trust_section(full_report):
    """The trust section: the null screens' p-value histogram, its reading, the score kinds."""
    section = full_report.split('<section id="trust">', 1)[1].split("</section>", 1)[0]
    assert 'alt="Histograms of the screens&#39; p-values' in section
    assert "data:image/png;base64," in section
    assert "permutation" in section or "chance" in section
    assert "rank only" in section and "calibrated" in section


def test_rank_only_labels(full_report):
    """Ranking tables label rank-only scores from the registry, calibrated ones with units."""
    rankings = full_report.split('<section id="rankings">', 1)[1].split("</section>", 1)[0]
    assert "Reversal score (rank only)" in rankings
    assert "Induction score (rank only)" in rankings
    assert "Off-target (fraction of the disease vector)" in rankings
    assert "is rank only" in rankings
    patients = full_report.split('<section id="patients">', 1)[1].split("</section>", 1)[0]
    assert "90% interval low" in patients and "90% interval high" in patients
    assert "Disease score (fraction of the peak disease shift)" in patients
    assert "The reversal score is rank only" in patients


def _section(html: str, name: str) -> str:
    return html.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def test_mnm_section_figure_and_centrality(full_report, full_run):
    """The MNM per time point, and the centrality table read in one sentence."""
    section = _section(full_report, "mnm")
    assert 'alt="Multicellular network model per time point"' in section
    centrality = pd.read_parquet(full_run / "centrality.parquet").sort_values("rank")
    top = centrality["cell_type"].iloc[0]
    assert f"{top} is the most central cell type" in section
    isolated = centrality.loc[centrality["centrality"] == 0, "cell_type"].tolist()
    assert isolated and "no edge" in section
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td><td>([^<]+)</td>", section)
    assert [name for _, name in rows] == [str(escape(c)) for c in centrality["cell_type"]]
    assert "Centrality (rank only)" in section


def test_mnm_section_without_edges_or_table(bare_run, tmp_path):
    """An empty MNM is one sentence (no figure); a run without mnm.parquet says so."""
    html = render_report(bare_run)  # the small run: no MNM edge, no rank_regulators table
    section = _section(html, "mnm")
    assert "The multicellular network model has no edge" in section
    assert "<img" not in section and "have centrality 0" in section
    empty = tmp_path / "empty"
    shutil.copytree(bare_run, empty)
    ranking = pd.DataFrame({"regulator": pd.Series([], dtype="string"), "rank": []})
    ranking.to_parquet(empty / "rank_regulators.parquet")
    assert "no upstream regulator is predicted" in _section(render_report(empty), "mnm")
    (empty / "mnm.parquet").unlink()
    assert "no mnm.parquet" in _section(render_report(empty), "mnm")
