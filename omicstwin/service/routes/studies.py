"""``/studies``: the published studies, their target, disease gene and drug rankings, the MNM."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from omicstwin.service import queries as q
from omicstwin.service.deps import Service, json_response
from omicstwin.service.errors import no_study, problem_responses
from omicstwin.service.models import (
    DiseaseGeneRow,
    DrugRow,
    MulticellularNetwork,
    Page,
    StudyDetail,
    StudySummary,
    TargetRow,
)
from omicstwin.service.params import (
    DISEASE_GENES,
    DRUGS,
    HOT_MAX_OFFSET,
    MNM,
    OFFSET,
    PREFIX,
    STUDIES,
    STUDY,
    TARGETS,
    CellType,
    Limit,
    MaxQ,
    MinScore,
    MnmTime,
    Offset,
    StudyId,
    Time,
)
from omicstwin.service.routes import caller

StudiesReader = caller(STUDIES)
StudyReader = caller(STUDY)
TargetsReader = caller(TARGETS)
DiseaseGenesReader = caller(DISEASE_GENES)
DrugsReader = caller(DRUGS)
MnmReader = caller(MNM)


def add_routes(api: APIRouter, svc: Service) -> None:
    """Add the study routes to ``api`` (the app's own router; see ``app.ROUTES``)."""
    _add_studies(api, svc)
    _add_targets(api, svc)
    _add_rankings(api, svc)
    _add_mnm(api, svc)


def _add_studies(api: APIRouter, svc: Service) -> None:
    @api.get(PREFIX + "/studies", tags=["studies"], responses=problem_responses(403))
    def studies(
        _: StudiesReader, limit: Limit = STUDIES.limit, offset: Offset = OFFSET.low
    ) -> Page[StudySummary]:
        """List the published studies."""
        with svc.engine.connect() as conn:
            data, count = q.list_studies(conn, limit, offset)
        return Page[StudySummary](data=data, count=count)

    @api.get(
        PREFIX + "/studies/{study_id}", tags=["studies"], responses=problem_responses(403, 404)
    )
    def study(_: StudyReader, study_id: StudyId) -> StudyDetail:
        """Get a study with its provenance (versions, config, timings) and table sizes."""
        with svc.engine.connect() as conn:
            row = q.get_study(conn, study_id)
        if row is None:
            raise no_study(study_id)
        return StudyDetail(**row)


def _add_targets(api: APIRouter, svc: Service) -> None:
    @api.get(
        PREFIX + "/studies/{study_id}/targets",
        tags=["studies"],
        responses=problem_responses(403, 404),
        response_model=Page[TargetRow],
    )
    async def targets(
        _: TargetsReader,
        study_id: StudyId,
        cell_type: CellType = None,
        time: Time = None,
        limit: Limit = TARGETS.limit,
        offset: Offset = OFFSET.low,
        min_score: MinScore = None,
        max_q: MaxQ = None,
    ) -> Any:
        """Drug targets: the study-level ranking, or the ranking in a cell type / time point."""
        plain = min_score is None and max_q is None and (cell_type is None) == (time is None)
        if plain and offset <= HOT_MAX_OFFSET:
            # Hot path: one ranking, no filters: short index range reads (see HotReader).
            body = svc.reader.run(svc.rankings.reader(study_id, cell_type, time, limit, offset))
            if body is None:
                raise no_study(study_id)
            return json_response(body, Page[TargetRow])
        return await run_in_threadpool(
            _filtered_targets, svc, study_id, cell_type, time, limit, offset, min_score, max_q
        )


def _filtered_targets(
    svc: Service,
    study_id: str,
    cell_type: str | None,
    time: float | None,
    limit: int,
    offset: int,
    min_score: float | None,
    max_q: float | None,
) -> Page[TargetRow]:
    with svc.engine.connect() as conn:
        counts = q.study_counts(conn, study_id)
        if counts is None:
            raise no_study(study_id)
        data, count = q.list_targets(
            conn,
            study_id,
            total=counts.get("targets", 0),
            cell_type=cell_type,
            time=time,
            limit=limit,
            offset=offset,
            min_score=min_score,
            max_q=max_q,
        )
    return Page[TargetRow](data=data, count=count)  # serialised by FastAPI


def _add_rankings(api: APIRouter, svc: Service) -> None:
    @api.get(
        PREFIX + "/studies/{study_id}/disease-genes",
        tags=["studies"],
        responses=problem_responses(403, 404),
    )
    def disease_genes(
        _: DiseaseGenesReader,
        study_id: StudyId,
        limit: Limit = DISEASE_GENES.limit,
        offset: Offset = OFFSET.low,
        min_score: MinScore = None,
        max_q: MaxQ = None,
    ) -> Page[DiseaseGeneRow]:
        """Disease genes: perturbations that push control cells toward the disease state."""
        data, count = _ranking(
            svc, q.DISEASE, study_id, limit=limit, offset=offset, min_score=min_score, max_q=max_q
        )
        return Page[DiseaseGeneRow](data=data, count=count)

    @api.get(
        PREFIX + "/studies/{study_id}/drugs",
        tags=["studies"],
        responses=problem_responses(403, 404),
    )
    def drugs(
        _: DrugsReader,
        study_id: StudyId,
        limit: Limit = DRUGS.limit,
        offset: Offset = OFFSET.low,
        min_score: MinScore = None,
        max_q: MaxQ = None,
    ) -> Page[DrugRow]:
        """Drugs, ranked by the reversal their targets achieve together."""
        data, count = _ranking(
            svc, q.DRUGS, study_id, limit=limit, offset=offset, min_score=min_score, max_q=max_q
        )
        return Page[DrugRow](data=data, count=count)


def _add_mnm(api: APIRouter, svc: Service) -> None:
    @api.get(
        PREFIX + "/studies/{study_id}/mnm", tags=["studies"], responses=problem_responses(403, 404)
    )
    def mnm(
        _: MnmReader,
        study_id: StudyId,
        time: MnmTime = None,
        limit: Limit = MNM.limit,
        offset: Offset = OFFSET.low,
    ) -> MulticellularNetwork:
        """Get the multicellular network model and the cell types ranked by centrality in it.

        Edges sender -> receiver per time point: upstream regulators of the receiver's DEGs that
        are up-regulated in the sender (Li et al. 2022); centrality: eigenvector centrality of
        the edges summed over time (as scDrugPrio ranks cell types).
        """
        with svc.engine.connect() as conn:
            if q.study_counts(conn, study_id) is None:
                raise no_study(study_id)
            edges, count, centrality = q.mnm(conn, study_id, time=time, limit=limit, offset=offset)
        return MulticellularNetwork(
            study_id=study_id, time=time, edges=edges, count=count, centrality=centrality
        )


def _ranking(svc: Service, table: sa.Table, study_id: str, **kwargs: Any) -> tuple[list[dict], int]:
    with svc.engine.connect() as conn:
        if q.study_counts(conn, study_id) is None:
            raise no_study(study_id)
        return q.list_ranking(conn, table, study_id, **kwargs)
