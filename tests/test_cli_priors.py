"""``omicstwin priors build|show`` on the tiny manifest of tests/io/test_priors.py."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from omicstwin.cli import app
from tests.io.test_priors import tiny  # noqa: F401  (the fixture)

runner = CliRunner()


def test_build_then_show_then_one_line_errors(tiny, tmp_path):  # noqa: F811
    out = tmp_path / "built"
    result = runner.invoke(
        app, ["priors", "build", "regulator_types", "--source", "permissive", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    path = out / "permissive" / "regulator_types.parquet"
    assert str(path) in result.output and "rows, sha256" in result.output
    assert "academic" not in result.output  # the permissive source is open
    assert set(pd.read_parquet(path)["regulator_type"]) == {"tf", "ligand", "receptor", "kinase"}
    shown = runner.invoke(
        app, ["priors", "show", "regulator_types", "--source", "permissive", "--out", str(out)]
    )
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert record["output_verified"] is True and record["prior"] == "regulator_types"
    again = runner.invoke(
        app,
        [
            "priors",
            "build",
            "regulator_types",
            "--source",
            "permissive",
            "--out",
            str(out),
            "--force",
        ],
    )
    assert again.exit_code == 0 and "academic" not in again.output
    bad = runner.invoke(app, ["priors", "build", "ligands"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == [
        "error: unknown prior 'ligands'; fix: use one of ligand_targets, receptor_targets, "
        "regulator_types, regulator_prior"
    ]
    missing = runner.invoke(app, ["priors", "show", "ligand_targets"])
    assert missing.exit_code == 2 and "was never built" in missing.output
