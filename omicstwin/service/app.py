"""The FastAPI application: routes under ``/api/v1``, bearer-key auth, problem+json errors.

Roles: ``admin`` reads everything including ``/audit``; ``analyst`` reads all study data and
only the patients granted to its key; ``clinician`` reads only the patients granted to its key
(no study-level endpoints; a granted patient's targets carry their study-level evidence).
Every request to a patient route, whatever its answer (401 with the name of a revoked or expired
key, 403, 404, 422, 429, 500), appends an audit row before its response starts, and every patient
response carries ``Cache-Control: no-store`` (``guard.PatientGuard``). Keys expire at their exact
time; repeated failed authentication from one address is answered with 429 (``guard``).

Hot paths: the unfiltered rankings, patient reads and key lookups run short indexed statements
on one connection per worker on the event loop, and a fast lane answers their plain, valid,
authorised requests before FastAPI's parameter solving (same answers; see ``_FastLane``);
audit rows are group-committed by one writer thread, each read waiting for its row's commit
(SQLite: or for its fsync in the audit journal while a publish holds the write lock; see
``audit``).

Logging: the service never logs request paths, keys or patient ids (paths carry patient ids,
so ``omicstwin serve`` turns uvicorn's access log off), and SQL parameters are hidden from
SQLAlchemy's logging.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from omicstwin import __version__
from omicstwin._logging import logger
from omicstwin.service import queries as q
from omicstwin.service.audit import AuditJournal, journal_path
from omicstwin.service.audit import AuditWriter as _AuditWriter
from omicstwin.service.guard import AUDITED, FailureLimiter, PatientGuard, client_address
from omicstwin.service.models import (
    AuditRow,
    DiseaseGeneRow,
    DrugRow,
    GeneScore,
    GrantRow,
    Health,
    Page,
    PatientRecord,
    PatientTargetRow,
    Problem,
    StudyDetail,
    StudySummary,
    TargetRow,
)
from omicstwin.service.settings import Settings
from omicstwin.store import access
from omicstwin.store.access import Principal
from omicstwin.store.db import ID_PATTERN, check_schema, head_revision, make_engine

try:  # optional: a faster JSON encoder for the hot endpoints (same bytes, see _json)
    import orjson
except ImportError:  # pragma: no cover - exercised without the extra
    orjson = None

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
DB_ENV = "OMICSTWIN_DB_URL"
KEY_CACHE_SECONDS = Settings().key_cache_seconds  # a revoked key stops working within this
POOL_SIZE, POOL_OVERFLOW = 8, 8  # SQLAlchemy pool per worker process
HOT_MAX_OFFSET = 10_000  # deeper pages walk too much of an index to run on the event loop
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # printable: NUL bytes would break PostgreSQL queries
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
OUTCOMES = (
    "allowed",
    "denied",
    "not_found",
    "unauthenticated",
    "denied_revoked_key",
    "denied_expired_key",
    "invalid_request",
    "rate_limited",
    "method_not_allowed",
    "error",
)
"""Audit outcomes: the read was answered, denied by role or grant, the record does not exist,
no valid key (none, unknown, malformed), a revoked or an expired key (with its name), invalid
parameters (422), the address was rate limited (429), another method than GET, a server error."""


# ----------------------------------------------------------------------------- errors


def problem(status: int, detail: str | None = None, **extra: Any) -> JSONResponse:
    """Build an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if k != "headers"})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=extra.get("headers"))


class ApiError(HTTPException):
    """An HTTP error with a problem detail."""


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "No, malformed or unknown API key (Authorization: Bearer <key>).",
        403: "The key's role or grants do not allow this read.",
        404: "No such resource.",
        422: "A parameter is out of bounds or malformed.",
        429: "Too many failed authentications from this address; see the Retry-After header.",
    }
    return {
        c: {"model": Problem, "description": described[c], "content": {PROBLEM: {}}} for c in codes
    }


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and not isinstance(exc, ApiError):
            detail = "no such endpoint; see /docs or /openapi.json"
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The input value is left out: it may be a patient id or a key.
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return problem(422, "invalid request parameters", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        route = request.scope.get("route")
        logger.error(
            "unexpected %s in %s", type(exc).__name__, getattr(route, "path", "unknown route")
        )
        return problem(500, "internal error; the administrator can find it in the server log")


# ----------------------------------------------------------------------------- auth

_bearer = HTTPBearer(auto_error=False, description="An API key: omicstwin keys create.")


class _HotReader:
    """One DBAPI connection per worker for the hot, indexed reads, used on the event loop.

    The statements it runs (``queries.hot_statements``) are primary-key or index-range lookups
    that take well under a millisecond, so running them inline costs less than a hop to a
    thread pool and back (and the GIL contention that comes with it under load). Anything
    that can scan (filters, counts over a study, gene lookups, listings) still runs in the
    thread pool. PostgreSQL: the connection is in autocommit (each read its own snapshot, never
    idle in a transaction) with a statement timeout, and is replaced once on a disconnect.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sql = q.hot_statements(engine.dialect)
        self._fairy: Any = None
        self._lock = threading.Lock()  # one event loop per worker; guards odd multi-loop use
        self._dbapi_error = engine.dialect.loaded_dbapi.Error

    def _connection(self) -> Any:
        if self._fairy is None:
            fairy = self.engine.raw_connection()
            if self.engine.dialect.name == "postgresql":
                fairy.driver_connection.autocommit = True
                with fairy.driver_connection.cursor() as cursor:
                    cursor.execute("SET statement_timeout = 5000")  # ms: never stall the loop
            self._fairy = fairy
        return self._fairy

    def run(self, read: Callable[[Any, dict[str, q.Compiled]], Any]) -> Any:
        """Run ``read(cursor, statements)`` (retried once on a fresh connection if it dropped)."""
        with self._lock:
            for attempt in (0, 1):
                fairy = self._connection()
                cursor = fairy.cursor()
                try:
                    return read(cursor, self.sql)
                except self._dbapi_error as exc:
                    dropped = self.engine.dialect.is_disconnect(exc, fairy, cursor)
                    if attempt or not dropped:
                        raise
                    self._discard(invalidate=True)
                finally:
                    try:
                        cursor.close()
                    except self._dbapi_error:
                        pass
            raise AssertionError("unreachable")

    def _discard(self, *, invalidate: bool) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            if invalidate:
                fairy.invalidate()
            else:
                fairy.close()

    def close(self) -> None:
        with self._lock:
            self._discard(invalidate=False)


@dataclass(frozen=True, slots=True)
class KeyResult:
    """What a presented key turned out to be (``status``: ok, unknown, revoked, expired, none).

    ``principal`` only when ok; ``key_name`` also for revoked and expired keys (for the audit).
    """

    status: str
    principal: Principal | None = None
    key_name: str | None = None
    expires: float | None = None  # POSIX time of the key's expiry (None: never)


_NO_KEY = KeyResult("none")  # no Authorization header
_UNKNOWN = KeyResult("unknown")  # an unknown, malformed or oversized key
_wallclock = time.time  # the clock expiries are compared with (tests move it)


def _posix(value: Any) -> float | None:
    """Return a timestamp column as POSIX time (SQLite's raw driver returns text, in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class _KeyCache:
    """key hash -> what the key is, for a few seconds: saves a query per request under load.

    A hit costs a hash and a dict lookup on the event loop (no database, no thread); a miss
    is one indexed lookup on the worker's hot-path connection. Valid, revoked and expired keys
    are cached (a revocation takes effect within ``ttl``); an expiry is compared with the
    clock on every request, so it is honoured at its exact time. Unknown keys are not cached.
    A valid key's use is passed to ``touch`` at most every ``touch_every`` seconds.
    """

    def __init__(
        self,
        reader: _HotReader,
        ttl: float,
        touch: Callable[[int, datetime], None] | None = None,
        touch_every: float = 60.0,
    ) -> None:
        self.reader, self.ttl = reader, ttl
        self.touch, self.touch_every = touch, touch_every
        self._items: dict[str, tuple[KeyResult, float]] = {}
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> KeyResult:
        """Return what ``key`` is now."""
        digest = access.hash_key(key)
        now = time.monotonic()
        hit = self._items.get(digest)
        if hit is not None and hit[1] > now:
            result = hit[0]
        else:
            rows = self.reader.run(lambda cur, sql: q.fetch(cur, sql["key"], key_hash=digest))
            result = _key_result(rows[0]) if rows else _UNKNOWN
            with self._lock:
                if result is _UNKNOWN:
                    self._items.pop(digest, None)
                else:
                    if len(self._items) > 10_000:
                        self._items.clear()
                    self._items[digest] = (result, now + self.ttl)
        if result.status != "ok":
            return result
        if result.expires is not None and _wallclock() >= result.expires:
            return KeyResult("expired", None, result.key_name, result.expires)
        if self.touch is not None:
            key_id = result.principal.key_id
            if now - self._touched.get(key_id, -math.inf) >= self.touch_every:
                self._touched[key_id] = now
                self.touch(key_id, datetime.now(UTC))
        return result

    def lookup(self, key: str) -> Principal | None:
        """Return the principal of a valid key, else None."""
        return self.check(key).principal


def _key_result(row: tuple) -> KeyResult:
    key_id, name, role, revoked_at, expires_at = row
    if revoked_at is not None:
        return KeyResult("revoked", None, name)
    # "expired" is decided per request (the entry may outlive the expiry in the cache)
    return KeyResult("ok", Principal(key_id, name, role), name, _posix(expires_at))


_KEY_MEMO = "omicstwin.key"  # scope: this request's KeyResult


class _Auth:
    """The one place a request's key is checked (once per request) and failures are counted."""

    def __init__(self, keys: _KeyCache, limiter: FailureLimiter) -> None:
        self.keys, self.limiter = keys, limiter

    def check(self, scope: Scope) -> KeyResult:
        """Return the request's key, as HTTPBearer reads it (first Authorization header)."""
        memo = scope.get(_KEY_MEMO)
        if memo is not None:
            return memo
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if header is None:
            result = _NO_KEY
        else:
            scheme, credentials = get_authorization_scheme_param(header)
            if scheme.lower() == "bearer" and credentials and len(credentials) <= 256:
                result = self.keys.check(credentials)
            else:
                result = _UNKNOWN
            if result.status != "ok":
                self.limiter.failure(client_address(scope), result.status)
        scope[_KEY_MEMO] = result
        return result

    def principal(self, scope: Scope) -> Principal | None:
        """Return the principal of the request's valid key, else None."""
        return self.check(scope).principal


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "missing or invalid API key; fix: send Authorization: Bearer <key> "
        "(keys come from omicstwin keys create)",
        headers={"WWW-Authenticate": "Bearer"},
    )


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(*roles: str) -> Callable[..., Any]:
    """Dependency: a valid key whose role is one of ``roles`` (401 / 403 otherwise).

    ``async`` so that FastAPI runs it on the event loop: no thread-pool hop per request.
    ``credentials`` documents the bearer scheme in OpenAPI; the key is read by ``_Auth``.
    """

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = request.app.state.auth.principal(request.scope)
        if principal is None:
            raise _unauthorized()
        if principal.role not in roles:
            raise ApiError(403, f"the role '{principal.role}' cannot read this resource")
        return principal

    return dependency


def _json(body: dict[str, Any], model: Any) -> Response:
    """Serialise a body that matches ``model`` (FastAPI does not re-validate a Response).

    orjson writes byte for byte what FastAPI's pydantic serialisation of these models writes
    (compact, keys in field order, UTF-8, shortest float repr, NaN/inf as null) at a seventh of
    its cost; without orjson, pydantic serialises the validated body.
    """
    if orjson is not None:
        return Response(orjson.dumps(body), media_type="application/json")
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS.setdefault(model, TypeAdapter(model))
    return Response(adapter.dump_json(adapter.validate_python(body)), media_type="application/json")


_ADAPTERS: dict[Any, TypeAdapter] = {}


# ----------------------------------------------------------------------------- fast lane

Lane = Callable[[Scope, str], Awaitable[Response | None]]
_UINT_RE = re.compile(r"[0-9]{1,7}")
_DECIMAL_RE = re.compile(r"-?[0-9]{1,10}(?:\.[0-9]{1,17})?")
_ID_FULL_RE = re.compile(ID_PATTERN)
_TEXT_FULL_RE = re.compile(TEXT_PATTERN)


class _FastLane:
    """ASGI shortcut for the plain, valid, authorised requests of the hottest GET endpoints.

    FastAPI's per-request dependency and parameter solving costs several times the indexed
    reads behind these endpoints. A lane answers only requests it fully understands: a known
    path with a valid id, only its own query parameters, each once and in canonical form
    (digits, decimals) within the documented bounds, a valid key of an allowed role, and an
    existing (granted) resource. Everything else (errors included) goes to the FastAPI route,
    so every error response, the OpenAPI document and all validation stay FastAPI's own. The
    lanes call the same readers, audit writer and serialiser as the routes.
    """

    def __init__(self, app: ASGIApp, lanes: list[tuple[str, str, Lane]]) -> None:
        self.app = app
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            for prefix, suffix, lane in self.lanes:
                if path.startswith(prefix) and path.endswith(suffix):
                    ident = path[len(prefix) : len(path) - len(suffix)]
                    if _ID_FULL_RE.fullmatch(ident):
                        response = await lane(scope, ident)
                        if response is not None:
                            await response(scope, receive, send)
                            return
                    break
        await self.app(scope, receive, send)


def _lane_query(scope: Scope, allowed: frozenset[str]) -> dict[str, str] | None:
    """Query parameters as Starlette parses them; None if any is unknown or repeated."""
    raw: bytes = scope["query_string"]
    out: dict[str, str] = {}
    if raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if name not in allowed or name in out:
                return None
            out[name] = value
    return out


def _lane_int(value: str | None, default: int, low: int, high: int) -> int | None:
    if value is None:
        return default
    if not _UINT_RE.fullmatch(value):
        return None
    number = int(value)
    return number if low <= number <= high else None


StudyReader = Annotated[Principal, Depends(require("admin", "analyst"))]
Admin = Annotated[Principal, Depends(require("admin"))]

# ----------------------------------------------------------------------------- parameters

StudyId = Annotated[
    str, Path(pattern=ID_PATTERN, max_length=128, examples=["sar_2022"], description="Study id.")
]
PatientId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=128, examples=["P01"], description="Patient pseudonym."),
]
Limit = Annotated[int, Query(ge=1, le=500, description="Rows per page (1..500).")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Rows to skip (0..1e6).")]
MinScore = Annotated[
    float | None,
    Query(ge=-1e6, le=1e6, allow_inf_nan=False, description="Keep rows with score >= this."),
]
MaxQ = Annotated[
    float | None,
    Query(ge=0.0, le=1.0, allow_inf_nan=False, description="Keep rows with q_value <= this."),
]


def _not_found(what: str) -> ApiError:
    return ApiError(404, what)


# ----------------------------------------------------------------------------- app


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
        rankings) before FastAPI's routing (see ``_FastLane``); the answers are the same.
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
    if isinstance(db_url, Engine):
        engine = db_url
    else:
        # hide_parameters: SQL logging must never show patient ids or key hashes.
        # Pool per worker process: the hot paths hold one connection of their own (plus one
        # for the audit writer when patient data is read); the rest serves the thread-pool
        # endpoints. At most POOL_SIZE + POOL_OVERFLOW connections per worker.
        engine = make_engine(
            db_url or os.environ.get(DB_ENV),
            hide_parameters=True,
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
    if check:
        check_schema(engine)
    revision = head_revision()
    reader = _HotReader(engine)
    where = journal_path(engine) if settings.audit_journal else None
    auditor = _AuditWriter(
        engine,
        journal=None if where is None else AuditJournal(where),
        lock_wait=settings.audit_lock_wait_ms / 1000,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        auditor.kick()  # rows a stopped service left in the journal go to the table
        yield
        auditor.close()
        reader.close()

    app = FastAPI(
        title="omicstwin",
        version=__version__,
        description=(
            "Target, disease gene and drug rankings of published omicstwin studies, and patient "
            "twin records. Every endpoint but /health needs `Authorization: Bearer <key>`. "
            "Errors are application/problem+json. Patient routes answer with "
            "`Cache-Control: no-store` and audit every request."
        ),
        responses=_problem_responses(401, 422, 429),
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.auditor = auditor
    app.state.keys = _KeyCache(
        reader, settings.key_cache_seconds, auditor.touch, settings.key_touch_seconds
    )
    limiter = FailureLimiter(settings.auth_max_failures, settings.auth_window_seconds)
    app.state.limiter = limiter
    app.state.auth = auth = _Auth(app.state.keys, limiter)
    _install_error_handlers(app)

    @app.get(f"{PREFIX}/health", tags=["service"])
    def health() -> Health:
        """Liveness (no key needed); 503 when the database cannot be reached."""
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            raise ApiError(503, "the database cannot be reached") from None
        return Health(status="ok", schema_revision=revision)

    @app.get(f"{PREFIX}/studies", tags=["studies"], responses=_problem_responses(403))
    def studies(_: StudyReader, limit: Limit = 50, offset: Offset = 0) -> Page[StudySummary]:
        """List the published studies."""
        with engine.connect() as conn:
            data, count = q.list_studies(conn, limit, offset)
        return Page[StudySummary](data=data, count=count)

    @app.get(
        f"{PREFIX}/studies/{{study_id}}",
        tags=["studies"],
        responses=_problem_responses(403, 404),
    )
    def study(_: StudyReader, study_id: StudyId) -> StudyDetail:
        """Get a study with its provenance (versions, config, timings) and table sizes."""
        with engine.connect() as conn:
            row = q.get_study(conn, study_id)
        if row is None:
            raise _no_study(study_id)
        return StudyDetail(**row)

    context_sizes: dict[tuple[str, str, str, float | None], int] = {}

    def ranking_reader(
        study_id: str, cell_type: str | None, time: float | None, limit: int, offset: int
    ) -> Callable[[Any, dict[str, q.Compiled]], dict[str, Any] | None]:
        """Read one unfiltered ranking page (study level, or one cell type x time)."""

        def read(cur: Any, sql: dict[str, q.Compiled]) -> dict[str, Any] | None:
            counts = q.fetch(cur, sql["study_counts"], study_id=study_id)
            if not counts:
                return None
            page = {"study_id": study_id, "limit": limit, "offset": offset}
            if cell_type is None:
                rows = q.fetch(cur, sql["targets"], **page)
                return {
                    "data": q.target_rows(rows, "study"),
                    "count": json.loads(counts[0][0]).get("targets", 0),
                }
            ctx = {"study_id": study_id, "cell_type": cell_type, "time": time}
            rows = q.fetch(cur, sql["context_targets"], **(page | ctx))
            # A context's size changes only with the study's content: cache it by content hash
            # (a COUNT over a context's index range costs more than the page itself).
            size_key = (study_id, counts[0][1], cell_type, time)
            count = context_sizes.get(size_key)
            if count is None:
                count = q.fetch(cur, sql["context_count"], **ctx)[0][0]
                if len(context_sizes) >= 4096:
                    context_sizes.clear()
                context_sizes[size_key] = count
            return {"data": q.target_rows(rows, "context"), "count": count}

        return read

    @app.get(
        f"{PREFIX}/studies/{{study_id}}/targets",
        tags=["studies"],
        responses=_problem_responses(403, 404),
        response_model=Page[TargetRow],
    )
    async def targets(
        _: StudyReader,
        study_id: StudyId,
        cell_type: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=128,
                pattern=TEXT_PATTERN,
                examples=["CD14 Mono"],
                description="Rank within this cell type (per-context perturbation scores).",
            ),
        ] = None,
        time: Annotated[
            float | None,
            Query(
                ge=-1e9,
                le=1e9,
                allow_inf_nan=False,
                examples=[48.0],
                description="Rank within this time point (in the study's unit).",
            ),
        ] = None,
        limit: Limit = 50,
        offset: Offset = 0,
        min_score: MinScore = None,
        max_q: MaxQ = None,
    ) -> Any:
        """Drug targets: the study-level ranking, or the ranking in a cell type / time point."""
        plain = min_score is None and max_q is None and (cell_type is None) == (time is None)
        if plain and offset <= HOT_MAX_OFFSET:
            # Hot path: one ranking, no filters: short index range reads (see _HotReader).
            body = reader.run(ranking_reader(study_id, cell_type, time, limit, offset))
            if body is None:
                raise _no_study(study_id)
            return _json(body, Page[TargetRow])
        return await run_in_threadpool(
            filtered_targets, study_id, cell_type, time, limit, offset, min_score, max_q
        )

    def filtered_targets(
        study_id: str,
        cell_type: str | None,
        time: float | None,
        limit: int,
        offset: int,
        min_score: float | None,
        max_q: float | None,
    ) -> Page[TargetRow]:
        with engine.connect() as conn:
            counts = q.study_counts(conn, study_id)
            if counts is None:
                raise _no_study(study_id)
            data, count = q.list_targets(
                conn,
                study_id,
                total=counts.get("targets", 0),
                cell_type=cell_type,
                time=time,
                limit=limit,
                offset=offset,
                min_score=min_score,
                max_q=max_q,
            )
        return Page[TargetRow](data=data, count=count)  # serialised by FastAPI

    def ranking(table: sa.Table, study_id: str, **kwargs: Any) -> tuple[list[dict], int]:
        with engine.connect() as conn:
            if q.study_counts(conn, study_id) is None:
                raise _no_study(study_id)
            return q.list_ranking(conn, table, study_id, **kwargs)

    @app.get(
        f"{PREFIX}/studies/{{study_id}}/disease-genes",
        tags=["studies"],
        responses=_problem_responses(403, 404),
    )
    def disease_genes(
        _: StudyReader,
        study_id: StudyId,
        limit: Limit = 50,
        offset: Offset = 0,
        min_score: MinScore = None,
        max_q: MaxQ = None,
    ) -> Page[DiseaseGeneRow]:
        """Disease genes: perturbations that push control cells toward the disease state."""
        data, count = ranking(
            q.DISEASE, study_id, limit=limit, offset=offset, min_score=min_score, max_q=max_q
        )
        return Page[DiseaseGeneRow](data=data, count=count)

    @app.get(
        f"{PREFIX}/studies/{{study_id}}/drugs",
        tags=["studies"],
        responses=_problem_responses(403, 404),
    )
    def drugs(
        _: StudyReader,
        study_id: StudyId,
        limit: Limit = 50,
        offset: Offset = 0,
        min_score: MinScore = None,
        max_q: MaxQ = None,
    ) -> Page[DrugRow]:
        """Drugs, ranked by the reversal their targets achieve together."""
        data, count = ranking(
            q.DRUGS, study_id, limit=limit, offset=offset, min_score=min_score, max_q=max_q
        )
        return Page[DrugRow](data=data, count=count)

    @app.get(
        f"{PREFIX}/genes/{{symbol}}",
        tags=["genes"],
        responses=_problem_responses(403, 404),
    )
    def gene(
        _: StudyReader,
        symbol: Annotated[
            str,
            Path(pattern=SYMBOL_PATTERN, max_length=64, examples=["ETS1"], description="Gene."),
        ],
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[GeneScore]:
        """List a gene's scores across studies and contexts (single-gene perturbations)."""
        with engine.connect() as conn:
            rows = q.gene_scores(conn, symbol)
        if not rows:
            raise _not_found(f"no scores for the gene '{symbol}' in any published study")
        return Page[GeneScore](data=rows[offset : offset + limit], count=len(rows))

    def granted(
        principal: Principal, patient_id: str, read: Callable[[Any, dict[str, q.Compiled]], Any]
    ) -> Callable[[Any, dict[str, q.Compiled]], tuple[str, Any]]:
        """Check the grant, then read: (outcome, data) with outcome allowed/denied/not_found."""

        def run(cur: Any, sql: dict[str, q.Compiled]) -> tuple[str, Any]:
            allowed = principal.role == "admin" or bool(
                q.fetch(cur, sql["grant"], key_id=principal.key_id, patient_id=patient_id)
            )
            if not allowed:
                return "denied", None
            data = read(cur, sql)
            return ("not_found" if data is None else "allowed"), data

        return run

    async def patient_read(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None,
        patient_id: str,
        action: str,
        read: Callable[[Any, dict[str, q.Compiled]], Any],
    ) -> Any:
        """Authorise, read and audit one access to patient data (audit row before the data)."""
        key = auth.check(request.scope)
        outcome, data = _KEY_OUTCOMES.get(key.status, "unauthenticated"), None
        if key.principal is not None:
            outcome, data = reader.run(granted(key.principal, patient_id, read))
        # Committed (group commit, its own write-only transaction) before anything is returned.
        await auditor.write(_audit_row(key, action, patient_id, outcome))
        request.scope[AUDITED] = True
        if key.principal is None:
            raise _unauthorized()  # the same answer for a missing, unknown, revoked, expired key
        if outcome == "denied":
            # Same answer whether or not the patient exists: no existence oracle.
            raise ApiError(403, "this key holds no grant for that patient record")
        if outcome == "not_found":
            raise _not_found("no patient record with that id")
        return data

    async def audit_other(scope: Scope, status: int) -> None:
        """Audit a patient-route request that no route answered (422, 405, 429, 500, ...)."""
        route = scope.get("route")
        action = _PATIENT_ACTIONS.get(getattr(route, "path", None), "patient.other")
        rest = scope["path"][len(PREFIX) + len("/patients/") :]
        given = rest.split("/", 1)[0]
        patient_id = given if _ID_FULL_RE.fullmatch(given) else None  # never an arbitrary text
        if status == 429:
            key = _NO_KEY  # locked out: the key is not even looked up
        else:
            key = auth.check(scope)
        if status == 401:
            outcome = _KEY_OUTCOMES.get(key.status, "unauthenticated")
        else:
            outcome = _STATUS_OUTCOMES.get(status, "error" if status >= 500 else "other")
        await auditor.write(_audit_row(key, action, patient_id, outcome))

    @app.get(
        f"{PREFIX}/patients/{{patient_id}}",
        tags=["patients"],
        responses=_problem_responses(403, 404),
        response_model=PatientRecord,
    )
    async def patient(request: Request, credentials: Credentials, patient_id: PatientId) -> Any:
        """Get a patient twin record (admin, or a key granted this patient). Audited."""

        def read(cur: Any, sql: dict[str, q.Compiled]) -> dict[str, Any] | None:
            rows = q.fetch(cur, sql["patient"], patient_id=patient_id)
            return q.patient_record(rows[0]) if rows else None

        row = await patient_read(request, credentials, patient_id, "patient.record", read)
        return PatientRecord(**row)  # nested state summary: validated and serialised by FastAPI

    def patient_targets_reader(
        patient_id: str, limit: int, offset: int
    ) -> Callable[[Any, dict[str, q.Compiled]], dict[str, Any] | None]:
        """Read one page of a patient's ranking (None: no such patient)."""

        def read(cur: Any, sql: dict[str, q.Compiled]) -> dict[str, Any] | None:
            total = q.fetch(cur, sql["patient_total"], patient_id=patient_id)
            if not total:
                return None
            rows = q.fetch(
                cur, sql["patient_targets"], patient_id=patient_id, limit=limit, offset=offset
            )
            return {"data": q.patient_target_rows(rows), "count": total[0][0]}

        return read

    @app.get(
        f"{PREFIX}/patients/{{patient_id}}/targets",
        tags=["patients"],
        responses=_problem_responses(403, 404),
        response_model=Page[PatientTargetRow],
    )
    async def patient_targets(
        request: Request,
        credentials: Credentials,
        patient_id: PatientId,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Any:
        """List a patient's personalised target ranking, each row with its study-level evidence."""
        read = patient_targets_reader(patient_id, limit, offset)
        body = await patient_read(request, credentials, patient_id, "patient.targets", read)
        return _json(body, Page[PatientTargetRow])

    @app.get(f"{PREFIX}/audit", tags=["admin"], responses=_problem_responses(403))
    def audit(
        _: Admin,
        limit: Limit = 100,
        offset: Offset = 0,
        patient_id: Annotated[
            str | None, Query(pattern=ID_PATTERN, max_length=128, description="Filter.")
        ] = None,
        outcome: Annotated[
            str | None,
            Query(pattern="^(" + "|".join(OUTCOMES) + ")$", description="Filter."),
        ] = None,
        key_name: Annotated[
            str | None, Query(pattern=ID_PATTERN, max_length=128, description="Filter.")
        ] = None,
    ) -> Page[AuditRow]:
        """List the audit trail of patient routes, newest first (admin only).

        Rows still in the SQLite audit journal (written while a publish held the database's
        write lock) come first, with ``id`` null until they are moved into the table.
        """
        filters = {"patient_id": patient_id, "outcome": outcome, "key_name": key_name}
        journal = auditor.journal
        # No drain commits while both are read: a row is listed once, from one of the two.
        with journal.snapshot() if journal is not None else nullcontext([]) as waiting:
            pending = [
                dict(row, id=None)
                for row in reversed(waiting)
                if all(v is None or row[k] == v for k, v in filters.items())
            ]
            page = pending[offset : offset + limit]
            with engine.connect() as conn:
                data, count = q.list_audit(
                    conn,
                    limit=limit - len(page),
                    offset=max(0, offset - len(pending)),
                    **filters,
                )
        return Page[AuditRow](data=page + data, count=len(pending) + count)

    @app.get(f"{PREFIX}/grants", tags=["admin"], responses=_problem_responses(403))
    def grants(
        _: Admin,
        limit: Limit = 100,
        offset: Offset = 0,
        key_name: Annotated[
            str | None,
            Query(
                pattern=ID_PATTERN,
                max_length=128,
                examples=["dr-smith"],
                description="Only this key's grants.",
            ),
        ] = None,
        patient_id: Annotated[
            str | None,
            Query(
                pattern=ID_PATTERN,
                max_length=128,
                examples=["P01"],
                description="Only grants on this patient record.",
            ),
        ] = None,
    ) -> Page[GrantRow]:
        """List the grants of patient records to keys (admin only), by key name and patient."""
        with engine.connect() as conn:
            rows = access.list_grants(conn, key_name=key_name, patient_id=patient_id)
        data = [dict(r, created_at=q.utc(r["created_at"])) for r in rows[offset : offset + limit]]
        return Page[GrantRow](data=data, count=len(rows))

    study_params = frozenset({"limit", "offset", "cell_type", "time"})
    page_params = frozenset({"limit", "offset"})

    async def study_targets_lane(scope: Scope, study_id: str) -> Response | None:
        params = _lane_query(scope, study_params)
        if params is None:
            return None
        limit = _lane_int(params.get("limit"), 50, 1, 500)
        offset = _lane_int(params.get("offset"), 0, 0, 1_000_000)
        cell_type, raw_time = params.get("cell_type"), params.get("time")
        if limit is None or offset is None or (cell_type is None) != (raw_time is None):
            return None
        if offset > HOT_MAX_OFFSET:
            return None  # a long index walk: the route runs it in the thread pool
        time_ = None
        if cell_type is not None and raw_time is not None:
            if not (len(cell_type) <= 128 and _TEXT_FULL_RE.fullmatch(cell_type)):
                return None
            if not _DECIMAL_RE.fullmatch(raw_time):
                return None
            time_ = float(raw_time)
            if not -1e9 <= time_ <= 1e9:
                return None
        principal = auth.principal(scope)
        if principal is None or principal.role not in ("admin", "analyst"):
            return None
        body = reader.run(ranking_reader(study_id, cell_type, time_, limit, offset))
        return None if body is None else _json(body, Page[TargetRow])

    async def patient_targets_lane(scope: Scope, patient_id: str) -> Response | None:
        params = _lane_query(scope, page_params)
        if params is None:
            return None
        limit = _lane_int(params.get("limit"), 50, 1, 500)
        offset = _lane_int(params.get("offset"), 0, 0, 1_000_000)
        if limit is None or offset is None:
            return None
        key = auth.check(scope)
        if key.principal is None:
            return None
        read = patient_targets_reader(patient_id, limit, offset)
        outcome, body = reader.run(granted(key.principal, patient_id, read))
        if outcome != "allowed":
            return None  # the route answers (and audits) denied and not-found reads
        await auditor.write(_audit_row(key, "patient.targets", patient_id, outcome))
        scope[AUDITED] = True
        return _json(body, Page[PatientTargetRow])

    if fast_lane:
        app.add_middleware(
            _FastLane,
            lanes=[
                (f"{PREFIX}/studies/", "/targets", study_targets_lane),
                (f"{PREFIX}/patients/", "/targets", patient_targets_lane),
            ],
        )
    # Outermost: a locked-out address never reaches the lanes; patient routes all audited.
    app.add_middleware(
        PatientGuard, prefix=PREFIX, limiter=limiter, audit_other=audit_other, responder=problem
    )
    return app


_KEY_OUTCOMES = {"revoked": "denied_revoked_key", "expired": "denied_expired_key"}
_STATUS_OUTCOMES = {
    403: "denied",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_request",
    429: "rate_limited",
}
_PATIENT_ACTIONS = {
    f"{PREFIX}/patients/{{patient_id}}": "patient.record",
    f"{PREFIX}/patients/{{patient_id}}/targets": "patient.targets",
}


def _audit_row(key: KeyResult, action: str, patient_id: str | None, outcome: str) -> dict:
    """Return an audit row: the key's name also for a revoked or expired key, never the key."""
    row = access.audit_values(
        principal=key.principal, action=action, patient_id=patient_id, outcome=outcome
    )
    row["key_name"] = key.key_name
    return row


def _no_study(study_id: str) -> ApiError:
    return ApiError(404, f"no study '{study_id}'; see GET /api/v1/studies")


def app_from_env() -> FastAPI:
    """Application factory for uvicorn workers (database URL in ``$OMICSTWIN_DB_URL``)."""
    return create_app(os.environ.get(DB_ENV))
