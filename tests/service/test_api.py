"""The API, end to end through TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from omicstwin.service import create_app
from omicstwin.store.access import add_grant, create_key, revoke_key
from omicstwin.store.db import SchemaVersionError, make_engine
from omicstwin.store.publish import import_patients, publish_run

API = "/api/v1"
PROBLEM = "application/problem+json"
MAPPED = "PSN-x7q2"  # pseudonym of donor P001
MRN = "MRN-0042-7731"


@dataclass
class Api:
    client: TestClient
    url: str
    keys: dict[str, str]
    run_dir: Path

    def get(self, path: str, role: str | None = "admin", **params):
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return self.client.get(API + path, headers=headers, params=params)


@pytest.fixture(scope="module")
def api(module_db_url: str, run_dir: Path, tmp_path_factory) -> Api:
    mapping = tmp_path_factory.mktemp("map") / "map.csv"
    mapping.write_text(f"study_id,donor,patient_id,external_ref\nstudy_a,P001,{MAPPED},{MRN}\n")
    import_patients(mapping, module_db_url)  # before publishing: applied by publish
    publish_run(run_dir, module_db_url)
    engine = make_engine(module_db_url)
    keys = {
        role: create_key(engine, name=f"{role}-1", role=role)
        for role in ("admin", "analyst", "clinician")
    }
    keys["clinician2"] = create_key(engine, name="clinician-2", role="clinician")
    add_grant(engine, key_name="clinician-1", patient_id=MAPPED)
    add_grant(engine, key_name="analyst-1", patient_id="P002")
    engine.dispose()
    app = create_app(module_db_url)
    with TestClient(app) as client:
        yield Api(client, module_db_url, keys, run_dir)
    app.state.engine.dispose()


def _is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"]
    return body


ENDPOINTS = [
    "/studies",
    "/studies/study_a",
    "/studies/study_a/targets",
    "/studies/study_a/disease-genes",
    "/studies/study_a/drugs",
    "/studies/study_a/mnm",
    "/genes/G00001",
    f"/patients/{MAPPED}",
    f"/patients/{MAPPED}/targets",
    "/audit",
]


def test_health_needs_no_key(api: Api) -> None:
    body = api.get("/health", role=None).json()
    assert body["status"] == "ok" and body["schema_revision"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_or_invalid_key_is_401(api: Api, path: str) -> None:
    r = api.client.get(API + path)
    _is_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer otk_not-a-key", "Basic abc", "Bearer " + "x" * 300):
        _is_problem(api.client.get(API + path, headers={"Authorization": header}), 401)


def test_studies_and_detail(api: Api) -> None:
    body = api.get("/studies").json()
    assert body["count"] == 1 and body["data"][0]["study_id"] == "study_a"
    assert body["data"][0]["n_patients"] == 5
    detail = api.get("/studies/study_a").json()
    assert detail["counts"]["targets"] == 30 and detail["counts"]["context_targets"] == 270
    assert detail["case_label"] == "case" and len(detail["content_hash"]) == 64
    assert detail["cell_types"] == ["B", "CD14 Mono", "NK"]
    assert detail["time_points"] == [0.0, 6.0, 24.0]


def test_study_level_targets_follow_rank_targets(api: Api) -> None:
    expected = pd.read_parquet(api.run_dir / "rank_targets.parquet").sort_values("rank")
    body = api.get("/studies/study_a/targets", limit=10).json()
    assert body["count"] == 30
    assert [r["name"] for r in body["data"]] == expected["name"].head(10).tolist()
    assert all(r["level"] == "study" for r in body["data"])
    page2 = api.get("/studies/study_a/targets", limit=10, offset=10).json()["data"]
    assert [r["rank"] for r in page2] == list(range(11, 21))


def test_context_targets(api: Api) -> None:
    ctx = pd.read_parquet(api.run_dir / "perturbations.parquet")
    own = ctx[(ctx.cell_type == "CD14 Mono") & (ctx.time == 6.0)]
    own = own.sort_values("reversal_score", ascending=False)
    body = api.get("/studies/study_a/targets", cell_type="CD14 Mono", time=6, limit=5).json()
    assert body["count"] == 30
    assert [r["name"] for r in body["data"]] == own["perturbation_id"].head(5).tolist()
    assert [r["rank"] for r in body["data"]] == [1, 2, 3, 4, 5]
    assert all(r["level"] == "context" and r["cell_type"] == "CD14 Mono" for r in body["data"])
    # one filter only: every time point of the cell type, best score first
    some = api.get("/studies/study_a/targets", cell_type="NK", limit=500).json()
    assert some["count"] == 90
    scores = [r["score"] for r in some["data"]]
    assert scores == sorted(scores, reverse=True)
    assert api.get("/studies/study_a/targets", cell_type="nope").json() == {"data": [], "count": 0}


def test_score_and_q_filters(api: Api) -> None:
    body = api.get("/studies/study_a/targets", min_score=0.05, max_q=0.9, limit=500).json()
    assert body["data"] and len(body["data"]) == body["count"]
    assert all(r["score"] >= 0.05 and r["q_value"] <= 0.9 for r in body["data"])
    ranked = pd.read_parquet(api.run_dir / "rank_targets.parquet")
    assert body["count"] == int(((ranked.score >= 0.05) & (ranked.q_value <= 0.9)).sum())


def test_disease_genes_and_drugs(api: Api) -> None:
    genes = api.get("/studies/study_a/disease-genes", limit=3).json()
    assert genes["count"] == 15 and len(genes["data"]) == 3
    assert genes["data"][0]["p_value"] is None  # NaN in the run -> null
    drugs = api.get("/studies/study_a/drugs").json()
    assert drugs["count"] == 5 and drugs["data"][0]["drug_name"] == "Drugamab 0"
    assert api.get("/studies/study_a/drugs", max_q=0.0).json()["count"] <= 5


def test_gene_across_contexts(api: Api) -> None:
    body = api.get("/genes/G00003", limit=500).json()
    sources = {r["source"] for r in body["data"]}
    assert {"study_target", "context_target"} <= sources
    assert sum(r["source"] == "context_target" for r in body["data"]) == 9
    assert all(r["study_id"] == "study_a" for r in body["data"])
    _is_problem(api.get("/genes/NOPE1"), 404)


@pytest.mark.parametrize(
    "path",
    [
        *("/studies/zzz", "/studies/zzz/targets", "/studies/zzz/disease-genes"),
        *("/studies/zzz/drugs", "/studies/zzz/mnm"),
    ],
)
def test_unknown_study_is_404(api: Api, path: str) -> None:
    assert "zzz" in _is_problem(api.get(path), 404)["detail"]


def test_unknown_route_is_404_problem(api: Api) -> None:
    _is_problem(api.get("/nothing/here"), 404)
    _is_problem(api.client.get("/elsewhere"), 404)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"offset": -1},
        {"max_q": 1.5},
        {"max_q": -0.1},
        {"min_score": "nan"},
        {"min_score": "inf"},
        {"time": "inf"},
        {"cell_type": ""},
        {"cell_type": "x" * 129},
        {"cell_type": "a\x00b"},
    ],
)
def test_bounds_are_422_problem(api: Api, params: dict) -> None:
    body = _is_problem(api.get("/studies/study_a/targets", **params), 422)
    assert body["errors"] and body["errors"][0]["loc"][0] == "query"


def test_path_bounds_are_422(api: Api) -> None:
    _is_problem(api.get("/studies/" + "s" * 129), 422)
    _is_problem(api.get("/patients/bad%20id"), 422)
    _is_problem(api.get("/patients/P002/targets", limit=1000), 422)
    _is_problem(api.get("/audit", outcome="maybe"), 422)


def test_patient_record(api: Api) -> None:
    rec = api.get(f"/patients/{MAPPED}").json()
    assert rec["study_id"] == "study_a" and rec["arm"] == "case"
    assert rec["has_external_ref"] is True and MRN not in str(rec)
    assert rec["time_points"] == [0.0, 6.0, 24.0] and rec["n_targets"] == 10
    summary = rec["state_summary"]
    assert summary["cell_types"] == ["B", "CD14 Mono", "NK"] and len(summary["contexts"]) == 9
    assert 0.3 < summary["mean_disease_score"] < 1.3  # cases sit near 0.8 in the fabricated run
    assert rec["targets_href"] == f"{API}/patients/{MAPPED}/targets"
    control = api.get("/patients/C001").json()
    assert control["arm"] == "control" and control["n_targets"] == 0
    assert api.get("/patients/C001/targets").json() == {"data": [], "count": 0}
    _is_problem(api.get("/patients/P001"), 404)  # renamed by the imported mapping


def test_patient_targets_link_to_evidence(api: Api) -> None:
    body = api.get(f"/patients/{MAPPED}/targets", limit=3).json()
    assert body["count"] == 10 and [r["rank"] for r in body["data"]] == [1, 2, 3]
    for row in body["data"]:
        ev = row["evidence"]
        assert ev["name"] == f"KO:{row['target']}" and ev["rank"] >= 1
        linked = api.client.get(
            ev["href"], headers={"Authorization": f"Bearer {api.keys['admin']}"}
        )
        names = [r["name"] for r in linked.json()["data"]]
        # the context ranking the evidence points to holds the target at its context rank
        assert names[ev["context_rank"] - 1] == ev["name"]
        assert math.isclose(
            linked.json()["data"][ev["context_rank"] - 1]["score"], row["reversal_score"]
        )


def _audit(api: Api, **filters) -> list[dict]:
    return api.get("/audit", limit=500, **filters).json()["data"]


def test_roles_and_grants(api: Api) -> None:
    # analyst: study data yes, patients only when granted
    assert api.get("/studies", role="analyst").status_code == 200
    assert api.get("/patients/P002", role="analyst").status_code == 200
    _is_problem(api.get(f"/patients/{MAPPED}", role="analyst"), 403)
    _is_problem(api.get("/audit", role="analyst"), 403)
    # clinician: only granted patients, no study-level data
    assert api.get(f"/patients/{MAPPED}", role="clinician").status_code == 200
    assert api.get(f"/patients/{MAPPED}/targets", role="clinician").status_code == 200
    _is_problem(api.get("/patients/P002", role="clinician"), 403)
    _is_problem(api.get("/studies", role="clinician"), 403)
    _is_problem(api.get("/studies/study_a/targets", role="clinician"), 403)
    _is_problem(api.get(f"/patients/{MAPPED}", role="clinician2"), 403)
    # no existence oracle: an unknown patient is 403 too for a key without grants
    _is_problem(api.get("/patients/UNKNOWN9", role="clinician"), 403)
    _is_problem(api.get("/audit", role="clinician"), 403)


def test_audit_records_allowed_and_denied_reads(api: Api) -> None:
    api.get("/patients/P003", role="admin")
    api.get("/patients/P003/targets", role="clinician")
    api.client.get(f"{API}/patients/P003")  # no key
    api.get("/patients/NOBODY1", role="admin")
    rows = _audit(api, patient_id="P003")
    outcomes = {(r["key_name"], r["action"], r["outcome"]) for r in rows}
    assert ("admin-1", "patient.record", "allowed") in outcomes
    assert ("clinician-1", "patient.targets", "denied") in outcomes
    assert (None, "patient.record", "unauthenticated") in outcomes
    assert all(r["at"] for r in rows)
    assert _audit(api, patient_id="NOBODY1")[0]["outcome"] == "not_found"
    denied = _audit(api, outcome="denied", key_name="clinician-1")
    assert denied and all(r["outcome"] == "denied" for r in denied)
    # study-level reads are not patient data: not audited
    before = api.get("/audit", limit=1).json()["count"]
    api.get("/studies/study_a/targets")
    assert api.get("/audit", limit=1).json()["count"] == before


def test_no_keys_or_patient_ids_in_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.get(f"/patients/{MAPPED}/targets", role="clinician")
    api.get(f"/patients/{MAPPED}", role="analyst")
    api.client.get(f"{API}/patients/{MAPPED}", headers={"Authorization": "Bearer otk_wrong-key"})
    api.get("/studies/study_a/targets", role="admin", limit=2)
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(r.getMessage() + str(r.args) for r in server_side)
    for secret in (*api.keys.values(), "otk_wrong-key", MAPPED, MRN):
        assert secret not in text


def test_revoked_key_is_rejected(api: Api) -> None:
    engine = make_engine(api.url)
    key = create_key(engine, name="shortlived", role="analyst")
    revoke_key(engine, "shortlived")
    engine.dispose()
    _is_problem(api.client.get(f"{API}/studies", headers={"Authorization": f"Bearer {key}"}), 401)


def test_openapi_documents_examples_and_bounds(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    params = {
        p["name"]: p
        for p in spec["paths"][f"{API}/studies/{{study_id}}/targets"]["get"]["parameters"]
    }
    assert params["limit"]["schema"]["maximum"] == 500 and params["limit"]["schema"]["minimum"] == 1
    assert "examples" in spec["components"]["schemas"]["TargetRow"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_service_refuses_a_database_without_schema(tmp_path: Path) -> None:
    with pytest.raises(SchemaVersionError, match="omicstwin db upgrade"):
        create_app(f"sqlite:///{tmp_path / 'empty.db'}")


def test_service_refuses_a_newer_schema(db_url: str, run_dir: Path) -> None:
    publish_run(run_dir, db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(SchemaVersionError, match="newer omicstwin"):
        create_app(engine)
    engine.dispose()


def test_scores_registry_is_public_and_matches_the_package(api: Api) -> None:
    from omicstwin.scores import SCORES

    body = api.get("/scores", role=None).json()  # no key: like /health
    assert set(body["tables"]) == set(SCORES)
    for table, columns in SCORES.items():
        assert set(body["tables"][table]) == set(columns)
        for column, score in columns.items():
            got = body["tables"][table][column]
            assert got == {
                "direction": score.direction,
                "kind": score.kind,
                "unit": score.unit,
                "meaning": score.meaning,
            }
    assert body["tables"]["rank"]["score"]["kind"] == "rank_only"
    assert api.get("/scores").json() == body  # the same with a key


def test_openapi_says_which_scores_are_rank_only(api: Api) -> None:
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    assert "examples" in schemas["ScoreRegistry"]
    for model in ("TargetRow", "DiseaseGeneRow", "DrugRow", "GeneScore", "Evidence"):
        description = schemas[model]["properties"]["score"]["description"]
        assert description.startswith(("Rank only", "Reversal. Rank only")), model
    reversal = schemas["PatientTargetRow"]["properties"]["reversal_score"]["description"]
    assert reversal.startswith("Rank only")
    off_target = schemas["TargetRow"]["properties"]["off_target"]["description"]
    assert off_target.startswith("Calibrated, in fraction of the disease vector")
    context = schemas["ContextState"]["properties"]
    assert {"disease_score_low", "disease_score_high"} <= set(context)
    assert "Calibrated" in context["disease_score"]["description"]


def test_patient_state_intervals_round_trip(api: Api) -> None:
    states = pd.read_parquet(api.run_dir / "patient_states.parquet")
    own = states[states["patient_id"] == "P001"].set_index(["cell_type", "time"])
    contexts = api.get(f"/patients/{MAPPED}").json()["state_summary"]["contexts"]
    assert len(contexts) == len(own)
    for context in contexts:
        row = own.loc[(context["cell_type"], context["time"])]
        for column in ("disease_score", "disease_score_low", "disease_score_high"):
            assert math.isclose(context[column], row[column], rel_tol=1e-12), column
        assert context["disease_score_low"] <= context["disease_score"]
        assert context["disease_score"] <= context["disease_score_high"]


def test_study_detail_has_the_null_calibration(api: Api) -> None:
    table = pd.read_parquet(api.run_dir / "null_calibration.parquet")
    detail = api.get("/studies/study_a").json()
    got = {c["screen"]: c for c in detail["null_calibration"]}
    assert set(got) == {"targets", "patients"}
    for screen, rows in table.groupby("screen"):
        first = rows.iloc[0]
        assert got[screen]["n_permutations"] == int(first["n_permutations"])
        assert got[screen]["n_tests"] == int(first["n_tests"])
        assert got[screen]["method"] == first["method"]
        assert math.isclose(got[screen]["share_below_005"], float(first["share_below_005"]))


def test_patient_target_p_q_round_trip(api: Api) -> None:
    personal = pd.read_parquet(api.run_dir / "patients.parquet")
    own = personal[personal["patient_id"] == "P001"].set_index("rank")
    rows = api.get(f"/patients/{MAPPED}/targets", limit=100).json()["data"]
    assert len(rows) == len(own)
    for row in rows:
        assert math.isclose(row["p_value"], own.loc[row["rank"], "p_value"], rel_tol=1e-12)
        assert math.isclose(row["q_value"], own.loc[row["rank"], "q_value"], rel_tol=1e-12)


# ----------------------------------------------------------------------------- MNM


def test_mnm_edges_and_centrality_round_trip(api: Api) -> None:
    want = pd.read_parquet(api.run_dir / "mnm.parquet")
    ranking = pd.read_parquet(api.run_dir / "centrality.parquet").sort_values("rank")
    body = api.get("/studies/study_a/mnm", role="analyst").json()
    assert body["study_id"] == "study_a" and body["time"] is None
    assert body["count"] == len(want) == len(body["edges"])
    got = [
        (e["time"], e["source_cell_type"], e["target_cell_type"], e["n_regulators"])
        for e in body["edges"]
    ]
    expected = want.sort_values(["time", "source_cell_type", "target_cell_type"])
    assert got == list(
        expected[["time", "source_cell_type", "target_cell_type", "n_regulators"]].itertuples(
            index=False, name=None
        )
    )
    by_pair = {(e["source_cell_type"], e["target_cell_type"]): e for e in body["edges"]}
    assert by_pair[("NK", "CD14 Mono")]["regulators"] == ["JUN", "MAF", "RELA"]
    assert [c["cell_type"] for c in body["centrality"]] == ranking["cell_type"].tolist()
    assert [c["rank"] for c in body["centrality"]] == [1, 2, 3]
    for row, (_, own) in zip(body["centrality"], ranking.iterrows(), strict=True):
        assert math.isclose(row["centrality"], own["centrality"], rel_tol=1e-12)


def test_mnm_time_filter_and_paging(api: Api) -> None:
    at_6 = api.get("/studies/study_a/mnm", time=6).json()
    assert at_6["time"] == 6.0 and at_6["count"] == 2
    assert {e["time"] for e in at_6["edges"]} == {6.0}
    assert [e["source_cell_type"] for e in at_6["edges"]] == ["CD14 Mono", "NK"]
    empty = api.get("/studies/study_a/mnm", time=24).json()  # no edge at the last time point
    assert empty["count"] == 0 and empty["edges"] == []
    assert len(empty["centrality"]) == 3  # the ranking covers every time point
    page = api.get("/studies/study_a/mnm", limit=1, offset=1).json()
    assert page["count"] == 3 and len(page["edges"]) == 1
    assert page["edges"][0]["time"] == 6.0 and page["edges"][0]["source_cell_type"] == "CD14 Mono"


def test_mnm_roles_and_bounds(api: Api) -> None:
    assert api.get("/studies/study_a/mnm", role="admin").status_code == 200
    assert api.get("/studies/study_a/mnm", role="analyst").status_code == 200
    _is_problem(api.get("/studies/study_a/mnm", role="clinician"), 403)
    for params in ({"time": "inf"}, {"time": "soon"}, {"limit": 0}, {"limit": 501}):
        body = _is_problem(api.get("/studies/study_a/mnm", **params), 422)
        assert body["errors"][0]["loc"][0] == "query"


def test_openapi_documents_the_mnm(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    operation = spec["paths"][f"{API}/studies/{{study_id}}/mnm"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"study_id", "time", "limit", "offset"}
    assert params["limit"]["schema"]["maximum"] == 500
    assert {"403", "404"} <= set(operation["responses"])
    schemas = spec["components"]["schemas"]
    assert "examples" in schemas["MulticellularNetwork"]
    edge = schemas["MnmEdgeRow"]["properties"]["n_regulators"]["description"]
    assert edge.startswith("Calibrated, in regulators")
    centrality = schemas["CentralityRow"]["properties"]["centrality"]["description"]
    assert centrality.startswith("Rank only")
