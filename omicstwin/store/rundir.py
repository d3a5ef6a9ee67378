"""The run directory: one parquet file per result table plus ``run.json`` provenance.

Every file is written to a temporary name in the same folder and renamed into place, so a run
killed at any moment never leaves a partial file under a final name.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1
KEY_PACKAGES = (
    "omicstwin",
    "numpy",
    "scipy",
    "pandas",
    "anndata",
    "mudata",
    "scanpy",
    "statsmodels",
    "networkx",
    "dask",
    "distributed",
    "pyarrow",
    "gseapy",
    "matplotlib",
)


def atomic_path(target: Path) -> Path:
    """Return a fresh temporary file beside ``target`` (write there, then ``os.replace``)."""
    handle, partial = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    os.close(handle)
    return Path(partial)


def write_table(folder: str | Path, name: str, table: pd.DataFrame) -> Path:
    """Write ``<folder>/<name>.parquet`` atomically (write, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.parquet"
    partial = atomic_path(target)
    try:
        table.to_parquet(partial, index=False)
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    return target


def write_table_extending(
    folder: str | Path, name: str, source: str | Path, rows: pd.DataFrame | None = None
) -> Path:
    """Write ``<folder>/<name>.parquet``: the rows of the table ``source``, then ``rows``.

    Atomically, and through Arrow: ``source`` is never loaded into pandas (a table of millions
    of string rows costs about ten times its Arrow size there). ``rows`` (same columns) is cast
    to ``source``'s schema, so the result reads back as ``pandas.concat`` of the two would.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    if rows is not None and len(rows):
        extra = pa.Table.from_pandas(rows, preserve_index=False).cast(table.schema)
        table = pa.concat_tables([table, extra])
    target = Path(folder) / f"{name}.parquet"
    partial = atomic_path(target)
    try:
        pq.write_table(table, partial)
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    return target


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (sorted keys, so identical runs give identical files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = atomic_path(path)
    try:
        partial.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def package_versions() -> dict[str, str]:
    """Versions of Python and the key packages (for ``run.json``)."""
    out = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
