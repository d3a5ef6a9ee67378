"""``/scores``: the score registry (omicstwin.scores), no key needed.

Public like ``/health``: it is the package's own documentation of what each number means
(direction, calibrated or rank only, unit), the same for every study, with no study or patient
data; clients need it to read any ranking. It is built once, with no database access.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from omicstwin.scores import SCORES
from omicstwin.service.deps import Service
from omicstwin.service.models import ScoreInfo, ScoreRegistry
from omicstwin.service.params import PREFIX


def registry() -> ScoreRegistry:
    """Return the score registry as the API's model (every table, every score column)."""
    return ScoreRegistry(
        tables={
            table: {column: ScoreInfo(**asdict(score)) for column, score in columns.items()}
            for table, columns in SCORES.items()
        }
    )


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the score registry route to ``api`` (the app's own router; see ``app.ROUTES``)."""
    body = registry()

    @api.get(PREFIX + "/scores", tags=["service"])
    def scores() -> ScoreRegistry:
        """How to read every score (no key needed): direction, calibrated or rank only, unit."""
        return body
