"""Number, time and text formatting of the plots' labels (the report's tables use them too)."""

from __future__ import annotations

from typing import Any

DASH = "–"  # shown for missing values (NaN, None)


def is_missing(value: Any) -> bool:
    """Return True for None and float NaN (pandas NA included)."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and pd.NA are not equal to themselves
    except (TypeError, ValueError):
        return False


def fmt_p(value: Any) -> str:
    """Format a p- or q-value in scientific notation with 3 significant digits."""
    if is_missing(value):
        return DASH
    value = float(value)
    if value == 0:
        return "0"
    return f"{value:.2e}"


def fmt_time(value: Any, unit: str | None) -> str:
    """Format a time point (``6 h``); NaN means "used at every time point"."""
    if is_missing(value):
        return "all times"
    text = f"{float(value):g}"
    return f"{text} {unit}" if unit else f"t={text}"


def truncate(text: Any, n: int = 40) -> str:
    """Cut a long string to ``n`` characters with an ellipsis."""
    if is_missing(text):
        return DASH
    text = str(text)
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"
