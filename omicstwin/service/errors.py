"""Errors of the service: ``application/problem+json`` documents and their handlers."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from omicstwin._logging import logger
from omicstwin.service.models import Problem

PROBLEM = "application/problem+json"
INTERNAL = "internal error; the administrator can find it in the server log"
_DESCRIBED = {
    401: "No, malformed or unknown API key (Authorization: Bearer <key>).",
    403: "The key's role or grants do not allow this read.",
    404: "No such resource.",
    422: "A parameter is out of bounds or malformed.",
    429: "Too many failed authentications from this address; see the Retry-After header.",
}


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


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of the problem documents a route may answer with."""
    return {
        c: {"model": Problem, "description": _DESCRIBED[c], "content": {PROBLEM: {}}} for c in codes
    }


def unauthorized() -> ApiError:
    """Return the one answer to a missing, unknown, malformed, revoked or expired key."""
    return ApiError(
        401,
        "missing or invalid API key; fix: send Authorization: Bearer <key> "
        "(keys come from omicstwin keys create)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def not_found(what: str) -> ApiError:
    """Return a 404 saying what was not found."""
    return ApiError(404, what)


def no_study(study_id: str) -> ApiError:
    """Return the 404 of an unknown study."""
    return ApiError(404, f"no study '{study_id}'; see GET /api/v1/studies")


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and not isinstance(exc, ApiError):
        detail = "no such endpoint; see /docs or /openapi.json"
    return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The input value is left out: it may be a patient id or a key.
    errors = [
        {"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return problem(422, "invalid request parameters", errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    route = request.scope.get("route")
    logger.error("unexpected %s in %s", type(exc).__name__, getattr(route, "path", "unknown route"))
    return problem(500, INTERNAL)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with a problem document (never the input value, never a trace)."""
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
