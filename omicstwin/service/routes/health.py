"""``/health``: liveness, no key needed."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from omicstwin.service.deps import Service
from omicstwin.service.errors import ApiError
from omicstwin.service.models import Health
from omicstwin.service.params import PREFIX


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the health route to ``api`` (the app's own router; see ``app.ROUTES``)."""

    @api.get(PREFIX + "/health", tags=["service"])
    def health() -> Health:
        """Liveness (no key needed); 503 when the database cannot be reached."""
        try:
            with svc.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            raise ApiError(503, "the database cannot be reached") from None
        return Health(status="ok", schema_revision=svc.revision)
