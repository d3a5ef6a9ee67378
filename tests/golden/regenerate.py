"""Regenerate the golden tables of the small end-to-end run.

Usage: ``python -m tests.golden.regenerate`` from the repository root (needs
``OMICSTWIN_DATA_PATH``, as the tests). Run it only when a change of results is intended, and
say in the commit which tables changed and why.

The run is ``tests/golden/small.yaml`` (the ``small`` simulated cohort, seed 0). Tables are kept
whole except the two network tables (about 1 MB each), which are kept as a per-context summary
(edge count, weight sums) plus the 25 strongest edges per layer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "small.yaml"
EXPECTED = HERE / "small"
SUMMARISED = ("edges", "network_layers")
_CONTEXT = ["layer", "source_cell_type", "target_cell_type", "time_from", "time_to"]


def run_small(out: Path) -> None:
    """Run ``omicstwin run tests/golden/small.yaml`` into ``out`` in a fresh process."""
    subprocess.run(
        [sys.executable, "-m", "omicstwin.cli", "run", str(CONFIG), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise_edges(edges: pd.DataFrame) -> pd.DataFrame:
    """Per-context edge count and weight sums, then the 25 strongest edges of every layer."""
    keys = [c for c in _CONTEXT if c in edges.columns] + (
        ["condition"] if "condition" in edges.columns else []
    )
    frame = edges.assign(abs_weight=edges["weight"].abs())
    summary = (
        frame.groupby(keys, dropna=False, observed=True)
        .agg(
            n_edges=("weight", "size"), weight_sum=("weight", "sum"), abs_sum=("abs_weight", "sum")
        )
        .reset_index()
        .assign(source="*", target="*")
    )
    top = (
        frame.sort_values(["abs_weight", "source", "target"], ascending=[False, True, True])
        .groupby("layer", observed=True)
        .head(25)
        .assign(n_edges=1, weight_sum=lambda f: f["weight"], abs_sum=lambda f: f["abs_weight"])
    )[[*keys, "n_edges", "weight_sum", "abs_sum", "source", "target"]]
    return pd.concat([summary, top], ignore_index=True)


def golden_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables of a run as the golden files keep them."""
    tables = {}
    for path in sorted(run_dir.glob("*.parquet")):
        table = pd.read_parquet(path)
        tables[path.stem] = summarise_edges(table) if path.stem in SUMMARISED else table
    return tables


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_small(run_dir)
        shutil.rmtree(EXPECTED, ignore_errors=True)
        EXPECTED.mkdir()
        for name, table in golden_tables(run_dir).items():
            table.to_parquet(EXPECTED / f"{name}.parquet", index=False)
            print(f"{name}: {len(table)} rows")


if __name__ == "__main__":
    main()
