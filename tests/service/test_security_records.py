"""Issue 14, records half, seen through the API: what a key can read after publishes.

- a clinician's grant on P001 must not reach another cohort's donor P001 after P001 withdrew
  from the first study (before: 200 with the other person's twin, audited as "allowed");
- a study with text in an integer column must not be published (before: /genes/{symbol}
  failed with 500 for every study);
- a donor with no id must not become a patient called ``None``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from omicstwin.errors import OmicstwinError
from omicstwin.service import create_app
from omicstwin.store.access import add_grant, create_key
from omicstwin.store.db import TABLES, make_engine
from omicstwin.store.publish import import_patients, publish_run
from tests.service.conftest import fabricate_run

API = "/api/v1"
DONOR_TABLES = {"design": "donor", "patients": "patient_id", "patient_states": "patient_id"}


def _without(src: Path, out: Path, donor: str) -> Path:
    shutil.copytree(src, out)
    for table, column in DONOR_TABLES.items():
        frame = pd.read_parquet(out / f"{table}.parquet")
        frame[frame[column] != donor].to_parquet(out / f"{table}.parquet", index=False)
    return out


def _key(url: str, name: str, role: str) -> str:
    engine = make_engine(url)
    try:
        return create_key(engine, name=name, role=role)
    finally:
        engine.dispose()


def _get(client: TestClient, key: str, path: str):
    return client.get(API + path, headers={"Authorization": f"Bearer {key}"})


def test_old_grant_does_not_read_another_persons_record(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    publish_run(run_dir, db_url, study_id="s1")
    engine = make_engine(db_url)
    doc = create_key(engine, name="doc", role="clinician")
    admin = create_key(engine, name="boss", role="admin")
    add_grant(engine, key_name="doc", patient_id="P001")
    engine.dispose()
    app = create_app(db_url)
    with TestClient(app) as client:
        assert _get(client, doc, "/patients/P001").status_code == 200
        # P001 withdraws; s1 is re-published without them
        publish_run(_without(run_dir, tmp_path / "s1_v2", "P001"), db_url, study_id="s1")
        # a second study, from another cohort, has its own donor called P001
        other = fabricate_run(tmp_path / "s2", n_cases=1, n_controls=1, control_prefix="K", seed=9)
        with pytest.raises(OmicstwinError, match="retired"):
            publish_run(other, db_url, study_id="s2")
        # mapped to a new pseudonym (the fix the error names), it publishes
        mapping = tmp_path / "map.csv"
        mapping.write_text("study_id,donor,patient_id\ns2,P001,S2-0001\n")
        import_patients(mapping, db_url)
        publish_run(other, db_url, study_id="s2")

        for path in ("/patients/P001", "/patients/P001/targets", "/patients/S2-0001"):
            response = _get(client, doc, path)
            assert response.status_code in (403, 404), (path, response.status_code)
        assert _get(client, admin, "/patients/P001").status_code == 404
        assert _get(client, admin, "/patients/S2-0001").json()["study_id"] == "s2"
    app.state.engine.dispose()
    engine = make_engine(db_url)
    audit = TABLES["audit"]
    with engine.connect() as conn:
        outcomes = conn.execute(
            sa.select(audit.c.outcome).where(audit.c.key_name == "doc").order_by(audit.c.id)
        ).scalars()
        outcomes = list(outcomes)
    engine.dispose()
    assert outcomes[0] == "allowed" and "allowed" not in outcomes[1:]


def test_text_in_an_integer_column_is_not_published(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    publish_run(run_dir, db_url)
    bad = fabricate_run(tmp_path / "study_b", case_prefix="B", control_prefix="D", seed=2)
    targets = pd.read_parquet(bad / "rank_targets.parquet")
    targets["rank"] = targets["rank"].astype(str)
    targets.loc[0, "rank"] = "first"
    targets.to_parquet(bad / "rank_targets.parquet", index=False)
    with pytest.raises(OmicstwinError, match=r"'rank_targets' column 'rank'"):
        publish_run(bad, db_url)
    key = _key(db_url, "ana", "analyst")
    app = create_app(db_url)
    with TestClient(app) as client:
        gene = pd.read_parquet(run_dir / "rank_targets.parquet")["genes"].iloc[0]
        response = _get(client, key, f"/genes/{gene}")
        assert response.status_code == 200, response.text
        assert [s["study_id"] for s in _get(client, key, "/studies").json()["data"]] == ["study_a"]
    app.state.engine.dispose()


def test_no_patient_called_none(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copytree(run_dir, tmp_path / "study_a"))
    design = pd.read_parquet(bad / "design.parquet")
    design["donor"] = design["donor"].astype(object)
    design.loc[design["donor"] == "C002", "donor"] = None
    design.to_parquet(bad / "design.parquet", index=False)
    with pytest.raises(OmicstwinError, match="missing donor id"):
        publish_run(bad, db_url)
    publish_run(run_dir, db_url)
    key = _key(db_url, "boss", "admin")
    app = create_app(db_url)
    with TestClient(app) as client:
        assert _get(client, key, "/patients/None").status_code == 404
    app.state.engine.dispose()
