"""Write a tool's result back into the data object (the one storage convention of ``tl``)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def writable_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with its nullable-string columns as categoricals (h5ad-writable).

    anndata refuses pandas' ``string`` dtype by default (``allow_write_nullable_strings``);
    a categorical of the same values writes everywhere and is smaller. :mod:`omicstwin.get`
    turns the categoricals back into strings (the schemas declare no categorical column).
    """
    strings = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    if not strings:
        return frame
    return frame.astype({c: object for c in strings}).astype({c: "category" for c in strings})


def _writable(value: Any) -> Any:
    """h5ad cannot store None (written as "", as ``differential_expression`` always did)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return {str(k): _writable(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return writable_frame(value)
    return value


def store_result(data: Any, key_added: str | None, results: pd.DataFrame, params: dict) -> None:
    """Set ``data.uns[key_added] = {"results": results, "params": params}``; None stores nothing.

    ``data`` is the object the tool was given (the MuData itself for MuData input). Both are
    stored in a form h5ad/h5mu can write: ``None`` values become ``""`` and string columns
    categoricals (:func:`writable_frame`; :mod:`omicstwin.get` restores them).
    """
    if key_added is None:
        return
    data.uns[key_added] = {"results": writable_frame(results), "params": _writable(params)}
