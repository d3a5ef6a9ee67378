"""The multicellular network model and cell-type centrality in the database (schema 0004).

Published from the run directory's ``mnm.parquet`` and ``centrality.parquet`` (study-level,
no patient link), replaced and deleted with their study, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from omicstwin.store.db import TABLES, current_revision, make_engine, upgrade_db
from omicstwin.store.publish import TableContentError, delete_study, publish_run
from tests.service import conftest as _fixtures
from tests.service.conftest import fabricate_run

db_url = _fixtures.db_url
pg_session_url = _fixtures.pg_session_url
run_dir = _fixtures.run_dir

EDGE_COLUMNS = ["time", "source_cell_type", "target_cell_type", "n_regulators", "regulators"]


def _rows(url: str, table: str, study_id: str = "study_a") -> pd.DataFrame:
    engine = make_engine(url)
    t = TABLES[table]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.study_id == study_id).order_by(t.c.id)).all()
    engine.dispose()
    return pd.DataFrame([dict(r._mapping) for r in rows])


def test_publish_stores_the_mnm_and_centrality(db_url: str, run_dir: Path) -> None:
    result = publish_run(run_dir, db_url)
    want_edges = pd.read_parquet(run_dir / "mnm.parquet")
    want_centrality = pd.read_parquet(run_dir / "centrality.parquet")
    assert result.counts["mnm_edges"] == len(want_edges) == 3
    assert result.counts["cell_type_centrality"] == len(want_centrality) == 3
    edges = _rows(db_url, "mnm_edges")
    assert edges[EDGE_COLUMNS].to_dict("records") == want_edges.astype(object).to_dict("records")
    centrality = _rows(db_url, "cell_type_centrality")
    assert centrality["cell_type"].tolist() == want_centrality["cell_type"].tolist()
    assert centrality["rank"].tolist() == want_centrality["rank"].tolist()
    assert centrality["centrality"].tolist() == pytest.approx(want_centrality["centrality"])


def test_republish_replaces_and_delete_removes_them(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(run_dir, tmp_path / "study_a"))
    publish_run(run, db_url)
    edges = pd.read_parquet(run / "mnm.parquet").head(1)
    edges.to_parquet(run / "mnm.parquet", index=False)
    assert publish_run(run, db_url).status == "replaced"
    assert len(_rows(db_url, "mnm_edges")) == 1
    assert len(_rows(db_url, "cell_type_centrality")) == 3
    delete_study("study_a", db_url)
    assert _rows(db_url, "mnm_edges").empty and _rows(db_url, "cell_type_centrality").empty


def test_runs_without_an_mnm_and_an_empty_mnm_publish(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    older = Path(shutil.copytree(run_dir, tmp_path / "older"))
    for name in ("mnm", "centrality"):
        (older / f"{name}.parquet").unlink()
    result = publish_run(older, db_url)  # a run written before the pipeline emitted the MNM
    assert result.counts["mnm_edges"] == result.counts["cell_type_centrality"] == 0
    empty = fabricate_run(tmp_path / "empty", case_prefix="Q", control_prefix="K")
    pd.read_parquet(empty / "mnm.parquet").iloc[:0].to_parquet(empty / "mnm.parquet")
    assert publish_run(empty, db_url).counts["mnm_edges"] == 0
    assert len(_rows(db_url, "cell_type_centrality", "empty")) == 3


def test_bad_mnm_values_are_refused_before_writing(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(run_dir, tmp_path / "study_a"))
    edges = pd.read_parquet(run / "mnm.parquet")
    edges["n_regulators"] = ["two", *edges["n_regulators"].astype(str).iloc[1:]]  # text
    edges.to_parquet(run / "mnm.parquet", index=False)
    with pytest.raises(TableContentError, match="'mnm' column 'n_regulators'"):
        publish_run(run, db_url)
    engine = make_engine(db_url)
    assert current_revision(engine) is None  # checked before the database was touched
    engine.dispose()


def test_upgrade_from_0003_adds_the_tables_and_keeps_the_studies(
    db_url: str, run_dir: Path
) -> None:
    engine = make_engine(db_url)
    assert upgrade_db(engine, "0003") == "0003"
    inspector = sa.inspect(engine)
    assert "mnm_edges" not in inspector.get_table_names()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO studies (study_id, content_hash, published_at, run_schema_version, "
                "cell_types, time_points, counts, run_json) "
                "VALUES ('old', 'h', CURRENT_TIMESTAMP, 1, '[]', '[]', '{}', '{}')"
            )
        )
    assert upgrade_db(engine) == "0004" == current_revision(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"mnm_edges", "cell_type_centrality"} <= tables
    assert _rows(db_url, "mnm_edges", "old").empty  # published before 0004: no rows
    publish_run(run_dir, engine)
    assert len(_rows(db_url, "mnm_edges")) == 3
    # the downgrade drops exactly the new tables
    from alembic import command

    from omicstwin.store.db import _alembic_config

    config = _alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    assert current_revision(engine) == "0003"
    tables = set(sa.inspect(engine).get_table_names())
    assert not {"mnm_edges", "cell_type_centrality"} & tables and "studies" in tables
    engine.dispose()
