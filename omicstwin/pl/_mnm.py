"""The multicellular network model per time point, drawn as Li et al. 2022 drew theirs.

Small multiples, one panel per time point: cell types as nodes on a circle (the same place in
every panel), arrows sender -> receiver whose width is the number of upstream regulators behind
the edge, node area by the cell type's centrality in the MNM. Drawn from the ``mnm`` and
``centrality`` tables only (nothing is recomputed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from omicstwin.errors import MissingKeyError, ParameterError
from omicstwin.pl._format import fmt_time
from omicstwin.pl._heatmap import cell_type_colours
from omicstwin.pl._plots import (
    _draw_ring_arrows,
    _draw_ring_nodes,
    _frame_ring_panel,
    _label_ring,
    _levels,
    _network_figure,
    _NodeRing,
    _table,
)

MIN_NODE, NODE_RANGE = 120.0, 1300.0  # node area (points^2) at centrality 0 and its span to 1
MIN_WIDTH, WIDTH_RANGE = 0.8, 5.0  # arrow width at 1 regulator and its span to the maximum
_MNM_COLUMNS = ("time", "source_cell_type", "target_cell_type", "n_regulators", "regulators")


def mnm(
    data: Any,
    *,
    centrality: pd.DataFrame | None = None,
    key: str = "mnm",
    times: Sequence[float] | None = None,
    cell_types: Sequence[str] | None = None,
    unit: str | None = None,
    n_labels: int = 3,
    time: float | None = None,
    ax: Axes | None = None,
) -> Figure | None:
    """Multicellular network model per time point (Li et al. 2022): who regulates whom.

    An arrow sender -> receiver means that upstream regulators predicted for the receiver's
    DEGs are themselves up-regulated in the sender at that time point; its width is the number
    of such regulators (one scale for all panels), its colour the sender's. Node area is the
    cell type's eigenvector centrality in the MNM (the ``centrality`` table, over all time
    points; all nodes alike without it).

    Parameters
    ----------
    data
        The ``mnm`` table (:func:`omicstwin.tl.regulators.multicellular_network_model`, a run
        directory's ``mnm.parquet``), or an AnnData/MuData holding it under ``uns[key]``.
    centrality
        The ``centrality`` table (:func:`omicstwin.tl.regulators.cell_type_centrality`).
    key
        Key of the stored table when ``data`` is an AnnData/MuData.
    times, cell_types
        Panels and nodes (default: the table's, sorted; the centrality's cell types join
        them). Pass the study's time points to show the ones without an edge as empty panels.
    unit
        Time unit of the panel titles.
    n_labels
        Edges (most regulators first) spelled out with their regulators under each panel.
    time
        With ``ax``: the time point to draw (default: the first).
    ax
        Draw the panel of ``time`` only into these axes (no legend panel); default: a new
        figure with every panel and a legend panel.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the MNM has no edge (nothing to draw). Each panel's first collection holds
        one node marker per cell type.

    Raises
    ------
    MissingKeyError
        The table lacks an MNM column.
    ParameterError
        ``time`` is not one of the panels' time points.
    """
    import networkx as nx

    edges = _table(data, key)
    missing = [c for c in _MNM_COLUMNS if c not in edges.columns]
    if missing:
        raise MissingKeyError(
            f"the MNM table lacks columns {missing}; fix: pass the mnm table of "
            "omicstwin.tl.regulators.multicellular_network_model (mnm.parquet of a run)"
        )
    if edges.empty:
        return None
    scores = _centrality_of(centrality)
    times, nodes = _levels(
        edges, times, cell_types, cell_type_columns=("source_cell_type", "target_cell_type")
    )
    if cell_types is None:
        nodes = sorted(set(nodes) | set(scores))
    senders_receivers = set(edges["source_cell_type"].astype(str))
    senders_receivers |= set(edges["target_cell_type"].astype(str))
    nodes += sorted(senders_receivers - set(nodes))  # never an arrow to a missing node
    ring = _NodeRing(nodes, nx.circular_layout(nodes), cell_type_colours(nodes))
    panel_times = list(times)
    max_regulators = float(edges["n_regulators"].max())
    sizes = [MIN_NODE + NODE_RANGE * scores.get(n, 0.0) if scores else 400.0 for n in nodes]
    if ax is not None:
        wanted = panel_times[0] if time is None else float(time)
        if wanted not in panel_times:
            raise ParameterError(
                f"time {wanted:g} is not a time point of the MNM; fix: pass one of {panel_times}"
            )
        fig, axes, panel_times = ax.figure, [ax], [wanted]
    else:
        fig, axes = _network_figure(len(panel_times) + 1)  # the last panel is the legend
    for panel_ax, t in zip(axes, panel_times, strict=False):
        at_t = edges[edges["time"] == t]
        _draw_mnm_panel(panel_ax, ring, at_t, sizes, max_regulators, n_labels)
        n_edges = len(at_t)
        panel_ax.set_title(
            f"{fmt_time(t, unit)}: {n_edges} edge{'s' if n_edges != 1 else ''}"
            if n_edges
            else f"{fmt_time(t, unit)}: no edge"
        )
    if len(axes) > len(panel_times):
        _mnm_legend(axes[len(panel_times)], max_regulators, bool(scores))
        for spare_ax in axes[len(panel_times) + 1 :]:
            spare_ax.set_axis_off()
    return fig


def _centrality_of(centrality: pd.DataFrame | None) -> dict[str, float]:
    """Return ``cell type -> centrality`` (0 for a missing value); empty without a table."""
    if centrality is None or centrality.empty:
        return {}
    values = pd.to_numeric(centrality["centrality"], errors="coerce").fillna(0.0)
    return dict(zip(centrality["cell_type"].astype(str), values.astype(float), strict=True))


def _draw_mnm_panel(
    ax: Axes,
    ring: _NodeRing,
    edges: pd.DataFrame,
    sizes: list[float],
    max_regulators: float,
    n_labels: int,
) -> None:
    """Draw one time point: every cell type, arrows sender -> receiver by regulator count.

    Parameters
    ----------
    ax
        The panel's axes.
    ring
        Nodes, positions and colours.
    edges
        The MNM edges of the time point.
    sizes
        Node areas, in the order of ``ring.nodes``.
    max_regulators
        The largest regulator count of all panels (the width scale).
    n_labels
        Edges spelled out under the panel.
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(ring.nodes)
    for row in edges.itertuples(index=False):
        graph.add_edge(
            str(row.source_cell_type), str(row.target_cell_type), n=float(row.n_regulators)
        )
    _draw_ring_nodes(ax, graph, ring, sizes)
    edge_list = list(graph.edges(data=True))
    if edge_list:
        _draw_ring_arrows(
            ax,
            graph,
            ring,
            edge_list,
            sizes,
            width=[
                MIN_WIDTH + WIDTH_RANGE * (a["n"] - 1) / max(max_regulators - 1, 1)
                for *_, a in edge_list
            ],
            colours=[ring.colours[s] for s, _, _ in edge_list],
            alpha=0.8,
            arrowsize=12,
        )
    _label_ring(ax, ring)
    _spell_out_edges(ax, edges, n_labels)
    _frame_ring_panel(ax)


def _spell_out_edges(ax: Axes, edges: pd.DataFrame, n_labels: int) -> None:
    """Write the edges with most regulators, and their regulators, under the panel."""
    top = edges.sort_values(
        ["n_regulators", "source_cell_type", "target_cell_type"],
        ascending=[False, True, True],
        kind="stable",
    ).head(n_labels)
    lines = []
    for row in top.itertuples(index=False):
        names = [g for g in str(row.regulators).split(";") if g]
        shown = ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")
        lines.append(f"{row.source_cell_type}→{row.target_cell_type}: {shown}")
    if len(edges) > len(top):
        lines.append(f"… and {len(edges) - len(top)} more")
    ax.text(
        0.0,
        0.0,
        "\n".join(lines),
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=7.5,
        color="#333333",
    )


def _mnm_legend(ax: Axes, max_regulators: float, sized: bool) -> None:
    """Draw the legend panel: what arrows, widths and node sizes mean."""
    from matplotlib.lines import Line2D

    ax.set_axis_off()
    top = f"{max_regulators:g} regulator{'s' if max_regulators != 1 else ''}"
    handles = [Line2D([], [], color="grey", lw=MIN_WIDTH, label="thin: 1 regulator")]
    if max_regulators > 1:
        handles.append(
            Line2D([], [], color="grey", lw=MIN_WIDTH + WIDTH_RANGE, label=f"thick: {top}")
        )
    if sized:
        for value, label in ((0.0, "centrality 0 (no edge)"), (1.0, "centrality 1 (most central)")):
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    ls="",
                    color="grey",
                    markersize=math.sqrt(MIN_NODE + NODE_RANGE * value),
                    label=label,
                )
            )
    ax.legend(
        handles=handles,
        loc="center",
        frameon=False,
        title="How to read",
        fontsize=7.5,
        labelspacing=2.6,  # room for the large node marker
        handletextpad=2.5,
        borderpad=1.0,
    )
    ax.text(
        0.5,
        0.02,
        "Arrow sender → receiver (sender's colour): upstream\n"
        "regulators of the receiver's DEGs that are up-regulated\n"
        "in the sender at that time point (Li et al. 2022).\n"
        "Node area: eigenvector centrality over all time points.",
        transform=ax.transAxes,
        ha="center",
        va="bottom",
        fontsize=7,
        color="#444444",
    )
