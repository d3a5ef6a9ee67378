"""The results database: publish (atomic, idempotent), schema versions, patients, keys, grants."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from omicstwin.store import publish as publish_module
from omicstwin.store.access import (
    AccessError,
    add_grant,
    authenticate,
    create_key,
    hash_key,
    verify_external_ref,
)
from omicstwin.store.db import (
    TABLES,
    SchemaVersionError,
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    upgrade_db,
)
from omicstwin.store.publish import (
    PatientImportError,
    PublishError,
    import_patients,
    publish_run,
)
from tests.service import conftest as _fixtures
from tests.service.conftest import fabricate_run

# The database fixtures live with the service tests; re-export them here (same backends).
db_url = _fixtures.db_url
pg_session_url = _fixtures.pg_session_url
run_dir = _fixtures.run_dir


def dump(url: str) -> dict[str, list]:
    """Every row of every omicstwin table, sorted: equal dumps mean equal databases."""
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {
            name: sorted(
                (tuple(map(repr, row)) for row in conn.execute(sa.select(table))),
            )
            for name, table in TABLES.items()
        }
    engine.dispose()
    return out


def _copy(run_dir: Path, tmp_path: Path, name: str = "study_a") -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / name))


def test_publish_is_idempotent(db_url: str, run_dir: Path) -> None:
    first = publish_run(run_dir, db_url)
    assert first.status == "published" and first.study_id == "study_a"
    assert first.counts["targets"] == 30 and first.counts["context_targets"] == 270
    assert first.counts["cases"] == 3 and first.counts["controls"] == 2
    before = dump(db_url)
    again = publish_run(run_dir, db_url)
    assert again.status == "unchanged" and again.content_hash == first.content_hash
    assert dump(db_url) == before


def test_changed_run_replaces_the_study(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    publish_run(run_dir, db_url)
    changed = fabricate_run(tmp_path / "study_a", n_genes=12, seed=3)
    result = publish_run(changed, db_url)
    assert result.status == "replaced"
    engine = make_engine(db_url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(TABLES["targets"])).scalar()
        ctx = conn.execute(sa.select(sa.func.count()).select_from(TABLES["context_targets"]))
        assert n == 12 and ctx.scalar() == 12 * 9
    engine.dispose()


def test_failed_publish_leaves_the_database_intact(
    db_url: str, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_run(run_dir, db_url)
    before = dump(db_url)
    changed = fabricate_run(tmp_path / "study_a", n_genes=12, seed=3)
    real = publish_module._insert

    def failing(conn, name, rows):
        if name == "patients":  # after the old rows are deleted and new targets inserted
            raise RuntimeError("connection lost")
        real(conn, name, rows)

    monkeypatch.setattr(publish_module, "_insert", failing)
    with pytest.raises(RuntimeError, match="connection lost"):
        publish_run(changed, db_url)
    assert dump(db_url) == before


def test_malformed_runs_are_refused(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"no run\.json"):
        publish_run(tmp_path, db_url)
    broken = _copy(run_dir, tmp_path)
    (broken / "rank_targets.parquet").write_bytes(b"not parquet")
    with pytest.raises(PublishError, match="cannot read"):
        publish_run(broken, db_url)
    (broken / "rank_targets.parquet").unlink()
    with pytest.raises(PublishError, match="lacks rank_targets"):
        publish_run(broken, db_url)
    with pytest.raises(Exception, match="not a valid id"):
        publish_run(run_dir, db_url, study_id="bad id")


def test_study_id_option_and_patient_clash(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    publish_run(run_dir, db_url)
    # the same donors under a second study id clash with the first study's patient ids
    with pytest.raises(PublishError, match="patients import"):
        publish_run(run_dir, db_url, study_id="study_b")
    mapping = tmp_path / "map.csv"
    rows = ["study_id,donor,patient_id"] + [
        f"study_b,{d},B-{d}" for d in ("P001", "P002", "P003", "C001", "C002")
    ]
    mapping.write_text("\n".join(rows) + "\n")
    assert import_patients(mapping, db_url).pending == 5
    assert publish_run(run_dir, db_url, study_id="study_b").counts["patients"] == 5


def test_schema_versions(db_url: str, run_dir: Path) -> None:
    engine = make_engine(db_url)
    with pytest.raises(SchemaVersionError, match="db upgrade"):
        check_schema(engine)
    assert upgrade_db(engine) == head_revision() == current_revision(engine)
    check_schema(engine)
    assert upgrade_db(engine) == head_revision()  # idempotent
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'beef'"))
    with pytest.raises(SchemaVersionError, match="newer omicstwin"):
        check_schema(engine)
    with pytest.raises(SchemaVersionError, match="newer omicstwin"):
        publish_run(run_dir, engine)
    engine.dispose()


def test_patients_import(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    publish_run(run_dir, db_url)
    engine = make_engine(db_url)
    create_key(engine, name="doc", role="clinician")
    add_grant(engine, key_name="doc", patient_id="P001")
    mapping = tmp_path / "map.csv"
    mapping.write_text(
        "study_id,donor,patient_id,external_ref\nstudy_a,P001,PX-1,MRN-555\nstudy_a,C001,,fhir/9\n"
    )
    result = import_patients(mapping, engine)
    assert result.rows == 2 and result.updated_records == 2
    patients, grants, targets = TABLES["patients"], TABLES["grants"], TABLES["patient_targets"]
    with engine.connect() as conn:
        rows = {r.donor: r for r in conn.execute(sa.select(patients))}
        assert rows["P001"].patient_id == "PX-1" and rows["C001"].patient_id == "C001"
        stored = rows["P001"].external_ref_hash
        assert "MRN-555" not in stored and verify_external_ref(stored, "MRN-555")
        assert not verify_external_ref(stored, "MRN-556")
        assert conn.execute(sa.select(grants.c.patient_id)).scalar() == "PX-1"
        moved = conn.execute(sa.select(sa.func.count()).where(targets.c.patient_id == "PX-1"))
        assert moved.scalar() == 10
    # swapping two pseudonyms works; re-publishing keeps the mapping
    mapping.write_text("study_id,donor,patient_id\nstudy_a,P001,P002\nstudy_a,P002,PX-1\n")
    import_patients(mapping, engine)
    changed = fabricate_run(tmp_path / "study_a", seed=5)
    publish_run(changed, engine)
    with engine.connect() as conn:
        rows = {r.donor: r.patient_id for r in conn.execute(sa.select(patients))}
    assert rows["P001"] == "P002" and rows["P002"] == "PX-1"
    engine.dispose()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("donor,patient_id\nP001,X1\n", "lacks columns"),
        ("study_id,donor\nstudy_a,P001\n", "maps nothing"),
        ("study_id,donor,patient_id\nstudy_a,P999,X1\n", "has no donor"),
        ("study_id,donor,patient_id\nstudy_a,P001,bad id\n", "invalid patient_id"),
        ("study_id,donor,patient_id\nstudy_a,P001,X1\nstudy_a,P001,X2\n", "appears twice"),
        ("study_id,donor,patient_id\nstudy_a,P001,P002\n", "already used"),
    ],
)
def test_patients_import_errors(
    db_url: str, run_dir: Path, tmp_path: Path, text: str, message: str
) -> None:
    publish_run(run_dir, db_url)
    before = dump(db_url)
    mapping = tmp_path / "map.csv"
    mapping.write_text(text)
    with pytest.raises(PatientImportError, match=message):
        import_patients(mapping, db_url)
    assert dump(db_url) == before


def test_keys_and_grants(db_url: str, run_dir: Path) -> None:
    publish_run(run_dir, db_url)
    engine = make_engine(db_url)
    key = create_key(engine, name="ana", role="analyst")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(TABLES["api_keys"].c.key_hash)).scalar()
        assert stored == hash_key(key) and key not in stored
        principal = authenticate(conn, key)
        assert principal is not None and principal.role == "analyst"
        assert authenticate(conn, key + "x") is None
    with pytest.raises(AccessError, match="already exists"):
        create_key(engine, name="ana", role="admin")
    with pytest.raises(AccessError, match="unknown role"):
        create_key(engine, name="x", role="root")
    assert add_grant(engine, key_name="ana", patient_id="P001") is True
    assert add_grant(engine, key_name="ana", patient_id="P001") is False
    with pytest.raises(AccessError, match="no key"):
        add_grant(engine, key_name="nobody", patient_id="P001")
    with pytest.raises(AccessError, match="no patient"):
        add_grant(engine, key_name="ana", patient_id="P404")
    engine.dispose()


def test_cli_commands(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    from omicstwin.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["publish", str(run_dir), "--db", db_url])
    assert out.exit_code == 0 and "study 'study_a' published" in out.output
    out = runner.invoke(app, ["publish", str(run_dir), "--db", db_url])
    assert "unchanged" in out.output
    out = runner.invoke(
        app, ["keys", "create", "--db", db_url, "--role", "clinician", "--name", "c"]
    )
    assert out.exit_code == 0
    key = out.output.split()[-1]
    assert key.startswith("otk_")
    out = runner.invoke(
        app, ["grants", "add", "--db", db_url, "--key-name", "c", "--patient", "P001"]
    )
    assert out.exit_code == 0 and "P001" not in out.output
    out = runner.invoke(app, ["keys", "list", "--db", db_url])
    assert "c\tclinician" in out.output and key not in out.output
    csv = tmp_path / "m.csv"
    csv.write_text("study_id,donor,external_ref\nstudy_a,P002,MRN-1\n")
    out = runner.invoke(app, ["patients", "import", "--db", db_url, str(csv)])
    assert out.exit_code == 0 and "1 patient record(s) updated" in out.output
    out = runner.invoke(app, ["keys", "create", "--db", db_url, "--role", "boss", "--name", "d"])
    assert out.exit_code == 2 and "error: unknown role" in out.output
    out = runner.invoke(app, ["db", "upgrade", "--db", db_url])
    assert out.exit_code == 0 and head_revision() in out.output


def test_design_only_states(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    # without patient_states the summary comes from the design (no disease score)
    plain = _copy(run_dir, tmp_path)
    (plain / "patient_states.parquet").unlink()
    publish_run(plain, db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        summary = conn.execute(
            sa.select(TABLES["patients"].c.state_summary).where(
                TABLES["patients"].c.patient_id == "P001"
            )
        ).scalar()
    engine.dispose()
    design = pd.read_parquet(run_dir / "design.parquet")
    assert f'"n_cells": {int(design[design.donor == "P001"].n_cells.sum())}' in summary
    assert '"mean_disease_score": null' in summary


def test_rerun_with_new_timings_only_is_unchanged(db_url: str, run_dir: Path, tmp_path: Path):
    import json

    first = publish_run(run_dir, db_url)
    rerun = _copy(run_dir, tmp_path, "rerun")
    run = json.loads((rerun / "run.json").read_text())
    # what an unchanged re-run of the pipeline rewrites: timings, reused stages, finish time
    run.update(timings_s={"de": 0.0}, cached_stages=["de"], finished="2030-01-01T00:00:00+00:00")
    (rerun / "run.json").write_text(json.dumps(run))
    again = publish_run(rerun, db_url, study_id=first.study_id)
    assert again.status == "unchanged" and again.content_hash == first.content_hash
    run["seed"] = 99  # a real change to the run's provenance still counts
    (rerun / "run.json").write_text(json.dumps(run))
    assert publish_run(rerun, db_url, study_id=first.study_id).status == "replaced"
