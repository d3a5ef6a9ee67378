"""Number, time and text formatting shared by the report's tables and figures."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# the plots' label formats, shared by the report's tables
from omicstwin.pl._format import DASH, fmt_p, fmt_time, is_missing, truncate  # noqa: F401


def fmt_num(value: Any, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits; integers stay whole.

    Large magnitudes are written in full with thousands separators rather than ``1.23e+04``,
    because readers compare counts and seconds, not their exponents.
    """
    if is_missing(value):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value != 0 and abs(value) >= 10**digits:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    text = f"{value:.{digits}g}"
    return text.replace("-", "−")


def fmt_seconds(value: Any) -> str:
    """Format a duration in seconds."""
    if is_missing(value):
        return DASH
    return f"{float(value):,.1f} s"


def time_unit_of(run: dict[str, Any]) -> str | None:
    """Return the time unit: the config's ``time_unit``, else the one the cohort line names.

    The pipeline may read the unit from the data (``uns["time_unit"]``) without writing it back
    into the config; the cohort one-liner (``"... (0 h .. 48 h) ..."``) still carries it.
    """
    unit = run.get("time_unit") or (run.get("config") or {}).get("time_unit")
    if unit:
        return str(unit)
    match = re.search(r"\(\s*-?[\d.]+\s*([A-Za-z]+)\s*\.\.", str(run.get("cohort", "")))
    return match.group(1) if match else None


def fmt_context(cell_type: Any, time: Any, unit: str | None) -> str:
    """``CD14 Mono @ 6 h``."""
    if is_missing(cell_type) and is_missing(time):
        return DASH
    return f"{DASH if is_missing(cell_type) else cell_type} @ {fmt_time(time, unit)}"


def fmt_genes(genes: Any, n: int = 5) -> str:
    """``A;B;C;...`` -> ``A, B, C, D, E … (+12)`` (long gene lists truncated)."""
    if is_missing(genes) or str(genes) == "":
        return DASH
    items = [g for g in str(genes).split(";") if g]
    shown = ", ".join(items[:n])
    return shown if len(items) <= n else f"{shown} … (+{len(items) - n})"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 gene`` / ``3 genes``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def join_words(items: Iterable[str]) -> str:
    """Join words as ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def short_sha(sha: Any, n: int = 12) -> str:
    """Return the first ``n`` hex digits of a checksum and an ellipsis (full one: Provenance)."""
    return DASH if is_missing(sha) or not str(sha) else f"{str(sha)[:n]}…"


def describe_data(run: dict[str, Any]) -> dict[str, str]:
    """Describe the run's input data for the header and the methods.

    Returns ``label`` (what the data is: ``simulated cohort (preset demo, seed 0)``, a path or
    ``manifest:NAME``), ``file`` (the input file's name, from run.json ``inputs``), ``sha256``
    (its short checksum) and ``title`` (a short name for the report title).
    """
    data = (run.get("config") or {}).get("data")
    inputs = run.get("inputs") or {}
    path, sha = None, None
    if inputs:
        # the input recorded for this data: the same path, else the only (first) one
        key = str(data) if isinstance(data, str) and str(data) in inputs else next(iter(inputs))
        path, sha = key, inputs[key]
    file = Path(path).name if path else (Path(str(data)).name if data else DASH)
    if isinstance(data, dict):
        details = [f"preset {data.get('simulate', '?')}"]
        if not is_missing(data.get("seed")):
            details.append(f"seed {data['seed']}")
        if not is_missing(data.get("n_cells")):
            details.append(f"{fmt_num(data['n_cells'])} cells")
        label = f"simulated cohort ({', '.join(details)})"
        title = f"simulated {data.get('simulate', 'cohort')} cohort"
    elif data:
        label = str(data)
        title = str(data) if str(data).startswith("manifest:") else file
    else:
        label, title = DASH, file
    return {
        "label": label,
        "file": file,
        "path": str(path) if path else "",
        "sha256": short_sha(sha) if sha else "",
        "title": title,
    }
