"""Read queries of the service (SQLAlchemy Core on the store's tables; no ORM sessions).

Core selects return plain rows, which keeps the hot paths (top targets, patient targets) to one
or two indexed statements each.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from omicstwin.store.db import TABLES

STUDIES = TABLES["studies"]
TARGETS = TABLES["targets"]
CONTEXT = TABLES["context_targets"]
DISEASE = TABLES["disease_genes"]
DRUGS = TABLES["drugs"]
PATIENTS = TABLES["patients"]
PATIENT_TARGETS = TABLES["patient_targets"]
AUDIT = TABLES["audit"]
MNM_EDGES = TABLES["mnm_edges"]
CENTRALITY = TABLES["cell_type_centrality"]
MAX_GENE_ROWS = 10_000


def utc(value: datetime) -> datetime:
    """Return a stored time as aware UTC (SQLite returns naive times; the store writes UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_utc = utc


def _summary(row: Any) -> dict[str, Any]:
    counts = json.loads(row.counts)
    return {
        "study_id": row.study_id,
        "published_at": _utc(row.published_at),
        "cohort": row.cohort,
        "cell_types": json.loads(row.cell_types),
        "time_points": json.loads(row.time_points),
        "n_patients": counts.get("patients", 0),
        "n_targets": counts.get("targets", 0),
    }


def list_studies(conn: Connection, limit: int, offset: int) -> tuple[list[dict], int]:
    """List published studies, by id."""
    rows = conn.execute(
        sa.select(STUDIES).order_by(STUDIES.c.study_id).limit(limit).offset(offset)
    ).all()
    count = conn.execute(sa.select(sa.func.count()).select_from(STUDIES)).scalar_one()
    return [_summary(r) for r in rows], count


def study_counts(conn: Connection, study_id: str) -> dict[str, int] | None:
    """Return the published table sizes of a study, or None when there is no such study."""
    text = conn.execute(sa.select(STUDIES.c.counts).where(STUDIES.c.study_id == study_id)).scalar()
    return None if text is None else json.loads(text)


def get_study(conn: Connection, study_id: str) -> dict[str, Any] | None:
    """Return a study with provenance, or None."""
    row = conn.execute(sa.select(STUDIES).where(STUDIES.c.study_id == study_id)).first()
    if row is None:
        return None
    run = json.loads(row.run_json)
    return _summary(row) | {
        "content_hash": row.content_hash,
        "seed": row.seed,
        "case_label": row.case_label,
        "control_label": row.control_label,
        "counts": json.loads(row.counts),
        "versions": run.get("versions") or {},
        "config": run.get("config") or {},
        "timings_s": run.get("timings_s") or {},
        "failures": run.get("failures") or {},
        "null_calibration": run.get("null_calibration") or [],  # added by publish
    }


_TARGET_COLS = (
    "name",
    "rank",
    "score",
    "off_target",
    "p_value",
    "q_value",
    "cell_type",
    "time",
    "kind",
    "genes",
    "dose",
)


def list_targets(
    conn: Connection,
    study_id: str,
    *,
    total: int,
    cell_type: str | None,
    time: float | None,
    limit: int,
    offset: int,
    min_score: float | None,
    max_q: float | None,
) -> tuple[list[dict], int]:
    """Study-level ranking, or the ranking within a cell type and/or time point.

    ``total`` is the study's number of study-level targets, used as the count when nothing is
    filtered (a COUNT over a large study would cost more than the page itself).
    """
    contextual = cell_type is not None or time is not None
    table = CONTEXT if contextual else TARGETS
    where = [table.c.study_id == study_id]
    if cell_type is not None:
        where.append(table.c.cell_type == cell_type)
    if time is not None:
        where.append(table.c.time == time)
    if min_score is not None:
        where.append(table.c.score >= min_score)
    if max_q is not None:
        where.append(table.c.q_value <= max_q)
    if not contextual or (cell_type is not None and time is not None):
        order = [table.c.rank, table.c.name]  # one ranking: the stored rank is the order
    else:  # several contexts mixed: best score first
        order = [table.c.score.desc().nulls_last(), table.c.name, table.c.cell_type, table.c.time]
    cols = [table.c[c] for c in _TARGET_COLS]
    rows = conn.execute(
        sa.select(*cols).where(*where).order_by(*order).limit(limit).offset(offset)
    ).all()
    level = "context" if contextual else "study"
    data = [dict(r._mapping, level=level) for r in rows]
    if not contextual and min_score is None and max_q is None:
        count = total
    else:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(*where)
        ).scalar_one()
    return data, count


def list_ranking(
    conn: Connection,
    table: sa.Table,
    study_id: str,
    *,
    limit: int,
    offset: int,
    min_score: float | None,
    max_q: float | None,
) -> tuple[list[dict], int]:
    """Disease genes or drugs of a study, by rank."""
    where = [table.c.study_id == study_id]
    if min_score is not None:
        where.append(table.c.score >= min_score)
    if max_q is not None:
        where.append(table.c.q_value <= max_q)
    cols = [c for c in table.c if c.name not in ("id", "study_id")]
    rows = conn.execute(
        sa.select(*cols)
        .where(*where)
        .order_by(table.c.rank, table.c.name)
        .limit(limit)
        .offset(offset)
    ).all()
    count = conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
    return [dict(r._mapping) for r in rows], count


def mnm(
    conn: Connection, study_id: str, *, time: float | None, limit: int, offset: int
) -> tuple[list[dict], int, list[dict]]:
    """Return a study's MNM edges (by time, sender, receiver) and its cell-type centrality.

    Returns
    -------
    edges, count, centrality
        A page of edges (``regulators`` split into a list), the number of edges matching the
        filter, and every cell type's centrality by rank (over all time points, whatever the
        filter).
    """
    where = [MNM_EDGES.c.study_id == study_id]
    if time is not None:
        where.append(MNM_EDGES.c.time == time)
    cols = [MNM_EDGES.c[c] for c in _MNM_COLS]
    order = [MNM_EDGES.c.time, MNM_EDGES.c.source_cell_type, MNM_EDGES.c.target_cell_type]
    rows = conn.execute(
        sa.select(*cols).where(*where).order_by(*order).limit(limit).offset(offset)
    ).all()
    count = conn.execute(
        sa.select(sa.func.count()).select_from(MNM_EDGES).where(*where)
    ).scalar_one()
    edges = [dict(r._mapping, regulators=[g for g in r.regulators.split(";") if g]) for r in rows]
    ranked = conn.execute(
        sa.select(CENTRALITY.c.cell_type, CENTRALITY.c.centrality, CENTRALITY.c.rank)
        .where(CENTRALITY.c.study_id == study_id)
        .order_by(CENTRALITY.c.rank, CENTRALITY.c.cell_type)
    ).all()
    return edges, count, [dict(r._mapping) for r in ranked]


_MNM_COLS = ("time", "source_cell_type", "target_cell_type", "n_regulators", "regulators")


def gene_scores(conn: Connection, symbol: str) -> list[dict]:
    """Every score of a gene: single-gene study targets, context targets, disease genes."""
    out: list[dict] = []
    for source, table, match in (
        ("study_target", TARGETS, TARGETS.c.genes == symbol),
        ("context_target", CONTEXT, CONTEXT.c.genes == symbol),
        ("disease_gene", DISEASE, DISEASE.c.name == symbol),
    ):
        rows = conn.execute(
            sa.select(
                table.c.study_id,
                table.c.name,
                table.c.rank,
                table.c.score,
                table.c.q_value,
                table.c.cell_type,
                table.c.time,
            )
            .where(match)
            .order_by(table.c.study_id, table.c.cell_type, table.c.time, table.c.rank)
            .limit(MAX_GENE_ROWS)
        ).all()
        out += [dict(r._mapping, source=source) for r in rows]
    return out


def get_patient(conn: Connection, patient_id: str) -> dict[str, Any] | None:
    """Return a patient twin record, or None."""
    row = conn.execute(sa.select(PATIENTS).where(PATIENTS.c.patient_id == patient_id)).first()
    if row is None:
        return None
    return {
        "patient_id": row.patient_id,
        "study_id": row.study_id,
        "arm": row.arm,
        "time_points": json.loads(row.time_points),
        "has_external_ref": row.external_ref_hash is not None,
        "n_targets": row.n_targets,
        "state_summary": json.loads(row.state_summary),
        "targets_href": f"/api/v1/patients/{quote(row.patient_id, safe='')}/targets",
    }


def patient_targets(
    conn: Connection, patient_id: str, *, limit: int, offset: int
) -> tuple[list[dict], int] | None:
    """Return a patient's ranking with its study-level evidence, or None (no patient)."""
    total = conn.execute(
        sa.select(PATIENTS.c.n_targets).where(PATIENTS.c.patient_id == patient_id)
    ).scalar()
    if total is None:
        return None
    t = PATIENT_TARGETS
    rows = conn.execute(
        sa.select(t)
        .where(t.c.patient_id == patient_id)
        .order_by(t.c.rank, t.c.target)
        .limit(limit)
        .offset(offset)
    ).all()
    data = []
    for r in rows:
        evidence = None
        if r.study_name is not None or r.context_rank is not None:
            query = ""
            if r.cell_type is not None and r.time is not None:
                query = f"?cell_type={quote(r.cell_type, safe='')}&time={r.time!r}"
            evidence = {
                "study_id": r.study_id,
                "name": r.study_name,
                "rank": r.study_rank,
                "score": r.study_score,
                "q_value": r.study_q_value,
                "context_rank": r.context_rank,
                "context_q_value": r.context_q_value,
                "href": f"/api/v1/studies/{quote(r.study_id, safe='')}/targets{query}",
            }
        data.append(
            {
                "rank": r.rank,
                "target": r.target,
                "cell_type": r.cell_type,
                "time": r.time,
                "reversal_score": r.reversal_score,
                "p_value": r.p_value,
                "q_value": r.q_value,
                "evidence": evidence,
            }
        )
    return data, total


def list_audit(
    conn: Connection,
    *,
    limit: int,
    offset: int,
    patient_id: str | None,
    outcome: str | None,
    key_name: str | None,
) -> tuple[list[dict], int]:
    """Audit rows, newest first."""
    where = []
    if patient_id is not None:
        where.append(AUDIT.c.patient_id == patient_id)
    if outcome is not None:
        where.append(AUDIT.c.outcome == outcome)
    if key_name is not None:
        where.append(AUDIT.c.key_name == key_name)
    rows = conn.execute(
        sa.select(AUDIT).where(*where).order_by(AUDIT.c.id.desc()).limit(limit).offset(offset)
    ).all()
    count = conn.execute(sa.select(sa.func.count()).select_from(AUDIT).where(*where)).scalar_one()
    return [dict(r._mapping, at=_utc(r.at)) for r in rows], count


# ----------------------------------------------------------------------------- hot paths
#
# The hot endpoints (top targets of a study or of one context, patient targets, patient record,
# key lookups) run a few indexed statements per request. Building a Core select and looking it
# up in SQLAlchemy's statement cache costs more than the query itself, so these are compiled
# once per dialect into driver SQL and run on a DBAPI connection with bound parameters.


class Compiled:
    """A statement compiled once for a dialect; ``params`` orders the bound values for it."""

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self._order = compiled.positiontup  # None for named parameter styles (psycopg)

    def params(self, **values: Any) -> tuple | dict:
        """Return the bound values in the form the driver expects."""
        return tuple(values[n] for n in self._order) if self._order else values


def _b(name: str) -> sa.BindParameter:
    return sa.bindparam(name)


def hot_statements(dialect: sa.Dialect) -> dict[str, Compiled]:
    """Compile the hot-path statements for ``dialect``."""
    keys = TABLES["api_keys"]
    grants = TABLES["grants"]
    t, c, p = TARGETS, CONTEXT, PATIENT_TARGETS
    stmts: dict[str, sa.ClauseElement] = {
        "key": sa.select(
            keys.c.id, keys.c.name, keys.c.role, keys.c.revoked_at, keys.c.expires_at
        ).where(keys.c.key_hash == _b("key_hash")),
        "grant": sa.select(grants.c.key_id).where(
            grants.c.key_id == _b("key_id"), grants.c.patient_id == _b("patient_id")
        ),
        "study_counts": sa.select(STUDIES.c.counts, STUDIES.c.content_hash).where(
            STUDIES.c.study_id == _b("study_id")
        ),
        "targets": sa.select(*[t.c[n] for n in _TARGET_COLS])
        .where(t.c.study_id == _b("study_id"))
        .order_by(t.c.rank, t.c.name)
        .limit(_b("limit"))
        .offset(_b("offset")),
        "context_targets": sa.select(*[c.c[n] for n in _TARGET_COLS])
        .where(c.c.study_id == _b("study_id"), c.c.cell_type == _b("cell_type"))
        .where(c.c.time == _b("time"))
        .order_by(c.c.rank, c.c.name)
        .limit(_b("limit"))
        .offset(_b("offset")),
        "context_count": sa.select(sa.func.count())
        .select_from(c)
        .where(c.c.study_id == _b("study_id"), c.c.cell_type == _b("cell_type"))
        .where(c.c.time == _b("time")),
        "patient": sa.select(
            PATIENTS.c.patient_id,
            PATIENTS.c.study_id,
            PATIENTS.c.arm,
            PATIENTS.c.time_points,
            PATIENTS.c.external_ref_hash,
            PATIENTS.c.n_targets,
            PATIENTS.c.state_summary,
        ).where(PATIENTS.c.patient_id == _b("patient_id")),
        "patient_total": sa.select(PATIENTS.c.n_targets).where(
            PATIENTS.c.patient_id == _b("patient_id")
        ),
        "patient_targets": sa.select(*[p.c[n] for n in _PATIENT_TARGET_COLS])
        .where(p.c.patient_id == _b("patient_id"))
        .order_by(p.c.rank, p.c.target)
        .limit(_b("limit"))
        .offset(_b("offset")),
    }
    return {name: Compiled(stmt, dialect) for name, stmt in stmts.items()}


_PATIENT_TARGET_COLS = (
    "rank",
    "target",
    "cell_type",
    "time",
    "reversal_score",
    "p_value",
    "q_value",
    "study_id",
    "study_name",
    "study_rank",
    "study_score",
    "study_q_value",
    "context_rank",
    "context_q_value",
)


def fetch(cursor: Any, stmt: Compiled, **values: Any) -> list[tuple]:
    """Run a compiled statement on a DBAPI cursor; return all rows (the cursor is drained)."""
    cursor.execute(stmt.sql, stmt.params(**values))
    return cursor.fetchall()


def target_rows(rows: list[tuple], level: str) -> list[dict[str, Any]]:
    """Target rows as dicts in the order of the ``TargetRow`` model's fields."""
    return [
        {
            "name": r[0],
            "level": level,
            "rank": r[1],
            "score": r[2],
            "off_target": r[3],
            "p_value": r[4],
            "q_value": r[5],
            "cell_type": r[6],
            "time": r[7],
            "kind": r[8],
            "genes": r[9],
            "dose": r[10],
        }
        for r in rows
    ]


def patient_record(row: tuple) -> dict[str, Any]:
    """Turn a row of the ``patient`` statement into a ``PatientRecord`` dict."""
    patient_id, study_id, arm, time_points, ref_hash, n_targets, state = row
    return {
        "patient_id": patient_id,
        "study_id": study_id,
        "arm": arm,
        "time_points": json.loads(time_points),
        "has_external_ref": ref_hash is not None,
        "n_targets": n_targets,
        "state_summary": json.loads(state),
        "targets_href": f"/api/v1/patients/{quote(patient_id, safe='')}/targets",
    }


def patient_target_rows(rows: list[tuple]) -> list[dict[str, Any]]:
    """``patient_targets`` rows as ``PatientTargetRow`` dicts (evidence and its link)."""
    data = []
    for (
        rank,
        target,
        cell_type,
        time,
        reversal,
        p_value,
        q_value,
        study_id,
        name,
        s_rank,
        s_score,
        s_q,
        c_rank,
        c_q,
    ) in rows:
        evidence = None
        if name is not None or c_rank is not None:
            query = ""
            if cell_type is not None and time is not None:
                query = f"?cell_type={quote(cell_type, safe='')}&time={time!r}"
            evidence = {
                "study_id": study_id,
                "name": name,
                "rank": s_rank,
                "score": s_score,
                "q_value": s_q,
                "context_rank": c_rank,
                "context_q_value": c_q,
                "href": f"/api/v1/studies/{quote(study_id, safe='')}/targets{query}",
            }
        data.append(
            {
                "rank": rank,
                "target": target,
                "cell_type": cell_type,
                "time": time,
                "reversal_score": reversal,
                "p_value": p_value,
                "q_value": q_value,
                "evidence": evidence,
            }
        )
    return data
