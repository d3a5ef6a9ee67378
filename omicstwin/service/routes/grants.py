"""``/grants``: the grants of patient records to keys (admin only)."""

from __future__ import annotations

from fastapi import APIRouter

from omicstwin.service import queries as q
from omicstwin.service.deps import Service
from omicstwin.service.errors import problem_responses
from omicstwin.service.models import GrantRow, Page
from omicstwin.service.params import (
    GRANTS,
    OFFSET,
    PREFIX,
    GrantKeyName,
    GrantPatient,
    Limit,
    Offset,
)
from omicstwin.service.routes import caller
from omicstwin.store import access

Admin = caller(GRANTS)


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the grants route to ``api`` (the app's own router; see ``app.ROUTES``)."""

    @api.get(PREFIX + "/grants", tags=["admin"], responses=problem_responses(403))
    def grants(
        _: Admin,
        limit: Limit = GRANTS.limit,
        offset: Offset = OFFSET.low,
        key_name: GrantKeyName = None,
        patient_id: GrantPatient = None,
    ) -> Page[GrantRow]:
        """List the grants of patient records to keys (admin only), by key name and patient."""
        with svc.engine.connect() as conn:
            rows = access.list_grants(conn, key_name=key_name, patient_id=patient_id)
        data = [dict(r, created_at=q.utc(r["created_at"])) for r in rows[offset : offset + limit]]
        return Page[GrantRow](data=data, count=len(rows))
