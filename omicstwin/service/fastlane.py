"""The fast lane: plain requests of the hottest GET endpoints, answered before FastAPI.

Same bytes and same audit rows as the routes; see ``FastLane``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from omicstwin.service.deps import Service, json_response
from omicstwin.service.hotpath import granted, patient_targets_reader
from omicstwin.service.models import Page, PatientTargetRow, TargetRow
from omicstwin.service.params import (
    CELL_TYPE,
    HOT_MAX_OFFSET,
    ID,
    LIMIT,
    OFFSET,
    PATIENT_TARGETS,
    PREFIX,
    TARGETS,
    TIME,
)

Lane = Callable[[Scope, str], Awaitable[Response | None]]
_STUDY_PARAMS = frozenset({"limit", "offset", "cell_type", "time"})
_PAGE_PARAMS = frozenset({"limit", "offset"})


class FastLane:
    """ASGI shortcut for the plain, valid, authorised requests of the hottest GET endpoints.

    FastAPI's per-request dependency and parameter solving costs several times the indexed
    reads behind these endpoints. A lane answers only requests it fully understands: a known
    path with a valid id, only its own query parameters, each once and in canonical form
    (digits, decimals) within the bounds declared in ``params``, a valid key of an allowed
    role, and an existing (granted) resource. Everything else (errors included) goes to the
    FastAPI route, so every error response, the OpenAPI document and all validation stay
    FastAPI's own. The lanes call the same readers, audit write and serialiser as the routes.
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.svc = service
        self.lanes: list[tuple[str, str, Lane]] = [
            (f"{PREFIX}/studies/", "/targets", self.study_targets),
            (f"{PREFIX}/patients/", "/targets", self.patient_targets),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer from a lane, else pass the request on."""
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            for prefix, suffix, lane in self.lanes:
                if path.startswith(prefix) and path.endswith(suffix):
                    ident = path[len(prefix) : len(path) - len(suffix)]
                    if ID.valid(ident):
                        response = await lane(scope, ident)
                        if response is not None:
                            await response(scope, receive, send)
                            return
                    break
        await self.app(scope, receive, send)

    async def study_targets(self, scope: Scope, study_id: str) -> Response | None:
        """``/studies/{id}/targets``: the study-level or one context's ranking, no filters."""
        params = _query(scope, _STUDY_PARAMS)
        if params is None:
            return None
        limit = LIMIT.parse(params.get("limit"), TARGETS.limit)
        offset = OFFSET.parse(params.get("offset"), OFFSET.low)
        cell_type, raw_time = params.get("cell_type"), params.get("time")
        if limit is None or offset is None or (cell_type is None) != (raw_time is None):
            return None
        if offset > HOT_MAX_OFFSET:
            return None  # a long index walk: the route runs it in the thread pool
        time_ = None
        if cell_type is not None and raw_time is not None:
            time_ = TIME.parse(raw_time)
            if time_ is None or not CELL_TYPE.valid(cell_type):
                return None
        principal = self.svc.auth.principal(scope)
        if principal is None or principal.role not in TARGETS.roles:
            return None
        read = self.svc.rankings.reader(study_id, cell_type, time_, limit, offset)
        body = self.svc.reader.run(read)
        return None if body is None else json_response(body, Page[TargetRow])

    async def patient_targets(self, scope: Scope, patient_id: str) -> Response | None:
        """``/patients/{id}/targets``: a granted patient's ranking (audited like the route)."""
        params = _query(scope, _PAGE_PARAMS)
        if params is None:
            return None
        limit = LIMIT.parse(params.get("limit"), PATIENT_TARGETS.limit)
        offset = OFFSET.parse(params.get("offset"), OFFSET.low)
        if limit is None or offset is None:
            return None
        key = self.svc.auth.check(scope)
        if key.principal is None or key.principal.role not in PATIENT_TARGETS.roles:
            return None
        read = patient_targets_reader(patient_id, limit, offset)
        outcome, body = self.svc.reader.run(granted(key.principal, patient_id, read))
        if outcome != "allowed":
            return None  # the route answers (and audits) denied and not-found reads
        await self.svc.audit(scope, key, PATIENT_TARGETS.action, patient_id, outcome)
        return json_response(body, Page[PatientTargetRow])


def _query(scope: Scope, allowed: frozenset[str]) -> dict[str, str] | None:
    """Query parameters as Starlette parses them; None if any is unknown or repeated."""
    raw: bytes = scope["query_string"]
    out: dict[str, str] = {}
    if raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if name not in allowed or name in out:
                return None
            out[name] = value
    return out
