"""The p-value histogram of a screen's own null (``null_calibration`` table, omicstwin.tl.nulls).

Only draws the table the run wrote; it recomputes no statistic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _table(data: Any, key: str) -> pd.DataFrame:
    from omicstwin.get import results

    return results(data, key=key)


def null_calibration(
    data: Any,
    *,
    key: str = "null_calibration",
    screens: list[str] | None = None,
    ax: Axes | None = None,
) -> Figure | None:
    """P-value histograms of the run's screens against the uniform null.

    One panel per screen (``targets``, ``drugs``, ``patients``): bars are the observed counts
    per p-value bin, the dashed line the count expected if no test carried signal (uniform
    p-values). Each panel is annotated with the share of p < 0.05 and the number of
    permutations behind the p-values (the smallest attainable p is ``1 / (n + 1)``).

    Parameters
    ----------
    data
        A ``null_calibration`` table (run directory parquet), or an AnnData/MuData holding one
        under ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    screens
        Screens to draw, in order (default: the table's, in order of appearance).
    ax
        Draw into these axes (then only the first screen is drawn); default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the table has no p-values.
    """
    table = _table(data, key)
    if table.empty:
        return None
    table = table[table["n_tests"] > 0]
    order = list(dict.fromkeys(table["screen"].astype(str)))
    if screens is not None:
        order = [s for s in screens if s in set(order)]
    if not order:
        return None
    if ax is not None:
        order = order[:1]
        axes = [ax]
        fig = ax.figure
    else:
        fig = Figure(figsize=(3.2 * len(order), 2.9), layout="constrained")
        axes = fig.subplots(1, len(order), squeeze=False)[0].tolist()
    for axis, screen in zip(axes, order, strict=True):
        rows = table[table["screen"].astype(str) == screen].sort_values("bin_low")
        low = rows["bin_low"].to_numpy(float)
        high = rows["bin_high"].to_numpy(float)
        axis.bar(
            low,
            rows["n_observed"].to_numpy(float),
            width=high - low,
            align="edge",
            color="#4c72b0",
            edgecolor="white",
            linewidth=0.5,
            label="observed",
        )
        axis.step(
            np.r_[low, high[-1:]],
            np.r_[rows["n_expected"].to_numpy(float), rows["n_expected"].to_numpy(float)[-1:]],
            where="post",
            color="#c44e52",
            linestyle="--",
            linewidth=1.2,
            label="expected (uniform)",
        )
        first = rows.iloc[0]
        share = float(first["share_below_005"])
        n_perm = int(first["n_permutations"])
        method = str(first["method"]).replace("_", " ")
        axis.text(
            0.99,
            0.97,
            f"p < 0.05: {share:.1%} (5% by chance)\n{int(first['n_tests']):,} tests; "
            f"{n_perm:,} permutations\nnull: {method}",
            transform=axis.transAxes,
            ha="right",
            va="top",
            fontsize="small",
        )
        top = max(rows["n_observed"].max(), rows["n_expected"].max())
        axis.set_ylim(0, 1.7 * top if top > 0 else 1)  # room for the annotation and legend
        axis.set_xlim(0, 1)
        axis.set_title(screen)
        axis.set_xlabel("p-value")
        axis.set_ylabel("tests")
    if ax is None:  # one legend below the panels, clear of the annotations
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    else:
        axes[0].legend(loc="upper left", fontsize="x-small", frameon=False)
    return fig


def calibration_reading(table: pd.DataFrame, screen: str) -> str:
    """One sentence reading a screen's histogram (excess of small p-values or flat)."""
    rows = table[table["screen"].astype(str) == screen]
    if rows.empty or int(rows["n_tests"].iloc[0]) == 0:
        return f"{screen}: no p-values."
    share = float(rows["share_below_005"].iloc[0])
    n_perm = int(rows["n_permutations"].iloc[0])
    floor = 1.0 / (n_perm + 1) if n_perm > 0 else float("nan")
    if n_perm > 0 and floor >= 0.05:
        return (
            f"{screen}: with {n_perm:,} permutations no p-value can be below {floor:.2g}, so no "
            "test can reach p < 0.05 and the histogram cannot show signal there; read its "
            "ranks, not its p-values."
        )
    if share >= 0.10:
        verdict = (
            f"an excess of small p-values ({share:.0%} below 0.05 against 5% by chance): the "
            "screen finds more than chance would"
        )
    elif share <= 0.025:
        verdict = (
            f"fewer small p-values than chance ({share:.0%} below 0.05): the screen is "
            "conservative or underpowered here"
        )
    else:
        verdict = (
            f"a flat histogram ({share:.0%} below 0.05, about the 5% of chance): no more small "
            "p-values than chance"
        )
    tail = f"; with {n_perm:,} permutations no p-value can be below {floor:.2g}" if n_perm else ""
    return f"{screen}: {verdict}{tail}."
