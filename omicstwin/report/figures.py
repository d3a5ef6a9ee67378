"""The report's figures: matplotlib (Agg) figures from run-directory tables, embedded as PNG.

Every function takes tables as they were read from the run directory and only sorts, filters
and pivots them for display; none recomputes a statistic. Figures are built on
:class:`matplotlib.figure.Figure` directly (never pyplot), so making a report neither selects a
backend nor leaves figures or rc changes behind in the caller's session.

PNG rather than SVG: the heatmaps have thousands of cells, which as SVG paths weigh megabytes
and slow the browser, while a PNG at 1.5x the displayed size stays sharp on high-density
screens and small (tens of kB).
"""

from __future__ import annotations

import base64
import io
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from markupsafe import Markup, escape
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from omicstwin.report._format import fmt_p, fmt_time, is_missing, truncate
from omicstwin.scores import sort_by_score

DPI = 144  # PNG pixels per inch
CSS_PPI = 96  # CSS pixels per inch: images are shown at 96/144 of their pixel size (crisp)
MAX_WIDTH_IN = 12.5  # widest figure, so it fits the page without being scaled down much
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.dpi": 100,
    "svg.hashsalt": "omicstwin",
    "axes.spines.top": False,
    "axes.spines.right": False,
}
MISSING_COLOUR = "#e6e6e6"
UP_COLOUR = "#b2182b"
DOWN_COLOUR = "#2166ac"


@dataclass(frozen=True)
class EmbeddedFigure:
    """A rendered figure: an ``<img>`` tag with a PNG data URI, and its description."""

    html: Markup
    alt: str
    width_px: int
    height_px: int


def embed(fig: Figure, alt: str) -> EmbeddedFigure:
    """Render ``fig`` to PNG and wrap it in an ``<img>`` with a data URI.

    The PNG carries no timestamp or software metadata, so identical figures give identical
    bytes (the report is reproducible). No ``bbox_inches="tight"``: the figures use the
    constrained layout, which already keeps every label inside; the layout runs once, within
    the figure's only draw.
    """
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # one draw: ``savefig`` would first draw the whole figure without rendering just to run
    # the layout engine, which the draw below runs anyway (half the time of a figure)
    fig.set_dpi(DPI)
    fig.set_facecolor("white")
    # zlib level 3 instead of 6: the same pixels, files ~5 % larger, encoded twice as fast
    canvas.print_png(buffer, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    data = buffer.getvalue()
    width, height = struct.unpack(">II", data[16:24])  # the PNG IHDR chunk
    css_w, css_h = round(width * CSS_PPI / DPI), round(height * CSS_PPI / DPI)
    encoded = base64.b64encode(data).decode("ascii")
    html = Markup(
        f'<img src="data:image/png;base64,{encoded}" width="{css_w}" height="{css_h}" '
        f'alt="{escape(alt)}">'
    )
    return EmbeddedFigure(html=html, alt=alt, width_px=css_w, height_px=css_h)


# ---------------------------------------------------------------------------------------------
# heatmaps


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
    cell_w = _clamp(8.5 / max(n_cols, 1), 0.17, 0.55)
    cell_h = _clamp(6.5 / max(n_rows, 1), 0.17, 0.34)
    width = n_cols * cell_w + 0.065 * longest_row + 2.0
    height = n_rows * cell_h + 0.06 * longest_col + (1.3 if columns is not None else 0.9)
    fig = Figure(figsize=(min(width, MAX_WIDTH_IN), height), layout="constrained")
    ax = fig.add_subplot()
    cmap_obj = _with_missing(cmap)
    masked = np.ma.masked_invalid(values.astype(float))
    image = ax.imshow(masked, aspect="auto", cmap=cmap_obj, norm=norm, interpolation="nearest")
    ax.set_xticks(np.arange(n_cols), col_labels, rotation=90)
    ax.set_yticks(np.arange(n_rows), row_labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if columns is not None:
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
    if row_groups:
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
    if annotations is not None:
        font = _clamp(cell_w * 72 * 0.42, 5.5, 8)
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


# ---------------------------------------------------------------------------------------------
# the sections' figures


def design_figure(
    design: pd.DataFrame, *, times: Sequence[float], cell_types: Sequence[str], unit: str | None
) -> Figure:
    """Cells per donor (rows, grouped by arm) x time x cell type (columns)."""
    donors, groups = donor_rows(design, donor="donor", arm="condition")
    columns = context_columns(times, cell_types)
    values = _pivot(design, "donor", columns, "n_cells", donors)
    annotations = None
    if values.size <= 700:
        annotations = np.where(np.isfinite(values), np.nan_to_num(values).astype(int), 0)
        annotations = np.where(np.isfinite(values), annotations.astype(str), "")
    return heatmap(
        values,
        row_labels=donors,
        columns=columns,
        unit=unit,
        row_groups=groups,
        cmap="Blues",
        annotations=annotations,
        colorbar_label="cells",
        xlabel="cell type",
        ylabel="donor",
    )


def de_counts_figure(
    de: pd.DataFrame, *, times: Sequence[float], cell_types: Sequence[str], unit: str | None
) -> Figure:
    """Genes with q < 0.05 per cell type x time, annotated with counts up / down."""
    significant = de["q_value"] < 0.05
    frame = de.assign(
        n=significant.astype(int),
        up=(significant & (de["log_fc"] > 0)).astype(int),
        down=(significant & (de["log_fc"] < 0)).astype(int),
    )
    counts = frame.groupby(["cell_type", "time"], observed=True)[["n", "up", "down"]].sum()
    index = pd.MultiIndex.from_product([list(cell_types), list(times)])
    counts = counts.reindex(index)  # untested contexts stay NaN (grey)
    shape = (len(cell_types), len(times))
    n = counts["n"].to_numpy(dtype=float).reshape(shape)
    up = counts["up"].to_numpy(dtype=float).reshape(shape)
    down = counts["down"].to_numpy(dtype=float).reshape(shape)
    annotations = np.full(shape, "", dtype=object)
    for i in range(shape[0]):
        for j in range(shape[1]):
            if np.isfinite(n[i, j]):
                annotations[i, j] = f"{int(n[i, j])}\n↑{int(up[i, j])} ↓{int(down[i, j])}"
            else:
                annotations[i, j] = "not\ntested"
    fig = heatmap(
        n,
        row_labels=list(cell_types),
        col_labels=[fmt_time(t, unit) for t in times],
        cmap="Reds",
        norm=mcolors.Normalize(vmin=0, vmax=max(1.0, float(np.nanmax(n)) if n.size else 1.0)),
        annotations=annotations,
        colorbar_label="genes with q < 0.05",
        xlabel=f"time ({unit})" if unit else "time point",
        ylabel="cell type",
    )
    # the counts need more room than the default cells: widen them for two-line annotations
    w, h = fig.get_size_inches()
    fig.set_size_inches(max(w, 1.0 * len(times) + 3.0), max(h, 0.5 * len(cell_types) + 1.2))
    for ax in fig.axes[:1]:
        ax.tick_params(axis="x", labelrotation=0)
    return fig


def cell_type_colours(cell_types: Sequence[str]) -> dict[str, tuple]:
    """Return a fixed colour per cell type (tab10, then tab20 for more than 10)."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(cell_types) <= 10 else "tab20"]
    return {c: palette(i % palette.N) for i, c in enumerate(cell_types)}


def network_figure(
    edges: pd.DataFrame,
    *,
    times: Sequence[float],
    cell_types: Sequence[str],
    unit: str | None,
    top_n: int = 20,
    n_labels: int = 3,
) -> Figure | None:
    """One panel per time point: cell types as nodes, the strongest ligand -> receptor edges.

    Intercellular edges with a NaN time apply at every time point and are drawn in every
    panel. Arrow width is the summed |weight| of the pair's edges among the ``top_n``
    strongest of the panel (same scale in all panels); colour is the sign of that sum; node
    area is the number of intracellular edges of the cell type at that time point.
    """
    import networkx as nx

    layer = edges["layer"]
    inter = edges[(layer == "intercellular").fillna(False).to_numpy(dtype=bool)]
    intra = edges.loc[
        (layer == "intracellular").fillna(False).to_numpy(dtype=bool),
        ["time_from", "target_cell_type"],
    ]
    if inter.empty and intra.empty:
        return None
    panel_times: list[float] = list(times) or [math.nan]
    nodes = list(cell_types)
    positions = nx.circular_layout(nodes)  # deterministic, every panel the same
    colours = cell_type_colours(nodes)

    def at(frame: pd.DataFrame, t: float) -> pd.DataFrame:
        if math.isnan(t):
            return frame
        return frame[(frame["time_from"] == t) | frame["time_from"].isna()]

    # intracellular edges per (time, cell type) once; a panel adds the untimed ones
    has_time = intra["time_from"].notna().to_numpy()
    untimed_counts = intra[~has_time].groupby("target_cell_type", observed=True).size()
    timed_counts = intra[has_time].groupby(["time_from", "target_cell_type"], observed=True).size()

    def intra_at(t: float) -> pd.Series:
        if math.isnan(t):
            return intra.groupby("target_cell_type", observed=True).size()
        if t in timed_counts.index.get_level_values(0):
            at_t = timed_counts.xs(t, level=0)
        else:
            at_t = timed_counts.iloc[:0].droplevel(0)
        return at_t.add(untimed_counts, fill_value=0)

    panels = []
    for t in panel_times:
        sub = at(inter, t)
        top = sort_by_score(  # strongest |weight| first
            sub.assign(strength=sub["weight"].abs()),
            "weight",
            table="edges",
            tie_break=["source_cell_type", "target_cell_type", "source", "target"],
        ).head(top_n)
        intra_counts = intra_at(t)
        panels.append((t, top, intra_counts))
    max_strength = max(
        [
            float(
                top.groupby(["source_cell_type", "target_cell_type"], observed=True)
                .strength.sum()
                .max()
            )
            for _, top, _ in panels
            if not top.empty
        ]
        or [1.0]
    )
    max_intra = max([float(c.max()) for _, _, c in panels if len(c)] or [1.0])

    n_panels = len(panels) + 1  # the last panel is the legend
    n_cols = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig = Figure(figsize=(4.1 * n_cols, 4.4 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (t, top, intra_counts) in zip(axes, panels, strict=False):
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        pairs = (
            top.groupby(["source_cell_type", "target_cell_type"], observed=True)
            .agg(strength=("strength", "sum"), signed=("weight", "sum"))
            .reset_index()
        )
        for row in pairs.itertuples(index=False):
            graph.add_edge(row.source_cell_type, row.target_cell_type, **row._asdict())
        sizes = [
            250 + 1100 * float(intra_counts.get(n, 0)) / max_intra if max_intra else 250
            for n in nodes
        ]
        nx.draw_networkx_nodes(
            graph,
            positions,
            nodelist=nodes,
            node_size=sizes,
            node_color=[colours[n] for n in nodes],
            edgecolors="white",
            ax=ax,
        )
        edge_list = list(graph.edges(data=True))
        if edge_list:
            nx.draw_networkx_edges(
                graph,
                positions,
                edgelist=[(s, d) for s, d, _ in edge_list],
                width=[0.8 + 5.0 * a["strength"] / max_strength for _, _, a in edge_list],
                edge_color=[UP_COLOUR if a["signed"] >= 0 else DOWN_COLOUR for *_, a in edge_list],
                alpha=0.75,
                arrows=True,
                arrowstyle="-|>",
                arrowsize=11,
                connectionstyle="arc3,rad=0.15",
                node_size=sizes,
                nodelist=nodes,
                ax=ax,
            )
            # numbered markers on the arrows, spelled out under the panel: ligand names on the
            # arrows themselves collide with nodes and with each other
            numbers: dict[tuple[str, str], list[str]] = {}
            legend_lines = []
            for i, row in enumerate(top.head(n_labels).itertuples(index=False), start=1):
                key = (row.source_cell_type, row.target_cell_type)
                numbers.setdefault(key, []).append(str(i))
                always = ", all times" if is_missing(row.time_from) else ""
                legend_lines.append(
                    f"{i}: {row.source}→{row.target} "
                    f"({row.source_cell_type}→{row.target_cell_type}, {row.weight:.2g}{always})"
                )
            nx.draw_networkx_edge_labels(
                graph,
                positions,
                edge_labels={k: ",".join(v) for k, v in numbers.items()},
                font_size=7,
                font_weight="bold",
                bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "#333333", "lw": 0.6},
                connectionstyle="arc3,rad=0.15",
                node_size=sizes,
                nodelist=nodes,
                rotate=False,
                ax=ax,
            )
            ax.text(
                0.0,
                0.0,
                "\n".join(legend_lines),
                transform=ax.transAxes,
                ha="left",
                va="top",
                fontsize=7.5,
                color="#333333",
            )
        for node in nodes:
            x, y = positions[node]
            r = math.hypot(x, y) or 1.0
            # labels sit outside the ring, aligned away from it so they never cover a node
            lx, ly = 1.3 * x / r, 1.3 * y / r
            ha = "left" if lx > 0.35 else "right" if lx < -0.35 else "center"
            va = "bottom" if ly > 0.35 else "top" if ly < -0.35 else "center"
            if ha != "center":
                va = "center" if abs(ly) < 0.9 else va
            ax.text(lx, ly, node, ha=ha, va=va, fontsize=7.5, color="#222222")
        ax.set_xlim(-2.0, 2.0)
        ax.set_ylim(-1.55, 1.55)
        ax.set_aspect("equal")
        ax.set_axis_off()
        n_edges = len(top)
        ax.set_title(
            f"{fmt_time(t, unit)}: top {n_edges} ligand→receptor edges"
            if n_edges
            else f"{fmt_time(t, unit)}: no intercellular edges"
        )
    legend_ax = axes[len(panels)]
    _network_legend(legend_ax, top_n=top_n, n_labels=n_labels)
    for ax in axes[len(panels) + 1 :]:
        ax.set_axis_off()
    return fig


def _network_legend(ax, *, top_n: int, n_labels: int) -> None:
    from matplotlib.lines import Line2D

    ax.set_axis_off()
    handles = [
        Line2D([], [], color=UP_COLOUR, lw=3, label="ligand up in disease (weight > 0)"),
        Line2D([], [], color=DOWN_COLOUR, lw=3, label="ligand down in disease (weight < 0)"),
        Line2D([], [], color="grey", lw=0.8, label="thin: weak"),
        Line2D([], [], color="grey", lw=5.8, label="thick: strong (summed |weight|)"),
        Line2D(
            [], [], marker="o", ls="", color="grey", markersize=5, label="small node: few edges"
        ),
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color="grey",
            markersize=12,
            label="large node: many intracellular edges",
        ),
    ]
    ax.legend(handles=handles, loc="center", frameon=False, title="How to read", fontsize=7.5)
    ax.text(
        0.5,
        0.02,
        f"Arrows: sender → receiver, from the {top_n} strongest\n"
        f"edges of the time point; the {n_labels} strongest are\n"
        "numbered and named under the panel. Loops: autocrine.",
        transform=ax.transAxes,
        ha="center",
        va="bottom",
        fontsize=7,
        color="#444444",
    )


def regulator_figure(
    regulators: pd.DataFrame,
    rank_regulators: pd.DataFrame | None,
    *,
    times: Sequence[float],
    cell_types: Sequence[str],
    unit: str | None,
    n: int = 25,
) -> tuple[Figure, int] | None:
    """Regulator x (time, cell type) activation z-scores, as in Li et al. 2022 (Fig. 3).

    Rows are the ``n`` best-ranked regulators of ``rank_regulators``; when fewer are ranked
    (predicted in no context), the remaining rows are the regulators with the smallest overlap
    p-values, unnumbered. Dots mark the contexts where the regulator is predicted
    (``overlap_q < 0.05``, or ``overlap_p`` when the table has no q).

    Returns
    -------
    (Figure, number of ranked rows) or None when there is nothing to show.
    """
    if regulators.empty:
        return None
    ranked: list[str] = []
    if rank_regulators is not None and not rank_regulators.empty:
        ranked = (
            rank_regulators.sort_values("rank", kind="stable")["regulator"].astype(str).tolist()
        )
        known = set(regulators["regulator"].astype(str).unique())
        ranked = [r for r in ranked if r in known][:n]
    extra: list[str] = []
    if len(ranked) < n:
        by_p = sort_by_score(regulators, "overlap_p", table="regulators", tie_break=["regulator"])
        for name in by_p["regulator"].astype(str).drop_duplicates():
            if name not in ranked:
                extra.append(name)
            if len(ranked) + len(extra) >= n:
                break
    rows = ranked + extra
    columns = context_columns(times, cell_types)
    frame = regulators.assign(regulator=regulators["regulator"].astype(str))
    values = _pivot(frame, "regulator", columns, "z_score", rows)
    q_column = "overlap_q" if "overlap_q" in frame.columns else "overlap_p"
    significance = _pivot(frame, "regulator", columns, q_column, rows)
    markers = np.nan_to_num(significance, nan=1.0) < 0.05
    labels = [f"{i + 1}. {r}" for i, r in enumerate(ranked)] + [f"({r})" for r in extra]
    fig = heatmap(
        values,
        row_labels=labels,
        columns=columns,
        unit=unit,
        row_groups=[("ranked", 0, len(ranked)), ("unranked", len(ranked), len(rows))]
        if ranked and extra
        else (),
        cmap="RdBu_r",
        norm=diverging_norm(values),
        markers=markers,
        colorbar_label="activation z-score",
        xlabel="cell type",
        ylabel="upstream regulator",
    )
    return fig, len(ranked)


def rank_bars(
    ranking: pd.DataFrame, *, n: int = 20, label: str = "name", xlabel: str = "score"
) -> Figure | None:
    """Horizontal bars of the top ``n`` scores, dark when q < 0.05."""
    top = ranking.sort_values("rank", kind="stable").head(n)
    if top.empty:
        return None
    names = [truncate(str(x).removeprefix("KO:"), 28) for x in top[label]]
    q = top["q_value"].to_numpy(dtype=float)
    significant = np.nan_to_num(q, nan=1.0) < 0.05
    fig = Figure(figsize=(6.5, 0.24 * len(top) + 1.0), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(top))
    ax.barh(y, top["score"], color=np.where(significant, "#1b7837", "#a6dba0"), height=0.72)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.axvline(0, color="#555555", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="#1b7837", label="q < 0.05"),
            Patch(color="#a6dba0", label="q ≥ 0.05 or not tested"),
        ],
        loc="lower right",
        frameon=False,
    )
    return fig


def perturbation_figure(
    perturbations: pd.DataFrame,
    rank_targets: pd.DataFrame | None,
    *,
    times: Sequence[float],
    cell_types: Sequence[str],
    unit: str | None,
    n: int = 20,
) -> Figure | None:
    """Top ``n`` perturbations x (time, cell type) reversal scores.

    The perturbations are taken in the order of the target ranking when it names them, else
    by their best reversal score in any context.
    """
    if perturbations.empty:
        return None
    ids = perturbations["perturbation_id"].astype(str)
    present = set(ids)
    order: list[str] = []
    if rank_targets is not None and not rank_targets.empty:
        ranked = rank_targets.sort_values("rank", kind="stable")["name"].astype(str)
        order = [x for x in ranked if x in present][:n]
    if len(order) < n:
        best = (
            perturbations.assign(perturbation_id=ids)
            .groupby("perturbation_id")["reversal_score"]
            .max()
            .reset_index()
        )
        best = sort_by_score(best, "reversal_score", table="perturbations")["perturbation_id"]
        order += [x for x in best if x not in order][: n - len(order)]
    frame = perturbations.assign(perturbation_id=ids)
    columns = context_columns(times, cell_types)
    values = _pivot(frame, "perturbation_id", columns, "reversal_score", order)
    q = frame.drop_duplicates("perturbation_id").set_index("perturbation_id")["q_value"]
    labels = [f"{truncate(x, 26)}  (q {fmt_p(q.get(x))})" for x in order]
    return heatmap(
        values,
        row_labels=labels,
        columns=columns,
        unit=unit,
        cmap="PiYG",
        norm=diverging_norm(values),
        colorbar_label="reversal score (1 = disease fully reversed)",
        xlabel="cell type",
        ylabel="perturbation (study-level q)",
    )


def patient_rank_figure(patients: pd.DataFrame, *, top: int = 5) -> Figure | None:
    """Patient x target ranks for the union of every patient's top ``top`` targets."""
    if patients.empty:
        return None
    frame = patients.assign(
        patient_id=patients["patient_id"].astype(str), target=patients["target"].astype(str)
    )
    best = frame[frame["rank"] <= top]
    targets = (
        best.groupby("target")["rank"]
        .agg(["min", "mean"])
        .reset_index()
        .sort_values(["min", "mean", "target"], kind="stable")["target"]
        .tolist()
    )
    if not targets:
        return None
    patients_order = sorted(frame["patient_id"].unique())
    table = (
        frame.pivot_table(index="patient_id", columns="target", values="rank", aggfunc="min")
        .reindex(index=patients_order, columns=targets)
        .to_numpy(dtype=float)
    )
    annotations = np.where(np.isfinite(table), np.nan_to_num(table).astype(int).astype(str), "")
    max_rank = float(np.nanmax(table)) if np.isfinite(table).any() else 2.0
    fig = heatmap(
        table,
        row_labels=patients_order,
        col_labels=targets,
        cmap="YlGnBu_r",
        norm=mcolors.LogNorm(vmin=1, vmax=max(2.0, max_rank)),
        annotations=annotations if table.size <= 900 else None,
        colorbar_label="rank in the patient's\nown screen (1 = best)",
        xlabel=f"target (in any patient's top {top})",
        ylabel="patient",
    )
    bar = fig.axes[-1]  # the colour bar: plain rank ticks rather than powers of ten
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= max(2.0, max_rank)]
    bar.yaxis.set_major_locator(FixedLocator(ticks))
    bar.yaxis.set_major_formatter(FixedFormatter([str(t) for t in ticks]))
    bar.yaxis.set_minor_locator(NullLocator())
    return fig


def patient_state_figure(
    states: pd.DataFrame, *, times: Sequence[float], cell_types: Sequence[str], unit: str | None
) -> Figure | None:
    """Patient (grouped by arm) x (time, cell type) disease scores."""
    if states.empty:
        return None
    frame = states.assign(patient_id=states["patient_id"].astype(str))
    patients, groups = donor_rows(frame, donor="patient_id", arm="arm")
    columns = context_columns(times, cell_types)
    values = _pivot(frame, "patient_id", columns, "disease_score", patients)
    # 0 is the control mean and 1 the case mean at its peak: centre the diverging scale there,
    # so blue reads "like a control", red "like a patient"
    finite = values[np.isfinite(values)]
    spread = float(np.abs(finite - 0.5).max()) if finite.size else 0.5
    spread = max(spread, 0.5)
    return heatmap(
        values,
        row_labels=patients,
        columns=columns,
        unit=unit,
        row_groups=groups,
        cmap="RdBu_r",
        norm=mcolors.Normalize(vmin=0.5 - spread, vmax=0.5 + spread),
        colorbar_label="disease score\n(0 = control mean, 1 = case peak)",
        xlabel="cell type",
        ylabel="patient",
    )


def enrichment_figure(
    enrichment: pd.DataFrame,
    *,
    analysis: str,
    unit: str | None,
    per_column: int = 3,
    max_terms: int = 25,
    max_columns: int = 30,
) -> Figure | None:
    """Dot plot of the top terms of one analysis (prerank: per context; ora: per ranking).

    x = context (``cell type @ time``) or ranking; y = term; dot area = overlap size (leading
    edge or hits); colour = score (NES or log2 odds ratio); a black ring marks q < 0.05.
    """
    frame = enrichment[enrichment["analysis"] == analysis].copy()
    if frame.empty:
        return None
    if analysis == "prerank":
        frame["column"] = [
            f"{c} @ {fmt_time(t, unit)}" if not is_missing(t) else str(c)
            for c, t in zip(frame["cell_type"], frame["time"], strict=True)
        ]
        frame["_order_time"] = frame["time"].fillna(-np.inf)
        column_order = (
            frame.sort_values(["_order_time", "cell_type"], kind="stable")["column"]
            .drop_duplicates()
            .tolist()
        )
    else:
        frame["column"] = frame["ranking"].astype(str)
        column_order = sorted(frame["column"].unique())
    frame = sort_by_score(frame, ["q_value", "p_value"], table="enrichment", tie_break=["term"])
    chosen = frame.groupby("column", sort=False).head(per_column)
    terms = chosen["term"].astype(str).drop_duplicates().tolist()[:max_terms]
    kept_columns = [c for c in column_order if c in set(chosen["column"])][:max_columns]
    shown = frame[frame["term"].astype(str).isin(terms) & frame["column"].isin(kept_columns)]
    if shown.empty:
        return None
    x_of = {c: i for i, c in enumerate(kept_columns)}
    y_of = {t: i for i, t in enumerate(terms)}
    x = shown["column"].map(x_of).to_numpy()
    y = shown["term"].astype(str).map(y_of).to_numpy()
    overlap = shown["n_overlap"].to_numpy(dtype=float)
    sizes = 12 + 160 * overlap / max(1.0, float(np.nanmax(overlap)))
    score = shown["score"].to_numpy(dtype=float)
    significant = np.nan_to_num(shown["q_value"].to_numpy(dtype=float), nan=1.0) < 0.05
    labels = [truncate(t.replace("_", " "), 56) for t in terms]
    longest_col = max(len(c) for c in kept_columns)
    width = min(MAX_WIDTH_IN, 0.45 * len(kept_columns) + 0.07 * max(map(len, labels)) + 3.0)
    height = 0.3 * len(terms) + 0.07 * longest_col + 1.2
    fig = Figure(figsize=(max(width, 5.0), height), layout="constrained")
    ax = fig.add_subplot()
    points = ax.scatter(
        x,
        y,
        s=sizes,
        c=score,
        cmap="RdBu_r",
        norm=diverging_norm(score),
        edgecolors=np.where(significant, "black", "none").tolist(),
        linewidths=0.9,
    )
    ax.set_xticks(range(len(kept_columns)), kept_columns, rotation=90)
    ax.set_yticks(range(len(terms)), labels)
    ax.set_xlim(-0.6, len(kept_columns) - 0.4)
    ax.set_ylim(len(terms) - 0.5, -0.5)
    ax.grid(color="#eeeeee", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel("context (cell type @ time)" if analysis == "prerank" else "ranking tested")
    score_name = "NES" if analysis == "prerank" else "log2 odds ratio"
    bar = fig.colorbar(points, ax=ax, shrink=min(0.8, 3.0 / height), aspect=12, pad=0.02)
    bar.set_label(f"score ({score_name})")
    bar.outline.set_visible(False)
    top_overlap = float(np.nanmax(overlap))
    handles = [
        ax.scatter([], [], s=12 + 160 * f, c="grey", label=f"{max(1, round(f * top_overlap))}")
        for f in (0.25, 1.0)
    ]
    handles.append(ax.scatter([], [], s=60, facecolors="none", edgecolors="black", label="q<0.05"))
    # a figure legend "outside" sits right of the colour bar: the two never overlap
    fig.legend(
        handles=handles,
        title="genes",
        loc="outside right upper",
        frameon=False,
        labelspacing=1.2,
    )
    return fig
