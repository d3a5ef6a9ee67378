"""The FastAPI application: routes under ``/api/v1``, bearer-key auth, problem+json errors.

Roles: ``admin`` reads everything including ``/audit``; ``analyst`` reads all study data and
only the patients granted to its key; ``clinician`` reads only the patients granted to its key
(no study-level endpoints; a granted patient's targets carry their study-level evidence).
Every read of patient data, allowed or not, appends an audit row before the data is returned.

Logging: the service never logs request paths, keys or patient ids (paths carry patient ids,
so ``omicstwin serve`` turns uvicorn's access log off), and SQL parameters are hidden from
SQLAlchemy's logging.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException

from omicstwin import __version__
from omicstwin._logging import logger
from omicstwin.service import queries as q
from omicstwin.service.models import (
    AuditRow,
    DiseaseGeneRow,
    DrugRow,
    GeneScore,
    Health,
    Page,
    PatientRecord,
    PatientTargetRow,
    Problem,
    StudyDetail,
    StudySummary,
    TargetRow,
)
from omicstwin.store import access
from omicstwin.store.access import Principal
from omicstwin.store.db import ID_PATTERN, check_schema, head_revision, make_engine

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
DB_ENV = "OMICSTWIN_DB_URL"
KEY_CACHE_SECONDS = 10.0  # a revoked key stops working within this time
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # printable: NUL bytes would break PostgreSQL queries
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
OUTCOMES = ("allowed", "denied", "not_found", "unauthenticated")


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


class _KeyCache:
    """key hash -> principal for a few seconds: saves a query per request under load."""

    def __init__(self, engine: Engine, ttl: float) -> None:
        self.engine, self.ttl = engine, ttl
        self._items: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Principal | None:
        digest = access.hash_key(key)
        now = time.monotonic()
        hit = self._items.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        with self.engine.connect() as conn:
            principal = access.authenticate(conn, key)
        with self._lock:
            if principal is None:
                self._items.pop(digest, None)
            else:
                if len(self._items) > 10_000:
                    self._items.clear()
                self._items[digest] = (principal, now + self.ttl)
        return principal


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "missing or invalid API key; fix: send Authorization: Bearer <key> "
        "(keys come from omicstwin keys create)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal | None:
    if credentials is None or not credentials.credentials:
        return None
    if len(credentials.credentials) > 256:
        return None
    return request.app.state.keys.lookup(credentials.credentials)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(*roles: str) -> Callable[..., Principal]:
    """Dependency: a valid key whose role is one of ``roles`` (401 / 403 otherwise)."""

    def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = _principal(request, credentials)
        if principal is None:
            raise _unauthorized()
        if principal.role not in roles:
            raise ApiError(403, f"the role '{principal.role}' cannot read this resource")
        return principal

    return dependency


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


def create_app(db_url: str | Engine | None = None, *, check: bool = True) -> FastAPI:
    """Build the service for a database.

    Parameters
    ----------
    db_url
        Database URL or engine (default: ``$OMICSTWIN_DB_URL``, else ``sqlite:///omicstwin.db``).
    check
        Refuse a database whose schema revision is not this package's (the service never
        migrates; run ``omicstwin db upgrade``).

    Raises
    ------
    omicstwin.store.db.SchemaVersionError
        The database is not at this package's schema revision.
    """
    if isinstance(db_url, Engine):
        engine = db_url
    else:
        # hide_parameters: SQL logging must never show patient ids or key hashes.
        engine = make_engine(
            db_url or os.environ.get(DB_ENV),
            hide_parameters=True,
            pool_size=10,
            max_overflow=40,
        )
    if check:
        check_schema(engine)
    revision = head_revision()

    app = FastAPI(
        title="omicstwin",
        version=__version__,
        description=(
            "Target, disease gene and drug rankings of published omicstwin studies, and patient "
            "twin records. Every endpoint but /health needs `Authorization: Bearer <key>`. "
            "Errors are application/problem+json."
        ),
        responses=_problem_responses(401, 422),
    )
    app.state.engine = engine
    app.state.keys = _KeyCache(engine, KEY_CACHE_SECONDS)
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

    @app.get(
        f"{PREFIX}/studies/{{study_id}}/targets",
        tags=["studies"],
        responses=_problem_responses(403, 404),
    )
    def targets(
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
    ) -> Page[TargetRow]:
        """Drug targets: the study-level ranking, or the ranking in a cell type / time point."""
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
        return Page[TargetRow](data=data, count=count)

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

    def patient_read(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None,
        patient_id: str,
        action: str,
        read: Callable[[sa.Connection], Any],
    ) -> Any:
        """Authorise, read and audit one access to patient data (audit row before the data)."""
        principal = _principal(request, credentials)
        outcome, data = "unauthenticated", None
        if principal is not None:
            with engine.connect() as conn:
                allowed = principal.role == "admin" or access.is_granted(
                    conn, principal.key_id, patient_id
                )
                if allowed:
                    data = read(conn)
            outcome = "denied" if not allowed else ("not_found" if data is None else "allowed")
        # A separate write-only transaction: SQLite never has to upgrade a read lock.
        with engine.begin() as conn:
            access.audit(
                conn, principal=principal, action=action, patient_id=patient_id, outcome=outcome
            )
        if outcome == "unauthenticated":
            raise _unauthorized()
        if outcome == "denied":
            # Same answer whether or not the patient exists: no existence oracle.
            raise ApiError(403, "this key holds no grant for that patient record")
        if outcome == "not_found":
            raise _not_found("no patient record with that id")
        return data

    @app.get(
        f"{PREFIX}/patients/{{patient_id}}",
        tags=["patients"],
        responses=_problem_responses(403, 404),
    )
    def patient(request: Request, credentials: Credentials, patient_id: PatientId) -> PatientRecord:
        """Get a patient twin record (admin, or a key granted this patient). Audited."""
        row = patient_read(
            request,
            credentials,
            patient_id,
            "patient.record",
            lambda conn: q.get_patient(conn, patient_id),
        )
        return PatientRecord(**row)

    @app.get(
        f"{PREFIX}/patients/{{patient_id}}/targets",
        tags=["patients"],
        responses=_problem_responses(403, 404),
    )
    def patient_targets(
        request: Request,
        credentials: Credentials,
        patient_id: PatientId,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[PatientTargetRow]:
        """List a patient's personalised target ranking, each row with its study-level evidence."""
        data, count = patient_read(
            request,
            credentials,
            patient_id,
            "patient.targets",
            lambda conn: q.patient_targets(conn, patient_id, limit=limit, offset=offset),
        )
        return Page[PatientTargetRow](data=data, count=count)

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
        """List the audit trail of patient data reads, newest first (admin only)."""
        with engine.connect() as conn:
            data, count = q.list_audit(
                conn,
                limit=limit,
                offset=offset,
                patient_id=patient_id,
                outcome=outcome,
                key_name=key_name,
            )
        return Page[AuditRow](data=data, count=count)

    return app


def _no_study(study_id: str) -> ApiError:
    return ApiError(404, f"no study '{study_id}'; see GET /api/v1/studies")


def app_from_env() -> FastAPI:
    """Application factory for uvicorn workers (database URL in ``$OMICSTWIN_DB_URL``)."""
    return create_app(os.environ.get(DB_ENV))
