"""``/audit``: the audit trail of the patient routes (admin only)."""

from __future__ import annotations

from contextlib import nullcontext

from fastapi import APIRouter

from omicstwin.service import queries as q
from omicstwin.service.deps import Service
from omicstwin.service.errors import problem_responses
from omicstwin.service.models import AuditRow, Page
from omicstwin.service.params import (
    AUDIT,
    OFFSET,
    PREFIX,
    IdFilter,
    Limit,
    Offset,
    OutcomeFilter,
)
from omicstwin.service.routes import caller

Admin = caller(AUDIT)


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the audit route to ``api`` (the app's own router; see ``app.ROUTES``)."""

    @api.get(PREFIX + "/audit", tags=["admin"], responses=problem_responses(403))
    def audit(
        _: Admin,
        limit: Limit = AUDIT.limit,
        offset: Offset = OFFSET.low,
        patient_id: IdFilter = None,
        outcome: OutcomeFilter = None,
        key_name: IdFilter = None,
    ) -> Page[AuditRow]:
        """List the audit trail of patient routes, newest first (admin only).

        Rows still in the SQLite audit journal (written while a publish held the database's
        write lock) come first, with ``id`` null until they are moved into the table.
        """
        filters = {"patient_id": patient_id, "outcome": outcome, "key_name": key_name}
        journal = svc.auditor.journal
        # No drain commits while both are read: a row is listed once, from one of the two.
        with journal.snapshot() if journal is not None else nullcontext([]) as waiting:
            pending = [
                dict(row, id=None)
                for row in reversed(waiting)
                if all(v is None or row[k] == v for k, v in filters.items())
            ]
            page = pending[offset : offset + limit]
            with svc.engine.connect() as conn:
                data, count = q.list_audit(
                    conn,
                    limit=limit - len(page),
                    offset=max(0, offset - len(pending)),
                    **filters,
                )
        return Page[AuditRow](data=page + data, count=len(pending) + count)
