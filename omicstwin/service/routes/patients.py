"""``/patients/{patient_id}``: patient twin records and rankings (granted keys; audited).

Every read is authorised (a valid key, and a grant on the record unless the role is grant
exempt), then audited (the row committed before any data is returned), then answered.
Requests that no route answers (422, 405, 429, 500, ...) are audited by ``audit_other``,
which ``guard.PatientGuard`` calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.types import Scope

from omicstwin.service.deps import (
    KEY_OUTCOMES,
    NO_KEY,
    Credentials,
    Service,
    json_response,
)
from omicstwin.service.errors import ApiError, not_found, problem_responses, unauthorized
from omicstwin.service.hotpath import (
    Read,
    granted,
    patient_record_reader,
    patient_targets_reader,
)
from omicstwin.service.models import Page, PatientRecord, PatientTargetRow
from omicstwin.service.params import (
    ID,
    OFFSET,
    PATIENT,
    PATIENT_TARGETS,
    PREFIX,
    Limit,
    Offset,
    PatientId,
)

_ACTIONS = {
    f"{PREFIX}/patients/{{patient_id}}": PATIENT.action,
    f"{PREFIX}/patients/{{patient_id}}/targets": PATIENT_TARGETS.action,
}
_STATUS_OUTCOMES = {
    403: "denied",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_request",
    429: "rate_limited",
}


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the patient routes to ``api`` (the app's own router; see ``app.ROUTES``)."""

    @api.get(
        PREFIX + "/patients/{patient_id}",
        tags=["patients"],
        responses=problem_responses(403, 404),
        response_model=PatientRecord,
    )
    async def patient(request: Request, credentials: Credentials, patient_id: PatientId) -> Any:
        """Get a patient twin record (admin, or a key granted this patient). Audited."""
        read = patient_record_reader(patient_id)
        row = await _patient_read(svc, request, patient_id, PATIENT.action, read)
        return PatientRecord(**row)  # nested state summary: validated and serialised by FastAPI

    @api.get(
        PREFIX + "/patients/{patient_id}/targets",
        tags=["patients"],
        responses=problem_responses(403, 404),
        response_model=Page[PatientTargetRow],
    )
    async def patient_targets(
        request: Request,
        credentials: Credentials,
        patient_id: PatientId,
        limit: Limit = PATIENT_TARGETS.limit,
        offset: Offset = OFFSET.low,
    ) -> Any:
        """List a patient's personalised target ranking, each row with its study-level evidence."""
        read = patient_targets_reader(patient_id, limit, offset)
        body = await _patient_read(svc, request, patient_id, PATIENT_TARGETS.action, read)
        return json_response(body, Page[PatientTargetRow])


async def _patient_read(
    svc: Service, request: Request, patient_id: str, action: str, read: Read
) -> Any:
    """Authorise, read and audit one access to patient data (audit row before the data)."""
    key = svc.auth.check(request.scope)
    outcome, data = KEY_OUTCOMES.get(key.status, "unauthenticated"), None
    if key.principal is not None:
        outcome, data = svc.reader.run(granted(key.principal, patient_id, read))
    # Committed (group commit, its own write-only transaction) before anything is returned.
    await svc.audit(request.scope, key, action, patient_id, outcome)
    if key.principal is None:
        raise unauthorized()  # the same answer for a missing, unknown, revoked, expired key
    if outcome == "denied":
        # Same answer whether or not the patient exists: no existence oracle.
        raise ApiError(403, "this key holds no grant for that patient record")
    if outcome == "not_found":
        raise not_found("no patient record with that id")
    return data


def audit_other(svc: Service) -> Callable[[Scope, int], Awaitable[None]]:
    """Return the guard's audit of a patient request no route answered (422, 405, ...)."""

    async def write(scope: Scope, status: int) -> None:
        route = scope.get("route")
        action = _ACTIONS.get(getattr(route, "path", None), "patient.other")
        rest = scope["path"][len(PREFIX) + len("/patients/") :]
        given = rest.split("/", 1)[0]
        patient_id = given if ID.valid(given) else None  # never an arbitrary text
        key = NO_KEY if status == 429 else svc.auth.check(scope)  # 429: locked out, no lookup
        if status == 401:
            outcome = KEY_OUTCOMES.get(key.status, "unauthenticated")
        else:
            outcome = _STATUS_OUTCOMES.get(status, "error" if status >= 500 else "other")
        await svc.audit(scope, key, action, patient_id, outcome)

    return write
