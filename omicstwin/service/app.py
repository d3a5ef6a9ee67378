"""The FastAPI application: routes under ``/api/v1``, bearer-key auth, problem+json errors.

Roles: ``admin`` reads everything including ``/audit``; ``analyst`` reads all study data and
only the patients granted to its key; ``clinician`` reads only the patients granted to its key
(no study-level endpoints; a granted patient's targets carry their study-level evidence).
Every request to a patient route, whatever its answer (401 with the name of a revoked or expired
key, 403, 404, 422, 429, 500), appends an audit row before its response starts, and every patient
response carries ``Cache-Control: no-store`` (``guard.PatientGuard``). Keys expire at their exact
time; repeated failed authentication from one address is answered with 429 (``guard``).

Hot paths: the unfiltered rankings, patient reads and key lookups run short indexed statements
on one connection per worker on the event loop (``hotpath``), and a fast lane answers their
plain, valid, authorised requests before FastAPI's parameter solving (same answers; see
``fastlane``); audit rows are group-committed by one writer thread, each read waiting for its
row's commit (SQLite: or for its fsync in the audit journal while a publish holds the write
lock; see ``audit``).

Layout: ``settings`` (environment knobs), ``params`` (every parameter's bounds and defaults
and every endpoint's roles, read by the routes and the fast lane), ``errors`` (problem+json),
``deps`` (keys, ``require``, the audit write, the per-app ``Service``), ``hotpath`` (the hot
reads), ``routes`` (one module per resource), ``fastlane``, ``guard`` and ``audit``.

Logging: the service never logs request paths, keys or patient ids (paths carry patient ids,
so ``omicstwin serve`` turns uvicorn's access log off), and SQL parameters are hidden from
SQLAlchemy's logging.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from omicstwin import __version__
from omicstwin.service.audit import AuditJournal, journal_path
from omicstwin.service.audit import AuditWriter as _AuditWriter
from omicstwin.service.deps import Auth, KeyCache, Service
from omicstwin.service.errors import install_error_handlers, problem, problem_responses
from omicstwin.service.fastlane import FastLane
from omicstwin.service.guard import FailureLimiter, PatientGuard
from omicstwin.service.hotpath import HotReader, Rankings
from omicstwin.service.params import PREFIX
from omicstwin.service.routes import audit, genes, grants, health, patients, scores, studies
from omicstwin.service.settings import Settings
from omicstwin.store.db import check_schema, head_revision, make_engine

DB_ENV = "OMICSTWIN_DB_URL"
POOL_SIZE, POOL_OVERFLOW = 8, 8  # SQLAlchemy pool per worker process
DESCRIPTION = (
    "Target, disease gene and drug rankings of published omicstwin studies, and patient "
    "twin records. Every endpoint but /health and /scores (the score registry: which numbers "
    "are calibrated, which rank only) needs `Authorization: Bearer <key>`. "
    "Errors are application/problem+json. Patient routes answer with "
    "`Cache-Control: no-store` and audit every request."
)
# Route modules, in the OpenAPI document's order. Each adds its routes to the app's own router:
# FastAPI's include_router keeps an included router nested and resolves its routes on every
# request (about 15% more Python calls per routed request than routes on the app's router).
ROUTES = (health, scores, studies, genes, patients, audit, grants)


def create_app(
    db_url: str | Engine | None = None,
    *,
    check: bool = True,
    fast_lane: bool = True,
    settings: Settings | None = None,
) -> FastAPI:
    """Build the service for a database.

    Parameters
    ----------
    db_url
        Database URL or engine (default: ``$OMICSTWIN_DB_URL``, else ``sqlite:///omicstwin.db``).
    check
        Refuse a database whose schema revision is not this package's (the service never
        migrates; run ``omicstwin db upgrade``).
    fast_lane
        Answer the plain, valid requests of the hottest endpoints (study and patient target
        rankings) before FastAPI's routing (see ``fastlane.FastLane``); the answers are the same.
    settings
        Key cache, rate limit and audit journal knobs (default: from the ``OMICSTWIN_*``
        environment variables, see :mod:`omicstwin.service.settings`).

    Raises
    ------
    omicstwin.store.db.SchemaVersionError
        The database is not at this package's schema revision.
    omicstwin.service.settings.SettingsError
        An environment variable of the service has an invalid value.
    """
    settings = settings if settings is not None else Settings.from_env()
    engine = db_url if isinstance(db_url, Engine) else _engine(db_url)
    if check:
        check_schema(engine)
    svc = _service(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.auditor.kick()  # rows a stopped service left in the journal go to the table
        yield
        svc.auditor.close()
        svc.reader.close()

    app = FastAPI(
        title="omicstwin",
        version=__version__,
        description=DESCRIPTION,
        responses=problem_responses(401, 422, 429),
        lifespan=lifespan,
    )
    app.state.service = svc
    app.state.engine, app.state.settings, app.state.auditor = engine, settings, svc.auditor
    app.state.keys, app.state.limiter, app.state.auth = svc.keys, svc.limiter, svc.auth
    install_error_handlers(app)
    for module in ROUTES:
        module.add_routes(app.router, svc)
    if fast_lane:
        app.add_middleware(FastLane, service=svc)
    # Outermost: a locked-out address never reaches the lanes; patient routes all audited.
    audit_other = patients.audit_other(svc)
    app.add_middleware(
        PatientGuard, prefix=PREFIX, limiter=svc.limiter, audit_other=audit_other, responder=problem
    )
    return app


def _engine(db_url: str | None) -> Engine:
    # hide_parameters: SQL logging must never show patient ids or key hashes.
    # Pool per worker process: the hot paths hold one connection of their own (plus one
    # for the audit writer when patient data is read); the rest serves the thread-pool
    # endpoints. At most POOL_SIZE + POOL_OVERFLOW connections per worker.
    return make_engine(
        db_url or os.environ.get(DB_ENV),
        hide_parameters=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
    )


def _service(engine: Engine, settings: Settings) -> Service:
    reader = HotReader(engine)
    where = journal_path(engine) if settings.audit_journal else None
    auditor = _AuditWriter(
        engine,
        journal=None if where is None else AuditJournal(where),
        lock_wait=settings.audit_lock_wait_ms / 1000,
    )
    keys = KeyCache(reader, settings.key_cache_seconds, auditor.touch, settings.key_touch_seconds)
    limiter = FailureLimiter(settings.auth_max_failures, settings.auth_window_seconds)
    return Service(
        engine=engine,
        settings=settings,
        revision=head_revision(),
        reader=reader,
        auditor=auditor,
        keys=keys,
        limiter=limiter,
        auth=Auth(keys, limiter),
        rankings=Rankings(),
    )


def app_from_env() -> FastAPI:
    """Application factory for uvicorn workers (database URL in ``$OMICSTWIN_DB_URL``)."""
    return create_app(os.environ.get(DB_ENV))
