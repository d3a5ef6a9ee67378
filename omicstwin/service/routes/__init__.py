"""The routes, one module per resource; each module's ``add_routes(api, service)`` adds them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from omicstwin.service.deps import require
from omicstwin.service.params import Endpoint
from omicstwin.store.access import Principal


def caller(endpoint: Endpoint) -> Any:
    """Return the principal parameter of a route: a valid key of one of the endpoint's roles."""
    return Annotated[Principal, Depends(require(*endpoint.roles))]
