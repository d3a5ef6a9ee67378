"""Tidy frames from what :mod:`omicstwin.tl` stored on an AnnData/MuData, or from result tables.

Every getter takes the data first: an AnnData/MuData that a ``tl`` verb wrote back to
(``data.uns[key] = {"results": table, "params": dict}``, see :mod:`omicstwin.tl`), or the
result table itself (a run directory's parquet, a verb's return value), which passes through
the same filters. The frames returned are copies: changing them never changes the data. ``tl``
stores string columns as categoricals (h5ad cannot write pandas' nullable strings by default);
the getters return them as strings again, so a stored table reads back equal to the one the
verb returned.

>>> import omicstwin as ot
>>> ot.tl.differential_expression(adata)  # doctest: +SKIP
>>> ot.get.de(adata, cell_type="CD14 Mono", max_q=0.05)  # doctest: +SKIP
>>> ot.get.edges(adata, key=["grn", "intercellular", "temporal"], time=6.0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from omicstwin.errors import MissingKeyError

__all__ = ["de", "de_timecourse", "edges", "params", "results"]


def _entry(data: Any, key: str) -> dict:
    """Return the ``{"results", "params"}`` entry under ``key`` (the object's, else the RNA's)."""
    holders = [data]
    mod = getattr(data, "mod", None)
    if mod is not None and "rna" in mod:  # MuData written before results moved to its uns
        holders.append(mod["rna"])
    for holder in holders:
        entry = holder.uns.get(key) if hasattr(holder, "uns") else None
        if isinstance(entry, dict) and "results" in entry:
            return entry
    present = sorted(k for k, v in data.uns.items() if isinstance(v, dict) and "results" in v)
    raise MissingKeyError(
        f"no omicstwin result under uns['{key}']; results present: {present or 'none'}; fix: "
        "run the tl function that writes it (with key_added set) or pass key= of a present one"
    )


def results(data: Any, *, key: str) -> pd.DataFrame:
    """Return the result table stored under ``key`` (or ``data`` itself when it is a table).

    Parameters
    ----------
    data
        AnnData/MuData with ``uns[key]`` written by a ``tl`` verb, or a result table.
    key
        The ``key_added`` the verb was given.

    Returns
    -------
    pandas.DataFrame
        A copy of the stored table, index reset.

    Raises
    ------
    MissingKeyError
        Nothing stored under ``key``.
    """
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True).copy()
    return _restored(_entry(data, key)["results"])


def _restored(table: Any) -> pd.DataFrame:
    """Undo the storage form: categorical columns back to the schemas' strings."""
    table = pd.DataFrame(table).reset_index(drop=True)
    categorical = [c for c in table.columns if isinstance(table[c].dtype, pd.CategoricalDtype)]
    return table.astype({c: "string" for c in categorical}) if categorical else table.copy()


def params(data: Any, *, key: str) -> dict:
    """Return the parameters stored beside the result under ``key``.

    Parameters
    ----------
    data
        AnnData/MuData with ``uns[key]`` written by a ``tl`` verb.
    key
        The ``key_added`` the verb was given.

    Returns
    -------
    dict
        A copy of ``uns[key]["params"]`` (tables in it with their string columns restored).
    """
    stored = _entry(data, key).get("params", {})
    return {k: _restored(v) if isinstance(v, pd.DataFrame) else v for k, v in stored.items()}


def _select(table: pd.DataFrame, column: str, value: Any) -> pd.DataFrame:
    if value is None:
        return table
    values = [value] if isinstance(value, str) or not isinstance(value, Sequence) else value
    return table[table[column].isin(list(values))]


def de(
    data: Any,
    *,
    key: str = "de",
    cell_type: str | Sequence[str] | None = None,
    time: float | Sequence[float] | None = None,
    max_q: float | None = None,
    min_abs_log_fc: float | None = None,
) -> pd.DataFrame:
    """Differential expression as a tidy frame (:func:`omicstwin.tl.differential_expression`).

    Parameters
    ----------
    data
        AnnData/MuData the DE ran on (``uns[key]``), or a ``de`` table.
    key
        ``key_added`` of the DE call.
    cell_type, time
        Keep these contexts only (one value or several).
    max_q
        Keep rows with ``q_value <= max_q``.
    min_abs_log_fc
        Keep rows with ``|log_fc| >= min_abs_log_fc``.

    Returns
    -------
    pandas.DataFrame
        The ``de`` schema (cell_type, time, gene, log_fc, p_value, q_value, mean_case,
        mean_control, n_donors_case, n_donors_control), one row per context x gene.
    """
    table = _select(_select(results(data, key=key), "cell_type", cell_type), "time", time)
    if max_q is not None:
        table = table[table["q_value"] <= max_q]
    if min_abs_log_fc is not None:
        table = table[table["log_fc"].abs() >= min_abs_log_fc]
    return table.reset_index(drop=True)


def de_timecourse(
    data: Any,
    *,
    key: str = "de_timecourse",
    cell_type: str | Sequence[str] | None = None,
    max_q: float | None = None,
) -> pd.DataFrame:
    """Condition x time test per cell type as a tidy frame (:func:`omicstwin.tl.timecourse_de`).

    Parameters
    ----------
    data
        AnnData/MuData (``uns[key]``), or a ``de_timecourse`` table.
    key
        ``key_added`` of the call.
    cell_type
        Keep these cell types only.
    max_q
        Keep rows with ``q_value <= max_q``.

    Returns
    -------
    pandas.DataFrame
        The ``de_timecourse`` schema: cell_type, gene, statistic, df, p_value, q_value.
    """
    table = _select(results(data, key=key), "cell_type", cell_type)
    if max_q is not None:
        table = table[table["q_value"] <= max_q]
    return table.reset_index(drop=True)


def edges(
    data: Any,
    *,
    key: str | Sequence[str] = ("grn", "intercellular", "temporal"),
    layer: str | Sequence[str] | None = None,
    time: float | None = None,
    cell_type: str | None = None,
) -> pd.DataFrame:
    """Network edges as one tidy ``edges`` frame (the layers of :mod:`omicstwin.tl.networks`).

    Parameters
    ----------
    data
        AnnData/MuData with edge tables under ``key`` (written by ``context_grns``,
        ``intercellular_edges``, ``temporal_edges`` or ``fit_twin``), or an ``edges`` table.
    key
        One key or several: their tables are concatenated in that order. With the default,
        the keys absent from ``data.uns`` are skipped (at least one must be present); a key
        given explicitly must be present.
    layer
        Keep these layers only (``intracellular``, ``intercellular``, ``temporal``).
    time
        Keep the edges leaving this time point (``time_from``; edges without a time apply at
        every time point and are kept).
    cell_type
        Keep the edges whose source or target cell type is this one.

    Returns
    -------
    pandas.DataFrame
        The ``edges`` schema: layer, condition, source/target cell type, time_from, time_to,
        source, target, weight, stability.
    """
    from omicstwin.schemas import conform

    if isinstance(data, pd.DataFrame):
        table = results(data, key="")
    else:
        keys = [key] if isinstance(key, str) else list(key)
        if key == ("grn", "intercellular", "temporal"):  # the default: what is there
            present = [k for k in keys if _has(data, k)]
            keys = present or keys[:1]  # none present: the error names the first
        frames = [results(data, key=k) for k in keys]
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        table = conform(table, "edges")
    table = _select(table, "layer", layer)
    if time is not None:
        table = table[(table["time_from"] == time) | table["time_from"].isna()]
    if cell_type is not None:
        table = table[
            (table["source_cell_type"] == cell_type) | (table["target_cell_type"] == cell_type)
        ]
    return table.reset_index(drop=True)


def _has(data: Any, key: str) -> bool:
    try:
        _entry(data, key)
    except MissingKeyError:
        return False
    return True
