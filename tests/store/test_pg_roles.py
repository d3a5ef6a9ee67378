"""PostgreSQL roles: ``omicstwin db roles`` gives the service read + audit only (issue 14).

Needs a server URL in ``OMICSTWIN_TEST_PG_URL`` whose user may create roles (``.ci/postgres.sh``
gives it CREATEROLE). Roles are cluster-wide: each test creates uniquely named ones and drops
them at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from omicstwin.store.access import add_grant, create_key
from omicstwin.store.db import TABLES, make_engine
from omicstwin.store.publish import publish_run
from tests.service import conftest as _fixtures

pg_session_url = _fixtures.pg_session_url
run_dir = _fixtures.run_dir


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL schema whose user may create roles."""
    yield from _fixtures._fresh_url("postgresql", request, tmp_path)


@pytest.fixture
def roles(pg_url: str) -> Iterator[dict[str, str]]:
    """A writer role and a service role (LOGIN, password), dropped afterwards."""
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(
            sa.text("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar():
            message = "the PostgreSQL test user lacks CREATEROLE (see .ci/postgres.sh)"
            if os.environ.get("OMICSTWIN_REQUIRE_PG") == "1":
                pytest.fail(message + " but OMICSTWIN_REQUIRE_PG=1")
            pytest.skip(message)
        suffix = uuid.uuid4().hex[:10]
        names = {"writer": f"ot_writer_{suffix}", "service": f"ot_service_{suffix}"}
        password = uuid.uuid4().hex
        for name in names.values():
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
        # the test user (owner of the schema) may hand the tables to the writer role, and
        # clean up after both roles
        for name in names.values():
            conn.execute(sa.text(f"GRANT {name} TO CURRENT_USER"))
    base = sa.engine.make_url(pg_url)
    urls = {
        role: base.set(username=name, password=password).render_as_string(hide_password=False)
        for role, name in names.items()
    }
    yield {**names, **{f"{role}_url": url for role, url in urls.items()}, "admin_url": pg_url}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f"REASSIGN OWNED BY {name} TO CURRENT_USER"))
            conn.execute(sa.text(f"DROP OWNED BY {name}"))
            conn.execute(sa.text(f"DROP ROLE {name}"))
    admin.dispose()


def _denied(engine: sa.Engine, statement: str, **params) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    except sa.exc.ProgrammingError as exc:
        return "permission denied" in str(exc.orig)
    return False


def test_service_role_reads_and_audits_but_cannot_write(
    roles: dict[str, str], run_dir: Path
) -> None:
    from omicstwin.cli import app
    from omicstwin.store.access import check_key, list_grants, touch_key

    out = CliRunner().invoke(
        app,
        [
            "db",
            "roles",
            "--db",
            roles["admin_url"],
            "--service-role",
            roles["service"],
            "--publish-role",
            roles["writer"],
        ],
    )
    assert out.exit_code == 0, out.output
    assert f"service role '{roles['service']}'" in out.output

    # the writer role publishes, creates keys and grants
    writer = make_engine(roles["writer_url"])
    assert publish_run(run_dir, writer).status == "published"
    key = create_key(writer, name="doc", role="clinician")
    add_grant(writer, key_name="doc", patient_id="P001")
    with writer.connect() as conn:
        owners = set(
            conn.execute(
                sa.text("SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
        )
    assert owners == {roles["writer"]}  # the writer owns the tables: it can run migrations
    writer.dispose()

    # the service role reads, appends audit rows and records key use ...
    service = make_engine(roles["service_url"])
    with service.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["targets"])).scalar()
        assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["mnm_edges"])).scalar()
        centrality = sa.select(sa.func.count()).select_from(TABLES["cell_type_centrality"])
        assert conn.execute(centrality).scalar()
        checked = check_key(conn, key)
        assert checked.status == "ok"
        assert [g["patient_id"] for g in list_grants(conn, key_name="doc")] == ["P001"]
        touch_key(conn, checked.key_id, sa.func.now())
        conn.execute(
            TABLES["audit"]
            .insert()
            .values(at=sa.func.now(), action="patient.read", patient_id="P001", outcome="allowed")
        )
    # ... and nothing else
    assert _denied(service, "INSERT INTO targets (study_id, name, rank) VALUES ('study_a','x',1)")
    assert _denied(service, "DELETE FROM patients")
    assert _denied(service, "DELETE FROM mnm_edges")
    assert _denied(service, "UPDATE patients SET arm = 'x'")
    assert _denied(service, "DELETE FROM grants")
    assert _denied(service, "UPDATE api_keys SET role = 'admin'")
    assert _denied(service, "UPDATE audit SET outcome = 'allowed'")
    assert _denied(service, "DELETE FROM audit")
    assert _denied(service, "SELECT * FROM patient_mappings")
    assert _denied(service, "CREATE TABLE intruder (x int)")
    service.dispose()


def test_db_roles_errors(roles: dict[str, str], tmp_path: Path) -> None:
    from omicstwin.cli import app

    runner = CliRunner()
    base = ["db", "roles", "--db", roles["admin_url"], "--publish-role", roles["writer"]]
    out = runner.invoke(app, [*base, "--service-role", "ot_nobody_here"])
    assert out.exit_code == 2 and "does not exist" in out.output and "CREATE ROLE" in out.output
    out = runner.invoke(app, [*base, "--service-role", "bad name;"])
    assert out.exit_code == 2 and "not a plain role name" in out.output
    out = runner.invoke(app, [*base, "--service-role", roles["writer"]])
    assert out.exit_code == 2 and "same" in out.output
    sqlite = f"sqlite:///{tmp_path / 'x.db'}"
    out = runner.invoke(
        app, ["db", "roles", "--db", sqlite, "--service-role", "a", "--publish-role", "b"]
    )
    assert out.exit_code == 2 and "PostgreSQL only" in out.output
