"""Write a tool's result back into the data object (the one storage convention of ``tl``)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def _writable(value: Any) -> Any:
    """h5ad cannot store None: write it as "" (as ``differential_expression`` always did)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return {str(k): _writable(v) for k, v in value.items()}
    return value


def store_result(data: Any, key_added: str | None, results: pd.DataFrame, params: dict) -> None:
    """Set ``data.uns[key_added] = {"results": results, "params": params}``; None stores nothing.

    ``data`` is the object the tool was given (the MuData itself for MuData input). ``params``
    is made writable to h5ad/h5mu (``None`` values become ``""``).
    """
    if key_added is None:
        return
    data.uns[key_added] = {"results": results, "params": _writable(params)}
