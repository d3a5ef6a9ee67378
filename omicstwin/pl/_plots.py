"""The plots of :mod:`omicstwin.pl`: each draws from an AnnData/MuData plus key, or a table.

Every plot only sorts, filters and pivots its table for display; none recomputes a statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from omicstwin.errors import ParameterError
from omicstwin.pl._format import fmt_p, fmt_time, is_missing, truncate
from omicstwin.pl._heatmap import (
    DOWN_COLOUR,
    MAX_WIDTH_IN,
    UP_COLOUR,
    _figure,
    _pivot,
    cell_type_colours,
    context_columns,
    diverging_norm,
    donor_rows,
    heatmap,
)
from omicstwin.scores import sort_by_score

# ----------------------------------------------------------------------------- inputs


def _table(data: Any, key: str) -> pd.DataFrame:
    """Return the table itself, or the one a tl verb stored under ``uns[key]``."""
    from omicstwin.get import results

    return results(data, key=key)


def _unit(data: Any, key: str, unit: str | None) -> str | None:
    """Return the unit given, else the one stored beside the result (``params["time_unit"]``)."""
    if unit is not None or isinstance(data, pd.DataFrame):
        return unit
    from omicstwin.get import params

    return params(data, key=key).get("time_unit") or None


def _levels(
    frame: pd.DataFrame,
    times: Sequence[float] | None,
    cell_types: Sequence[str] | None,
    time_column: str = "time",
    cell_type_columns: Sequence[str] = ("cell_type",),
) -> tuple[list[float], list[str]]:
    """Return the given axes, else the table's (sorted; NaN times left out)."""
    if times is None:
        times = sorted(pd.to_numeric(frame[time_column], errors="coerce").dropna().unique())
    if cell_types is None:
        names = pd.concat([frame[c].astype(str) for c in cell_type_columns], ignore_index=True)
        cell_types = sorted(names.unique())
    return [float(t) for t in times], [str(c) for c in cell_types]


# ----------------------------------------------------------------------------- the plots


def cohort_design(
    data: Any,
    *,
    key: str = "design",
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Heatmap of cells per donor (rows, grouped by arm) x time x cell type (columns).

    Parameters
    ----------
    data
        A ``design`` table (columns donor, condition, time, cell_type, n_cells; a run
        directory's ``design.parquet``), or an AnnData/MuData holding one under ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    times, cell_types
        Column order (default: the table's, sorted).
    unit
        Time unit of the column groups.
    ax
        Draw into these axes; default: a new figure sized to the cells.

    Returns
    -------
    matplotlib.figure.Figure
        Cell counts written in the cells when there are at most 700 of them.
    """
    design = _table(data, key)
    times, cell_types = _levels(design, times, cell_types)
    unit = _unit(data, key, unit)
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
        ax=ax,
    )


def de_counts(
    data: Any,
    *,
    key: str = "de",
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Heatmap of genes with q < 0.05 per cell type x time, annotated with counts up / down.

    Parameters
    ----------
    data
        AnnData/MuData with the result of :func:`omicstwin.tl.differential_expression` under
        ``uns[key]``, or a ``de`` table.
    key
        ``key_added`` of the DE call.
    times, cell_types
        Column and row order (default: the table's, sorted); contexts absent from the table
        are drawn grey ("not tested").
    unit
        Time unit (default: the one stored with the result).
    ax
        Draw into these axes; default: a new figure sized to the cells.

    Returns
    -------
    matplotlib.figure.Figure
        One heatmap cell per cell type x time point.
    """
    de = _table(data, key)
    times, cell_types = _levels(de, times, cell_types)
    unit = _unit(data, key, unit)
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
        ax=ax,
    )
    if ax is None:
        # the counts need more room than the default cells: widen them for two-line annotations
        w, h = fig.get_size_inches()
        fig.set_size_inches(max(w, 1.0 * len(times) + 3.0), max(h, 0.5 * len(cell_types) + 1.2))
        ax = fig.axes[0]
    ax.tick_params(axis="x", labelrotation=0)
    return fig


def network(
    data: Any,
    *,
    key: str | Sequence[str] = ("grn", "intercellular", "temporal"),
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    top_n: int = 20,
    n_labels: int = 3,
    time: float | None = None,
    ax: Axes | None = None,
) -> Figure | None:
    """Multicellular network per time point: cell types as nodes, the strongest L -> R edges.

    One panel per time point plus a legend panel. Intercellular edges with a NaN time apply at
    every time point and are drawn in every panel. Arrow width is the summed |weight| of the
    pair's edges among the ``top_n`` strongest of the panel (same scale in all panels); colour
    is the sign of that sum; node area is the number of intracellular edges of the cell type at
    that time point.

    Parameters
    ----------
    data
        AnnData/MuData with edge tables of :mod:`omicstwin.tl.networks` under ``key`` (see
        :func:`omicstwin.get.edges`), or an ``edges`` table.
    key
        Key(s) of the edge tables.
    times, cell_types
        Panels and nodes (default: the table's, sorted).
    unit
        Time unit of the panel titles.
    top_n
        Intercellular edges drawn per panel (the strongest by |weight|).
    n_labels
        Edges numbered and named under each panel.
    time
        With ``ax``: the time point to draw (default: the first).
    ax
        Draw the panel of ``time`` only into these axes (no legend panel); default: a new
        figure with every panel.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the table has no intracellular or intercellular edge. Each panel's axes hold
        one node marker per cell type.
    """
    import networkx as nx

    from omicstwin.get import edges as get_edges

    edges = get_edges(data, key=key)
    layer = edges["layer"]
    drawn = edges[layer.isin(["intercellular", "intracellular"]).to_numpy(dtype=bool)]
    if times is None:
        times = sorted(pd.to_numeric(drawn["time_from"], errors="coerce").dropna().unique())
    if cell_types is None:
        names = pd.concat([drawn["source_cell_type"], drawn["target_cell_type"]])
        cell_types = sorted(names.astype(str).unique())
    inter = edges[(layer == "intercellular").fillna(False).to_numpy(dtype=bool)]
    intra = edges.loc[
        (layer == "intracellular").fillna(False).to_numpy(dtype=bool),
        ["time_from", "target_cell_type"],
    ]
    if inter.empty and intra.empty:
        return None
    panel_times: list[float] = list(times) or [math.nan]
    nodes = list(cell_types)
    # deterministic circular layout: every panel the same
    ring = _NodeRing(nodes, nx.circular_layout(nodes), cell_type_colours(nodes))
    panels = _network_panels(inter, intra, panel_times, top_n)
    scale = _NetworkScale.of(panels)
    if ax is not None:  # one panel, on the scale of all of them
        fig = ax.figure
        axes = [ax]
        panels = _panel_at(panels, panel_times, time)
    else:
        fig, axes = _network_figure(len(panels) + 1)  # the last panel is the legend
    for panel_ax, (t, top, intra_counts) in zip(axes, panels, strict=False):
        _draw_network_panel(panel_ax, ring, scale, top, intra_counts, n_labels)
        n_edges = len(top)
        panel_ax.set_title(
            f"{fmt_time(t, unit)}: top {n_edges} ligand→receptor edges"
            if n_edges
            else f"{fmt_time(t, unit)}: no intercellular edges"
        )
    if len(axes) > len(panels):
        legend_ax = axes[len(panels)]
        _network_legend(legend_ax, top_n=top_n, n_labels=n_labels)
        for spare_ax in axes[len(panels) + 1 :]:
            spare_ax.set_axis_off()
    return fig


def _network_panels(
    inter: pd.DataFrame, intra: pd.DataFrame, panel_times: list[float], top_n: int
) -> list[tuple[float, pd.DataFrame, pd.Series]]:
    """Select each panel's strongest intercellular edges and count its intracellular ones.

    Parameters
    ----------
    inter
        The intercellular edges (a NaN ``time_from`` applies at every time point).
    intra
        ``time_from`` and ``target_cell_type`` of the intracellular edges.
    panel_times
        One time point per panel (NaN: a single panel of every edge).
    top_n
        Intercellular edges kept per panel.

    Returns
    -------
    list of tuple
        ``(time, top, intra_counts)`` per panel: the kept edges strongest first, with their
        |weight| as ``strength``, and the intracellular edges per cell type.
    """

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
    return panels


@dataclass(frozen=True)
class _NetworkScale:
    """The largest arrow and node of all panels, so every panel shares one scale."""

    max_strength: float
    max_intra: float

    @classmethod
    def of(cls, panels: list[tuple[float, pd.DataFrame, pd.Series]]) -> _NetworkScale:
        """Measure the panels of :func:`_network_panels`.

        Parameters
        ----------
        panels
            ``(time, top, intra_counts)`` per panel.

        Returns
        -------
        _NetworkScale
            The largest summed strength of a sender -> receiver pair and the largest
            intracellular count (1.0 when there is none).
        """
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
        return cls(max_strength, max_intra)


@dataclass(frozen=True)
class _NodeRing:
    """The cell types of the network, where they sit on the ring and their colours."""

    nodes: list[str]
    positions: dict
    colours: dict


def _panel_at(panels: list, panel_times: list[float], time: float | None) -> list:
    """Keep the panel of ``time`` (default: the first), for drawing into given axes.

    Parameters
    ----------
    panels
        ``(time, top, intra_counts)`` per panel.
    panel_times
        The panels' time points.
    time
        The time point asked for, or None.

    Returns
    -------
    list
        The one matching panel.

    Raises
    ------
    ParameterError
        ``time`` is not a time point of the network.
    """
    wanted = panel_times[0] if time is None else time
    panels = [p for p in panels if p[0] == wanted or (math.isnan(p[0]) and math.isnan(wanted))]
    if not panels:
        raise ParameterError(
            f"time {wanted} is not a time point of the network; fix: pass one of {panel_times}"
        )
    return panels


def _network_figure(n_panels: int) -> tuple[Figure, np.ndarray]:
    """Create a figure with a grid of at most three columns for ``n_panels`` panels.

    Parameters
    ----------
    n_panels
        Panels to hold, the legend included.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray
        The grid's axes, row by row (spare ones at the end).
    """
    n_cols = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig = Figure(figsize=(4.1 * n_cols, 4.4 * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False).ravel()


def _draw_network_panel(
    ax: Axes,
    ring: _NodeRing,
    scale: _NetworkScale,
    top: pd.DataFrame,
    intra_counts: pd.Series,
    n_labels: int,
) -> None:
    """Draw one time point: nodes sized by intracellular edges, arrows by summed strength.

    Parameters
    ----------
    ax
        The panel's axes.
    ring
        Nodes, positions and colours.
    scale
        The scale shared by all panels.
    top
        The panel's strongest intercellular edges (:func:`_network_panels`).
    intra_counts
        Intracellular edges per cell type.
    n_labels
        Edges numbered and named under the panel.
    """
    import networkx as nx

    nodes = ring.nodes
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    pairs = (
        top.groupby(["source_cell_type", "target_cell_type"], observed=True)
        .agg(strength=("strength", "sum"), signed=("weight", "sum"))
        .reset_index()
    )
    for row in pairs.itertuples(index=False):
        graph.add_edge(row.source_cell_type, row.target_cell_type, **row._asdict())
    max_intra = scale.max_intra
    sizes = [
        250 + 1100 * float(intra_counts.get(n, 0)) / max_intra if max_intra else 250 for n in nodes
    ]
    _draw_ring_nodes(ax, graph, ring, sizes)
    edge_list = list(graph.edges(data=True))
    if edge_list:
        _draw_ring_arrows(
            ax,
            graph,
            ring,
            edge_list,
            sizes,
            width=[0.8 + 5.0 * a["strength"] / scale.max_strength for _, _, a in edge_list],
            colours=[UP_COLOUR if a["signed"] >= 0 else DOWN_COLOUR for *_, a in edge_list],
            alpha=0.75,
            arrowsize=11,
        )
        _number_strongest_edges(ax, graph, ring, top, sizes, n_labels)
    _label_ring(ax, ring)
    _frame_ring_panel(ax)


def _draw_ring_nodes(ax: Axes, graph, ring: _NodeRing, sizes: list[float]) -> None:
    """Draw the ring's nodes (one marker per cell type, in ``ring.nodes`` order)."""
    import networkx as nx

    nx.draw_networkx_nodes(
        graph,
        ring.positions,
        nodelist=ring.nodes,
        node_size=sizes,
        node_color=[ring.colours[n] for n in ring.nodes],
        edgecolors="white",
        ax=ax,
    )


def _draw_ring_arrows(
    ax: Axes, graph, ring: _NodeRing, edge_list, sizes, *, width, colours, alpha, arrowsize
) -> None:
    """Draw sender -> receiver arrows between ring nodes (curved: A -> B and B -> A apart)."""
    import networkx as nx

    nx.draw_networkx_edges(
        graph,
        ring.positions,
        edgelist=[(s, d) for s, d, _ in edge_list],
        width=width,
        edge_color=colours,
        alpha=alpha,
        arrows=True,
        arrowstyle="-|>",
        arrowsize=arrowsize,
        connectionstyle="arc3,rad=0.15",
        node_size=sizes,
        nodelist=ring.nodes,
        ax=ax,
    )


def _frame_ring_panel(ax: Axes) -> None:
    """Frame a ring panel: room for the labels around the ring, equal aspect, no axes."""
    ax.set_xlim(-2.0, 2.0)
    ax.set_ylim(-1.55, 1.55)
    ax.set_aspect("equal")
    ax.set_axis_off()


def _number_strongest_edges(
    ax: Axes, graph, ring: _NodeRing, top: pd.DataFrame, sizes: list[float], n_labels: int
) -> None:
    """Put numbered markers on the strongest edges' arrows and spell them out under the panel.

    Ligand names on the arrows themselves collide with the nodes and with each other.

    Parameters
    ----------
    ax
        The panel's axes.
    graph
        The panel's :class:`networkx.DiGraph` of sender -> receiver pairs.
    ring
        Nodes, positions and colours.
    top
        The panel's strongest edges, strongest first.
    sizes
        Node sizes (arrows stop at the node's edge).
    n_labels
        Edges numbered.
    """
    import networkx as nx

    numbers: dict[tuple[str, str], list[str]] = {}
    legend_lines = []
    for i, row in enumerate(top.head(n_labels).itertuples(index=False), start=1):
        pair = (row.source_cell_type, row.target_cell_type)
        numbers.setdefault(pair, []).append(str(i))
        always = ", all times" if is_missing(row.time_from) else ""
        legend_lines.append(
            f"{i}: {row.source}→{row.target} "
            f"({row.source_cell_type}→{row.target_cell_type}, {row.weight:.2g}{always})"
        )
    nx.draw_networkx_edge_labels(
        graph,
        ring.positions,
        edge_labels={k: ",".join(v) for k, v in numbers.items()},
        font_size=7,
        font_weight="bold",
        bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "#333333", "lw": 0.6},
        connectionstyle="arc3,rad=0.15",
        node_size=sizes,
        nodelist=ring.nodes,
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


def _label_ring(ax: Axes, ring: _NodeRing) -> None:
    """Name every node just outside the ring.

    Parameters
    ----------
    ax
        The panel's axes.
    ring
        Nodes and their positions.
    """
    for node in ring.nodes:
        x, y = ring.positions[node]
        r = math.hypot(x, y) or 1.0
        # labels sit outside the ring, aligned away from it so they never cover a node
        lx, ly = 1.3 * x / r, 1.3 * y / r
        ha = "left" if lx > 0.35 else "right" if lx < -0.35 else "center"
        va = "bottom" if ly > 0.35 else "top" if ly < -0.35 else "center"
        if ha != "center":
            va = "center" if abs(ly) < 0.9 else va
        ax.text(lx, ly, node, ha=ha, va=va, fontsize=7.5, color="#222222")


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


def regulator_rows(
    regulators: pd.DataFrame, rank_regulators: pd.DataFrame | None, n: int = 25
) -> tuple[list[str], list[str]]:
    """Rows of :func:`regulators`: the ranked regulators, then the unranked ones shown."""
    ranked: list[str] = []
    if rank_regulators is not None and not rank_regulators.empty:
        ranked = (
            rank_regulators.sort_values("rank", kind="stable")["regulator"].astype(str).tolist()
        )
        known = set(regulators["regulator"].astype(str).unique())
        ranked = [r for r in ranked if r in known][:n]
    extra: list[str] = []
    if len(ranked) < n:
        by_p = sort_by_score(regulators, "p_value", table="regulators", tie_break=["regulator"])
        for name in by_p["regulator"].astype(str).drop_duplicates():
            if name not in ranked:
                extra.append(name)
            if len(ranked) + len(extra) >= n:
                break
    return ranked, extra


def regulators(
    data: Any,
    *,
    key: str = "regulators",
    rankings: pd.DataFrame | None = None,
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    n: int = 25,
    ax: Axes | None = None,
) -> Figure | None:
    """Heatmap of regulator x (time, cell type) activation z-scores (Li et al. 2022, Fig. 3).

    Rows are the ``n`` best-ranked regulators of ``rankings``; when fewer are ranked (predicted
    in no context), the remaining rows are the regulators with the smallest overlap p-values,
    unnumbered. Dots mark the contexts where the regulator is predicted (the table's
    ``predicted`` column; ``q_value < 0.05`` when the table has no such column).

    Parameters
    ----------
    data
        The table of :func:`omicstwin.tl.upstream_regulators`, or an AnnData/MuData holding
        one under ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    rankings
        :func:`omicstwin.tl.rank_regulators` of the table (row order).
    times, cell_types
        Column order (default: the table's, sorted).
    unit
        Time unit of the column groups.
    n
        Rows shown.
    ax
        Draw into these axes; default: a new figure sized to the cells.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the table is empty.
    """
    regulators = _table(data, key)
    if regulators.empty:
        return None
    times, cell_types = _levels(regulators, times, cell_types)
    unit = _unit(data, key, unit)
    ranked, extra = regulator_rows(regulators, rankings, n)
    rows = ranked + extra
    columns = context_columns(times, cell_types)
    frame = regulators.assign(regulator=regulators["regulator"].astype(str))
    values = _pivot(frame, "regulator", columns, "activation_z", rows)
    if "predicted" in frame.columns:
        called = frame.assign(called=frame["predicted"].astype(float))
        markers = np.nan_to_num(_pivot(called, "regulator", columns, "called", rows)) > 0.5
    else:
        significance = _pivot(frame, "regulator", columns, "q_value", rows)
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
        ax=ax,
    )
    return fig


def rankings(
    data: Any,
    *,
    key: str = "rank_targets",
    n: int = 20,
    label: str = "name",
    xlabel: str = "score",
    ax: Axes | None = None,
) -> Figure | None:
    """Horizontal bars of the top ``n`` scores of a ranking, dark when q < 0.05.

    Parameters
    ----------
    data
        A ranking table (columns rank, score, q_value and ``label``: ``rank_targets``,
        ``rank_disease_genes``, ``rank_drugs``), or an AnnData/MuData holding one under
        ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    n
        Bars shown (the best ranks).
    label
        Column of the bar labels (a ``KO:`` prefix is dropped).
    xlabel
        Label of the score axis.
    ax
        Draw into these axes; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure or None
        One bar per ranked item; None when the ranking is empty.
    """
    ranking = _table(data, key)
    top = ranking.sort_values("rank", kind="stable").head(n)
    if top.empty:
        return None
    names = [truncate(str(x).removeprefix("KO:"), 28) for x in top[label]]
    q = top["q_value"].to_numpy(dtype=float)
    significant = np.nan_to_num(q, nan=1.0) < 0.05
    fig, ax = _figure(ax, (6.5, 0.24 * len(top) + 1.0))
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


def perturbation_effects(
    data: Any,
    *,
    key: str = "perturbations",
    rank_targets: pd.DataFrame | None = None,
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    n: int = 20,
    ax: Axes | None = None,
) -> Figure | None:
    """Heatmap of the top ``n`` perturbations x (time, cell type) reversal scores.

    The perturbations are taken in the order of the target ranking when it names them, else
    by their best reversal score in any context.

    Parameters
    ----------
    data
        The per-context table of :func:`omicstwin.tl.target_screen` (``perturbations``), or
        an AnnData/MuData holding one under ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    rank_targets
        The ranking of the same screen (row order).
    times, cell_types
        Column order (default: the table's, sorted).
    unit
        Time unit of the column groups.
    n
        Rows shown.
    ax
        Draw into these axes; default: a new figure sized to the cells.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the table is empty.
    """
    perturbations = _table(data, key)
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
    times, cell_types = _levels(frame, times, cell_types)
    unit = _unit(data, key, unit)
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
        ax=ax,
    )


def patient_ranks(
    data: Any, *, key: str = "patients", top: int = 5, ax: Axes | None = None
) -> Figure | None:
    """Heatmap of patient x target ranks for the union of every patient's top ``top`` targets.

    Parameters
    ----------
    data
        The table of :func:`omicstwin.tl.patient_screen` (patient_id, target, rank), or an
        AnnData/MuData holding one under ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    top
        Targets taken from each patient's best ranks.
    ax
        Draw into these axes; default: a new figure sized to the cells.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when no patient has a ranked target.
    """
    patients = _table(data, key)
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
        ax=ax,
    )
    bar = fig.axes[-1]  # the colour bar: plain rank ticks rather than powers of ten
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= max(2.0, max_rank)]
    bar.yaxis.set_major_locator(FixedLocator(ticks))
    bar.yaxis.set_major_formatter(FixedFormatter([str(t) for t in ticks]))
    bar.yaxis.set_minor_locator(NullLocator())
    return fig


def patient_trajectories(
    data: Any,
    *,
    key: str = "patient_states",
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    ax: Axes | None = None,
) -> Figure | None:
    """Heatmap of each patient's disease trajectory: (time, cell type) disease scores.

    Rows are patients grouped by arm; the diverging scale is centred at 0.5, between the
    control mean (0) and the case peak (1).

    Parameters
    ----------
    data
        The table of :func:`omicstwin.tl.patient_states`, or an AnnData/MuData holding one
        under ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    times, cell_types
        Column order (default: the table's, sorted).
    unit
        Time unit of the column groups.
    ax
        Draw into these axes; default: a new figure sized to the cells.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the table is empty.
    """
    states = _table(data, key)
    if states.empty:
        return None
    times, cell_types = _levels(states, times, cell_types)
    unit = _unit(data, key, unit)
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
        ax=ax,
    )


def enrichment(
    data: Any,
    *,
    key: str = "enrichment",
    analysis: str = "prerank",
    unit: str | None = None,
    per_column: int = 3,
    max_terms: int = 25,
    max_columns: int = 30,
    ax: Axes | None = None,
) -> Figure | None:
    """Dot plot of the top terms of one analysis (prerank: per context; ora: per ranking).

    x = context (``cell type @ time``) or ranking; y = term; dot area = overlap size (leading
    edge or hits); colour = score (NES or log2 odds ratio); a black ring marks q < 0.05.

    Parameters
    ----------
    data
        The table of :func:`omicstwin.tl.enrichment`, or an AnnData/MuData holding one under
        ``uns[key]``.
    key
        Where the table is stored when ``data`` is an AnnData/MuData.
    analysis
        ``"prerank"`` or ``"ora"``.
    unit
        Time unit of the context labels.
    per_column
        Best terms (by q) taken from each column.
    max_terms, max_columns
        At most this many rows and columns.
    ax
        Draw into these axes (the size legend then sits beside them); default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure or None
        One dot per term x column shown; None when the analysis has no row.
    """
    enrichment = _table(data, key)
    unit = _unit(data, key, unit)
    frame = enrichment[enrichment["analysis"] == analysis].copy()
    if frame.empty:
        return None
    frame, column_order = _enrichment_columns(frame, analysis, unit)
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
    own_figure = ax is None
    fig, ax = _figure(ax, (max(width, 5.0), height))
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
    _enrichment_size_legend(fig, ax, float(np.nanmax(overlap)), own_figure)
    return fig


def _enrichment_columns(
    frame: pd.DataFrame, analysis: str, unit: str | None
) -> tuple[pd.DataFrame, list[str]]:
    """Label each row's column of the dot plot, and order the columns.

    Parameters
    ----------
    frame
        The analysis' rows (a copy: columns are added to it).
    analysis
        ``"prerank"`` (columns: contexts, in time order) or ``"ora"`` (rankings, by name).
    unit
        Time unit of the context labels.

    Returns
    -------
    frame : pandas.DataFrame
        ``frame`` with a ``column`` label (and, for prerank, the ``_order_time`` sort key).
    column_order : list of str
        The columns, left to right.
    """
    if analysis == "prerank":
        frame["column"] = [
            f"{c} @ {fmt_time(t, unit)}" if not is_missing(t) else str(c)
            for c, t in zip(frame["cell_type"], frame["time"], strict=True)
        ]
        # untimed contexts first, then by time, cell types in order within a time
        frame["_order_time"] = frame["time"].fillna(-np.inf)
        column_order = (
            frame.sort_values(["_order_time", "cell_type"], kind="stable")["column"]
            .drop_duplicates()
            .tolist()
        )
    else:
        frame["column"] = frame["ranking"].astype(str)
        column_order = sorted(frame["column"].unique())
    return frame, column_order


def _enrichment_size_legend(fig: Figure, ax: Axes, top_overlap: float, own_figure: bool) -> None:
    """Add the legend of dot sizes (genes in the overlap) and of the q < 0.05 ring.

    Parameters
    ----------
    fig, ax
        The dot plot's figure and axes.
    top_overlap
        The largest overlap shown (the size of a full dot).
    own_figure
        Whether the plot made its figure; given axes get the legend beside them instead.
    """
    handles = [
        ax.scatter([], [], s=12 + 160 * f, c="grey", label=f"{max(1, round(f * top_overlap))}")
        for f in (0.25, 1.0)
    ]
    handles.append(ax.scatter([], [], s=60, facecolors="none", edgecolors="black", label="q<0.05"))
    if own_figure:
        # a figure legend "outside" sits right of the colour bar: the two never overlap
        fig.legend(
            handles=handles,
            title="genes",
            loc="outside right upper",
            frameon=False,
            labelspacing=1.2,
        )
    else:
        ax.legend(
            handles=handles,
            title="genes",
            loc="upper left",
            bbox_to_anchor=(1.25, 1.0),
            frameon=False,
            labelspacing=1.2,
        )
