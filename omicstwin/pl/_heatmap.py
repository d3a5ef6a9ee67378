"""Shared drawing: the annotated heatmap, colour scales, pivots and palettes of :mod:`omicstwin.pl`.

Figures are built on :class:`matplotlib.figure.Figure` directly (never pyplot), so plotting
neither selects a backend nor leaves figures or rc changes behind in the caller's session.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from omicstwin.pl._format import fmt_time

MAX_WIDTH_IN = 12.5  # widest figure, so it fits a report page without being scaled down much
MISSING_COLOUR = "#e6e6e6"
UP_COLOUR = "#b2182b"
DOWN_COLOUR = "#2166ac"


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """Return a new constrained-layout figure of ``size`` inches with one axes, or ``ax``'s."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def context_columns(times: Sequence[float], cell_types: Sequence[str]) -> list[tuple[float, str]]:
    """Columns ordered time first, then cell type (how the time course reads left to right)."""
    return [(t, c) for t in times for c in cell_types]


def diverging_norm(values: np.ndarray) -> mcolors.Normalize:
    """Return a colour scale symmetric around 0, so white means no change."""
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    return mcolors.Normalize(vmin=-limit, vmax=limit)


def heatmap(
    values: np.ndarray,
    *,
    row_labels: Sequence[str],
    columns: Sequence[tuple[float, str]] | None = None,
    col_labels: Sequence[str] | None = None,
    unit: str | None = None,
    row_groups: Sequence[tuple[str, int, int]] = (),
    cmap: str = "viridis",
    norm: mcolors.Normalize | None = None,
    annotations: np.ndarray | None = None,
    markers: np.ndarray | None = None,
    colorbar_label: str = "",
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Draw a heatmap with optional time-grouped columns and labelled row groups.

    Parameters
    ----------
    values
        Rows x columns; NaN cells are drawn grey (no data).
    row_labels
        One label per row.
    columns
        ``(time, cell_type)`` per column: columns are labelled by cell type, and grouped by time
        with separators and the time above. Give ``col_labels`` instead for plain columns.
    col_labels
        Plain column labels (when ``columns`` is None).
    unit
        Time unit for the group labels.
    row_groups
        ``(label, start, stop)`` row ranges (e.g. arms) separated by lines, labelled at right.
    cmap, norm
        Colour map and its normalisation.
    annotations
        Text per cell (rows x columns of str; "" for none).
    markers
        Boolean rows x columns: a dot in the cell (e.g. "significant").
    colorbar_label, xlabel, ylabel, title
        Labels.
    ax
        Draw into these axes (their figure gets the colour bar); default: a new figure sized
        to the cells.

    Returns
    -------
    matplotlib.figure.Figure
    """
    n_rows, n_cols = values.shape
    if columns is not None:
        col_labels = [str(c) for _, c in columns]
    col_labels = list(col_labels or [""] * n_cols)
    longest_col = max((len(c) for c in col_labels), default=1)
    longest_row = max((len(r) for r in row_labels), default=1)
    # cells shrink as they multiply, within limits that keep labels and annotations legible
    cell_w = _clamp(8.5 / max(n_cols, 1), 0.17, 0.55)
    cell_h = _clamp(6.5 / max(n_rows, 1), 0.17, 0.34)
    width = n_cols * cell_w + 0.065 * longest_row + 2.0
    height = n_rows * cell_h + 0.06 * longest_col + (1.3 if columns is not None else 0.9)
    fig, ax = _figure(ax, (min(width, MAX_WIDTH_IN), height))
    cmap_obj = _with_missing(cmap)
    masked = np.ma.masked_invalid(values.astype(float))
    image = ax.imshow(masked, aspect="auto", cmap=cmap_obj, norm=norm, interpolation="nearest")
    ax.set_xticks(np.arange(n_cols), col_labels, rotation=90)
    ax.set_yticks(np.arange(n_rows), row_labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if columns is not None:
        _time_group_axis(ax, columns, unit)
    if row_groups:
        _row_group_axis(ax, row_groups)
    if annotations is not None:
        _annotate_cells(ax, image, masked, annotations, _clamp(cell_w * 72 * 0.42, 5.5, 8))
    if markers is not None:
        rows, cols = np.nonzero(markers)
        if rows.size:
            ax.scatter(cols, rows, s=22, c="black", marker="o", edgecolors="white", linewidths=0.8)
    bar = fig.colorbar(image, ax=ax, shrink=min(1.0, 3.0 / max(height, 1)), aspect=15, pad=0.02)
    bar.set_label(colorbar_label)
    bar.outline.set_visible(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


def _time_group_axis(ax: Axes, columns: Sequence[tuple[float, str]], unit: str | None) -> None:
    """Separate the columns of each time point and name the time above them.

    Parameters
    ----------
    ax
        The heatmap's axes.
    columns
        ``(time, cell_type)`` per column, grouped by time.
    unit
        Time unit of the labels.
    """
    groups = _runs([t for t, _ in columns])
    for start, _stop in groups[1:]:
        ax.axvline(start - 0.5, color="white", lw=2.5)
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        [(start + stop - 1) / 2 for start, stop in groups],
        [fmt_time(columns[start][0], unit) for start, _ in groups],
    )
    top.tick_params(length=0, labelsize=8)
    for spine in top.spines.values():
        spine.set_visible(False)
    top.set_xlabel(f"time ({unit})" if unit else "time point")


def _row_group_axis(ax: Axes, row_groups: Sequence[tuple[str, int, int]]) -> None:
    """Separate the row groups and name each at the right.

    Parameters
    ----------
    ax
        The heatmap's axes.
    row_groups
        ``(label, start, stop)`` row ranges.
    """
    for _, start, _stop in row_groups[1:]:
        ax.axhline(start - 0.5, color="white", lw=2.5)
    right = ax.secondary_yaxis("right")
    right.set_yticks(
        [(start + stop - 1) / 2 for _, start, stop in row_groups],
        [label for label, _, _ in row_groups],
        rotation=90,
        va="center",
    )
    right.tick_params(length=0, labelsize=8)
    for spine in right.spines.values():
        spine.set_visible(False)


def _annotate_cells(
    ax: Axes, image, masked: np.ma.MaskedArray, annotations: np.ndarray, font: float
) -> None:
    """Write each cell's text, white on dark colours and black on light ones.

    Parameters
    ----------
    ax
        The heatmap's axes.
    image
        The heatmap's image (its colours decide the text colour).
    masked
        The values drawn, NaN masked.
    annotations
        Text per cell ("" for none).
    font
        Font size.
    """
    n_rows, n_cols = masked.shape
    rgba = image.to_rgba(masked)
    for i in range(n_rows):
        for j in range(n_cols):
            text = annotations[i, j]
            if text:
                dark = _luminance(rgba[i, j]) < 0.5 and not np.ma.is_masked(masked[i, j])
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if dark else "black",
                    in_layout=False,  # inside the axes: the layout need not measure them
                )


def _with_missing(cmap: str) -> mcolors.Colormap:
    from matplotlib import colormaps

    return colormaps[cmap].with_extremes(bad=MISSING_COLOUR)


def _luminance(rgba: Sequence[float]) -> float:
    r, g, b = rgba[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _runs(keys: Sequence[object]) -> list[tuple[int, int]]:
    """Return consecutive runs of equal keys: ``[a, a, b]`` -> ``[(0, 2), (2, 3)]``."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            runs.append((start, i))
            start = i
    return runs


def donor_rows(frame: pd.DataFrame, *, donor: str, arm: str) -> tuple[list[str], list]:
    """Donors ordered by arm (case first when present), and the arms' row ranges."""
    pairs = frame[[arm, donor]].drop_duplicates().astype(str)
    arms = sorted(pairs[arm].unique(), key=lambda a: (a != "case", a))
    order: list[str] = []
    groups = []
    for name in arms:
        members = sorted(pairs.loc[pairs[arm] == name, donor])
        groups.append((name, len(order), len(order) + len(members)))
        order += members
    return order, groups


def _pivot(
    frame: pd.DataFrame,
    index: str,
    columns: Sequence[tuple[float, str]],
    value: str,
    rows: Sequence[str],
) -> np.ndarray:
    """Rows x (time, cell type) matrix of ``value`` (NaN where the table has no row)."""
    table = frame.pivot_table(
        index=index, columns=["time", "cell_type"], values=value, aggfunc="first", dropna=False
    )
    table.index = table.index.astype(str)
    keys = pd.MultiIndex.from_tuples(list(columns), names=["time", "cell_type"])
    table = table.reindex(index=list(rows), columns=keys)
    return table.to_numpy(dtype=float)


def cell_type_colours(cell_types: Sequence[str]) -> dict[str, tuple]:
    """Return a fixed colour per cell type (tab10, then tab20 for more than 10)."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(cell_types) <= 10 else "tab20"]
    return {c: palette(i % palette.N) for i, c in enumerate(cell_types)}
