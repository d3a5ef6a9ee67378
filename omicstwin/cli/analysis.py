"""The main typer app and the analysis commands: ``validate | simulate | demo | run | grn | bench``.

Heavy libraries are imported inside the commands so that start-up stays fast. Every
:class:`~omicstwin.errors.OmicstwinError` is printed as one line on stderr with a non-zero exit
code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from omicstwin.cli._common import DebugOption, _run
from omicstwin.cli.database import register as _register_service_commands
from omicstwin.cli.priors import register as _register_prior_commands
from omicstwin.cli.regulators import register as _register_regulators_command

app = typer.Typer(
    name="omicstwin",
    help="Multi-omics single-cell disease digital twins.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        from omicstwin import __version__

        typer.echo(f"omicstwin {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    """Multi-omics single-cell disease digital twins."""


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="AnnData (.h5ad) or MuData (.h5mu) file.")],
    cell_type_key: Annotated[str, typer.Option(help="obs column with cell types.")] = "cell_type",
    time_key: Annotated[str, typer.Option(help="obs column with time points.")] = "time",
    condition_key: Annotated[str, typer.Option(help="obs column with case/control.")] = "condition",
    donor_key: Annotated[str, typer.Option(help="obs column with donor ids.")] = "donor",
    case: Annotated[str, typer.Option(help="Label of the case arm.")] = "case",
    control: Annotated[str, typer.Option(help="Label of the control arm.")] = "control",
    layer: Annotated[
        str | None, typer.Option(help="Layer holding raw counts (default: X).")
    ] = None,
    time_unit: Annotated[
        str | None, typer.Option(help="Unit of a numeric time column, e.g. h.")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Check a dataset against the data contract and print a one-line summary."""

    def work() -> None:
        from omicstwin.io import read_data, validate_cohort

        adata = read_data(data)
        summary = validate_cohort(
            adata,
            cell_type_key=cell_type_key,
            time_key=time_key,
            condition_key=condition_key,
            donor_key=donor_key,
            case=case,
            control=control,
            layer=layer,
            time_unit=time_unit or (adata.uns.get("time_unit") if hasattr(adata, "uns") else None),
        )
        typer.echo(summary.one_line())

    _run(debug, work)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output .h5ad file.")],
    preset: Annotated[
        str,
        typer.Option(
            help="small (tests), demo (30k cells) or sar_like (10 cell types x 7 times); "
            "independent generator: small or medium; atlas (20k genes, real-shaped, any "
            "number of cells, written in chunks)"
        ),
    ] = "small",
    generator: Annotated[
        str,
        typer.Option(help="cohort (draws networks from the priors) or independent (does not)"),
    ] = "cohort",
    no_disease: Annotated[
        bool, typer.Option("--no-disease", help="Same design, no disease (a calibration cohort).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, identical file.")] = 0,
    n_cells: Annotated[
        int | None, typer.Option(help="Override the preset's number of cells.")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Simulate a case/control time-course cohort with known truth (uns['truth'])."""

    def work() -> None:
        from omicstwin.datasets import generate
        from omicstwin.errors import ParameterError

        if out.suffix != ".h5ad":
            raise ParameterError(
                f"--out must end in .h5ad, got '{out.name}'; fix: e.g. cohort.h5ad"
            )
        overrides = {"seed": seed} | ({"n_cells": n_cells} if n_cells is not None else {})
        started = time.perf_counter()
        if preset == "atlas":  # streamed to the file chunk by chunk, never whole in memory
            from omicstwin.datasets.atlas import write_atlas

            with _status(f"simulating the atlas cohort to {out}"):
                done = write_atlas(out, disease=not no_disease, **overrides)
            typer.echo(
                f"wrote {out} ({done['n_cells']} cells x {done['n_genes']} genes, seed {seed}, "
                f"{time.perf_counter() - started:.1f} s)"
            )
            return
        with _status(f"simulating the '{preset}' cohort"):
            adata = generate(preset, generator=generator, disease=not no_disease, **overrides)
        _write_h5ad(adata, out)
        typer.echo(
            f"wrote {out} ({adata.n_obs} cells x {adata.n_vars} genes, seed {seed}, "
            f"{time.perf_counter() - started:.1f} s)"
        )

    _run(debug, work)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory of the demo.")] = Path("demo_output"),
    config: Annotated[
        Path | None, typer.Option(help="Study config (default: pipelines/demo.yaml).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the simulation and the analysis.")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Run pipelines/demo.yaml (the bundled simulated cohort) through every stage."""

    def work() -> None:
        from omicstwin.demo import run_demo

        with _StageProgress() as progress:
            result = run_demo(out, config=config, seed=seed, stage=progress.stage, echo=typer.echo)
        _echo_run_summary(result, out)

    _run(debug, work)


@app.command()
def grn(
    expression: Annotated[
        Path, typer.Option(help="BEELINE ExpressionData.csv (genes x cells, comma-separated).")
    ],
    out: Annotated[Path, typer.Option(help="Output rankedEdges.csv (tab-separated).")],
    pseudotime: Annotated[
        Path | None,
        typer.Option(help="BEELINE PseudoTime.csv (cells x branches, NA off-branch)."),
    ] = None,
    method: Annotated[str | None, typer.Option(help="GRN method (default: lagged_ridge).")] = None,
    regulators: Annotated[
        Path | None, typer.Option(help="Candidate regulators, one gene per line.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same edges.")] = 0,
    debug: DebugOption = False,
) -> None:
    """Infer a GRN from BEELINE-format input and write BEELINE's rankedEdges.csv."""

    def work() -> None:
        from omicstwin.datasets.beeline import read_expression, read_pseudotime, write_ranked_edges
        from omicstwin.errors import DataFileError
        from omicstwin.tl.grn import DEFAULT_METHOD, infer_grn

        values, genes, cells = read_expression(expression)
        ptime = read_pseudotime(pseudotime, cells) if pseudotime is not None else None
        regs = None
        if regulators is not None:
            try:
                lines = regulators.read_text().splitlines()
            except OSError as exc:
                raise DataFileError(f"cannot read '{regulators}' ({exc})") from exc
            regs = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
        edges = infer_grn(
            values,
            genes,
            method=method or DEFAULT_METHOD,
            regulators=regs,
            pseudotime=ptime,
            seed=seed,
        )
        write_ranked_edges(edges, out)  # sorted by weight, atomic: never half-written
        typer.echo(
            f"wrote {out} ({len(edges)} edges, {len(genes)} genes, method "
            f"{method or DEFAULT_METHOD}, seed {seed})"
        )

    _run(debug, work)


bench_app = typer.Typer(
    help="Benchmarks against published results.", no_args_is_help=True, add_completion=False
)
app.add_typer(bench_app, name="bench")


@bench_app.command("beeline")
def bench_beeline(
    models: Annotated[
        list[str] | None,
        typer.Option(help="BEELINE models (repeat or comma-separate); default all 10."),
    ] = None,
    replicates: Annotated[int, typer.Option(help="Replicates per model (1-10).")] = 10,
    method: Annotated[str | None, typer.Option(help="GRN method (default: lagged_ridge).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the method and the control.")] = 0,
    debug: DebugOption = False,
) -> None:
    """Reproduce BEELINE's published AUPRC, then score a method on the BEELINE models."""

    def work() -> None:
        from omicstwin.bench import beeline as bench
        from omicstwin.datasets import beeline

        typer.echo(bench.format_reproduction(bench.reproduce_published("HSC", 0)))
        chosen = [m for item in (models or []) for m in item.split(",") if m] or [
            *beeline.CURATED_MODELS,
            *beeline.SYNTHETIC_MODELS,
        ]
        from omicstwin.tl.grn import DEFAULT_METHOD

        name = method or DEFAULT_METHOD
        results = bench.run_beeline_benchmark(chosen, replicates=replicates, method=name, seed=seed)
        typer.echo("")
        typer.echo(bench.format_benchmark_table(bench.summarise_benchmark(results), name))

    _run(debug, work)


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Study config (YAML); flags override it.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory for the result tables.")] = Path(
        "omicstwin_run"
    ),
    data: Annotated[Path | None, typer.Option(help="AnnData/MuData file.")] = None,
    cell_type_key: Annotated[str | None, typer.Option(help="obs column of cell types.")] = None,
    time_key: Annotated[str | None, typer.Option(help="obs column of time points.")] = None,
    condition_key: Annotated[str | None, typer.Option(help="obs column of the arm.")] = None,
    donor_key: Annotated[str | None, typer.Option(help="obs column of donors.")] = None,
    case: Annotated[str | None, typer.Option(help="Case label.")] = None,
    control: Annotated[str | None, typer.Option(help="Control label.")] = None,
    layer: Annotated[str | None, typer.Option(help="Layer with raw counts.")] = None,
    species: Annotated[
        str | None, typer.Option(help="Species of the genes: auto (detect), human or mouse.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing dask scheduler.")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Cluster profile: local, slurm, pbs or a YAML path.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local dask worker processes (0: in process).")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Run the twin's stages on a study and write the result tables to a run directory."""

    def work() -> None:
        from omicstwin.pipeline import load_config, run_pipeline

        overrides = {
            "data": str(data) if data is not None else None,
            "cell_type_key": cell_type_key,
            "time_key": time_key,
            "condition_key": condition_key,
            "donor_key": donor_key,
            "case": case,
            "control": control,
            "layer": layer,
            "species": species,
            "seed": seed,
            "scheduler": scheduler,
            "profile": profile,
            "workers": workers,
        }
        settings = load_config(config, overrides)
        with _StageProgress() as progress:
            result = run_pipeline(settings, out, stage=progress.stage)
        typer.echo(f"cohort: {result['cohort']}")
        _echo_run_summary(result, out)

    _run(debug, work)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by omicstwin run.")],
    debug: DebugOption = False,
) -> None:
    """Write RUN_DIR/report.html: one self-contained HTML report of a finished run."""

    def work() -> None:
        from omicstwin.report import build_report

        started = time.perf_counter()
        with _status("writing the report"):
            path = build_report(run_dir)
        typer.echo(f"wrote {path} ({time.perf_counter() - started:.1f} s)")

    _run(debug, work)


def _echo_run_summary(result: dict[str, Any], out: Path) -> None:
    """Print the stage timings, the top targets and where the results are."""
    timings = result["timings_s"]
    width = max(len(name) for name in timings)
    typer.echo("stage timings:")
    for name, seconds in timings.items():
        note = "reused (unchanged)" if name in result["cached_stages"] else f"{seconds:8.1f} s"
        typer.echo(f"  {name:<{width}}  {note}")
    typer.echo(f"  {'total':<{width}}  {sum(timings.values()):8.1f} s")
    failures = {k: v for k, v in result.get("failures", {}).items() if v}
    if failures:
        typer.echo(f"failed work units (rows in the stage tables): {failures}")
    typer.echo("top targets (reversal of the disease state): " + ", ".join(result["top_targets"]))
    typer.echo(f"results in {out}/: {', '.join(result['tables'])}, twin/, run.json")
    typer.echo(f"report: {result['report']}")


def _status(message: str):
    """Show a spinner on stderr (rich) while a stage runs; silent when not a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    return console.status(message + " ...", spinner="dots")


class _StageProgress:
    """One progress bar per pipeline stage on stderr (rich); plain lines when not a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
        )

    def __enter__(self) -> _StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def stage(self, name: str):
        """Context of one stage; yields ``advance(done, total)`` for work inside the stage."""
        task = self.progress.add_task(name, total=None)
        started = time.perf_counter()
        if not self.console.is_terminal:
            self.console.print(f"stage {name} ...", highlight=False)

        def advance(done: int, total: int) -> None:
            self.progress.update(task, completed=done, total=total)

        yield advance
        total = self.progress.tasks[-1].total or 1
        self.progress.update(task, total=total, completed=total)
        if not self.console.is_terminal:
            seconds = time.perf_counter() - started
            self.console.print(f"stage {name} done in {seconds:.1f} s", highlight=False)


def _write_h5ad(adata, path: Path) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    adata.write_h5ad(partial, compression="lzf")
    partial.replace(path)


_register_service_commands(app)
_register_regulators_command(app)
_register_prior_commands(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
