"""``/health``: liveness, no key needed."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from omicstwin.service.deps import Service
from omicstwin.service.errors import ApiError
from omicstwin.service.models import Health
from omicstwin.service.params import PREFIX


def router(svc: Service) -> APIRouter:
    """Build the health route."""
    api = APIRouter(prefix=PREFIX)

    @api.get("/health", tags=["service"])
    def health() -> Health:
        """Liveness (no key needed); 503 when the database cannot be reached."""
        try:
            with svc.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            raise ApiError(503, "the database cannot be reached") from None
        return Health(status="ok", schema_revision=svc.revision)

    return api
