"""Schema revision 0002: key lifetimes, grants bound to the record, retired pseudonyms.

The migration is tested on a database as the previous release (revision 0001) wrote it. New
functions are imported inside the tests, so that each test fails on its own on that release.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from omicstwin.store.access import create_key, hash_key
from omicstwin.store.db import (
    TABLES,
    current_revision,
    head_revision,
    make_engine,
    upgrade_db,
)
from tests.service import conftest as _fixtures

db_url = _fixtures.db_url
pg_session_url = _fixtures.pg_session_url

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _release_0001(url: str) -> sa.Engine:
    """A database at revision 0001 with keys, records, a valid and a dangling grant."""
    engine = make_engine(url)
    assert upgrade_db(engine, "0001") == "0001" == current_revision(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO studies (study_id, content_hash, published_at, run_schema_version, "
                "cell_types, time_points, counts, run_json) "
                "VALUES ('s1', 'h', :t, 1, '[]', '[]', '{}', '{}')"
            ),
            {"t": T0},
        )
        for pid in ("P01", "P02"):
            conn.execute(
                sa.text(
                    "INSERT INTO patients (patient_id, study_id, donor, arm, time_points, "
                    "state_summary, n_targets) VALUES (:p, 's1', :p, 'case', '[]', '{}', 0)"
                ),
                {"p": pid},
            )
        for name, role in (("doc", "clinician"), ("ana", "analyst")):
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys (name, role, key_hash, created_at) "
                    "VALUES (:n, :r, :h, :t)"
                ),
                {"n": name, "r": role, "h": hash_key(f"otk_{name}"), "t": T0},
            )
        ids = dict(conn.execute(sa.text("SELECT name, id FROM api_keys")).all())
        grants = [("doc", "P01"), ("ana", "P02"), ("doc", "GONE-7")]  # GONE-7: no record
        for name, pid in grants:
            conn.execute(
                sa.text("INSERT INTO grants (key_id, patient_id, created_at) VALUES (:k, :p, :t)"),
                {"k": ids[name], "p": pid, "t": T0},
            )
    return engine


def test_upgrade_from_0001_binds_grants_to_records(db_url: str) -> None:
    from omicstwin.store.access import check_key, list_grants

    engine = _release_0001(db_url)
    assert upgrade_db(engine) == head_revision() == current_revision(engine)
    with engine.connect() as conn:
        # keys survive the migration unchanged, with the new columns empty
        keys = conn.execute(sa.select(TABLES["api_keys"]).order_by("name")).all()
        assert [(k.name, k.expires_at, k.last_used_at) for k in keys] == [
            ("ana", None, None),
            ("doc", None, None),
        ]
        assert check_key(conn, "otk_doc").status == "ok"
        # the valid grants stay, the dangling one is gone and its pseudonym retired
        assert [(g["key_name"], g["patient_id"], g["study_id"]) for g in list_grants(conn)] == [
            ("ana", "P02", "s1"),
            ("doc", "P01", "s1"),
        ]
        retired = conn.execute(sa.select(TABLES["retired_pseudonyms"])).all()
        assert [(r.patient_id, r.study_id) for r in retired] == [("GONE-7", None)]
        assert "0002" in retired[0].reason
    # from now on a grant goes with its record (foreign key, cascade) ...
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM patients WHERE patient_id = 'P01'"))
    assert [g["patient_id"] for g in list_grants(engine)] == ["P02"]
    # ... follows a renamed record ...
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE patients SET patient_id = 'PX-2' WHERE patient_id = 'P02'"))
    assert [g["patient_id"] for g in list_grants(engine, key_name="ana")] == ["PX-2"]
    # ... and cannot point at a record that does not exist
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            TABLES["grants"].insert().values(key_id=keys[0].id, patient_id="NOBODY", created_at=T0)
        )
    engine.dispose()


def test_check_key_statuses_and_touch(db_url: str) -> None:
    from omicstwin.store.access import check_key, touch_key

    engine = make_engine(db_url)
    upgrade_db(engine)
    forever = create_key(engine, name="forever", role="admin")
    short = create_key(engine, name="short", role="clinician", expires_at=T0 + timedelta(days=400))
    revoked = create_key(engine, name="gone", role="analyst")
    with engine.begin() as conn:
        conn.execute(
            TABLES["api_keys"]
            .update()
            .where(TABLES["api_keys"].c.name == "gone")
            .values(revoked_at=T0)
        )
    with engine.begin() as conn:
        ok = check_key(conn, forever)
        assert ok.status == "ok" and ok.principal.name == "forever" and ok.expires_at is None
        assert ok.principal.role == "admin" and ok.key_id == ok.principal.key_id
        valid = check_key(conn, short, now=T0 + timedelta(days=399))
        assert valid.status == "ok" and valid.expires_at == T0 + timedelta(days=400)
        expired = check_key(conn, short, now=T0 + timedelta(days=400))
        assert (expired.status, expired.principal, expired.key_name) == ("expired", None, "short")
        gone = check_key(conn, revoked)
        assert (gone.status, gone.principal, gone.key_name) == ("revoked", None, "gone")
        unknown = check_key(conn, "otk_nope")
        assert unknown == type(unknown)("unknown", None, None, None, None)
        touch_key(conn, ok.key_id, T0 + timedelta(hours=2))
        touch_key(conn, ok.key_id, T0 + timedelta(hours=1))  # never moves back
    with engine.connect() as conn:
        used = conn.execute(
            sa.select(TABLES["api_keys"].c.last_used_at).where(TABLES["api_keys"].c.id == ok.key_id)
        ).scalar()
    assert used.replace(tzinfo=used.tzinfo or UTC) == T0 + timedelta(hours=2)
    engine.dispose()


def test_models_match_the_migrations(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from omicstwin.store.db import Base

    engine = make_engine(db_url)
    upgrade_db(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
