"""The results database: typed SQLAlchemy 2 tables, engines, and the schema version check.

One database holds any number of published studies, the patient twin records, API keys, grants
and the audit trail. SQLite (a file, zero set-up) is the default; PostgreSQL works with a
``postgresql+psycopg://user:password@host:port/db`` URL.

Schema versions are Alembic revisions (``omicstwin/store/migrations``). Writers
(``omicstwin publish``, ``patients import``, ``keys create``, ``grants add``, ``db upgrade``)
upgrade the schema to this package's head first; readers (the service) never migrate and refuse
a database at another revision with :class:`SchemaVersionError`, whose message names the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from omicstwin.errors import OmicstwinError, OmicstwinWarning

SQLITE_DEFAULT = "sqlite:///omicstwin.db"
MIGRATIONS = Path(__file__).parent / "migrations"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""Study and patient ids: URL-safe pseudonyms of at most 128 characters."""
_ID_RE = re.compile(ID_PATTERN)


class DatabaseError(OmicstwinError, ValueError):
    """The database URL is invalid or the database cannot be reached."""


class SchemaVersionError(DatabaseError):
    """The database schema is at another revision than this omicstwin expects."""


class InsecureFileWarning(OmicstwinWarning):
    """The SQLite database file (or its -wal/-shm companion) is readable by other users."""


class Base(DeclarativeBase):
    """Declarative base of every omicstwin table."""


# Float columns are double precision everywhere (SQLite REAL is already 8 bytes).
Float = sa.Double


class Study(Base):
    """One published run directory."""

    __tablename__ = "studies"
    study_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    published_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    run_schema_version: Mapped[int] = mapped_column(sa.Integer)
    seed: Mapped[int | None] = mapped_column(sa.BigInteger)
    cohort: Mapped[str | None] = mapped_column(sa.Text)
    case_label: Mapped[str | None] = mapped_column(sa.String(128))
    control_label: Mapped[str | None] = mapped_column(sa.String(128))
    cell_types: Mapped[str] = mapped_column(sa.Text)  # JSON list
    time_points: Mapped[str] = mapped_column(sa.Text)  # JSON list
    counts: Mapped[str] = mapped_column(sa.Text)  # JSON {table: rows}
    run_json: Mapped[str] = mapped_column(sa.Text)  # provenance, verbatim


class Target(Base):
    """Study-level target ranking (``rank_targets``)."""

    __tablename__ = "targets"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(512))
    rank: Mapped[int] = mapped_column(sa.Integer)
    score: Mapped[float | None] = mapped_column(Float)
    off_target: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    cell_type: Mapped[str | None] = mapped_column(sa.String(128))
    time: Mapped[float | None] = mapped_column(Float)
    kind: Mapped[str | None] = mapped_column(sa.String(64))
    genes: Mapped[str | None] = mapped_column(sa.String(512))
    dose: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (
        sa.Index("ix_targets_study_rank", "study_id", "rank"),
        sa.Index("ix_targets_genes", "genes"),
    )


class ContextTarget(Base):
    """Per cell type x time perturbation scores (``perturbations``), ranked within a context."""

    __tablename__ = "context_targets"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(512))
    rank: Mapped[int] = mapped_column(sa.Integer)  # by reversal_score within the context
    score: Mapped[float | None] = mapped_column(Float)
    off_target: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    cell_type: Mapped[str] = mapped_column(sa.String(128))
    time: Mapped[float] = mapped_column(Float)
    kind: Mapped[str | None] = mapped_column(sa.String(64))
    genes: Mapped[str | None] = mapped_column(sa.String(512))
    dose: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (
        sa.Index("ix_context_targets_ctx_rank", "study_id", "cell_type", "time", "rank"),
        sa.Index("ix_context_targets_genes", "genes"),
    )


class DiseaseGene(Base):
    """Study-level disease gene ranking (``rank_disease_genes``)."""

    __tablename__ = "disease_genes"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(512))
    rank: Mapped[int] = mapped_column(sa.Integer)
    score: Mapped[float | None] = mapped_column(Float)
    off_target: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    cell_type: Mapped[str | None] = mapped_column(sa.String(128))
    time: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (
        sa.Index("ix_disease_genes_study_rank", "study_id", "rank"),
        sa.Index("ix_disease_genes_name", "name"),
    )


class Drug(Base):
    """Study-level drug ranking (``rank_drugs``)."""

    __tablename__ = "drugs"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(512))
    drug_name: Mapped[str | None] = mapped_column(sa.String(512))
    rank: Mapped[int] = mapped_column(sa.Integer)
    score: Mapped[float | None] = mapped_column(Float)
    off_target: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    cell_type: Mapped[str | None] = mapped_column(sa.String(128))
    time: Mapped[float | None] = mapped_column(Float)
    genes: Mapped[str | None] = mapped_column(sa.String(2048))
    dose: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (sa.Index("ix_drugs_study_rank", "study_id", "rank"),)


class MnmEdge(Base):
    """An edge of the study's multicellular network model (``mnm``; schema 0004).

    Study-level: sender -> receiver at a time point when upstream regulators of the receiver's
    DEGs are up-regulated in the sender (Li et al. 2022); no patient link.
    """

    __tablename__ = "mnm_edges"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE")
    )
    time: Mapped[float] = mapped_column(Float)
    source_cell_type: Mapped[str] = mapped_column(sa.String(128))
    target_cell_type: Mapped[str] = mapped_column(sa.String(128))
    n_regulators: Mapped[int] = mapped_column(sa.Integer)
    regulators: Mapped[str] = mapped_column(sa.Text)  # ";"-joined
    __table_args__ = (sa.Index("ix_mnm_edges_study_time", "study_id", "time"),)


class CellTypeCentrality(Base):
    """Cell types ranked by eigenvector centrality of the study's MNM (``centrality``; 0004)."""

    __tablename__ = "cell_type_centrality"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE")
    )
    cell_type: Mapped[str] = mapped_column(sa.String(128))
    centrality: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(sa.Integer)
    __table_args__ = (sa.Index("ix_cell_type_centrality_study_rank", "study_id", "rank"),)


class Patient(Base):
    """A patient twin record: one per donor of a study, cases and controls alike.

    ``patient_id`` is unique across the database (see ``omicstwin.store.publish``).
    """

    __tablename__ = "patients"
    patient_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE"), index=True
    )
    donor: Mapped[str] = mapped_column(sa.String(128))
    arm: Mapped[str] = mapped_column(sa.String(32))
    time_points: Mapped[str] = mapped_column(sa.Text)  # JSON list of floats
    external_ref_hash: Mapped[str | None] = mapped_column(sa.String(256))
    state_summary: Mapped[str] = mapped_column(sa.Text)  # JSON
    n_targets: Mapped[int] = mapped_column(sa.Integer)
    __table_args__ = (sa.UniqueConstraint("study_id", "donor", name="uq_patients_study_donor"),)


class PatientTarget(Base):
    """A patient's personalised target ranking, with its study-level evidence denormalised."""

    __tablename__ = "patient_targets"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(
        sa.String(128),
        # ON UPDATE CASCADE: `patients import` may rename a record's pseudonym in place
        sa.ForeignKey("patients.patient_id", ondelete="CASCADE", onupdate="CASCADE"),
    )
    study_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("studies.study_id", ondelete="CASCADE"), index=True
    )
    rank: Mapped[int] = mapped_column(sa.Integer)
    target: Mapped[str] = mapped_column(sa.String(512))
    cell_type: Mapped[str | None] = mapped_column(sa.String(128))
    time: Mapped[float | None] = mapped_column(Float)
    reversal_score: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)  # the patient's own screen (0003)
    q_value: Mapped[float | None] = mapped_column(Float)
    study_name: Mapped[str | None] = mapped_column(sa.String(512))  # rank_targets name
    study_rank: Mapped[int | None] = mapped_column(sa.Integer)
    study_score: Mapped[float | None] = mapped_column(Float)
    study_q_value: Mapped[float | None] = mapped_column(Float)
    context_rank: Mapped[int | None] = mapped_column(sa.Integer)
    context_q_value: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (sa.Index("ix_patient_targets_patient_rank", "patient_id", "rank"),)


class PatientMapping(Base):
    """Imported donor -> record mapping; kept apart so that it survives re-publishing."""

    __tablename__ = "patient_mappings"
    study_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    donor: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    patient_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    external_ref_hash: Mapped[str | None] = mapped_column(sa.String(256))


class ApiKey(Base):
    """An API key: only the SHA-256 of the key is stored."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    role: Mapped[str] = mapped_column(sa.String(32))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))  # None: never
    last_used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Grant(Base):
    """Permission of one key to read one patient's record.

    The grant is bound to the record: deleting the record (a re-publish without the donor, a
    deleted study) deletes its grants, and renaming the record's pseudonym moves them.
    """

    __tablename__ = "grants"
    key_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    patient_id: Mapped[str] = mapped_column(
        sa.String(128),
        sa.ForeignKey(
            "patients.patient_id",
            ondelete="CASCADE",
            onupdate="CASCADE",
            name="fk_grants_patient_id_patients",
        ),
        primary_key=True,
    )
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class RetiredPseudonym(Base):
    """A patient id whose record was deleted: never reused for another person by accident.

    Publish refuses to create a record under a retired pseudonym unless a donor mapping
    (``omicstwin patients import``) names it explicitly.
    """

    __tablename__ = "retired_pseudonyms"
    patient_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    study_id: Mapped[str | None] = mapped_column(sa.String(128))  # None: unknown (migration)
    retired_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(sa.String(256))


class AuditEntry(Base):
    """One read (or attempted read) of patient data: who, what, when, outcome."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    key_name: Mapped[str | None] = mapped_column(sa.String(128))  # None: no valid key
    role: Mapped[str | None] = mapped_column(sa.String(32))
    action: Mapped[str] = mapped_column(sa.String(128))  # route template, e.g. patient.targets
    patient_id: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(32))  # allowed / denied / not_found / ...


TABLES = Base.metadata.tables


def utcnow() -> datetime:
    """Timezone-aware now (UTC), the only clock the store uses."""
    return datetime.now(UTC)


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid study/patient id/key name, else raise DatabaseError.

    The whole value must match :data:`ID_PATTERN`: no surrounding whitespace, no trailing
    newline (``re.match`` with ``$`` would let one through).
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise DatabaseError(
            f"{what} {value!r} is not a valid id; fix: use 1-128 characters from letters, "
            "digits and . _ : - (starting with a letter or digit; no spaces or line breaks)"
        )
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the service's readers run while a publish writes; busy_timeout makes concurrent
    # writers (audit rows from several workers) wait instead of failing with "locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine for a database URL (default: ``sqlite:///omicstwin.db``).

    Parameters
    ----------
    url
        ``sqlite:///path.db`` or ``postgresql+psycopg://user:pw@host:port/db``. A bare file path
        is taken as a SQLite file.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.

    Raises
    ------
    DatabaseError
        The URL cannot be parsed or names an unsupported backend.
    """
    url = url or SQLITE_DEFAULT
    if "://" not in url:
        url = f"sqlite:///{url}"
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(
            f"cannot parse the database URL ({exc}); fix: use sqlite:///file.db or "
            "postgresql+psycopg://user:password@host:port/database"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"unsupported database backend '{backend}'; fix: use sqlite:///file.db or "
            "postgresql+psycopg://..."
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            _private_file(Path(database).expanduser().resolve())
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    else:
        kwargs.setdefault("pool_pre_ping", True)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        raise DatabaseError(
            f"the driver for '{parsed.drivername}' is not installed ({exc}); fix: pip install "
            "'omicstwin[postgres]'"
        ) from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only, or warn if it is readable by others.

    SQLite creates the ``-wal`` and ``-shm`` files with the mode of the database file, so a
    0600 database file keeps its companions private too.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    except OSError:  # unwritable directory etc.: let SQLite report it when it connects
        return
    else:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.close(fd)
        return
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            warnings.warn(
                f"the database file {file} is readable or writable by other users (mode "
                f"{mode:04o}); fix: chmod 600 {file}",
                InsecureFileWarning,
                stacklevel=3,
            )


WRITER_LOCK_NAME = "omicstwin.store.writer"
_WRITER_LOCK_ID = int.from_bytes(
    hashlib.sha256(WRITER_LOCK_NAME.encode()).digest()[:8], "big", signed=True
)


@contextmanager
def writer_transaction(engine: Engine) -> Iterator[sa.Connection]:
    """Open a transaction that holds the writer lock from its first statement to its commit.

    Writers (publish, patients import, study deletion, schema upgrades) check what the database
    holds and then write; holding the lock over both serialises concurrent writers, so the
    second one sees the first one's result. SQLite: ``BEGIN IMMEDIATE`` (waits up to the busy
    timeout, 30 s); PostgreSQL: ``pg_advisory_xact_lock`` on a fixed key (readers never wait).

    Raises
    ------
    DatabaseError
        SQLite: another writer held the lock longer than the busy timeout.
    """
    with engine.connect() as conn:
        try:
            if conn.dialect.name == "sqlite":
                # pysqlite opens its own transaction lazily (before the first write), so an
                # explicit BEGIN IMMEDIATE here becomes the transaction SQLAlchemy commits.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_WRITER_LOCK_ID)))
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
            raise DatabaseError(
                f"the database {describe_url(engine)} stayed locked by another writer (a "
                "publish, import or upgrade) for 30 s; fix: wait for it to finish and run the "
                "command again"
            ) from None
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def describe_url(engine: Engine) -> str:
    """Return the engine's URL without its password (safe for messages and logs)."""
    return engine.url.render_as_string(hide_password=True)


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # The URL only matters when env.py runs without a connection (alembic CLI use).
    cfg.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return cfg


def head_revision() -> str:
    """Return the schema revision this version of omicstwin writes and reads."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at (None: not initialised by omicstwin)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to the database {describe_url(engine)} "
            f"({str(exc.orig).strip().splitlines()[0] if exc.orig else exc}); fix: check the URL "
            "and that the server is running"
        ) from None


def upgrade_db(url_or_engine: str | Engine, revision: str = "head") -> str:
    """Create or migrate the schema to this package's head revision; return the revision.

    ``revision`` names an older revision instead (tests build databases of earlier releases).
    On SQLite the migration runs with foreign keys enforced, so that cascades hold.

    Raises
    ------
    SchemaVersionError
        The database is at a revision this omicstwin does not know (written by a newer one).
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    cfg = _alembic_config(engine)
    script = ScriptDirectory.from_config(cfg)
    current = current_revision(engine)
    if current is not None and _unknown(script, current):
        raise _newer_error(engine, current)
    if current == (head_revision() if revision == "head" else revision):
        return current  # nothing to do: no writer lock needed (the service may be running)
    if engine.dialect.name == "sqlite":
        _require_foreign_keys(engine)
    with writer_transaction(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)  # re-reads the revision under the lock
    return head_revision() if revision == "head" else revision


def _require_foreign_keys(engine: Engine) -> None:
    """Raise unless SQLite enforces foreign keys on the engine's connections (cascades)."""
    with engine.connect() as conn:
        if conn.exec_driver_sql("PRAGMA foreign_keys").scalar() != 1:
            raise DatabaseError(
                "SQLite foreign keys are off on this engine's connections; fix: create the "
                "engine with omicstwin.store.db.make_engine"
            )


def _unknown(script: Any, revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return script.get_revision(revision) is None
    except CommandError:
        return True


def _newer_error(engine: Engine, current: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database {describe_url(engine)} is at schema revision '{current}', which this "
        f"omicstwin (schema '{head_revision()}') does not know: it was written by a newer "
        "omicstwin; fix: upgrade omicstwin (pip install -U omicstwin)"
    )


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaVersionError` unless the database is at this package's head.

    Readers call this once at start-up; they never migrate a database themselves.
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    shown = describe_url(engine)
    if current is None:
        raise SchemaVersionError(
            f"the database {shown} has no omicstwin schema; fix: publish a run into it "
            f"(omicstwin publish RUN_DIR --db URL) or run: omicstwin db upgrade --db URL"
        )
    from alembic.script import ScriptDirectory

    if _unknown(ScriptDirectory.from_config(_alembic_config(engine)), current):
        raise _newer_error(engine, current)
    raise SchemaVersionError(
        f"the database {shown} is at schema revision '{current}' but this omicstwin needs "
        f"'{head}'; fix: run: omicstwin db upgrade --db URL"
    )


def loads(text: str | None, default: Any = None) -> Any:
    """Decode a JSON text column (None -> ``default``)."""
    return default if text is None else json.loads(text)


# ----------------------------------------------------------------------------- PostgreSQL roles

SERVICE_READS = (
    "alembic_version",
    "studies",
    "targets",
    "context_targets",
    "disease_genes",
    "drugs",
    "mnm_edges",
    "cell_type_centrality",
    "patients",
    "patient_targets",
    "api_keys",
    "grants",
    "audit",
)
"""Tables the service reads (never ``patient_mappings`` nor ``retired_pseudonyms``)."""

_ROLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _table_statements(quote: Any, schema: str, service_role: str, publish_role: str) -> list[str]:
    """Return the table GRANT/REVOKE statements of :func:`grant_roles`."""
    s, svc, pub = quote(schema), quote(service_role), quote(publish_role)
    tables = ["alembic_version", *TABLES]
    out = []
    for name in tables:
        table = f"{s}.{quote(name)}"
        out.append(f"REVOKE ALL ON {table} FROM {svc}")
        out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {pub}")
        if name in SERVICE_READS:
            out.append(f"GRANT SELECT ON {table} TO {svc}")
    out.append(f"GRANT INSERT ON {s}.{quote('audit')} TO {svc}")
    out.append(f"GRANT UPDATE (last_used_at) ON {s}.{quote('api_keys')} TO {svc}")
    return out


def grant_roles(engine: Engine, *, service_role: str, publish_role: str) -> list[str]:
    """Give a PostgreSQL service role and writer role exactly the privileges they need.

    - ``publish_role`` (publish, patients import, keys, grants, ``db upgrade``) becomes the
      owner of the omicstwin tables (migrations alter them) and gets ``USAGE, CREATE`` on the
      schema;
    - ``service_role`` (``omicstwin serve``) gets ``USAGE`` on the schema, ``SELECT`` on the
      tables it reads, ``INSERT`` on ``audit`` (and ``USAGE`` on its id sequence) and
      ``UPDATE (last_used_at)`` on ``api_keys``; nothing else (no writes to the data tables,
      no access to ``patient_mappings``).

    Both roles must exist (``CREATE ROLE name LOGIN PASSWORD '...'``, by a database
    administrator). Run it as a superuser or as the owner of the tables and the schema (or a
    member of ``publish_role`` who owns the schema). The schema must be at this package's
    revision; run it again after every ``omicstwin db upgrade``.

    Returns
    -------
    list[str]
        The statements applied, in order (one transaction).

    Raises
    ------
    DatabaseError
        Not PostgreSQL, an invalid or missing role, the schema not at head, or missing
        privileges to grant (the message names the fix).
    """
    if engine.dialect.name != "postgresql":
        raise DatabaseError(
            "database roles apply to PostgreSQL only; fix: for SQLite keep the database file "
            "private to the service's user (chmod 600 FILE) and run publish as that user"
        )
    for what, role in (("--service-role", service_role), ("--publish-role", publish_role)):
        if not isinstance(role, str) or not _ROLE_RE.fullmatch(role):
            raise DatabaseError(
                f"{what} {role!r} is not a plain role name; fix: use letters, digits and _ "
                "(at most 63, not starting with a digit)"
            )
    if service_role == publish_role:
        raise DatabaseError(
            "the service role and the publish role are the same; fix: use two roles, so that "
            "the service cannot write the data tables"
        )
    check_schema(engine)
    quote = engine.dialect.identifier_preparer.quote
    applied: list[str] = []
    with engine.begin() as conn:
        known = set(
            conn.execute(
                sa.text("SELECT rolname FROM pg_roles WHERE rolname IN (:a, :b)"),
                {"a": service_role, "b": publish_role},
            ).scalars()
        )
        for role in (service_role, publish_role):
            if role not in known:
                raise DatabaseError(
                    f"role '{role}' does not exist; fix: create it as a database administrator "
                    f"(CREATE ROLE {role} LOGIN PASSWORD '...'), then run this again"
                )
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        statements = []  # schema privileges first: a new owner needs CREATE on the schema
        for role, privileges in ((publish_role, ("USAGE", "CREATE")), (service_role, ("USAGE",))):
            for privilege in privileges:
                held = conn.execute(
                    sa.text("SELECT has_schema_privilege(:r, :s, :p)"),
                    {"r": role, "s": schema, "p": privilege},
                ).scalar()
                if not held:
                    statements.append(
                        f"GRANT {privilege} ON SCHEMA {quote(schema)} TO {quote(role)}"
                    )
        owners = dict(
            conn.execute(
                sa.text(
                    "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = :s "
                    "AND tablename = ANY(:t)"
                ),
                {"s": schema, "t": ["alembic_version", *TABLES]},
            ).all()
        )
        for name, owner in sorted(owners.items()):
            if owner != publish_role:
                statements.append(
                    f"ALTER TABLE {quote(schema)}.{quote(name)} OWNER TO {quote(publish_role)}"
                )
        statements += _table_statements(quote, schema, service_role, publish_role)
        sequence = conn.execute(
            sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": f"{quote(schema)}.audit"}
        ).scalar()
        if sequence:
            statements.append(f"GRANT USAGE ON SEQUENCE {sequence} TO {quote(service_role)}")
        for statement in statements:
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(statement)
            except sa.exc.ProgrammingError as exc:
                raise DatabaseError(
                    f"cannot apply '{statement}' as {describe_url(engine)} "
                    f"({str(exc.orig).strip().splitlines()[0]}); fix: run omicstwin db roles as "
                    "a superuser, or as the owner of the schema and tables who is a member of "
                    f"the publish role (GRANT {publish_role} TO CURRENT_USER)"
                ) from None
            applied.append(statement)
    return applied
