"""`omicstwin run` end to end on the small cohort: every table, provenance, config errors."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from omicstwin import errors
from omicstwin.cli import app
from omicstwin.pipeline import load_config
from omicstwin.schemas import SCHEMAS
from tests.conftest import REPO


def test_run_writes_every_table(small_cohort_path, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(f"data: {small_cohort_path}\nseed: 1\nstages:\n  screen_drugs: false\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "top targets" in result.stdout and f"results in {out}/" in result.stdout
    for name in ("de", "edges", "regulators", "perturbations", "patients"):
        table = pd.read_parquet(out / f"{name}.parquet")
        assert list(table.columns)[: len(SCHEMAS[name])] == list(SCHEMAS[name]), name
    for name in ("rank_targets", "rank_disease_genes"):
        table = pd.read_parquet(out / f"{name}.parquet")
        assert list(table.columns)[:8] == list(SCHEMAS["rank"]) and table["rank"].iloc[0] == 1
    edges = pd.read_parquet(out / "edges.parquet")
    assert {"intracellular", "intercellular", "temporal"} <= set(edges["layer"])
    assert (edges["condition"] == "donors").any()  # the network the twin propagates through
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 1 and run["schema_version"] == 1
    assert set(run["timings_s"]) == {
        "validate",
        "preprocess",
        "de",
        "networks",
        "regulators",
        "twin",
        "screens",
        "enrichment",
        "report",
    }  # no disease in the config: no validation stage
    for name in ("qc", "patient_states", "enrichment", "mnm", "centrality"):
        table = pd.read_parquet(out / f"{name}.parquet")
        assert list(table.columns) == list(SCHEMAS[name]), name
    centrality = pd.read_parquet(out / "centrality.parquet")  # every cell type of the cohort
    assert set(centrality["cell_type"]) == set(pd.read_parquet(out / "design.parquet")["cell_type"])
    assert (out / "report.html").is_file() and f"report: {out / 'report.html'}" in result.stdout
    assert "stage timings:" in result.stdout
    assert len(run["inputs"][str(small_cohort_path)]) == 64  # sha256 of the input
    assert (out / "twin" / "meta.json").is_file()
    assert not list(out.glob(".*partial"))  # atomic writes leave nothing behind


def test_flags_override_config_and_errors_are_clear(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: x.h5ad\ncase: sick\n")
    settings = load_config(config, {"case": "patient", "workers": 2, "seed": None})
    assert settings.case == "patient" and settings.compute.workers == 2
    assert settings.data == str((tmp_path / "x.h5ad").resolve())
    with pytest.raises(errors.ParameterError, match="data"):
        load_config(None, {})
    with pytest.raises(errors.ParameterError, match=r"stages\.n_nul"):
        load_config(None, {"data": "x", "stages": {"n_nul": 3}})
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "error: invalid run config" in result.stderr


def _tables(folder):
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def _config(tmp_path, path, n_permutations=199):
    config = tmp_path / f"study{n_permutations}.yaml"
    config.write_text(
        f"data: {path}\nseed: 2\nstages:\n  n_permutations: {n_permutations}\n"
        "  screen_drugs: false\n"
    )
    return config


def test_unchanged_rerun_reuses_every_stage(small_cohort_path, tmp_path):
    from omicstwin.pipeline import run_pipeline

    out = tmp_path / "run"
    first = run_pipeline(load_config(_config(tmp_path, small_cohort_path), {}), out)
    tables = _tables(out)
    again = run_pipeline(load_config(_config(tmp_path, small_cohort_path), {}), out)
    assert first["cached_stages"] == []
    upstream = ["validate", "preprocess", "de", "networks", "regulators", "twin"]
    assert again["cached_stages"] == [*upstream, "screens", "enrichment", "report"]
    _assert_same(tables, _tables(out))
    # a changed screen parameter re-runs the screens and what reads them only
    changed = run_pipeline(
        load_config(_config(tmp_path, small_cohort_path, n_permutations=99), {}), out
    )
    assert changed["cached_stages"] == upstream


def test_kill_9_then_resume_gives_identical_tables(small_cohort_path, tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    config = _config(tmp_path, small_cohort_path)
    reference = tmp_path / "reference"
    # the uninterrupted reference runs as a fresh process too: earlier tests in this process
    # (dask) change BLAS threading, which changes floating-point sums in the last bits
    base = [sys.executable, "-m", "omicstwin.cli", "run", str(config), "--out"]
    started = time.perf_counter()
    subprocess.run([*base, str(reference)], capture_output=True, check=True)
    duration = time.perf_counter() - started
    out = tmp_path / "killed"
    command = [*base, str(out)]
    rng = random.Random(int(os.environ.get("OMICSTWIN_KILL_SEED", "0")))  # random moments,
    for _ in range(3):  # reproducible; set the seed to explore others
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 0.6 * duration))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    _assert_same(_tables(reference), _tables(out))
    assert not list(out.rglob("*.partial"))


def test_data_from_a_manifest_entry(small_cohort_path, tmp_path, monkeypatch):
    import shutil

    from omicstwin.io.manifests import sha256_of
    from omicstwin.pipeline import _data_path

    shutil.copytree(REPO / "data_manifests", tmp_path / "manifests")
    (tmp_path / "manifests" / "cohorts.yaml").write_text(
        "schema_version: 1\nfamily: cohorts\ndescription: test cohorts\nresources:\n"
        "- name: small_cohort\n  title: small\n  version: '1'\n  licence: CC0\n"
        "  source: omicstwin simulator\n  source_url: https://example.org/\n  format: h5ad\n"
        "  root: cohorts\n  files:\n  - path: small.h5ad\n"
        f"    sha256: {sha256_of(small_cohort_path)}\n"
    )
    (tmp_path / "data" / "cohorts").mkdir(parents=True)
    shutil.copy(small_cohort_path, tmp_path / "data" / "cohorts" / "small.h5ad")
    monkeypatch.setenv("OMICSTWIN_MANIFEST_DIR", str(tmp_path / "manifests"))
    monkeypatch.setenv("OMICSTWIN_DATA_PATH", str(tmp_path / "data"))
    from omicstwin.io import manifests

    manifests._default_resources.cache_clear()  # the shipped manifests were read before
    try:
        config = load_config(None, {"data": "manifest:small_cohort"})
        assert config.data == "manifest:small_cohort"
        path = _data_path(config, tmp_path, None, None, None)
        assert path == tmp_path / "data" / "cohorts" / "small.h5ad"
    finally:
        manifests._default_resources.cache_clear()


def test_shipped_study_configs_validate():
    from omicstwin.pipeline import SimulatedData

    for name in ("demo", "sar_like"):
        config = load_config(REPO / "pipelines" / f"{name}.yaml", {})
        assert isinstance(config.data, SimulatedData) and config.disease == "DOID:4481"
    with pytest.raises(errors.ParameterError, match="disease"):
        load_config(None, {"data": "x.h5ad", "disease": "allergic rhinitis"})


def test_unknown_disease_fails_before_any_stage(small_cohort_path, tmp_path):
    from omicstwin.pipeline import run_pipeline

    config = load_config(None, {"data": str(small_cohort_path), "disease": "DOID:999999"})
    with pytest.raises(errors.ParameterError, match="unknown disease"):
        run_pipeline(config, tmp_path / "run")
    assert not (tmp_path / "run" / "design.parquet").exists()


def test_removed_null_options_are_a_clear_error():
    with pytest.raises(errors.ParameterError, match=r"n_null was removed.*n_permutations"):
        load_config(None, {"data": "x.h5ad", "stages": {"n_null": 10}})
