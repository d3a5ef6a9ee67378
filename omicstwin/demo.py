"""The demo job: ``pipelines/demo.yaml`` (the simulated cohort) through every stage.

``omicstwin run`` does the work (simulate -> validate -> preprocess -> DE -> networks ->
regulators -> twin -> screens -> enrichment -> validation -> report); the demo then prints what
the simulator planted (drivers, cascade, expected DEGs, true reversal genes) beside what the twin
recovered, and where the report is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

DEMO_CONFIG = "demo.yaml"


def demo_config_path() -> Path:
    """``pipelines/demo.yaml``: the source tree's copy, else the one shipped in the wheel."""
    package = Path(__file__).resolve().parent
    for folder in (package.parent / "pipelines", package / "pipelines"):
        if (folder / DEMO_CONFIG).is_file():
            return folder / DEMO_CONFIG
    from omicstwin.errors import DataFileError

    raise DataFileError(
        f"{DEMO_CONFIG} is missing from this installation; fix: reinstall omicstwin or pass "
        "--config pipelines/demo.yaml from a source checkout"
    )


def run_demo(
    out: str | Path,
    *,
    config: str | Path | None = None,
    seed: int | None = None,
    stage: Callable[[str], contextlib.AbstractContextManager] | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the demo config and compare the twin's rankings with the simulator's truth.

    Parameters
    ----------
    out
        Run directory (created); the simulated cohort is written there as ``cohort.h5ad``.
    config
        Study config (default: ``pipelines/demo.yaml``).
    seed
        Overrides the config's seed (analysis and simulation).
    stage
        Context-manager factory wrapping each stage (the CLI passes progress bars).
    echo
        Where the human-readable summary goes (the CLI passes ``typer.echo``).

    Returns
    -------
    dict
        The run's ``run.json`` content plus ``top_targets`` and ``report``.
    """
    import anndata as ad

    from omicstwin.pipeline import SimulatedData, load_config, run_pipeline

    settings = load_config(config or demo_config_path(), {"seed": seed})
    if seed is not None and isinstance(settings.data, SimulatedData):
        settings.data.seed = seed
    out = Path(out)
    run = run_pipeline(settings, out, stage=stage)
    echo(f"cohort: {run['cohort']}")
    if isinstance(settings.data, SimulatedData):
        truth = ad.read_h5ad(out / "cohort.h5ad", backed="r").uns["truth"]
        _echo_truth(truth, run, run.get("time_unit") or "", echo)
    return run


def _echo_truth(truth: dict, run: dict[str, Any], unit: str, echo: Callable[[str], None]) -> None:
    """Print the planted disease and how much of it the twin recovered."""
    endotypes = pd.DataFrame(truth["endotypes"])
    drivers = pd.DataFrame(truth["drivers"])
    echo("planted disease (simulator truth the stages must recover):")
    for row in endotypes.itertuples():
        n_patients = int((drivers["endotype"] == row.endotype).sum())
        echo(
            f"  endotype {row.endotype} ({n_patients} patients): drivers {row.drivers} in "
            f"{row.cascade_cell_types.split(';')[0]}; cascade "
            f"{' -> '.join(row.cascade_cell_types.split(';'))} via ligands "
            f"{row.cascade_ligands.replace(';', ', ')}"
        )
    degs = pd.DataFrame(truth["degs"])
    table = degs.groupby(["cell_type", "time"]).size().unstack(fill_value=0)
    table.columns = [f"{t:g}{unit}" for t in table.columns]
    table.index.name = None
    echo("expected DEGs per cell type x time (the cascade spreading):")
    for line in table.to_string().splitlines():
        echo(f"  {line}")
    reversal = pd.DataFrame(truth["reversal"]).head(10)
    echo("true top 10 genes whose inhibition reverses the disease (fraction of disease vector):")
    echo("  " + ", ".join(f"{r.gene} {r.reversal:.2f}" for r in reversal.itertuples()))
    planted: set[str] = set()
    for column in ("drivers", "cascade_ligands", "cascade_receptors", "cascade_tfs"):
        planted |= set(";".join(endotypes[column]).split(";"))
    top = run["top_targets"]
    echo(
        f"the twin's top 10 targets (knockout reversal): {', '.join(top)}; planted genes among "
        f"them: {sum(g in planted for g in top)} of {len(top)}"
    )
