"""`omicstwin run` end to end on the small cohort: every table, provenance, config errors."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from omicstwin import errors
from omicstwin.cli import app
from omicstwin.pipeline import load_config
from omicstwin.schemas import SCHEMAS


def test_run_writes_every_table(small_cohort_path, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"data: {small_cohort_path}\nseed: 1\nstages:\n  n_null: 2\n  null_size: 20\n"
        "  screen_drugs: false\n"
    )
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
    assert set(run["timings_s"]) == {"validate", "de", "networks", "regulators", "twin", "screens"}
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
