"""The report's sections: each one a title, a one-sentence explanation and its blocks.

Blocks are figures, tables, notes and prose; the template only lays them out. Every table is
optional here: a missing or empty table turns its section into a note saying so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omicstwin import pl
from omicstwin.report import figures as figs
from omicstwin.report._format import (
    DASH,
    fmt_context,
    fmt_genes,
    fmt_num,
    fmt_p,
    fmt_seconds,
    fmt_time,
    is_missing,
    join_words,
    plural,
    time_unit_of,
    truncate,
)
from omicstwin.report.methods import flatten_config, methods_paragraphs
from omicstwin.scores import SCORES, get_score, sort_by_score

# ---------------------------------------------------------------------------------------------
# blocks


@dataclass
class FigureBlock:
    """An embedded figure and its caption."""

    figure: figs.EmbeddedFigure
    caption: str = ""
    kind: str = "figure"


@dataclass
class TableBlock:
    """A formatted table: every cell is already a string."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    caption: str = ""
    collapsed: bool = False  # shown inside a <details> element (long reference tables)
    kind: str = "table"


@dataclass
class HeadingBlock:
    """A sub-heading inside a section."""

    text: str
    kind: str = "heading"


@dataclass
class NoteBlock:
    """A short note, e.g. why a section is empty."""

    text: str
    kind: str = "note"


@dataclass
class ProseBlock:
    """Paragraphs, each with an optional bold lead-in."""

    paragraphs: list[tuple[str, str]]
    kind: str = "prose"


@dataclass
class Section:
    """A numbered report section."""

    id: str
    title: str
    lead: str  # one plain-language sentence: what the reader sees
    blocks: list[Any] = field(default_factory=list)


def table_block(
    frame: pd.DataFrame,
    formatters: dict[str, tuple[str, Callable[[Any], str]]],
    *,
    caption: str = "",
    collapsed: bool = False,
    numeric: Sequence[str] = (),
) -> TableBlock:
    """Format ``frame`` with ``{column: (header, formatter)}`` (in that order).

    Columns formatted as numbers are right-aligned; ``numeric`` names further columns to align
    so (text made of numbers, e.g. ``"12 / 10"``).
    """
    numeric_formatters = {fmt_num, fmt_p, fmt_seconds}
    columns = [header for header, _ in formatters.values()]
    aligned = [
        f in numeric_formatters or column in numeric for column, (_, f) in formatters.items()
    ]
    rows = [
        [formatter(record.get(column)) for column, (_, formatter) in formatters.items()]
        for record in frame.to_dict("records")
    ]
    return TableBlock(columns, rows, aligned, caption=caption, collapsed=collapsed)


def _text(value: Any) -> str:
    return DASH if is_missing(value) else str(value)


def score_header(table: str, column: str, label: str) -> str:
    """Column header of a registered score: ``label (rank only)`` or ``label (unit)``.

    Generated from :data:`omicstwin.scores.SCORES`, so every ranking table says which numbers
    are calibrated (and in what unit) and which only order the rows.
    """
    score = get_score(table, column)
    if score.kind == "rank_only":
        return f"{label} (rank only)"
    return f"{label} ({score.unit})" if score.unit else label


def score_note(table: str, column: str, label: str) -> str:
    """Caption sentence of a rank-only score: what it means, and that its sizes are not units."""
    score = get_score(table, column)
    if score.kind != "rank_only":
        return f"{label}: {score.meaning} ({score.unit})."
    return f"{label} is rank only (its order means something, its differences do not): " + (
        score.meaning.rstrip(".") + "."
    )


# ---------------------------------------------------------------------------------------------
# the run directory


CATEGORICAL_TABLES = frozenset({"edges"})


def read_categorical(path: Path) -> pd.DataFrame:
    """Read a parquet table with every text column as a categorical with sorted categories."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    text = [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    frame = pq.read_table(path, read_dictionary=text).to_pandas()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            categories = frame[column].cat.categories
            frame[column] = frame[column].cat.reorder_categories(sorted(categories))
    return frame


def distinct(values: pd.Series) -> set[str]:
    """Return the distinct non-missing values of a column as strings (each hashed once)."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # the used categories, from the codes
        codes = values.cat.codes.to_numpy()
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=1))
        return {str(values.cat.categories[i]) for i in used}
    return {str(v) for v in values.dropna().unique()}


class RunData:
    """Read-only access to a run directory's tables (each read once, when first needed)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir
        self.run: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
        self._tables: dict[str, pd.DataFrame | None] = {}
        self.unit = time_unit_of(self.run)

    def table(self, name: str) -> pd.DataFrame | None:
        """Return the table ``name``, or None when the file is absent.

        The edge table (millions of rows at study size) is read with its text columns as
        categoricals whose categories are sorted: sorting and grouping then behave as on the
        strings, on integer codes (several times faster to read and to group).
        """
        if name not in self._tables:
            path = self.path / f"{name}.parquet"
            if not path.is_file():
                self._tables[name] = None
            elif name in CATEGORICAL_TABLES:
                self._tables[name] = read_categorical(path)
            else:
                self._tables[name] = pd.read_parquet(path)
        return self._tables[name]

    def present(self) -> set[str]:
        """Names of the tables in the run directory."""
        return {p.stem for p in self.path.glob("*.parquet")}

    def axes(self) -> tuple[list[float], list[str]]:
        """Time points and cell types of the study (from the design, else the results)."""
        times: set[float] = set()
        cell_types: set[str] = set()
        # the first table that exists defines the axes, so every heatmap shares them
        for name in ("design", "de", "regulators", "perturbations", "patient_states"):
            frame = self.table(name)
            if frame is not None and not frame.empty:
                times |= {float(t) for t in frame["time"].dropna().unique()}
                cell_types |= {str(c) for c in frame["cell_type"].dropna().unique()}
                break
        return sorted(times), sorted(cell_types)


def _missing(name: str, what: str) -> NoteBlock:
    return NoteBlock(f"No {what}: the run directory has no {name}.parquet (the stage did not run).")


def _empty(what: str) -> NoteBlock:
    return NoteBlock(f"No {what}: the table is empty.")


# ---------------------------------------------------------------------------------------------
# sections


def design_section(data: RunData) -> Section:
    """2. Cells per donor x time x cell type."""
    section = Section(
        "design",
        "Study design",
        "How many cells each donor contributed to each cell type at each time point; empty "
        "(grey) cells mean no cells were measured there.",
    )
    design = data.table("design")
    if design is None:
        section.blocks.append(_missing("design", "design table"))
        return section
    if design.empty:
        section.blocks.append(_empty("design table"))
        return section
    times, cell_types = data.axes()
    fig = pl.cohort_design(design, times=times, cell_types=cell_types, unit=data.unit)
    section.blocks.append(
        FigureBlock(
            figs.embed(fig, "Heatmap of cells per donor, time point and cell type"),
            "Rows: donors, grouped by arm; columns: cell types, grouped by time point; "
            "numbers: cells.",
        )
    )
    arms = design.groupby("condition")["donor"].nunique()
    totals = design.groupby("condition")["n_cells"].sum()
    section.blocks.append(
        table_block(
            pd.DataFrame(
                {"arm": arms.index.astype(str), "donors": arms.to_numpy(), "cells": totals}
            ),
            {
                "arm": ("Arm", _text),
                "donors": ("Donors", fmt_num),
                "cells": ("Cells", fmt_num),
            },
        )
    )
    section.blocks += _qc_blocks(data)
    return section


def _qc_blocks(data: RunData) -> list[Any]:
    """Cells before and after quality control per cell type, and the median detected genes."""
    qc = data.table("qc")
    if qc is None:
        return [NoteBlock("No qc.parquet: cells before quality control were not recorded.")]
    needed = {"cell_type", "n_cells", "n_cells_kept", "median_genes"}
    if qc.empty or not needed <= set(qc.columns):
        return []
    per_type = qc.groupby("cell_type", observed=True).agg(
        before=("n_cells", "sum"),
        after=("n_cells_kept", "sum"),
        genes=("median_genes", "median"),
        low=("median_genes", "min"),
        high=("median_genes", "max"),
    )
    total = pd.DataFrame(
        {
            "before": [qc["n_cells"].sum()],
            "after": [qc["n_cells_kept"].sum()],
            "genes": [qc["median_genes"].median()],
            "low": [qc["median_genes"].min()],
            "high": [qc["median_genes"].max()],
        },
        index=["all cell types"],
    )
    frame = pd.concat([per_type, total]).rename_axis("cell_type").reset_index()
    frame["kept"] = [
        f"{100 * a / b:.1f} %" if b else DASH
        for a, b in zip(frame["after"], frame["before"], strict=True)
    ]
    frame["range"] = [
        f"{fmt_num(a)} – {fmt_num(b)}" for a, b in zip(frame["low"], frame["high"], strict=True)
    ]
    stages = (data.run.get("config") or {}).get("stages") or {}
    rule = (
        f"cells with at least {stages['min_genes']} detected genes"
        if "min_genes" in stages
        else "cells passing the quality filters"
    )
    before, after = int(total["before"].iloc[0]), int(total["after"].iloc[0])
    return [
        table_block(
            frame,
            {
                "cell_type": ("Cell type", _text),
                "before": ("Cells before QC", fmt_num),
                "after": ("After QC", fmt_num),
                "kept": ("Kept", _text),
                "genes": ("Median genes / cell", fmt_num),
                "range": ("Range over donor x time groups", _text),
            },
            numeric=("kept", "range"),
            caption=f"Quality control kept {rule}: {after:,} of {before:,} cells. Median genes "
            "/ cell: the median over donor x time groups of each group's median number of "
            "detected genes.",
        )
    ]


def de_section(data: RunData) -> Section:
    """3. Number of DEGs per cell type x time."""
    section = Section(
        "de",
        "Differential expression",
        "How many genes differ between patients and controls (q < 0.05) in each cell type at "
        "each time point, with how many go up (↑) and down (↓) in patients.",
    )
    de = data.table("de")
    if de is None:
        section.blocks.append(_missing("de", "differential expression results"))
        return section
    if de.empty:
        section.blocks.append(_empty("differential expression results"))
        return section
    times, cell_types = data.axes()
    times = sorted({float(t) for t in de["time"].dropna().unique()} | set(times))
    cell_types = sorted(distinct(de["cell_type"]) | set(cell_types))
    fig = pl.de_counts(de, times=times, cell_types=cell_types, unit=data.unit)
    section.blocks.append(
        FigureBlock(
            figs.embed(fig, "Heatmap of differentially expressed gene counts"),
            "Colour and top number: genes with q < 0.05; second line: up / down in patients. "
            "Grey: no results for that context in de.parquet (not tested).",
        )
    )
    significant = de[de["q_value"] < 0.05]
    top = sort_by_score(significant, ["q_value", "p_value"], table="de", tie_break=["gene"])
    top = top.head(15)
    if not top.empty:
        section.blocks.append(
            table_block(
                top,
                {
                    "gene": ("Gene", _text),
                    "cell_type": ("Cell type", _text),
                    "time": ("Time", lambda t: fmt_time(t, data.unit)),
                    "log_fc": ("log2 fold change", fmt_num),
                    "mean_case": ("Mean (case, CPM)", fmt_num),
                    "mean_control": ("Mean (control, CPM)", fmt_num),
                    "p_value": ("p", fmt_p),
                    "q_value": ("q", fmt_p),
                },
                caption="The 15 most significant differentially expressed genes.",
            )
        )
    return section


def network_section(data: RunData) -> Section:
    """4. The multicellular network per time point."""
    section = Section(
        "network",
        "Multicellular network",
        "At each time point, which cell types signal to which (arrows from the ligand's cell "
        "type to the receptor's), how dense each cell type's own gene network is, and how genes "
        "influence each other from one time point to the next.",
    )
    edges = data.table("edges")
    if edges is None:
        section.blocks.append(_missing("edges", "network"))
        return section
    if edges.empty:
        section.blocks.append(_empty("network"))
        return section
    unit = data.unit
    times, cell_types = data.axes()
    cell_types = sorted(
        set(cell_types) | distinct(edges["source_cell_type"]) | distinct(edges["target_cell_type"])
    )
    inter = edges[layer_mask(edges, "intercellular")]
    inter_times = {float(t) for t in inter["time_from"].dropna().unique()}
    times = sorted(set(times) | inter_times)
    fig = pl.network(edges, times=times, cell_types=cell_types, unit=unit)
    if fig is not None:
        section.blocks.append(
            FigureBlock(
                figs.embed(fig, "Multicellular network per time point"),
                "Nodes: cell types (area: intracellular edges at that time point); arrows: the "
                "strongest ligand→receptor edges, sender → receiver. Edges without a time apply "
                "at every time point and appear in every panel.",
            )
        )
    if not inter.empty:
        top = sort_by_score(  # strongest |weight| first
            inter,
            "weight",
            table="edges",
            tie_break=["source_cell_type", "target_cell_type", "source", "target"],
        )
        section.blocks.append(
            table_block(
                top.head(15),
                {
                    "time_from": ("Time", lambda t: fmt_time(t, unit)),
                    "source_cell_type": ("Sender", _text),
                    "source": ("Ligand", _text),
                    "target_cell_type": ("Receiver", _text),
                    "target": ("Receptor", _text),
                    "weight": ("Weight", fmt_num),
                    "stability": ("Stability", fmt_num),
                },
                caption="The 15 strongest intercellular edges (|weight|); stability is the "
                "fraction of bootstrap fits that keep the edge.",
            )
        )
    section.blocks += _intracellular_summary(edges, unit)
    section.blocks += _temporal_summary(edges, unit)
    return section


def _pair(a: float, b: float) -> tuple[float | None, float | None]:
    """Return a (time from, time to) key that equals itself when a time is NaN (None)."""
    return (None if is_missing(a) else float(a), None if is_missing(b) else float(b))


def layer_mask(edges: pd.DataFrame, layer: str) -> np.ndarray:
    """Boolean mask of the edges of one layer (a missing layer is no match)."""
    return (edges["layer"] == layer).fillna(False).to_numpy(dtype=bool)


def _intracellular_summary(edges: pd.DataFrame, unit: str | None) -> list[Any]:
    columns = ["target_cell_type", "time_from", "condition", "source"]
    intra = edges.loc[layer_mask(edges, "intracellular"), columns]
    if intra.empty:
        return [NoteBlock("No intracellular (gene regulatory) edges in this run.")]
    has_time = intra["time_from"].notna().to_numpy()
    timed = intra[has_time]
    untimed = intra[~has_time]
    conditions = sorted(distinct(timed["condition"]), key=lambda c: (c != "case", c))
    counts = timed.groupby(["target_cell_type", "time_from", "condition"], observed=True).size()
    cell_types = sorted(distinct(intra["target_cell_type"]))
    times = sorted({float(t) for t in timed["time_from"].unique()})
    frame = pd.DataFrame({"cell_type": cell_types})
    formatters: dict[str, tuple[str, Callable[[Any], str]]] = {"cell_type": ("Cell type", _text)}
    count_columns: list[str] = []  # "case / control" text, aligned as numbers
    # one column per time point, "case / control" counts in one cell keeps the table narrow
    for t in times:
        key = f"t{t:g}"
        frame[key] = [
            " / ".join(f"{int(counts.get((c, t, cond), 0)):,}" for cond in conditions)
            for c in cell_types
        ]
        formatters[key] = (fmt_time(t, unit), _text)
        count_columns.append(key)
    for cond in sorted(distinct(untimed["condition"])):
        per_type = (
            untimed[(untimed["condition"] == cond).fillna(False).to_numpy(dtype=bool)]
            .groupby("target_cell_type", observed=True)
            .size()
        )
        key = f"all_{cond}"
        frame[key] = [int(per_type.get(c, 0)) for c in cell_types]
        formatters[key] = (f"all times ({cond})", fmt_num)
    # hubs: the regulators with most targets over all of the cell type's networks
    hubs = (
        intra.groupby(["target_cell_type", "source"], observed=True)
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["target_cell_type", "n", "source"], ascending=[True, False, True])
        .groupby("target_cell_type", observed=True)
        .head(3)
    )
    hub_text = {
        str(c): ", ".join(f"{s} ({n:,})" for s, n in zip(g["source"], g["n"], strict=True))
        for c, g in hubs.groupby("target_cell_type", observed=True)
    }
    per_time = " / ".join(conditions)
    return [
        table_block(
            frame,
            formatters,
            numeric=count_columns,
            caption=f"Intracellular edges (regulator → target gene within a cell type) per cell "
            f"type and time point ({per_time} networks); 'all times': networks without a time "
            "('donors': the twin's network, fitted on donor variation and used at every time "
            "point).",
        ),
        # a table of its own: beside the counts, a column of names would be squeezed
        table_block(
            pd.DataFrame({"cell_type": cell_types, "hubs": [hub_text.get(c) for c in cell_types]}),
            {"cell_type": ("Cell type", _text), "hubs": ("Top regulators (edges)", _text)},
            caption="The regulators with the most intracellular edges in each cell type (over "
            "all its networks).",
        ),
    ]


def _temporal_summary(edges: pd.DataFrame, unit: str | None) -> list[Any]:
    columns = ["target_cell_type", "time_from", "time_to", "source", "target", "weight"]
    temporal = edges.loc[layer_mask(edges, "temporal"), columns]
    if temporal.empty:
        return [NoteBlock("No temporal (time-lagged) edges in this run.")]
    # count per (cell type, time from, time to), then name the few distinct steps once
    per_pair = (
        temporal.groupby(["target_cell_type", "time_from", "time_to"], observed=True, dropna=False)
        .size()
        .rename("n")
        .reset_index()
    )
    per_pair = per_pair[per_pair["target_cell_type"].notna()]
    pairs = temporal[["time_from", "time_to"]].drop_duplicates()  # in order of appearance
    pairs = pairs.assign(order=pairs["time_from"].fillna(math.inf)).sort_values(
        "order", kind="stable"
    )
    step_of = {
        _pair(a, b): f"{fmt_time(a, unit)} → {fmt_time(b, unit)}"
        for a, b in zip(pairs["time_from"], pairs["time_to"], strict=True)
    }
    steps = list(dict.fromkeys(step_of.values()))
    counts = (
        per_pair.assign(
            step=[
                step_of[_pair(a, b)]
                for a, b in zip(per_pair["time_from"], per_pair["time_to"], strict=True)
            ]
        )
        .groupby(["target_cell_type", "step"], observed=True)["n"]
        .sum()
        .unstack(fill_value=0)
        .reindex(columns=steps, fill_value=0)
    )
    # the strongest edge per cell type: only the rows at their cell type's maximum |weight|
    # can win, so only those are sorted (ties: source, then target)
    strength = temporal["weight"].abs()
    best = strength.groupby(temporal["target_cell_type"], observed=True).transform("max")
    candidates = temporal[((strength == best) | best.isna()).to_numpy(dtype=bool)]
    strongest = sort_by_score(
        candidates,
        "weight",
        table="edges",
        within=["target_cell_type"],
        tie_break=["source", "target"],
    ).drop_duplicates("target_cell_type")
    strongest_text = {
        str(r.target_cell_type): f"{r.source} → {r.target} "
        f"({step_of[_pair(r.time_from, r.time_to)]}, {fmt_num(r.weight)})"
        for r in strongest.itertuples(index=False)
    }
    frame = counts.reset_index().rename(columns={"target_cell_type": "cell_type"})
    frame["strongest"] = frame["cell_type"].astype(str).map(strongest_text)
    formatters: dict[str, tuple[str, Callable[[Any], str]]] = {"cell_type": ("Cell type", _text)}
    for step in steps:
        formatters[step] = (step, fmt_num)
    formatters["strongest"] = ("Strongest edge (weight)", _text)
    return [
        table_block(
            frame,
            formatters,
            caption="Temporal edges (a regulator at one time point → a target at the next, "
            "within a cell type) per cell type and step, and the strongest one.",
        )
    ]


def regulator_section(data: RunData) -> Section:
    """5. Regulator ranking heatmap (Li et al. 2022)."""
    section = Section(
        "regulators",
        "Upstream regulators",
        "Which regulators explain the gene changes in each cell type and time point: red means "
        "the regulator's known targets change as if it were activated in patients, blue as if "
        "inhibited; dots mark where it is significantly predicted.",
    )
    regulators = data.table("regulators")
    if regulators is None:
        section.blocks.append(_missing("regulators", "upstream regulator results"))
        return section
    if regulators.empty:
        section.blocks.append(_empty("upstream regulator results"))
        return section
    ranking = data.table("rank_regulators")
    times, cell_types = data.axes()
    fig = pl.regulators(
        regulators, rankings=ranking, times=times, cell_types=cell_types, unit=data.unit
    )
    if fig is not None:
        n_ranked = figs.n_ranked_regulators(regulators, ranking)
        note = (
            f"Numbered rows: the {plural(n_ranked, 'ranked regulator')} (Li et al. 2022: number "
            "of cell type x time contexts where predicted)"
            + (
                "; rows in parentheses: further regulators with the smallest overlap p-values, "
                "predicted nowhere, shown for context."
                if n_ranked < 25
                else "."
            )
        )
        section.blocks.append(
            FigureBlock(figs.embed(fig, "Heatmap of upstream regulator z-scores"), note)
        )
    if ranking is not None and not ranking.empty:
        section.blocks.append(
            table_block(
                ranking.sort_values("rank", kind="stable").head(20),
                {
                    "rank": ("Rank", fmt_num),
                    "regulator": ("Regulator", _text),
                    "n_contexts": ("Contexts", fmt_num),
                    "n_cell_types": ("Cell types", fmt_num),
                    "n_targets_total": ("Target DEGs", fmt_num),
                    "evidence": (
                        score_header("rank_regulators", "evidence", "Σ −log10 p"),
                        fmt_num,
                    ),
                    "best_cell_type": ("Best cell type", _text),
                    "best_time": ("Best time", lambda t: fmt_time(t, data.unit)),
                },
                caption="Ranked regulators (top 20). "
                + score_note("rank_regulators", "evidence", "Σ −log10 p"),
            )
        )
    else:
        section.blocks.append(
            NoteBlock("No regulator is predicted (overlap q < 0.05) in any context.")
        )
    return section


def mnm_section(data: RunData) -> Section:
    """6. The multicellular network model per time point and the cell types' centrality."""
    section = Section(
        "mnm",
        "Multicellular network model",
        "Which cell types regulate which at each time point: an arrow means that regulators "
        "predicted for the receiver's changed genes are themselves up-regulated in the sender "
        "(Li et al. 2022); cell types are ranked by how central they are in that network.",
    )
    mnm = data.table("mnm")
    if mnm is None:
        section.blocks.append(_missing("mnm", "multicellular network model"))
        return section
    centrality = data.table("centrality")
    if mnm.empty:
        section.blocks.append(NoteBlock(_empty_mnm_sentence(data, centrality)))
        return section
    times, _ = data.axes()
    times = sorted(set(times) | {float(t) for t in mnm["time"].dropna().unique()})
    fig = pl.mnm(mnm, centrality=centrality, times=times, unit=data.unit)
    if fig is not None:
        section.blocks.append(
            FigureBlock(
                figs.embed(fig, "Multicellular network model per time point"),
                "One panel per time point. Arrow sender → receiver (in the sender's colour): "
                "upstream regulators of the receiver's DEGs that are up-regulated DEGs of the "
                "sender; width: number of such regulators (named under the panel for the "
                "edges with most). Node area: the cell type's centrality (all time points).",
            )
        )
    if centrality is None:
        section.blocks.append(_missing("centrality", "cell-type centrality"))
    elif not centrality.empty:
        section.blocks.append(_centrality_block(mnm, centrality))
    return section


def _empty_mnm_sentence(data: RunData, centrality: pd.DataFrame | None) -> str:
    """Say why the MNM has no edge: no predicted regulator at all, or none shared."""
    ranking = data.table("rank_regulators")
    n_types = 0 if centrality is None else len(centrality)
    zero = f"; all {plural(n_types, 'cell type')} have centrality 0" if n_types else ""
    if ranking is not None and ranking.empty:
        return (
            "The multicellular network model has no edge: no upstream regulator is predicted "
            f"(overlap q < 0.05) for any cell type's DEGs in this run{zero}."
        )
    return (
        "The multicellular network model has no edge: no regulator predicted for one cell "
        "type's DEGs is an up-regulated DEG of another cell type at the same time point"
        f"{zero}."
    )


def _centrality_block(mnm: pd.DataFrame, centrality: pd.DataFrame) -> TableBlock:
    """Table the cell types by centrality with their edges out and in, and read it once."""
    ranked = sort_by_score(centrality, "rank", table="centrality", tie_break=["cell_type"])
    sent = mnm.groupby("source_cell_type", observed=True)["n_regulators"].agg(["size", "sum"])
    got = mnm.groupby("target_cell_type", observed=True)["n_regulators"].agg(["size", "sum"])
    ranked = ranked.assign(
        out_edges=[int(sent["size"].get(c, 0)) for c in ranked["cell_type"]],
        in_edges=[int(got["size"].get(c, 0)) for c in ranked["cell_type"]],
    )
    top = ranked.iloc[0]
    reading = (
        f"{top['cell_type']} is the most central cell type ({top['out_edges']} of the "
        f"{plural(len(mnm), 'edge')} leave it, {top['in_edges']} reach it)"
    )
    if len(ranked) > 1:
        runners = ranked.iloc[1:3]
        runners = runners[runners["centrality"].fillna(0) > 0]
        reading += ", then " + " and ".join(
            f"{c} ({fmt_num(v)})"
            for c, v in zip(runners["cell_type"], runners["centrality"], strict=True)
        )
    isolated = ranked.loc[ranked["centrality"].fillna(0) <= 0, "cell_type"].tolist()
    if isolated:
        reading += f"; {join_words(isolated)} {'has' if len(isolated) == 1 else 'have'} no edge"
    reading += ". "
    return table_block(
        ranked,
        {
            "rank": ("Rank", fmt_num),
            "cell_type": ("Cell type", _text),
            "centrality": (score_header("centrality", "centrality", "Centrality"), fmt_num),
            "out_edges": ("Edges out (sender)", fmt_num),
            "in_edges": ("Edges in (receiver)", fmt_num),
        },
        caption=reading + score_note("centrality", "centrality", "Centrality"),
    )


def score_word(kind: str) -> str:
    """Return the score's name in a ranking: induction (disease genes), else reversal."""
    return "induction" if kind == "disease_genes" else "reversal"


def _rank_formatters(
    kind: str, unit: str | None, extra: Sequence[str]
) -> dict[str, tuple[str, Callable[[Any], str]]]:
    score = {"disease_genes": "Induction", "targets": "Reversal", "drugs": "Reversal"}[kind]
    formatters: dict[str, tuple[str, Callable[[Any], str]]] = {"rank": ("Rank", fmt_num)}
    if kind == "drugs":
        formatters["drug_name"] = ("Drug", lambda x: truncate(x, 30))
        formatters["name"] = ("ID", lambda x: _text(x).removeprefix("drug:"))
        formatters["genes"] = ("Targets", lambda g: fmt_genes(g, 4))
        formatters["dose"] = ("Dose", fmt_num)
    elif kind == "targets":
        formatters["name"] = ("Perturbation", lambda x: truncate(x, 30))
        formatters["kind"] = ("Kind", _text)
        formatters["genes"] = ("Genes", lambda g: fmt_genes(g, 4))
        formatters["dose"] = ("Dose", fmt_num)
    else:
        formatters["name"] = ("Gene", lambda x: truncate(x, 30))
    formatters["score"] = (score_header("rank", "score", f"{score} score"), fmt_num)
    formatters["off_target"] = (score_header("rank", "off_target", "Off-target"), fmt_num)
    for column in extra:
        formatters[column] = (column.replace("_", " ").capitalize(), fmt_num)
    formatters["p_value"] = ("p", fmt_p)
    formatters["q_value"] = ("q", fmt_p)
    formatters["best_context"] = ("Best context", _text)
    return formatters


def rankings_section(data: RunData) -> Section:
    """6. Top disease genes, targets and drugs."""
    section = Section(
        "rankings",
        "Disease genes, targets and drugs",
        "The genes whose change most recreates the disease in the twin (disease genes), and the "
        "knockouts and drugs that most reverse it (targets, drugs), best first.",
    )
    known = set().union(*[set(s) for s in _rank_known_columns()])
    specs = [
        ("rank_targets", "targets", "Targets", "in-silico knockouts ranked by reversal"),
        ("rank_disease_genes", "disease_genes", "Disease genes", "genes ranked by induction"),
        ("rank_drugs", "drugs", "Drugs", "drugs (sets of targets) ranked by reversal"),
    ]
    for name, kind, title, what in specs:
        section.blocks.append(HeadingBlock(title))
        frame = data.table(name)
        if frame is None:
            section.blocks.append(_missing(name, what))
            continue
        if frame.empty:
            section.blocks.append(_empty(what))
            continue
        frame = frame.sort_values("rank", kind="stable")
        if kind == "targets":
            fig = pl.rankings(
                frame, xlabel="reversal score (rank only: larger undoes more of the disease)"
            )
            if fig is not None:
                section.blocks.append(
                    FigureBlock(
                        figs.embed(fig, "Bar chart of the top targets' reversal scores"),
                        "Top 20 targets: reversal score, a rank score (larger undoes more of "
                        "the disease signature in the twin; its size is not a calibrated "
                        "share); dark bars: q < 0.05.",
                    )
                )
        extra = [
            c for c in frame.columns if c not in known and pd.api.types.is_numeric_dtype(frame[c])
        ]
        top = frame.head(20).assign(
            best_context=[
                fmt_context(c, t, data.unit)
                for c, t in zip(
                    frame.head(20)["best_cell_type"], frame.head(20)["best_time"], strict=True
                )
            ]
        )
        section.blocks.append(
            table_block(
                top,
                _rank_formatters(kind, data.unit, extra),
                caption=f"Top 20 of {len(frame):,} ({what}); off-target: change orthogonal to "
                "the disease axis (lower is cleaner)"
                + (
                    "; this ranking has no empirical p-values (–)."
                    if frame["p_value"].isna().all()
                    else "."
                )
                + " "
                + score_note("rank", "score", f"The {score_word(kind)} score"),
            )
        )
    return section


def _rank_known_columns() -> list[Sequence[str]]:
    """Columns the ranking tables format explicitly (other numeric columns are appended)."""
    from omicstwin.schemas import SCHEMAS

    return [list(SCHEMAS["rank"]), ["kind", "genes", "dose", "drug_name"]]


def perturbation_section(data: RunData) -> Section:
    """7. Perturbation effects per context."""
    section = Section(
        "perturbations",
        "Perturbation effects by context",
        "In which cell types and at which time points each top perturbation acts: green "
        "cells are contexts whose disease change it reverses, pink ones where it makes the "
        "change worse.",
    )
    perturbations = data.table("perturbations")
    if perturbations is None:
        section.blocks.append(_missing("perturbations", "perturbation results"))
        return section
    if perturbations.empty:
        section.blocks.append(_empty("perturbation results"))
        return section
    times, cell_types = data.axes()
    fig = pl.perturbation_effects(
        perturbations,
        rank_targets=data.table("rank_targets"),
        times=times,
        cell_types=cell_types,
        unit=data.unit,
    )
    if fig is not None:
        section.blocks.append(
            FigureBlock(
                figs.embed(fig, "Heatmap of perturbation reversal scores per context"),
                "Rows: the top 20 perturbations in ranking order (study-level q in "
                "parentheses); columns: cell types grouped by time point; grey: not simulated "
                "there.",
            )
        )
    return section


def patients_section(data: RunData) -> Section:
    """8. Per-patient targets and disease scores."""
    section = Section(
        "patients",
        "Per-patient targets",
        "Each patient's own best targets, from screening that patient's twin, so targets "
        "shared by all patients stand out from personal ones.",
    )
    patients = data.table("patients")
    if patients is None:
        section.blocks.append(_missing("patients", "per-patient screen"))
    elif patients.empty:
        section.blocks.append(_empty("per-patient screen"))
    else:
        fig = pl.patient_ranks(patients)
        if fig is not None:
            section.blocks.append(
                FigureBlock(
                    figs.embed(fig, "Heatmap of per-patient target ranks"),
                    "Columns: every target in some patient's top 5; numbers: its rank in each "
                    "patient's screen (1 = best).",
                )
            )
        top = sort_by_score(
            patients[patients["rank"] <= 5], "rank", table="patients", within=["patient_id"]
        )
        wide = (
            top.assign(
                label=[
                    f"{t} ({fmt_context(c, s, data.unit)}; {fmt_num(r)}"
                    + (f"; p {fmt_p(p)}, q {fmt_p(q)})" if not is_missing(p) else ")")
                    for t, c, s, r, p, q in zip(
                        top["target"],
                        top["cell_type"],
                        top["time"],
                        top["reversal_score"],
                        top["p_value"] if "p_value" in top else [None] * len(top),
                        top["q_value"] if "q_value" in top else [None] * len(top),
                        strict=True,
                    )
                ]
            )
            .pivot(index="patient_id", columns="rank", values="label")
            .reset_index()
        )
        formatters: dict[str, tuple[str, Callable[[Any], str]]] = {"patient_id": ("Patient", _text)}
        for rank in sorted(c for c in wide.columns if c != "patient_id"):
            formatters[rank] = (f"#{rank}", _text)
        section.blocks.append(
            table_block(
                wide,
                formatters,
                caption="Each patient's top 5 targets with the best context, the reversal "
                "score and the per-patient p and q (null: the control donors' own screens). "
                + score_note("patients", "reversal_score", "The reversal score"),
            )
        )
    states = data.table("patient_states")
    if states is None:
        section.blocks.append(
            NoteBlock("No patient_states.parquet: per-patient disease scores were not computed.")
        )
    elif states.empty:
        section.blocks.append(_empty("per-patient disease scores"))
    else:
        times, cell_types = data.axes()
        fig = pl.patient_trajectories(states, times=times, cell_types=cell_types, unit=data.unit)
        if fig is not None:
            section.blocks.append(
                FigureBlock(
                    figs.embed(fig, "Heatmap of per-patient disease scores"),
                    "Disease score of each donor (rows, grouped by arm) per cell type and "
                    "time point: where the donor lies on the disease axis, from the control "
                    "mean (0) to the case mean at that cell type's peak of disease (1).",
                )
            )
        section.blocks.append(_state_interval_table(states, data.unit))
    return section


def _state_interval_table(states: pd.DataFrame, unit: str | None) -> TableBlock:
    """Per-patient disease scores with their 90% bootstrap intervals (when the run wrote them)."""
    frame = states.sort_values(["arm", "patient_id", "time", "cell_type"], kind="stable")
    has_interval = {"disease_score_low", "disease_score_high"} <= set(frame.columns)
    header = score_header("patient_states", "disease_score", "Disease score")
    formatters: dict[str, tuple[str, Callable[[Any], str]]] = {
        "patient_id": ("Patient", _text),
        "arm": ("Arm", _text),
        "cell_type": ("Cell type", _text),
        "time": ("Time", lambda t: fmt_time(t, unit)),
        "n_cells": ("Cells", fmt_num),
        "disease_score": (header, fmt_num),
    }
    if has_interval:
        formatters["disease_score_low"] = ("90% interval low", fmt_num)
        formatters["disease_score_high"] = ("90% interval high", fmt_num)
    caption = "Disease score per patient, cell type and time point" + (
        " with its 90% bootstrap interval over the donor's cells (low – high): a wide "
        "interval means few cells and an uncertain position."
        if has_interval
        else "; this run wrote no intervals."
    )
    return table_block(frame, formatters, caption=caption, collapsed=True)


TRUST_TABLES = (
    ("rank_targets", "rank"),
    ("rank_disease_genes", "rank"),
    ("rank_drugs", "rank"),
    ("perturbations", "perturbations"),
    ("patients", "patients"),
    ("patient_states", "patient_states"),
    ("regulators", "regulators"),
    ("rank_regulators", "rank_regulators"),
    ("mnm", "mnm"),
    ("centrality", "centrality"),
    ("edges", "edges"),
    ("de", "de"),
    ("enrichment", "enrichment"),
)


def trust_section(data: RunData) -> Section:
    """9. How much to trust these numbers: null calibration, rank-only scores, intervals."""
    section = Section(
        "trust",
        "How much to trust these numbers",
        "Whether the run's own screens give more small p-values than chance, which scores are "
        "calibrated (in units) and which only order the rows, and where intervals exist.",
    )
    section.blocks.append(HeadingBlock("P-values of the run's own null screens"))
    calibration = data.table("null_calibration")
    if calibration is None:
        section.blocks.append(_missing("null_calibration", "null screen calibration"))
    elif calibration.empty or fig_none(calibration):
        section.blocks.append(_empty("null screen calibration"))
    else:
        from omicstwin.pl._calibration import calibration_reading

        fig = pl.null_calibration(calibration)
        screens = list(dict.fromkeys(calibration["screen"].astype(str)))
        readings = " ".join(calibration_reading(calibration, s) for s in screens)
        section.blocks.append(
            FigureBlock(
                figs.embed(fig, "Histograms of the screens' p-values against the uniform null"),
                "Bars: p-values per bin; dashed line: the count expected by chance (uniform "
                "p-values). A flat histogram means no more small p-values than chance; a peak "
                "near 0 means the screen finds signal. " + readings,
            )
        )
    section.blocks.append(HeadingBlock("Which scores are calibrated"))
    rows = []
    for name, registry in TRUST_TABLES:
        if name not in data.present():
            continue
        for column, score in SCORES[registry].items():
            rows.append(
                {
                    "table": name,
                    "column": column,
                    "kind": "rank only" if score.kind == "rank_only" else "calibrated",
                    "unit": score.unit or DASH,
                    "meaning": score.meaning,
                }
            )
    if rows:
        section.blocks.append(
            table_block(
                pd.DataFrame(rows),
                {
                    "table": ("Table", _text),
                    "column": ("Score", _text),
                    "kind": ("Kind", _text),
                    "unit": ("Unit", _text),
                    "meaning": ("Meaning", _text),
                },
                caption="Rank-only scores order the rows (higher or lower is better) but their "
                "sizes are not in interpretable units: compare ranks, not differences. "
                "Intervals: the patient disease scores carry 90% bootstrap intervals (section "
                "Per-patient targets); p- and q-values come from the donor-label permutation "
                "null (targets, drugs) or the control donors (patients).",
                collapsed=True,
            )
        )
    return section


def fig_none(calibration: pd.DataFrame) -> bool:
    """Whether the calibration table has no p-values to draw."""
    return bool((calibration["n_tests"] <= 0).all())


def enrichment_section(data: RunData) -> Section:
    """9. Gene set enrichment dot plots."""
    section = Section(
        "enrichment",
        "Pathway enrichment",
        "Which known pathways and gene sets are over-represented among the changed genes of "
        "each context and among the top-ranked targets and disease genes.",
    )
    enrichment = data.table("enrichment")
    if enrichment is None:
        section.blocks.append(
            NoteBlock("The enrichment stage did not run (no enrichment.parquet in the run).")
        )
        return section
    if enrichment.empty:
        section.blocks.append(NoteBlock("The enrichment stage ran and found nothing to report."))
        return section
    titles = {
        "prerank": "Preranked GSEA of each context's differential expression",
        "ora": "Over-representation among the top-ranked genes",
    }
    analyses = sorted(
        enrichment["analysis"].dropna().astype(str).unique(), key=lambda a: (a != "prerank", a)
    )
    for analysis in analyses:
        fig = pl.enrichment(enrichment, analysis=analysis, unit=data.unit)
        if fig is not None:
            section.blocks.append(
                FigureBlock(
                    figs.embed(fig, f"Dot plot of {analysis} enrichment"),
                    f"{titles.get(analysis, analysis)}: top terms per "
                    + ("context" if analysis == "prerank" else "ranking")
                    + "; dot size: overlapping genes; colour: score; ring: q < 0.05.",
                )
            )
    top = sort_by_score(
        enrichment, ["q_value", "p_value"], table="enrichment", tie_break=["term"]
    ).head(15)
    unit = data.unit
    top = top.assign(
        context=[
            r if a != "prerank" else fmt_context(c, t, unit)
            for a, r, c, t in zip(
                top["analysis"], top["ranking"], top["cell_type"], top["time"], strict=True
            )
        ]
    )
    section.blocks.append(
        table_block(
            top,
            {
                "analysis": ("Analysis", _text),
                "collection": ("Collection", _text),
                "context": ("Context / ranking", _text),
                "term": ("Term", lambda t: truncate(t, 60)),
                "score": ("Score", fmt_num),
                "n_overlap": ("Overlap", fmt_num),
                "set_size": ("Set size", fmt_num),
                "q_value": ("q", fmt_p),
                "genes": ("Genes", lambda g: fmt_genes(g, 5)),
            },
            caption="The 15 most significant terms overall.",
        )
    )
    return section


def validation_section(data: RunData) -> Section:
    """10. Validation against known disease biology."""
    section = Section(
        "validation",
        "Validation against known biology",
        "How many known disease genes or approved drugs appear among the top k of each ranking, "
        "compared with what a random ranking would find.",
    )
    validation = data.table("validation")
    if validation is None:
        disease = (data.run.get("config") or {}).get("disease")
        section.blocks.append(
            NoteBlock(
                f"No validation: the config names {disease}, but the run directory has no "
                "validation.parquet (the stage did not run)."
                if disease
                else "No validation: no disease named in the config (no validation.parquet)."
            )
        )
        return section
    if validation.empty:
        section.blocks.append(_empty("validation results"))
        return section
    # one reference's k values together, so a row reads on from the one above it
    frame = validation.sort_values(["disease_id", "ranking", "reference", "k"], kind="stable")
    frame = frame.assign(
        disease=[
            f"{n} ({i})" for n, i in zip(frame["disease_name"], frame["disease_id"], strict=True)
        ],
        hits_k=[f"{h} / {k}" for h, k in zip(frame["hits"], frame["k"], strict=True)],
        known=[f"{a:,} / {b:,}" for a, b in zip(frame["n_known"], frame["n_ranked"], strict=True)],
        beats=frame["precision"] > frame["random_p95"],
    )
    formatters: dict[str, tuple[str, Callable[[Any], str]]] = {
        "disease": ("Disease", _text),
        "ranking": ("Ranking", _text),
        "reference": ("Reference", lambda x: truncate(x, 40)),
        "hits_k": ("Hits / k", _text),
        "known": ("Known / ranked", _text),
        "precision": ("Precision@k", fmt_num),
        "random_precision": ("Random", fmt_num),
        "random_p95": ("Random 95th pct", fmt_num),
        "beats": ("Beats 95th pct", lambda b: "yes" if b else "no"),
        "p_value": ("p (hypergeom.)", fmt_p),
    }
    diseases = frame["disease"].unique()
    if len(diseases) == 1:  # one disease: name it once, above the table
        del formatters["disease"]
    section.blocks.append(
        table_block(
            frame,
            formatters,
            caption=(f"{diseases[0]}: " if len(diseases) == 1 else "")
            + "precision at k beside the expected precision of a random ranking and its 95th "
            "percentile.",
        )
    )
    return section


def methods_section(data: RunData) -> Section:
    """11. Methods prose generated from the config."""
    section = Section(
        "methods",
        "Methods",
        "What was done, with the parameters this run used, written from the run's configuration.",
    )
    present = data.present()
    section.blocks.append(ProseBlock(methods_paragraphs(data.run, tables=present)))
    config = data.run.get("config") or {}
    if config:
        frame = pd.DataFrame(flatten_config(config), columns=["key", "value"])
        section.blocks.append(
            table_block(
                frame,
                {"key": ("Setting", _text), "value": ("Value", lambda v: truncate(v, 90))},
                caption="Full run configuration.",
                collapsed=True,
            )
        )
    return section


def provenance_section(data: RunData) -> Section:
    """12. Versions, inputs, timings, cache and failures."""
    run = data.run
    section = Section(
        "provenance",
        "Provenance",
        "Everything needed to reproduce this run: software versions, input checksums, how long "
        "each stage took, which stages were reused from cache and what failed.",
    )
    facts = [
        ("Schema version", _text(run.get("schema_version"))),
        ("Seed", _text(run.get("seed"))),
        ("Skipped contexts", _text(run.get("skipped_groups"))),
        ("Cached stages", ", ".join(run.get("cached_stages") or []) or "none"),
    ]
    failures = run.get("failures") or {}
    facts.append(
        (
            "Failures",
            ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) if failures else "none",
        )
    )
    section.blocks.append(
        table_block(
            pd.DataFrame(facts, columns=["what", "value"]),
            {"what": ("", _text), "value": ("", _text)},
        )
    )
    timings = run.get("timings_s") or {}
    if timings:
        cached = set(run.get("cached_stages") or [])
        order = [
            "validate",
            "preprocess",
            "de",
            "networks",
            "regulators",
            "twin",
            "screens",
            "enrichment",
            "validation",
            "report",
        ]
        stages = sorted(timings, key=lambda k: (order.index(k) if k in order else len(order), k))
        frame = pd.DataFrame(
            [(k, timings[k], "reused" if k in cached else "ran") for k in stages]
            + [("total", sum(timings.values()), "")],
            columns=["stage", "seconds", "status"],
        )
        section.blocks.append(
            table_block(
                frame,
                {
                    "stage": ("Stage", _text),
                    "status": ("Status", _text),
                    "seconds": ("Time", fmt_seconds),
                },
                caption="Wall time per stage.",
            )
        )
    inputs = run.get("inputs") or {}
    if inputs:
        section.blocks.append(
            table_block(
                pd.DataFrame(sorted(inputs.items()), columns=["path", "sha256"]),
                {"path": ("Input", _text), "sha256": ("SHA-256", _text)},
            )
        )
    versions = run.get("versions") or {}
    if versions:
        section.blocks.append(
            table_block(
                pd.DataFrame(sorted(versions.items()), columns=["package", "version"]),
                {"package": ("Package", _text), "version": ("Version", _text)},
                caption="Software versions.",
            )
        )
    section.blocks.append(_tables_block(data.path))
    return section


def _tables_block(folder: Path) -> TableBlock:
    """Row counts of the run directory's tables, from the parquet metadata (no data read)."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(folder.glob("*.parquet")):
        try:
            meta = pq.read_metadata(path)
            rows.append((path.name, meta.num_rows, meta.num_columns))
        except (OSError, ValueError):  # an unreadable file is listed, not fatal
            rows.append((path.name, math.nan, math.nan))
    return table_block(
        pd.DataFrame(rows, columns=["file", "rows", "columns"]),
        {"file": ("Table", _text), "rows": ("Rows", fmt_num), "columns": ("Columns", fmt_num)},
        caption="Tables in the run directory.",
    )


SECTIONS: tuple[Callable[[RunData], Section], ...] = (
    design_section,
    de_section,
    network_section,
    regulator_section,
    mnm_section,
    rankings_section,
    perturbation_section,
    patients_section,
    trust_section,
    enrichment_section,
    validation_section,
    methods_section,
    provenance_section,
)
