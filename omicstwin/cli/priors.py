"""CLI commands of the regulator priors: ``omicstwin priors build|show``.

Wiring only: the work is :func:`omicstwin.tl.priors.build_prior` and
:func:`omicstwin.tl.priors.prior_provenance`; registered on the main app by :func:`register`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from omicstwin.cli._common import DebugOption, _run

NAMES = "ligand_targets, receptor_targets, regulator_types or regulator_prior"
SOURCES = "omnipath (academic use), nichenet_v1 (academic use; needs pyreadr) or permissive"

priors_app = typer.Typer(
    help="Build and inspect the regulator priors (ligand/receptor -> target, regulator types).",
    no_args_is_help=True,
)
NameArgument = Annotated[str, typer.Argument(help=f"Prior: {NAMES}.")]
SourceOption = Annotated[str, typer.Option("--source", help=f"Input source: {SOURCES}.")]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Folder for <source>/<name>.parquet (default the cache)."),
]


@priors_app.command("build")
def build(
    name: NameArgument,
    source: SourceOption = "omnipath",
    out: OutOption = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if current.")] = False,
    debug: DebugOption = False,
) -> None:
    """Build a prior from its manifest resources (or reuse a verified, current cache)."""

    def work() -> None:
        from omicstwin.tl.priors import build_prior, prior_provenance

        path = build_prior(name, source=source, out=out, force=force)
        record = prior_provenance(name, source=source, out=out)
        typer.echo(
            f"{path} ({record['output']['rows']} rows, sha256 {record['output']['sha256'][:12]}, "
            f"built {record['built_at']} in {record['build_seconds']} s"
            + (", academic use only" if record["academic_only"] else "")
            + ")"
        )

    _run(debug, work)


@priors_app.command("show")
def show(
    name: NameArgument,
    source: SourceOption = "omnipath",
    out: OutOption = None,
    debug: DebugOption = False,
) -> None:
    """Print a built prior's provenance (inputs and sha256s, parameters, output checksum)."""

    def work() -> None:
        from omicstwin.tl.priors import prior_provenance

        typer.echo(json.dumps(prior_provenance(name, source=source, out=out), indent=2))

    _run(debug, work)


def register(app: typer.Typer) -> None:
    """Add the ``priors`` command group to the main CLI app."""
    app.add_typer(priors_app, name="priors")
