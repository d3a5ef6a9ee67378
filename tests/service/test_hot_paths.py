"""The hot paths (fast lane, hot-path reader, group-committed audit) answer like the routes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from omicstwin.service import app as app_module
from omicstwin.service import create_app
from omicstwin.store.access import add_grant, create_key
from omicstwin.store.db import make_engine
from omicstwin.store.publish import publish_run

API = "/api/v1"


@dataclass
class Pair:
    fast: TestClient  # with the fast lane
    routes: TestClient  # FastAPI routes only
    keys: dict[str, str]


@pytest.fixture(scope="module")
def pair(module_db_url: str, run_dir: Path) -> Iterator[Pair]:
    publish_run(run_dir, module_db_url)
    engine = make_engine(module_db_url)
    keys = {r: create_key(engine, name=f"hot-{r}", role=r) for r in ("admin", "analyst")}
    keys["clinician"] = create_key(engine, name="hot-clinician", role="clinician")
    add_grant(engine, key_name="hot-clinician", patient_id="P002")
    engine.dispose()
    fast_app = create_app(module_db_url)
    routes_app = create_app(module_db_url, fast_lane=False)
    with TestClient(fast_app) as fast, TestClient(routes_app) as routes:
        yield Pair(fast, routes, keys)
    fast_app.state.engine.dispose()
    routes_app.state.engine.dispose()


PATHS = [
    "/studies/study_a/targets",
    "/studies/study_a/targets?limit=3&offset=2",
    "/studies/study_a/targets?limit=0010&offset=007",
    "/studies/study_a/targets?limit=10&limit=3",
    "/studies/study_a/targets?limit=0",
    "/studies/study_a/targets?limit=501",
    "/studies/study_a/targets?limit=%2B5",
    "/studies/study_a/targets?limit=",
    "/studies/study_a/targets?offset=1000001",
    "/studies/study_a/targets?offset=10001&limit=2",
    "/studies/study_a/targets?cell_type=B&time=6&offset=20000",
    "/studies/study_a/targets?cell_type=B&time=6",
    "/studies/study_a/targets?cell_type=B&time=006.00&limit=4",
    "/studies/study_a/targets?cell_type=B&time=-0",
    "/studies/study_a/targets?cell_type=B&time=6.",
    "/studies/study_a/targets?cell_type=B&time=6e0",
    "/studies/study_a/targets?cell_type=B&time=nan",
    "/studies/study_a/targets?cell_type=B&time=1e10",
    "/studies/study_a/targets?cell_type=CD14%20Mono&time=24",
    "/studies/study_a/targets?cell_type=B%0A&time=6",
    "/studies/study_a/targets?cell_type=&time=6",
    "/studies/study_a/targets?cell_type=B",
    "/studies/study_a/targets?time=6",
    "/studies/study_a/targets?max_q=0.5",
    "/studies/study_a/targets?unknown=1",
    "/studies/nope/targets",
    "/studies/nope%0A/targets",
    "/studies/a%2Fb/targets",
    "/patients/P002/targets",
    "/patients/P002/targets?limit=2&offset=1",
    "/patients/P002/targets?limit=0",
    "/patients/P002/targets?cell_type=B",
    "/patients/C001/targets",
    "/patients/NOBODY1/targets",
    "/patients/P002%0A/targets",
]


def _headers(pair: Pair, who: str) -> dict[str, str]:
    key = pair.keys.get(who)
    return {
        "admin": {"Authorization": f"Bearer {key}"},
        "analyst": {"Authorization": f"Bearer {key}"},
        "clinician": {"Authorization": f"Bearer {key}"},
        "lowercase": {"Authorization": f"bearer   {pair.keys['admin']} "},
        "basic": {"Authorization": f"Basic {pair.keys['admin']}"},
        "wrong": {"Authorization": "Bearer otk_not-a-key"},
        "none": {},
    }[who]


@pytest.mark.parametrize("who", ["admin", "analyst", "clinician", "lowercase", "basic", "wrong"])
def test_fast_lane_answers_exactly_like_the_routes(pair: Pair, who: str) -> None:
    for path in [*PATHS, "/studies/study_a/targets?limit=2"]:
        fast = pair.fast.get(API + path, headers=_headers(pair, who))
        slow = pair.routes.get(API + path, headers=_headers(pair, who))
        assert fast.status_code == slow.status_code, path
        assert fast.headers["content-type"] == slow.headers["content-type"], path
        assert fast.content == slow.content, path


def _audit_count(pair: Pair) -> int:
    headers = _headers(pair, "admin")
    return pair.routes.get(f"{API}/audit?limit=1", headers=headers).json()["count"]


@pytest.mark.parametrize(
    ("who", "patient", "outcome"),
    [
        ("clinician", "P002", "allowed"),  # answered by the fast lane
        ("clinician", "P003", "denied"),  # handed to the route
        ("admin", "NOBODY1", "not_found"),
        ("none", "P002", "unauthenticated"),
    ],
)
def test_every_patient_read_is_audited_once(
    pair: Pair, who: str, patient: str, outcome: str
) -> None:
    before = _audit_count(pair)
    pair.fast.get(f"{API}/patients/{patient}/targets?limit=2", headers=_headers(pair, who))
    assert _audit_count(pair) == before + 1
    last = pair.routes.get(f"{API}/audit?limit=1", headers=_headers(pair, "admin")).json()
    assert last["data"][0]["outcome"] == outcome
    assert last["data"][0]["patient_id"] == patient


def test_no_patient_data_without_a_committed_audit_row(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, table, rows) -> None:
        raise RuntimeError("the audit table cannot be written")

    monkeypatch.setattr(app_module._AuditWriter, "_insert", broken)
    headers = _headers(pair, "clinician")
    clients = [TestClient(c.app, raise_server_exceptions=False) for c in (pair.fast, pair.routes)]
    for path in ("/patients/P002/targets?limit=2", "/patients/P002/targets", "/patients/P002"):
        for client in clients:
            response = client.get(API + path, headers=headers)
            assert response.status_code == 500
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "target" not in response.text and "P002" not in response.text
    monkeypatch.undo()
    assert pair.fast.get(f"{API}/patients/P002/targets", headers=headers).status_code == 200


def test_revoked_key_stops_within_the_cache_time(pair: Pair, module_db_url: str) -> None:
    engine = make_engine(module_db_url)
    key = create_key(engine, name="hot-short", role="analyst")
    engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    assert pair.fast.get(f"{API}/studies/study_a/targets", headers=headers).status_code == 200
    from omicstwin.store.access import revoke_key

    engine = make_engine(module_db_url)
    revoke_key(engine, "hot-short")
    engine.dispose()
    for client in (pair.fast, pair.routes):
        client.app.state.keys._items.clear()  # what 10 s of waiting would do
        assert client.get(f"{API}/studies/study_a/targets", headers=headers).status_code == 401
