"""CLI commands of the results database and the service.

``publish``, ``serve``, ``patients import``, ``keys create|list|revoke``, ``grants add`` and
``db upgrade``; registered on the main typer app by :func:`register` (``cli/analysis.py``).
The database URL comes from ``--db``, else ``$OMICSTWIN_DB_URL``, else ``sqlite:///omicstwin.db``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from omicstwin.cli._common import DebugOption, _run

DB_HELP = (
    "Database URL: sqlite:///file.db (default sqlite:///omicstwin.db) or "
    "postgresql+psycopg://user:password@host:port/db. Default: $OMICSTWIN_DB_URL."
)
DbOption = Annotated[str | None, typer.Option("--db", help=DB_HELP)]


def _db(url: str | None) -> str:
    from omicstwin.store.db import SQLITE_DEFAULT

    return url or os.environ.get("OMICSTWIN_DB_URL") or SQLITE_DEFAULT


def publish(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by omicstwin run.")],
    db: DbOption = None,
    study_id: Annotated[
        str | None,
        typer.Option(
            help="Study id (default: run.json study_id or the config's study, else the folder)."
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Load a run directory into the database (atomic; re-publishing unchanged is a no-op)."""

    def work() -> None:
        from omicstwin.store.publish import publish_run

        typer.echo(publish_run(run_dir, _db(db), study_id=study_id).one_line())

    _run(debug, work)


def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="uvicorn worker processes (>1 for throughput).", min=1, max=64)
    ] = 1,
    debug: DebugOption = False,
) -> None:
    """Serve the query API (under /api/v1) with uvicorn; the access log is off (paths carry ids)."""

    def work() -> None:
        import uvicorn

        from omicstwin.service.app import DB_ENV, create_app
        from omicstwin.store.db import make_engine

        url = _db(db)
        engine = make_engine(url)
        create_app(engine)  # fail here, with one line, on a missing schema or a bad URL
        engine.dispose()
        os.environ[DB_ENV] = url  # the workers' factory reads it
        typer.echo(f"serving on http://{host}:{port}/api/v1 (docs: /docs)", err=True)
        uvicorn.run(
            "omicstwin.service.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_level="debug" if debug else "warning",
        )

    _run(debug, work)


patients_app = typer.Typer(help="Patient twin records.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="API keys of the service.", no_args_is_help=True, add_completion=False)
grants_app = typer.Typer(
    help="Grants of patient records to keys.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, add_completion=False)


@patients_app.command("import")
def patients_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with study_id,donor and patient_id and/or external_ref (MRN, FHIR id)."
        ),
    ],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Map donors to patient records: pseudonyms and hashed external record references."""

    def work() -> None:
        from omicstwin.store.publish import import_patients

        typer.echo(import_patients(file, _db(db)).one_line())

    _run(debug, work)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, analyst or clinician.")],
    name: Annotated[str, typer.Option(help="Unique name of the key (who holds it).")],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Create an API key; the key is printed once, as the last word (only its hash is kept)."""

    def work() -> None:
        from omicstwin.store.access import create_key
        from omicstwin.store.db import upgrade_db

        url = _db(db)
        upgrade_db(url)
        key = create_key(_engine(url), name=name, role=role)
        typer.echo(f"created {role} key '{name}' (shown only now, store it safely): {key}")

    _run(debug, work)


@keys_app.command("list")
def keys_list(db: DbOption = None, debug: DebugOption = False) -> None:
    """List keys: name, role, created, revoked (never the keys)."""

    def work() -> None:
        from omicstwin.store.access import list_keys
        from omicstwin.store.db import check_schema

        engine = _engine(_db(db))
        check_schema(engine)
        for row in list_keys(engine):
            revoked = f" revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else ""
            typer.echo(f"{row['name']}\t{row['role']}\t{row['created_at']:%Y-%m-%d}{revoked}")

    _run(debug, work)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Option(help="Name of the key.")],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Revoke a key (the service stops accepting it within 10 s)."""

    def work() -> None:
        from omicstwin.store.access import revoke_key

        revoke_key(_engine(_db(db)), name)
        typer.echo(f"revoked key '{name}'")

    _run(debug, work)


@grants_app.command("add")
def grants_add(
    key_name: Annotated[str, typer.Option(help="Name of the key to grant.")],
    patient: Annotated[str, typer.Option(help="Patient id (pseudonym).")],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Let a key read one patient's record and personalised targets."""

    def work() -> None:
        from omicstwin.store.access import add_grant
        from omicstwin.store.db import upgrade_db

        url = _db(db)
        upgrade_db(url)
        new = add_grant(_engine(url), key_name=key_name, patient_id=patient)
        # The patient id is not echoed: terminal output often ends up in logs.
        typer.echo(f"granted key '{key_name}' one patient" if new else "grant already present")

    _run(debug, work)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, debug: DebugOption = False) -> None:
    """Create or migrate the database schema to this omicstwin's revision."""

    def work() -> None:
        from omicstwin.store.db import upgrade_db

        typer.echo(f"database schema at revision {upgrade_db(_db(db))}")

    _run(debug, work)


def _engine(url: str):
    from omicstwin.store.db import make_engine

    return make_engine(url)


def register(app: typer.Typer) -> None:
    """Add the database and service commands to the main CLI app."""
    app.command()(publish)
    app.command()(serve)
    app.add_typer(patients_app, name="patients")
    app.add_typer(keys_app, name="keys")
    app.add_typer(grants_app, name="grants")
    app.add_typer(db_app, name="db")
