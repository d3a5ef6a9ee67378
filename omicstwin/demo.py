"""The demo job: simulate the ``demo`` cohort, then run the twin pipeline on it.

Stages: simulate -> write -> read and validate at the door -> summarise the design and the
planted truth -> ``omicstwin run`` (DE, networks, regulators, twin, screens) -> compare the
twin's top targets with the planted truth. The report joins when it lands.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

_TRUTH_TABLES = ("endotypes", "drivers", "lr_edges", "degs", "reversal", "patient_reversal")


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    preset: str = "demo",
    status: Callable[[str], contextlib.AbstractContextManager] | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, float]:
    """Simulate the demo cohort, validate it from disk and write its summary tables.

    Parameters
    ----------
    out
        Output folder (created).
    seed
        Simulation seed.
    preset
        Simulation preset (``"small"`` for a quick run).
    status
        Context-manager factory showing progress per stage (the CLI passes a spinner).
    echo
        Where the human-readable summary goes (the CLI passes ``typer.echo``).

    Returns
    -------
    dict
        Seconds per stage.
    """
    from omicstwin.datasets import simulate_cohort
    from omicstwin.io import read_data, validate_cohort

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status = status or (lambda _msg: contextlib.nullcontext())
    timings: dict[str, float] = {}

    def stage(name: str, message: str):
        timings[name] = time.perf_counter()
        return status(message)

    with stage("simulate", f"simulating the '{preset}' cohort"):
        adata = simulate_cohort(preset, seed=seed)
    _lap(timings, "simulate")
    cohort_path = out / "cohort.h5ad"
    with stage("write", f"writing {cohort_path}"):
        partial = cohort_path.with_name(f".{cohort_path.name}.partial")
        adata.write_h5ad(partial, compression="lzf")
        partial.replace(cohort_path)
    _lap(timings, "write")
    with stage("validate", "reading and validating the cohort"):
        data = read_data(cohort_path)
        summary = validate_cohort(
            data,
            cell_type_key="cell_type",
            time_key="time",
            condition_key="condition",
            donor_key="donor",
            case="case",
            control="control",
            time_unit=data.uns.get("time_unit"),
        )
    _lap(timings, "validate")
    with stage("summarise", "writing the design and truth tables"):
        summary.design.to_csv(out / "design.csv", index=False)
        truth_dir = out / "truth"
        truth_dir.mkdir(exist_ok=True)
        truth = data.uns["truth"]
        for name in _TRUTH_TABLES:
            pd.DataFrame(truth[name]).to_csv(truth_dir / f"{name}.csv", index=False)
    _lap(timings, "summarise")
    from omicstwin.pipeline import RunConfig, run_pipeline

    timings["run"] = time.perf_counter()
    run = run_pipeline(
        RunConfig(data=str(cohort_path), time_unit=data.uns.get("time_unit"), seed=seed),
        out / "run",
        stage=lambda name: status(f"twin pipeline: {name}"),
    )
    _lap(timings, "run")

    echo(f"cohort: {summary.one_line()}")
    echo("planted disease (simulator truth that later stages must recover):")
    for row in pd.DataFrame(truth["endotypes"]).itertuples():
        n_patients = int((pd.DataFrame(truth["drivers"])["endotype"] == row.endotype).sum())
        echo(
            f"  endotype {row.endotype} ({n_patients} patients): drivers {row.drivers} in "
            f"{row.cascade_cell_types.split(';')[0]}; cascade "
            f"{' -> '.join(row.cascade_cell_types.split(';'))} via ligands "
            f"{row.cascade_ligands.replace(';', ', ')}"
        )
    degs = pd.DataFrame(truth["degs"])
    unit = data.uns.get("time_unit", "")
    table = (
        degs.groupby(["cell_type", "time"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=summary.cell_types, columns=summary.time.levels, fill_value=0)
    )
    table.columns = [f"{t:g}{unit}" for t in table.columns]
    table.index.name = None
    echo("expected DEGs per cell type x time (the cascade spreading):")
    for line in table.to_string().splitlines():
        echo(f"  {line}")
    reversal = pd.DataFrame(truth["reversal"]).head(10)
    echo("top 10 genes whose inhibition reverses the disease (fraction of disease vector):")
    echo("  " + ", ".join(f"{r.gene} {r.reversal:.2f}" for r in reversal.itertuples()))
    planted = set()
    for column in ("drivers", "cascade_ligands", "cascade_receptors", "cascade_tfs"):
        planted |= set(";".join(pd.DataFrame(truth["endotypes"])[column]).split(";"))
    top = run["top_targets"]
    echo(
        f"the twin's top 10 targets (knockout reversal): {', '.join(top)}; planted genes among "
        f"them: {sum(g in planted for g in top)} of {len(top)}"
    )
    total = sum(timings.values())
    echo(
        "timings: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; total {total:.1f} s"
    )
    echo(
        f"results in {out}/: cohort.h5ad, design.csv, truth/*.csv, and the twin's run directory "
        f"{out / 'run'}/ ({', '.join(run['tables'])}, twin/, run.json)"
    )
    return timings


def _lap(timings: dict[str, float], name: str) -> None:
    timings[name] = time.perf_counter() - timings[name]
