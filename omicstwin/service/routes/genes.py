"""``/genes/{symbol}``: a gene's scores across studies."""

from __future__ import annotations

from fastapi import APIRouter

from omicstwin.service import queries as q
from omicstwin.service.deps import Service
from omicstwin.service.errors import not_found, problem_responses
from omicstwin.service.models import GeneScore, Page
from omicstwin.service.params import GENE, OFFSET, PREFIX, Limit, Offset, Symbol
from omicstwin.service.routes import caller

GeneReader = caller(GENE)


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the gene route to ``api`` (the app's own router; see ``app.ROUTES``)."""

    @api.get(PREFIX + "/genes/{symbol}", tags=["genes"], responses=problem_responses(403, 404))
    def gene(
        _: GeneReader, symbol: Symbol, limit: Limit = GENE.limit, offset: Offset = OFFSET.low
    ) -> Page[GeneScore]:
        """List a gene's scores across studies and contexts (single-gene perturbations)."""
        with svc.engine.connect() as conn:
            rows = q.gene_scores(conn, symbol)
        if not rows:
            raise not_found(f"no scores for the gene '{symbol}' in any published study")
        return Page[GeneScore](data=rows[offset : offset + limit], count=len(rows))
