"""Security findings of issue 14 (service half), each reproduced on SQLite and PostgreSQL.

- requests to patient routes rejected with 422 (or 405, 429, 500) left no audit row;
- reads with a revoked key were audited anonymously; keys never expired (and an expiry must be
  honoured at its exact time, whatever the key cache holds); last use was not recorded;
- repeated failed authentication was neither limited nor logged;
- patient reads and their audit rows waited behind any SQLite writer (a publish);
- patient responses carried no ``Cache-Control: no-store``;
- there was no way for an admin to list the grants.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from omicstwin.service import create_app
from omicstwin.service import deps as app_module
from omicstwin.store.access import add_grant, create_key, hash_key, revoke_key
from omicstwin.store.db import TABLES, make_engine
from omicstwin.store.publish import publish_run

API = "/api/v1"


# The modules of the fix are imported where they are used, so that on the code before it
# every reproduction runs and fails on its own finding (not all at once on an import).
def _app(url: str, **settings):
    """The service over ``url``; rate limit off unless ``settings`` say otherwise."""
    try:
        from omicstwin.service.settings import Settings
    except ImportError:  # before issue 14: no settings
        return create_app(url)
    return create_app(url, settings=Settings(**({"auth_max_failures": 1_000_000} | settings)))


def _journal(engine):
    from omicstwin.service.audit import AuditJournal, journal_path

    where = journal_path(engine)
    return None if where is None else AuditJournal(where)


@dataclass
class Svc:
    client: TestClient
    url: str
    keys: dict[str, str]

    def get(self, path: str, who: str | None = "admin", **kwargs):
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.get(API + path, headers=headers, **kwargs)

    def audit(self, **filters) -> list[dict]:
        body = self.client.get(
            f"{API}/audit",
            params={"limit": 500, **filters},
            headers={"Authorization": f"Bearer {self.keys['admin']}"},
        )
        assert body.status_code == 200, body.text
        return body.json()["data"]

    def last_audit(self) -> dict:
        return self.audit()[0]


@pytest.fixture(scope="module")
def svc(module_db_url: str, run_dir: Path) -> Iterator[Svc]:
    publish_run(run_dir, module_db_url)
    engine = make_engine(module_db_url)
    keys = {r: create_key(engine, name=f"sec-{r}", role=r) for r in ("admin", "analyst")}
    keys["clinician"] = create_key(engine, name="sec-clinician", role="clinician")
    add_grant(engine, key_name="sec-clinician", patient_id="P002")
    add_grant(engine, key_name="sec-analyst", patient_id="P001")
    engine.dispose()
    app = _app(module_db_url)
    with TestClient(app) as client:
        yield Svc(client, module_db_url, keys)
    app.state.engine.dispose()


def _new_key(url: str, name: str, role: str = "clinician", grant: str | None = "P002", **kw):
    engine = make_engine(url)
    key = create_key(engine, name=name, role=role, **kw)
    if grant:
        add_grant(engine, key_name=name, patient_id=grant)
    engine.dispose()
    return key


# ----------------------------------------------------------------------------- complete audit


@pytest.mark.parametrize(
    ("path", "params", "patient"),
    [
        ("/patients/P002/targets", {"limit": 1000}, "P002"),  # out of bounds
        ("/patients/P002/targets", {"offset": "-1"}, "P002"),
        ("/patients/bad%20id", {}, None),  # not a valid id: recorded as null
        ("/patients/" + "x" * 129 + "/targets", {}, None),
    ],
)
def test_422_on_a_patient_route_is_audited(svc: Svc, path: str, params: dict, patient) -> None:
    r = svc.get(path, "clinician", params=params)
    assert r.status_code == 422
    row = svc.last_audit()
    assert row["outcome"] == "invalid_request"
    assert row["patient_id"] == patient
    assert row["key_name"] == "sec-clinician" and row["role"] == "clinician"
    assert svc.keys["clinician"] not in str(row)


def test_other_rejections_on_patient_routes_are_audited(svc: Svc) -> None:
    headers = {"Authorization": f"Bearer {svc.keys['clinician']}"}
    assert svc.client.post(f"{API}/patients/P002", headers=headers).status_code == 405
    assert svc.last_audit()["outcome"] == "method_not_allowed"
    assert svc.client.get(f"{API}/patients/P002/nothing", headers=headers).status_code == 404
    row = svc.last_audit()
    assert (row["outcome"], row["patient_id"], row["action"]) == (
        "not_found",
        "P002",
        "patient.other",
    )


def test_an_unexpected_error_on_a_patient_route_is_audited_and_not_stored(
    svc: Svc, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(row):
        raise RuntimeError("P002 cannot be decoded")

    monkeypatch.setattr(app_module.q, "patient_record", broken)
    client = TestClient(svc.client.app, raise_server_exceptions=False)
    r = client.get(f"{API}/patients/P002", headers={"Authorization": f"Bearer {svc.keys['admin']}"})
    assert r.status_code == 500 and "P002" not in r.text
    assert r.headers["cache-control"] == "no-store"
    monkeypatch.undo()
    row = svc.last_audit()
    assert (row["outcome"], row["patient_id"], row["key_name"]) == ("error", "P002", "sec-admin")


def _unknown_key_body(svc: Svc) -> bytes:
    r = svc.client.get(f"{API}/patients/P002", headers={"Authorization": "Bearer otk_nobody"})
    assert r.status_code == 401
    return r.content


@pytest.mark.parametrize("fast", [True, False])
def test_a_revoked_key_is_audited_with_its_name(svc: Svc, fast: bool) -> None:
    name = f"sec-revoked-{int(fast)}"
    key = _new_key(svc.url, name)
    path = "/patients/P002/targets" if fast else "/patients/P002"
    headers = {"Authorization": f"Bearer {key}"}
    assert svc.client.get(API + path, headers=headers).status_code == 200
    engine = make_engine(svc.url)
    revoke_key(engine, name)
    engine.dispose()
    svc.client.app.state.keys._items.clear()  # what the cache time (10 s) would do
    r = svc.client.get(API + path, headers=headers)
    assert r.status_code == 401 and r.content == _unknown_key_body(svc)  # no oracle
    rows = svc.audit(key_name=name)
    assert rows[0]["outcome"] == "denied_revoked_key" and rows[0]["patient_id"] == "P002"
    assert key not in str(rows) and hash_key(key) not in str(rows)


def _expire_now(url: str, name: str) -> None:
    engine = make_engine(url)
    keys = TABLES["api_keys"]
    with engine.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(keys.update().where(keys.c.name == name).values(expires_at=past))
    engine.dispose()


def test_an_expired_key_is_401_audited_with_its_name(svc: Svc) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    key = _new_key(svc.url, "sec-expiring", expires_at=soon)
    headers = {"Authorization": f"Bearer {key}"}
    assert svc.client.get(f"{API}/patients/P002", headers=headers).status_code == 200
    _expire_now(svc.url, "sec-expiring")
    svc.client.app.state.keys._items.clear()
    r = svc.client.get(f"{API}/patients/P002", headers=headers)
    assert r.status_code == 401 and r.content == _unknown_key_body(svc)
    row = svc.audit(key_name="sec-expiring")[0]
    assert (row["outcome"], row["patient_id"]) == ("denied_expired_key", "P002")
    # and on a study route: 401 too
    analyst = _new_key(svc.url, "sec-expiring-analyst", role="analyst", grant=None, expires_at=soon)
    _expire_now(svc.url, "sec-expiring-analyst")
    r = svc.client.get(f"{API}/studies", headers={"Authorization": f"Bearer {analyst}"})
    assert r.status_code == 401


def test_an_expiry_is_honoured_at_its_exact_time_whatever_the_cache_holds(
    svc: Svc, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    key = _new_key(svc.url, "sec-exact", expires_at=expires)
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/patients/P002/targets", "/patients/P002"):
        assert svc.client.get(API + path, headers=headers).status_code == 200  # now cached
    monkeypatch.setattr(app_module, "_wallclock", lambda: expires.timestamp() - 0.001)
    assert svc.client.get(f"{API}/patients/P002", headers=headers).status_code == 200
    monkeypatch.setattr(app_module, "_wallclock", lambda: expires.timestamp())
    for path in ("/patients/P002/targets", "/patients/P002"):
        assert svc.client.get(API + path, headers=headers).status_code == 401
    assert svc.audit(key_name="sec-exact")[0]["outcome"] == "denied_expired_key"


def test_last_use_of_a_key_is_recorded_off_the_request_path(svc: Svc) -> None:
    key = _new_key(svc.url, "sec-used")
    engine = make_engine(svc.url)
    keys = TABLES["api_keys"]
    query = sa.select(keys.c.last_used_at).where(keys.c.name == "sec-used")
    with engine.connect() as conn:
        assert conn.execute(query).scalar() is None
    t0 = datetime.now(UTC)
    r = svc.client.get(f"{API}/patients/P002", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    deadline, used = time.monotonic() + 5, None
    while used is None and time.monotonic() < deadline:  # written by the audit thread
        with engine.connect() as conn:
            used = conn.execute(query).scalar()
        time.sleep(0.05)
    engine.dispose()
    assert used is not None
    assert (used if used.tzinfo else used.replace(tzinfo=UTC)) >= t0 - timedelta(seconds=1)


# ----------------------------------------------------------------------------- no-store


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        ("clinician", "/patients/P002/targets", 200),  # fast lane
        ("clinician", "/patients/P002/targets?limit=2&offset=1", 200),
        ("clinician", "/patients/P002", 200),
        ("clinician", "/patients/P003", 403),
        ("admin", "/patients/NOBODY1", 404),
        ("admin", "/patients/NOBODY1/targets", 404),
        (None, "/patients/P002", 401),
        (None, "/patients/P002/targets", 401),
        ("clinician", "/patients/P002/targets?limit=0", 422),
    ],
)
def test_every_patient_response_is_no_store(svc: Svc, who, path: str, status: int) -> None:
    r = svc.get(path, who)
    assert r.status_code == status
    assert r.headers.get("cache-control") == "no-store"


# ----------------------------------------------------------------------------- rate limiting


def test_repeated_failed_authentication_is_rate_limited_per_address(
    svc: Svc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = _app(svc.url, auth_max_failures=3, auth_window_seconds=60)
    attacker = TestClient(app, client=("10.0.0.66", 40000))
    other = TestClient(app, client=("10.0.0.7", 40001))
    wrong = "otk_guess-" + "z" * 30
    good = {"Authorization": f"Bearer {svc.keys['admin']}"}
    with attacker, other:
        for _ in range(4):  # more than 3 failures in the window
            r = attacker.get(f"{API}/studies", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401
        for path in ("/studies", "/patients/P002"):
            r = attacker.get(API + path, headers=good)  # even a valid key: locked out
            assert r.status_code == 429 and r.headers["content-type"].startswith("application/")
            assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["cache-control"] == "no-store"
        assert attacker.get(f"{API}/health").status_code == 200
        assert other.get(f"{API}/studies", headers=good).status_code == 200  # other address
    row = svc.last_audit()
    assert (row["outcome"], row["patient_id"], row["key_name"]) == ("rate_limited", "P002", None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("failed authentications" in r.getMessage() for r in warnings)
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    for secret in (wrong, hash_key(wrong), svc.keys["admin"], hash_key(svc.keys["admin"])):
        assert secret not in text
    app.state.engine.dispose()


def test_settings_come_from_the_environment() -> None:
    from omicstwin.service.settings import Settings, SettingsError

    env = {"OMICSTWIN_AUTH_MAX_FAILURES": "5", "OMICSTWIN_AUDIT_JOURNAL": "0"}
    settings = Settings.from_env(env)
    assert settings.auth_max_failures == 5 and settings.audit_journal is False
    with pytest.raises(SettingsError, match="OMICSTWIN_AUTH_WINDOW_SECONDS"):
        Settings.from_env({"OMICSTWIN_AUTH_WINDOW_SECONDS": "soon"})


# ----------------------------------------------------------------------------- grants


def test_admin_lists_grants(svc: Svc) -> None:
    body = svc.get("/grants").json()
    pairs = {(g["key_name"], g["patient_id"]) for g in body["data"]}
    assert {("sec-clinician", "P002"), ("sec-analyst", "P001")} <= pairs
    assert body["count"] == len(body["data"])
    one = svc.get("/grants", params={"key_name": "sec-analyst"}).json()
    assert one["count"] == 1 and one["data"][0]["study_id"] == "study_a"
    assert one["data"][0]["role"] == "analyst" and one["data"][0]["created_at"]
    by_patient = svc.get("/grants", params={"patient_id": "P001"}).json()
    assert {g["key_name"] for g in by_patient["data"]} == {"sec-analyst"}
    page = svc.get("/grants", params={"limit": 1, "offset": 1}).json()
    assert len(page["data"]) == 1 and page["count"] == body["count"]
    assert svc.get("/grants", "analyst").status_code == 403
    assert svc.get("/grants", None).status_code == 401
    assert svc.get("/grants", params={"patient_id": "bad id"}).status_code == 422
    spec = svc.client.get("/openapi.json").json()
    assert "examples" in spec["components"]["schemas"]["GrantRow"]
    assert f"{API}/grants" in spec["paths"]


# ----------------------------------------------------------------------------- availability


def _hold_write_lock(url: str, seconds: float, started: threading.Event) -> None:
    """Hold a publish-like write transaction open for ``seconds``."""
    engine = make_engine(url)
    studies = TABLES["studies"]
    with engine.begin() as conn:
        conn.execute(studies.update().values(cohort=studies.c.cohort))  # the write lock
        conn.execute(TABLES["targets"].delete().where(TABLES["targets"].c.rank > 1_000_000))
        started.set()
        time.sleep(seconds)
    engine.dispose()


def test_patient_reads_and_their_audit_do_not_wait_for_a_publish(svc: Svc) -> None:
    before = len(svc.audit(patient_id="P001"))
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(svc.url, 3.0, started))
    holder.start()
    try:
        assert started.wait(10)
        t0 = time.perf_counter()
        for path in ("/patients/P001/targets", "/patients/P001"):
            assert svc.get(path, "analyst").status_code == 200
        took = time.perf_counter() - t0
        waiting = svc.audit(patient_id="P001")  # listed while the lock is still held
        held = holder.is_alive()
    finally:
        holder.join()
    assert took < 1.5, f"patient reads waited {took:.1f} s for the writer"
    assert held and len(waiting) == before + 2
    # once the lock is free, journal rows move into the table, each once
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = svc.audit(patient_id="P001")
        if all(r["id"] is not None for r in rows):
            break
        time.sleep(0.1)
    assert len(rows) == before + 2 and all(r["id"] is not None for r in rows)
    if svc.url.startswith("sqlite"):
        assert not _journal(svc.client.app.state.engine).pending()


def test_the_journal_is_owner_only_and_survives_a_restart(db_url: str, run_dir: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL needs no journal: audit inserts never wait for a publish")
    publish_run(run_dir, db_url)
    key = _new_key(db_url, "sec-restart", role="admin", grant=None)
    app = _app(db_url)
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db_url, 2.0, started))
    with TestClient(app) as client:
        holder.start()
        assert started.wait(10)
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get(f"{API}/patients/P003", headers=headers).status_code == 200
    # the service stopped while the lock was held: the row waits in the journal
    journal = _journal(app.state.engine)
    assert journal.pending() and journal.path.stat().st_mode & 0o777 == 0o600
    holder.join()
    app.state.engine.dispose()
    app = _app(db_url)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while journal.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = client.get(f"{API}/audit", headers=headers, params={"patient_id": "P003"}).json()
    assert [r["id"] is not None for r in rows["data"]] == [True]
    app.state.engine.dispose()


def test_a_drain_interrupted_after_its_commit_inserts_nothing_twice(tmp_path: Path) -> None:
    from omicstwin.store.db import upgrade_db

    url = f"sqlite:///{tmp_path / 'j.db'}"
    engine = make_engine(url)
    upgrade_db(engine)
    at = datetime.now(UTC)
    rows = [
        {"at": at, "key_name": "k", "role": "admin", "action": "patient.record"}
        | {"patient_id": p, "outcome": "allowed"}
        for p in ("A1", "A2")
    ]
    with engine.begin() as conn:
        conn.execute(TABLES["audit"].insert(), rows[:1])  # committed, journal not truncated
    journal = _journal(engine)
    journal.append(rows)
    with engine.connect() as conn:
        assert journal.drain(conn) == 2
    with engine.connect() as conn:
        got = conn.execute(sa.select(TABLES["audit"].c.patient_id)).scalars().all()
    assert sorted(got) == ["A1", "A2"] and not journal.pending()
    journal.close()
    engine.dispose()


def test_the_audit_thread_does_not_spin_while_a_publish_holds_the_lock(tmp_path: Path) -> None:
    import asyncio

    import psutil

    from omicstwin.service.audit import AuditWriter
    from omicstwin.store.db import upgrade_db

    url = f"sqlite:///{tmp_path / 'spin.db'}"
    engine = make_engine(url)
    upgrade_db(engine)
    _new_key(url, "spin", role="admin", grant=None)
    keys = TABLES["api_keys"]
    with engine.connect() as conn:
        key_id = conn.execute(sa.select(keys.c.id).where(keys.c.name == "spin")).scalar()
    writer = AuditWriter(engine, journal=_journal(engine), lock_wait=0.02)
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(url, 2.0, started))
    holder.start()
    assert started.wait(10)
    row = {"at": datetime.now(UTC), "key_name": "spin", "role": "admin", "action": "patient.record"}
    asyncio.run(writer.write(row | {"patient_id": "P001", "outcome": "allowed"}))  # journaled
    assert writer.journal.pending()
    writer.touch(key_id, datetime.now(UTC))  # deferred: the lock is held
    native = writer._thread.native_id
    cpu = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    time.sleep(1.0)
    later = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    holder.join()
    assert later[native] - cpu[native] < 0.3  # waits for its next attempt, does not spin
    writer.close()
    assert not writer.journal.pending()  # drained once the lock was free
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["audit"])).scalar() == 1
        used = sa.select(TABLES["api_keys"].c.last_used_at).where(
            TABLES["api_keys"].c.name == "spin"
        )
        assert conn.execute(used).scalar() is not None
    engine.dispose()
