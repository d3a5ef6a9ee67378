"""CLI commands of the results database and the service.

``publish``, ``unpublish``, ``serve``, ``patients import``, ``keys create|list|rotate|revoke``,
``grants add|list|remove``, ``db upgrade`` and ``db roles``; registered on the main typer app by
:func:`register` (``cli/analysis.py``).
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


def unpublish(
    study_id: Annotated[str, typer.Argument(help="Id of the published study to delete.")],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Delete a study with its patient records and their grants; its pseudonyms are retired."""

    def work() -> None:
        from omicstwin.store.publish import delete_study

        n = delete_study(study_id, _db(db))
        typer.echo(
            f"deleted study '{study_id}' and {n} patient record(s) with their grants; their "
            "pseudonyms are retired (a later study cannot reuse them without a mapping)"
        )

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


ExpiresIn = Annotated[
    str | None,
    typer.Option(
        "--expires-in", help="Lifetime: a number and m (minutes), h, d or w, e.g. 90d or 12h."
    ),
]
ExpiresAt = Annotated[
    str | None,
    typer.Option("--expires-at", help="Expiry time, ISO 8601 (UTC unless a zone is given)."),
]


def _expiry(expires_in: str | None, expires_at: str | None):
    from omicstwin.store.access import AccessError, parse_expiry, parse_lifetime
    from omicstwin.store.db import utcnow

    if expires_in and expires_at:
        raise AccessError("--expires-in and --expires-at both given; fix: give one of them")
    if expires_in:
        return utcnow() + parse_lifetime(expires_in)
    return parse_expiry(expires_at) if expires_at else None


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, analyst or clinician.")],
    name: Annotated[str, typer.Option(help="Unique name of the key (who holds it).")],
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Create an API key; the key is printed once, as the last word (only its hash is kept)."""

    def work() -> None:
        from omicstwin.store.access import create_key
        from omicstwin.store.db import upgrade_db

        url = _db(db)
        expiry = _expiry(expires_in, expires_at)
        upgrade_db(url)
        key = create_key(_engine(url), name=name, role=role, expires_at=expiry)
        until = f", expires {_when(expiry)} UTC" if expiry else ", never expires"
        typer.echo(f"created {role} key '{name}'{until} (shown only now, store it safely): {key}")

    _run(debug, work)


@keys_app.command("list")
def keys_list(db: DbOption = None, debug: DebugOption = False) -> None:
    """List keys: name, role, created, expires, last used, revoked (UTC; never the keys)."""

    def work() -> None:
        from omicstwin.store.access import list_keys
        from omicstwin.store.db import check_schema, utcnow

        engine = _engine(_db(db))
        check_schema(engine)
        now = utcnow()
        typer.echo("name\trole\tcreated\texpires\tlast_used\trevoked\tstatus")
        for row in list_keys(engine):
            expires = row["expires_at"]
            status = (
                "revoked"
                if row["revoked_at"]
                else "expired"
                if expires is not None and expires <= now
                else "active"
            )
            cells = [
                row["name"],
                row["role"],
                _when(row["created_at"]),
                _when(expires) if expires else "never",
                _when(row["last_used_at"]) if row["last_used_at"] else "never",
                _when(row["revoked_at"]),
                status,
            ]
            typer.echo("\t".join(cells))

    _run(debug, work)


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[str, typer.Option(help="Name of the key.")],
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Issue a new secret for a key (same name, role, grants); the old secret stops working.

    A running service may still accept the old secret for its key-cache time
    (``OMICSTWIN_KEY_CACHE_SECONDS``, 10 s by default), as after ``keys revoke``.
    """

    def work() -> None:
        from omicstwin.store.access import rotate_key
        from omicstwin.store.db import upgrade_db

        url = _db(db)
        expiry = _expiry(expires_in, expires_at)
        upgrade_db(url)
        key = rotate_key(_engine(url), name, expires_at=expiry)
        typer.echo(
            f"rotated key '{name}': the old secret no longer works (a running service drops it "
            f"within its key-cache time); new key (shown only now, store it safely): {key}"
        )

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


@grants_app.command("list")
def grants_list(
    key_name: Annotated[str | None, typer.Option(help="Only the grants of this key.")] = None,
    patient: Annotated[str | None, typer.Option(help="Only the grants on this patient.")] = None,
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """List grants: key name, role, patient id, study, granted (UTC)."""

    def work() -> None:
        from omicstwin.store.access import list_grants
        from omicstwin.store.db import check_schema

        engine = _engine(_db(db))
        check_schema(engine)
        typer.echo("key_name\trole\tpatient_id\tstudy_id\tgranted")
        for row in list_grants(engine, key_name=key_name, patient_id=patient):
            cells = [row["key_name"], row["role"], row["patient_id"], row["study_id"] or "-"]
            typer.echo("\t".join([*cells, _when(row["created_at"])]))

    _run(debug, work)


@grants_app.command("remove")
def grants_remove(
    key_name: Annotated[str, typer.Option(help="Name of the key.")],
    patient: Annotated[str, typer.Option(help="Patient id (pseudonym).")],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """Withdraw a key's grant on one patient's record."""

    def work() -> None:
        from omicstwin.store.access import remove_grant

        remove_grant(_engine(_db(db)), key_name=key_name, patient_id=patient)
        typer.echo(f"removed the grant of key '{key_name}' on one patient")

    _run(debug, work)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, debug: DebugOption = False) -> None:
    """Create or migrate the database schema to this omicstwin's revision."""

    def work() -> None:
        from omicstwin.store.db import upgrade_db

        typer.echo(f"database schema at revision {upgrade_db(_db(db))}")

    _run(debug, work)


@db_app.command("roles")
def db_roles(
    service_role: Annotated[
        str, typer.Option(help="Existing role the service connects as: read + audit only.")
    ],
    publish_role: Annotated[
        str,
        typer.Option(help="Existing role for publish, keys, grants, imports and migrations."),
    ],
    db: DbOption = None,
    debug: DebugOption = False,
) -> None:
    """PostgreSQL: grant a service role and a writer role what they need, and nothing more.

    Run as a superuser or the owner of the schema (and a member of the publish role). Both
    roles must exist: CREATE ROLE name LOGIN PASSWORD '...'. Run it again after db upgrade.
    """

    def work() -> None:
        from omicstwin.store.db import grant_roles, upgrade_db

        url = _db(db)
        engine = _engine(url)
        if engine.dialect.name == "postgresql":
            upgrade_db(engine)
        applied = grant_roles(engine, service_role=service_role, publish_role=publish_role)
        typer.echo(
            f"applied {len(applied)} statement(s): service role '{service_role}' may read and "
            f"write audit rows; publish role '{publish_role}' owns the omicstwin tables"
        )

    _run(debug, work)


def _engine(url: str):
    from omicstwin.store.db import make_engine

    return make_engine(url)


def register(app: typer.Typer) -> None:
    """Add the database and service commands to the main CLI app."""
    app.command()(publish)
    app.command()(unpublish)
    app.command()(serve)
    app.add_typer(patients_app, name="patients")
    app.add_typer(keys_app, name="keys")
    app.add_typer(grants_app, name="grants")
    app.add_typer(db_app, name="db")
