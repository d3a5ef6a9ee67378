"""The FastAPI query service over the results database (reads the database only).

``create_app(db_url)`` builds the application; ``omicstwin serve --db URL`` runs it with uvicorn.
"""

from __future__ import annotations

from omicstwin.service.app import create_app

__all__ = ["create_app"]
