"""``omicstwin regulators DE_TABLE... --out DIR``: upstream regulators of exported DE tables.

Only wiring: the work is :func:`omicstwin.tl.regulators.regulators_from_tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omicstwin.cli._common import DebugOption, _run

OUTPUTS = ("regulators", "mnm", "centrality", "rank_regulators")


def regulators(
    tables: Annotated[
        list[str],
        typer.Argument(
            help="DE tables (csv/tsv/xlsx from Seurat, monocle, DESeq2, edgeR, scanpy); "
            "FILE:CELL_TYPE or FILE:CELL_TYPE:TIME gives a table's cell type and time."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder for the four parquet tables.")],
    format: Annotated[
        str, typer.Option(help="auto, seurat, monocle, deseq2, edger, scanpy or omicstwin.")
    ] = "auto",
    gene: Annotated[str | None, typer.Option(help="Gene column.")] = None,
    log_fc: Annotated[str | None, typer.Option(help="Log fold-change column.")] = None,
    p_value: Annotated[str | None, typer.Option(help="p-value column.")] = None,
    q_value: Annotated[str | None, typer.Option(help="q-value (FDR) column.")] = None,
    fc_base: Annotated[
        str | None, typer.Option(help="Base of the fold change's log: log2, log10 or ln.")
    ] = None,
    cell_type: Annotated[
        str | None, typer.Option(help="Cell type of every table given without one.")
    ] = None,
    cell_type_column: Annotated[
        str | None, typer.Option(help="Column with the cell type (tables of many).")
    ] = None,
    time: Annotated[
        str | None, typer.Option(help="Time of every table given without one: 3, 3D, 'day 3'.")
    ] = None,
    time_column: Annotated[str | None, typer.Option(help="Column with the time.")] = None,
    universe: Annotated[
        str,
        typer.Option(
            "--universe",
            "--background",
            help="Background of the overlap test: tested (genes in the tables), prior (the "
            "prior's genes; for tables of DEGs only) or a FILE of genes, one per line.",
        ),
    ] = "tested",
    top_n: Annotated[
        int | None, typer.Option(help="Keep the top N DEGs by q per context (Li 2022: 5000).")
    ] = None,
    rule: Annotated[
        str, typer.Option(help="default (overlap q < 0.05) or li2022 (p < 0.05 and |z| >= 2).")
    ] = "default",
    molecule_types: Annotated[
        str | None,
        typer.Option(help="Comma-separated regulator types: tf,ligand,receptor,kinase,other."),
    ] = None,
    prior: Annotated[
        str | None,
        typer.Option(
            help="A csv (source, target, weight[, regulator_type]), a built prior "
            "(regulator_prior, ligand_targets, receptor_targets) or a manifest table such as "
            "collectri (TFs only); default: the combined regulator prior."
        ),
    ] = None,
    prior_source: Annotated[
        str | None,
        typer.Option(
            help="Sources of a built prior: omnipath (default; academic use), nichenet_v1 "
            "(academic use) or permissive (open licences only)."
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Upstream regulators, MNM, cell-type centrality and rankings of exported DE tables."""

    def work() -> None:
        from omicstwin.store.rundir import write_table
        from omicstwin.tl.regulators import regulators_from_tables

        types = (
            [t.strip() for t in molecule_types.split(",") if t.strip()] if molecule_types else None
        )
        result = regulators_from_tables(
            tables,
            prior=prior,
            prior_source=prior_source,
            universe=universe,
            top_n=top_n,
            rule=rule,
            molecule_types=types,
            format=format,
            gene=gene,
            log_fc=log_fc,
            p_value=p_value,
            q_value=q_value,
            fc_base=fc_base,
            cell_type=cell_type,
            time=time,
            cell_type_column=cell_type_column,
            time_column=time_column,
        )
        for name in OUTPUTS:
            write_table(out, name, result[name])
        table = result["regulators"]
        contexts = table.groupby(["cell_type", "time"]).ngroups
        typer.echo(
            f"{int(table['predicted'].sum())} regulator calls in {contexts} contexts, "
            f"{len(result['mnm'])} MNM edges; tables in {out}"
        )

    _run(debug, work)


def register(app: typer.Typer) -> None:
    """Add ``regulators`` to the main CLI app."""
    app.command()(regulators)
