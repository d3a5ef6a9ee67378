"""Patient records, grants and publish checks (issue 14, store half), on SQLite and PostgreSQL.

Each test reproduces one finding: a grant that moved to another person across a re-publish and
a second study, a world-readable database file, text in an integer column, concurrent
publishes of one study, a missing donor published as a patient called ``None`` and ids with a
trailing newline, keys that never expire. New functions are imported inside the tests, so that
against a release without them each test fails on its own.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from omicstwin.store.access import add_grant, authenticate, create_key, is_granted
from omicstwin.store.db import TABLES, make_engine, upgrade_db
from omicstwin.store.publish import import_patients, publish_run
from tests.service import conftest as _fixtures
from tests.service.conftest import fabricate_run
from tests.store.test_db import dump

db_url = _fixtures.db_url
pg_session_url = _fixtures.pg_session_url
run_dir = _fixtures.run_dir

DONOR_TABLES = {"design": "donor", "patients": "patient_id", "patient_states": "patient_id"}


def without_donor(src: Path, out: Path, donor: str) -> Path:
    """A copy of a run directory from which one donor withdrew."""
    shutil.copytree(src, out)
    for table, column in DONOR_TABLES.items():
        frame = pd.read_parquet(out / f"{table}.parquet")
        frame[frame[column] != donor].to_parquet(out / f"{table}.parquet", index=False)
    return out


def other_cohort(out: Path) -> Path:
    """A second study, from another cohort, whose only case donor is also called P001."""
    return fabricate_run(out, n_cases=1, n_controls=1, control_prefix="K", seed=11)


def _granted(url: str, key_name: str, patient_id: str) -> bool:
    engine = make_engine(url)
    keys = TABLES["api_keys"]
    with engine.connect() as conn:
        key_id = conn.execute(sa.select(keys.c.id).where(keys.c.name == key_name)).scalar()
        found = is_granted(conn, key_id, patient_id)
    engine.dispose()
    return found


def _record_study(url: str, patient_id: str) -> str | None:
    engine = make_engine(url)
    patients = TABLES["patients"]
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(patients.c.study_id).where(patients.c.patient_id == patient_id)
        ).scalar()
    engine.dispose()
    return found


# ----------------------------------------------------------------------------- grants


def test_grant_does_not_move_to_another_person(db_url: str, run_dir: Path, tmp_path: Path):
    """The finding: withdraw P001, re-publish, publish another cohort's P001 -> old key reads it."""
    from omicstwin.store.publish import PublishError

    publish_run(run_dir, db_url, study_id="s1")
    engine = make_engine(db_url)
    create_key(engine, name="doc", role="clinician")
    add_grant(engine, key_name="doc", patient_id="P001")
    add_grant(engine, key_name="doc", patient_id="P002")
    engine.dispose()

    withdrawn = without_donor(run_dir, tmp_path / "s1_v2", "P001")
    assert publish_run(withdrawn, db_url, study_id="s1").status == "replaced"
    assert _record_study(db_url, "P001") is None
    assert not _granted(db_url, "doc", "P001")  # the grant went with the record
    assert _granted(db_url, "doc", "P002")  # a record that stays keeps its grant

    # another cohort's donor P001 may not silently take the retired pseudonym
    before = dump(db_url)
    with pytest.raises(PublishError, match=r"P001.*retired.*patients import") as info:
        publish_run(other_cohort(tmp_path / "s2"), db_url, study_id="s2")
    assert "\n" not in str(info.value)
    assert dump(db_url) == before
    assert not _granted(db_url, "doc", "P001")


def test_retired_pseudonym_reused_only_by_explicit_mapping(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    from omicstwin.store.access import list_grants

    publish_run(run_dir, db_url, study_id="s1")
    engine = make_engine(db_url)
    create_key(engine, name="doc", role="clinician")
    add_grant(engine, key_name="doc", patient_id="P001")
    publish_run(without_donor(run_dir, tmp_path / "v2", "P001"), engine, study_id="s1")
    s2 = other_cohort(tmp_path / "s2")
    # the fix the error names: map the new donor to a new pseudonym ...
    mapping = tmp_path / "map.csv"
    mapping.write_text("study_id,donor,patient_id\ns2,P001,S2-0001\n")
    import_patients(mapping, engine)
    assert publish_run(s2, engine, study_id="s2").counts["patients"] == 2
    assert _record_study(db_url, "S2-0001") == "s2" and _record_study(db_url, "P001") is None
    # ... or reuse the retired pseudonym deliberately: no old grant comes back
    mapping.write_text("study_id,donor,patient_id\ns2,P001,P001\n")
    import_patients(mapping, engine)
    assert _record_study(db_url, "P001") == "s2"
    assert list_grants(engine, patient_id="P001") == []
    retired = TABLES["retired_pseudonyms"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(retired.c.patient_id)).scalars().all() == []
    engine.dispose()


def test_same_donor_back_in_the_same_study_is_refused_too(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    from omicstwin.store.publish import RetiredPseudonymError

    publish_run(run_dir, db_url, study_id="s1")
    publish_run(without_donor(run_dir, tmp_path / "v2", "C002"), db_url, study_id="s1")
    with pytest.raises(RetiredPseudonymError, match="C002"):
        publish_run(fabricate_run(tmp_path / "v3", seed=4), db_url, study_id="s1")


def test_deleting_a_study_retires_its_pseudonyms(
    db_url: str, run_dir: Path, tmp_path: Path
) -> None:
    from omicstwin.store.access import list_grants
    from omicstwin.store.publish import PublishError, RetiredPseudonymError, delete_study

    publish_run(run_dir, db_url, study_id="s1")
    engine = make_engine(db_url)
    create_key(engine, name="doc", role="clinician")
    add_grant(engine, key_name="doc", patient_id="C001")
    assert delete_study("s1", engine) == 5
    assert list_grants(engine) == []
    with engine.connect() as conn:
        rows = conn.execute(sa.select(TABLES["retired_pseudonyms"])).all()
        assert sorted(r.patient_id for r in rows) == ["C001", "C002", "P001", "P002", "P003"]
        assert {r.study_id for r in rows} == {"s1"}
        assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["targets"])).scalar() == 0
        assert conn.execute(sa.select(TABLES["studies"])).first() is None
    with pytest.raises(PublishError, match="no study"):
        delete_study("s1", engine)
    with pytest.raises(RetiredPseudonymError, match="retired"):
        publish_run(run_dir, engine, study_id="s1")
    engine.dispose()


def test_list_and_remove_grants(db_url: str, run_dir: Path) -> None:
    from omicstwin.store.access import AccessError, list_grants, remove_grant

    publish_run(run_dir, db_url)
    engine = make_engine(db_url)
    create_key(engine, name="doc", role="clinician")
    create_key(engine, name="ana", role="analyst")
    add_grant(engine, key_name="doc", patient_id="P001")
    add_grant(engine, key_name="doc", patient_id="P002")
    add_grant(engine, key_name="ana", patient_id="P001")
    rows = list_grants(engine)
    assert [(r["key_name"], r["role"], r["patient_id"], r["study_id"]) for r in rows] == [
        ("ana", "analyst", "P001", "study_a"),
        ("doc", "clinician", "P001", "study_a"),
        ("doc", "clinician", "P002", "study_a"),
    ]
    assert all(r["created_at"].tzinfo is not None for r in rows)
    assert [r["key_name"] for r in list_grants(engine, patient_id="P001")] == ["ana", "doc"]
    assert [r["patient_id"] for r in list_grants(engine, key_name="doc")] == ["P001", "P002"]
    remove_grant(engine, key_name="doc", patient_id="P001")
    assert [r["patient_id"] for r in list_grants(engine, key_name="doc")] == ["P002"]
    with pytest.raises(AccessError, match="holds no grant"):
        remove_grant(engine, key_name="doc", patient_id="P001")
    with pytest.raises(AccessError, match="no key named"):
        remove_grant(engine, key_name="nobody", patient_id="P001")
    engine.dispose()


# ----------------------------------------------------------------------------- storage


def test_sqlite_files_are_private(tmp_path: Path, run_dir: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which made the files 0644
    try:
        path = tmp_path / "private" / "omicstwin.db"
        engine = make_engine(f"sqlite:///{path}")
        publish_run(run_dir, engine)
        with engine.connect() as conn:  # keep a connection open: -wal and -shm exist now
            conn.execute(sa.select(TABLES["studies"])).all()
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(f.exists() for f in files)
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        engine.dispose()
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(modes, 0o600)


def test_readable_sqlite_file_is_warned_about(tmp_path: Path) -> None:
    from omicstwin.store.db import InsecureFileWarning

    path = tmp_path / "shared.db"
    make_engine(f"sqlite:///{path}").dispose()
    path.chmod(0o644)
    with pytest.warns(InsecureFileWarning, match=rf"{path}.*fix: chmod 600 {path}"):
        make_engine(f"sqlite:///{path}").dispose()


# ----------------------------------------------------------------------------- checks


def _rewrite(run: Path, table: str, **columns) -> None:
    frame = pd.read_parquet(run / f"{table}.parquet")
    for name, values in columns.items():
        frame[name] = values(frame) if callable(values) else values
    frame.to_parquet(run / f"{table}.parquet", index=False)


def _as_text(frame: pd.DataFrame) -> pd.Series:
    out = frame["rank"].astype(str)  # text in an integer column (parquet: a string column)
    out.iloc[0] = "first"
    return out


@pytest.mark.parametrize(
    ("table", "column", "values", "message"),
    [
        ("rank_targets", "rank", _as_text, r"'rank_targets' column 'rank'.*not text.*'first'"),
        ("rank_drugs", "score", lambda f: f["score"].astype(str), r"'rank_drugs' column 'score'"),
        ("rank_targets", "rank", lambda f: f["rank"] + 0.5, "whole numbers"),
        ("patients", "rank", lambda f: f["rank"].astype(str), r"'patients' column 'rank'"),
        ("perturbations", "cell_type", None, r"'perturbations' column 'cell_type'.*missing"),
        ("rank_disease_genes", "name", None, r"'rank_disease_genes' column 'name'.*missing"),
    ],
)
def test_wrong_types_are_refused_before_writing(
    db_url: str, run_dir: Path, tmp_path: Path, table, column, values, message
) -> None:
    from omicstwin.errors import OmicstwinError

    publish_run(run_dir, db_url)
    before = dump(db_url)
    bad = Path(shutil.copytree(run_dir, tmp_path / "study_a"))
    _rewrite(bad, table, **{column: values})
    with pytest.raises(OmicstwinError, match=message) as info:
        publish_run(bad, db_url)
    assert "fix:" in str(info.value) and "\n" not in str(info.value)
    assert dump(db_url) == before


@pytest.mark.parametrize(
    ("donor", "message"),
    [
        (None, "missing donor id"),
        ("P001\n", "line break"),
        (" P001", "whitespace"),
    ],
)
def test_bad_donor_ids_are_refused(
    db_url: str, run_dir: Path, tmp_path: Path, donor: str | None, message: str
) -> None:
    from omicstwin.store.publish import PublishError

    bad = Path(shutil.copytree(run_dir, tmp_path / "study_a"))
    design = pd.read_parquet(bad / "design.parquet")
    design["donor"] = design["donor"].astype(object)
    design.loc[design["donor"] == "P001", "donor"] = donor
    design.to_parquet(bad / "design.parquet", index=False)
    with pytest.raises(PublishError, match=message):
        publish_run(bad, db_url)
    upgrade_db(db_url)
    assert _record_study(db_url, "None") is None
    assert _record_study(db_url, "nan") is None


@pytest.mark.parametrize("bad", ["s1\n", "s1 ", " s1", "s1\r\n"])
def test_ids_with_whitespace_are_refused_everywhere(
    db_url: str, run_dir: Path, tmp_path: Path, bad: str
) -> None:
    from omicstwin.errors import OmicstwinError

    with pytest.raises(OmicstwinError, match="not a valid id"):
        publish_run(run_dir, db_url, study_id=bad)
    engine = make_engine(db_url)
    upgrade_db(engine)
    with pytest.raises(OmicstwinError, match="not a valid id"):
        create_key(engine, name=bad.replace("s1", "doc"), role="admin")
    publish_run(run_dir, engine)
    mapping = tmp_path / "map.csv"
    with mapping.open("w", newline="") as handle:  # csv quoting keeps the newline in the cell
        import csv

        csv.writer(handle).writerows(
            [["study_id", "donor", "patient_id"], ["study_a", "P001", bad.replace("s1", "PX")]]
        )
    with pytest.raises(OmicstwinError, match="line 2"):
        import_patients(mapping, engine)
    assert _record_study(db_url, "P001") == "study_a"
    with engine.connect() as conn:
        assert conn.execute(sa.select(TABLES["api_keys"])).first() is None
    engine.dispose()


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_publishes_of_one_study_are_serialised(db_url: str, run_dir: Path) -> None:
    # on an empty database: the schema upgrade each publish starts with is serialised too
    barrier = threading.Barrier(3)
    results: list = []
    errors: list = []

    def publish() -> None:
        engine = make_engine(db_url)  # one engine (connection pool) per writer, as processes
        barrier.wait()
        try:
            results.append(publish_run(run_dir, engine).status)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            engine.dispose()

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(results) == ["published", "unchanged", "unchanged"]
    engine = make_engine(db_url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(TABLES["patients"])).scalar()
    engine.dispose()
    assert n == 5


def test_concurrent_publishes_in_processes(db_url: str, run_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    upgrade_db(db_url)
    changed = fabricate_run(tmp_path / "study_a", seed=8)
    code = (
        "import sys, time\n"
        "from omicstwin.store.publish import publish_run\n"
        "while time.time() < float(sys.argv[3]): time.sleep(0.005)\n"
        "print(publish_run(sys.argv[1], sys.argv[2], study_id='race').status)\n"
    )
    start = f"{datetime.now(UTC).timestamp() + 4:.3f}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(run), db_url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for run in (run_dir, changed, run_dir)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    statuses = [out.strip() for out, _ in outs]
    assert "IntegrityError" not in "".join(err for _, err in outs)
    assert statuses.count("published") == 1, statuses
    assert set(statuses) <= {"published", "replaced", "unchanged"}


# ----------------------------------------------------------------------------- keys


def test_keys_expire_and_rotate(db_url: str) -> None:
    from omicstwin.store.access import AccessError, check_key, list_keys, rotate_key

    engine = make_engine(db_url)
    upgrade_db(engine)
    soon = datetime.now(UTC) + timedelta(hours=1)
    key = create_key(engine, name="temp", role="clinician", expires_at=soon)
    with engine.connect() as conn:
        assert authenticate(conn, key).name == "temp"
        assert check_key(conn, key, now=soon - timedelta(seconds=1)).status == "ok"
        assert check_key(conn, key, now=soon).status == "expired"
        assert authenticate(conn, key) is not None
    with pytest.raises(AccessError, match="in the past"):
        create_key(engine, name="late", role="admin", expires_at=datetime(2020, 1, 1))
    listed = {row["name"]: row for row in list_keys(engine)}
    assert listed["temp"]["expires_at"] == soon and listed["temp"]["last_used_at"] is None
    assert set(listed["temp"]) == {
        "name",
        "role",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    new = rotate_key(engine, "temp")
    assert new != key and new.startswith("otk_")
    with engine.connect() as conn:
        assert check_key(conn, key).status == "unknown"  # the old secret stops at once
        same = check_key(conn, new)
        assert same.status == "ok" and same.principal.name == "temp" and same.expires_at == soon
    with pytest.raises(AccessError, match="no key named"):
        rotate_key(engine, "nobody")
    engine.dispose()


@pytest.mark.parametrize(
    ("text", "delta"),
    [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2))],
)
def test_key_lifetimes_parse(text: str, delta: timedelta) -> None:
    from omicstwin.store.access import parse_lifetime

    assert parse_lifetime(text) == delta


@pytest.mark.parametrize("text", ["", "0d", "-1d", "90", "d", "1.5d", "3y"])
def test_bad_key_lifetimes_are_refused(text: str) -> None:
    from omicstwin.store.access import AccessError, parse_lifetime

    with pytest.raises(AccessError, match="fix:"):
        parse_lifetime(text)


# ----------------------------------------------------------------------------- CLI


def test_cli_keys_grants_and_unpublish(db_url: str, run_dir: Path) -> None:
    from typer.testing import CliRunner

    from omicstwin.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [*args, "--db", db_url])

    assert run("publish", str(run_dir)).exit_code == 0
    out = run("keys", "create", "--role", "clinician", "--name", "doc", "--expires-in", "90d")
    assert out.exit_code == 0 and "expires" in out.output
    key = out.output.split()[-1]
    out = run("keys", "create", "--role", "admin", "--name", "boss", "--expires-at", "2099-01-31")
    assert out.exit_code == 0 and "expires 2099-01-31 00:00 UTC" in out.output
    out = run("keys", "create", "--role", "admin", "--name", "x", "--expires-in", "soon")
    assert out.exit_code == 2 and "error: invalid key lifetime" in out.output
    out = run("keys", "create", "--role", "admin", "--name", "x", "--expires-at", "2001-01-01")
    assert out.exit_code == 2 and "in the past" in out.output
    out = run("keys", "list")
    lines = out.output.splitlines()
    assert lines[0].split("\t") == [
        "name",
        "role",
        "created",
        "expires",
        "last_used",
        "revoked",
        "status",
    ]
    doc = next(line.split("\t") for line in lines if line.startswith("doc\t"))
    assert doc[1] == "clinician" and doc[4] == "never" and doc[6] == "active"
    assert key not in out.output

    out = run("keys", "rotate", "--name", "doc")
    assert out.exit_code == 0
    new = out.output.split()[-1]
    assert new.startswith("otk_") and new != key
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert authenticate(conn, key) is None and authenticate(conn, new).name == "doc"
    engine.dispose()

    assert run("grants", "add", "--key-name", "doc", "--patient", "P001").exit_code == 0
    assert run("grants", "add", "--key-name", "boss", "--patient", "P002").exit_code == 0
    out = run("grants", "list", "--key-name", "doc")
    assert out.exit_code == 0
    assert [line.split("\t")[:4] for line in out.output.splitlines()[1:]] == [
        ["doc", "clinician", "P001", "study_a"]
    ]
    assert len(run("grants", "list").output.splitlines()) == 3
    assert len(run("grants", "list", "--patient", "P002").output.splitlines()) == 2
    out = run("grants", "remove", "--key-name", "doc", "--patient", "P001")
    assert out.exit_code == 0 and "P001" not in out.output
    out = run("grants", "remove", "--key-name", "doc", "--patient", "P001")
    assert out.exit_code == 2 and "error: key 'doc' holds no grant" in out.output

    out = run("unpublish", "study_a")
    assert out.exit_code == 0 and "5 patient record(s)" in out.output
    assert run("grants", "list").output.splitlines()[1:] == []
    out = run("unpublish", "study_a")
    assert out.exit_code == 2 and "no study" in out.output
    out = run("publish", str(run_dir))
    assert out.exit_code == 2 and "retired" in out.output and "patients import" in out.output
