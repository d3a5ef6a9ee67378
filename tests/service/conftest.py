"""Fixtures of the store and service tests: fabricated run directories and fresh databases.

Databases are parametrised over ``sqlite`` (a temporary file) and ``postgresql`` (a fresh
database per test session on the server named by ``OMICSTWIN_TEST_PG_URL``, and a fresh schema
per test). Without that variable the PostgreSQL cases are skipped, unless
``OMICSTWIN_REQUIRE_PG=1`` (CI), when they fail.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from omicstwin.schemas import SCHEMAS, conform

PG_ENV = "OMICSTWIN_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]
# The API tests send many bad keys from one address on purpose; the rate limit has its own
# tests (test_security_service.py, with explicit settings).
os.environ.setdefault("OMICSTWIN_AUTH_MAX_FAILURES", "1000000")


DESIGN = {
    "condition": "string",
    "donor": "string",
    "time": "float64",
    "cell_type": "string",
    "n_cells": "int64",
}


def _conform(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    # design (and, until the pipeline writes it, patient_states) may lack a declared schema
    if name in SCHEMAS:
        return conform(frame, name)
    return frame.loc[:, list(DESIGN)].astype(DESIGN) if name == "design" else frame


def fabricate_run(
    out: Path,
    *,
    n_genes: int = 30,
    cell_types: tuple[str, ...] = ("B", "CD14 Mono", "NK"),
    times: tuple[float, ...] = (0.0, 6.0, 24.0),
    n_cases: int = 3,
    n_controls: int = 2,
    n_patient_targets: int = 10,
    n_combinations: int = 0,
    patient_states: bool = True,
    seed: int = 0,
    case_prefix: str = "P",
    control_prefix: str = "C",
    mnm: bool = True,
) -> Path:
    """Write a run directory with the declared table schemas and random but valid values."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    genes = [f"G{i:05d}" for i in range(n_genes)]
    cases = [f"{case_prefix}{i + 1:03d}" for i in range(n_cases)]
    controls = [f"{control_prefix}{i + 1:03d}" for i in range(n_controls)]
    donors = [(d, "case") for d in cases] + [(d, "control") for d in controls]

    grid = pd.MultiIndex.from_product(
        [[d for d, _ in donors], times, cell_types], names=["donor", "time", "cell_type"]
    ).to_frame(index=False)
    arm = dict(donors)
    grid["condition"] = grid["donor"].map(arm)
    grid["n_cells"] = rng.integers(5, 60, len(grid))
    _conform(grid, "design").to_parquet(out / "design.parquet", index=False)
    if patient_states:
        states = grid.rename(columns={"donor": "patient_id", "condition": "arm"})
        states["disease_score"] = np.where(states["arm"] == "case", 0.8, 0.1) + rng.normal(
            0, 0.1, len(states)
        )
        states["disease_score_low"] = states["disease_score"] - 0.1  # bootstrap interval
        states["disease_score_high"] = states["disease_score"] + 0.1
        _conform(states, "patient_states").to_parquet(out / "patient_states.parquet", index=False)

    ctx = pd.MultiIndex.from_product(
        [genes, cell_types, times], names=["genes", "cell_type", "time"]
    ).to_frame(index=False)
    ctx["perturbation_id"] = "KO:" + ctx["genes"]
    ctx["kind"] = "knockout"
    ctx["dose"] = 1.0
    ctx["reversal_score"] = rng.normal(0, 0.1, len(ctx))
    ctx["off_target"] = rng.uniform(0, 1, len(ctx))
    ctx["p_value"] = rng.uniform(0, 1, len(ctx))
    ctx["q_value"] = np.minimum(ctx["p_value"] * 2, 1.0)
    conform(ctx, "perturbations").to_parquet(out / "perturbations.parquet", index=False)

    best = ctx.loc[ctx.groupby("genes")["reversal_score"].idxmax()]
    targets = pd.DataFrame(
        {
            "name": best["perturbation_id"].to_numpy(),
            "score": best["reversal_score"].to_numpy(),
            "off_target": best["off_target"].to_numpy(),
            "p_value": best["p_value"].to_numpy(),
            "q_value": best["q_value"].to_numpy(),
            "best_cell_type": best["cell_type"].to_numpy(),
            "best_time": best["time"].to_numpy(),
            "kind": "knockout",
            "genes": best["genes"].to_numpy(),
            "dose": 1.0,
        }
    )
    if n_combinations:
        a = rng.integers(0, n_genes, n_combinations)
        b = (a + 1 + rng.integers(0, n_genes - 1, n_combinations)) % n_genes
        pairs = [f"{genes[i]};{genes[j]}" for i, j in zip(a, b, strict=True)]
        combos = pd.DataFrame(
            {
                "name": [f"COMBO{k}:{p.replace(';', '+')}" for k, p in enumerate(pairs)],
                "score": rng.normal(0, 0.1, n_combinations),
                "off_target": rng.uniform(0, 1, n_combinations),
                "p_value": rng.uniform(0, 1, n_combinations),
                "q_value": rng.uniform(0, 1, n_combinations),
                "best_cell_type": rng.choice(list(cell_types), n_combinations),
                "best_time": rng.choice(list(times), n_combinations),
                "kind": "combination",
                "genes": pairs,
                "dose": 1.0,
            }
        )
        targets = pd.concat([targets, combos], ignore_index=True)
    targets = targets.sort_values(["score", "name"], ascending=[False, True], kind="stable")
    targets["rank"] = np.arange(1, len(targets) + 1)
    extra = ["kind", "genes", "dose"]
    pd.concat([conform(targets, "rank"), targets[extra].reset_index(drop=True)], axis=1).to_parquet(
        out / "rank_targets.parquet", index=False
    )
    disease = targets[targets["kind"] == "knockout"].head(max(1, n_genes // 2)).copy()
    disease["p_value"] = np.nan  # as the pipeline writes them: no empirical p for inductions
    disease["q_value"] = np.nan
    conform(disease, "rank").to_parquet(out / "rank_disease_genes.parquet", index=False)
    drugs = targets[targets["kind"] == "knockout"].head(5).copy()
    drugs["name"] = [f"drug:DB{i:05d}" for i in range(len(drugs))]
    drugs["drug_name"] = [f"Drugamab {i}" for i in range(len(drugs))]
    drugs["kind"] = "drug"
    drugs["dose"] = 0.8
    pd.concat(
        [conform(drugs, "rank"), drugs[["drug_name", *extra]].reset_index(drop=True)], axis=1
    ).to_parquet(out / "rank_drugs.parquet", index=False)

    rows = []
    for donor in cases:
        own = ctx.sample(
            n=min(n_patient_targets * 3, len(ctx)), random_state=int(rng.integers(1e9))
        )
        own = own.sort_values("reversal_score", ascending=False).drop_duplicates("genes")
        own = own.head(n_patient_targets)
        rows.append(
            pd.DataFrame(
                {
                    "patient_id": donor,
                    "cell_type": own["cell_type"].to_numpy(),
                    "time": own["time"].to_numpy(),
                    "target": own["genes"].to_numpy(),
                    "reversal_score": own["reversal_score"].to_numpy(),
                    "rank": np.arange(1, len(own) + 1),
                    "p_value": np.linspace(0.01, 1.0, len(own)),
                    "q_value": np.linspace(0.05, 1.0, len(own)),
                }
            )
        )
    conform(pd.concat(rows, ignore_index=True), "patients").to_parquet(
        out / "patients.parquet", index=False
    )
    from omicstwin.tl.nulls import calibration_table

    calibration = pd.concat(
        [
            calibration_table(
                "targets",
                targets["p_value"].to_numpy(float),
                n_permutations=99,
                method="label_permutation",
            ),
            calibration_table(
                "patients", np.linspace(0.01, 1.0, 40), n_permutations=3, method="control_donors"
            ),
        ],
        ignore_index=True,
    )
    conform(calibration, "null_calibration").to_parquet(out / "null_calibration.parquet")
    if mnm:
        _fabricate_mnm(out, cell_types, times)
    run = {
        "schema_version": 1,
        "seed": seed,
        "cohort": f"fabricated: {len(cases)} case, {len(controls)} control donors",
        "config": {"case": "case", "control": "control", "seed": seed, "data": "fabricated"},
        "versions": {"omicstwin": "test"},
        "timings_s": {"twin": 0.1},
        "failures": {},
        "inputs": {},
        "tables": ["design", "perturbations", "rank_targets", "patients"],
    }
    (out / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True))
    return out


def _fabricate_mnm(out: Path, cell_types: tuple[str, ...], times: tuple[float, ...]) -> None:
    """Write a hand-made MNM (edges at the first two time points, none at the last) and the
    cell types' centrality in it (the last cell type, when there are four, has no edge)."""
    from omicstwin.tl.regulators import cell_type_centrality

    a, b, c = cell_types[:3]
    edges = pd.DataFrame(
        [
            (times[0], a, c, 2, "ETS1;STAT1"),
            (times[1], b, a, 1, "IRF1"),
            (times[1], c, b, 3, "JUN;MAF;RELA"),
        ],
        columns=list(SCHEMAS["mnm"]),
    )
    conform(edges, "mnm").to_parquet(out / "mnm.parquet", index=False)
    centrality = cell_type_centrality(edges, cell_types=list(cell_types))
    conform(centrality, "centrality").to_parquet(out / "centrality.parquet", index=False)


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    url = os.environ.get(PG_ENV)
    if not url:
        message = f'{PG_ENV} is not set (start a server with: eval "$(.ci/postgres.sh)")'
        if os.environ.get("OMICSTWIN_REQUIRE_PG") == "1":
            pytest.fail(message + " but OMICSTWIN_REQUIRE_PG=1")
        pytest.skip(message)
    server = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"omicstwin_t_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    with server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


def _fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'omicstwin.db'}"
        return
    base = request.getfixturevalue("pg_session_url")
    schema = f"s_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    # search_path puts every table, alembic_version included, in the test's own schema
    yield (
        sa.engine.make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, per test, on each backend."""
    yield from _fresh_url(request.param, request, tmp_path)


@pytest.fixture(params=BACKENDS, scope="module")
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database shared by a module's tests, on each backend."""
    yield from _fresh_url(request.param, request, tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fabricated run directory (read-only: copy it before changing it)."""
    return fabricate_run(tmp_path_factory.mktemp("run") / "study_a")
