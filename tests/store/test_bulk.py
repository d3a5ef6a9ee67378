"""Bulk inserts of publish (COPY on PostgreSQL, executemany on SQLite) keep every value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from omicstwin.store import publish as publish_module
from omicstwin.store.db import TABLES, make_engine, upgrade_db
from tests.service import conftest as _fixtures

db_url = _fixtures.db_url
pg_session_url = _fixtures.pg_session_url


def test_bulk_insert_round_trips_awkward_values(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade_db(engine)
    frame = pd.DataFrame(
        {
            "name": ["tab\there", "new\nline", "back\\slash", "quote'\"", "ünï 🧬", "x" * 512],
            "rank": np.arange(1, 7, dtype="int64"),
            "score": [0.1, np.nan, np.inf, -np.inf, 1e-300, -0.0],
            "genes": pd.array(["G1", pd.NA, None, "G;2", "", "\\N"], dtype="string"),
            "dose": [1, 2, 3, 4, 5, 6],
        }
    )
    rows = publish_module._records(
        frame,
        {"name": "name", "rank": "rank", "score": "score", "genes": "genes", "dose": "dose"},
        study_id="s1",
    )
    studies = TABLES["studies"]
    with engine.begin() as conn:
        conn.execute(
            studies.insert().values(
                study_id="s1",
                content_hash="0" * 64,
                published_at=sa.func.now(),
                run_schema_version=1,
                cell_types="[]",
                time_points="[]",
                counts="{}",
                run_json="{}",
            )
        )
        publish_module._insert(conn, "targets", rows)
        publish_module._insert(conn, "patients", [])  # nothing to insert: no statement
    targets = TABLES["targets"]
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(targets.c.name, targets.c.rank, targets.c.score, targets.c.genes)
            .where(targets.c.study_id == "s1")
            .order_by(targets.c.rank)
        ).all()
        doses = conn.execute(sa.select(targets.c.dose).order_by(targets.c.rank)).scalars().all()
    engine.dispose()
    assert [r.name for r in got] == frame["name"].tolist()
    assert [r.rank for r in got] == [1, 2, 3, 4, 5, 6]
    scores = [r.score for r in got]
    assert scores[0] == 0.1 and scores[4] == 1e-300 and scores[5] == 0.0  # -0.0 kept as a zero
    assert scores[1] is None and scores[2] is None and scores[3] is None  # NaN/inf -> NULL
    assert [r.genes for r in got] == ["G1", None, None, "G;2", "", "\\N"]
    assert doses == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and all(isinstance(d, float) for d in doses)
