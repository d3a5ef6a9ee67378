"""Load a run directory into the results database, and import donor -> patient record mappings.

Publishing is atomic and idempotent:

- everything a study owns is deleted and re-inserted in ONE transaction, so a failed publish
  (bad table, lost connection, id clash) leaves the previous version intact;
- the study's content hash (SHA-256 over ``run.json`` and the tables read) is stored; publishing
  the same content again changes nothing (not even ``published_at``), and a changed run under the
  same study id replaces the old one;
- the schema is upgraded to this package's head first (publish is the writer; the service only
  checks the revision).

Ids. The study id is ``--study-id``, else ``run.json``'s ``study_id`` or the config's
``study``, else the run directory's name, made URL-safe. A patient id is a pseudonym unique
across the whole database: the donor id of the data unless ``omicstwin patients import`` mapped
that donor to another pseudonym. A donor id that already names a patient of another study is
refused with a message that says how to map it (mappings may be imported before the study is
published).

Records and grants. A grant is bound to its patient record (foreign key, cascade): a re-publish
that drops a donor, or deleting the study, deletes the record and its grants, and *retires* its
pseudonym (table ``retired_pseudonyms``). A later publish of any study that would create a
record under a retired pseudonym is refused, unless a mapping row of ``patients import`` names
that pseudonym explicitly (deliberate reuse; the old grants are gone either way). Records that
stay (same donor, same pseudonym) keep their grants across a re-publish.

Checks and locking. Every table is checked against its declared schema (types, required values,
donor ids) before the database is touched; the checks against the database and the writes run
under the writer lock (:func:`omicstwin.store.db.writer_transaction`), so two concurrent
publishes are serialised: the second one waits and then finds the first one's result.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from omicstwin._logging import logger
from omicstwin.errors import OmicstwinError
from omicstwin.schemas import SCHEMAS
from omicstwin.scores import sort_by_score
from omicstwin.store.access import as_utc, hash_external_ref
from omicstwin.store.db import (
    TABLES,
    DatabaseError,
    check_id,
    make_engine,
    upgrade_db,
    utcnow,
    writer_transaction,
)

SUPPORTED_RUN_SCHEMAS = (1,)
TABLES_READ = (
    "design",
    "perturbations",
    "rank_targets",
    "rank_disease_genes",
    "rank_drugs",
    "patients",
    "patient_states",
    "null_calibration",
    "mnm",
    "centrality",
)
_CHUNK = 50_000  # rows per SQLite executemany call


class PublishError(OmicstwinError, ValueError):
    """A run directory cannot be published (missing or malformed files, id clashes)."""


class TableContentError(PublishError):
    """A run table holds values of the wrong type, missing required values, or bad donor ids."""


class RetiredPseudonymError(PublishError):
    """A publish would give a retired pseudonym (a deleted record's id) to a new record."""


class PatientImportError(OmicstwinError, ValueError):
    """A patient mapping file is malformed or clashes with existing records."""


@dataclass
class PublishResult:
    """What a publish did."""

    study_id: str
    status: str  # published / replaced / unchanged
    content_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def one_line(self) -> str:
        """Summarise for the CLI."""
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        detail = f"{counts}; " if counts else "same content as the database holds; "
        return f"study '{self.study_id}' {self.status} ({detail}{self.seconds:.2f} s)"


# ----------------------------------------------------------------------------- reading


def default_study_id(run_dir: Path, run_json: dict[str, Any]) -> str:
    """Study id from ``run.json`` (``study_id`` or the config's ``study``), else the folder name."""
    config = run_json.get("config") or {}
    raw = run_json.get("study_id") or (config.get("study") if isinstance(config, dict) else None)
    raw = str(raw or run_dir.resolve().name)
    cleaned = re.sub(r"[^A-Za-z0-9._:-]+", "-", raw).strip("-._:")[:128]
    return cleaned or "study"


# run.json keys that change on every run, even when nothing was recomputed (a re-run that
# reused every stage has new timings and a new finish time but the same results)
_VOLATILE_RUN_KEYS = ("timings_s", "cached_stages", "finished")


def content_hash(run_dir: Path) -> str:
    """SHA-256 over ``run.json`` (without its per-run timings) and the tables publish reads."""
    digest = hashlib.sha256()
    for name in ("run.json", *(f"{t}.parquet" for t in TABLES_READ)):
        path = run_dir / name
        if not path.exists():
            continue
        digest.update(name.encode() + b"\0")
        if name == "run.json":
            try:
                run = json.loads(path.read_text())
            except (OSError, ValueError):  # unreadable: hash the bytes, _read_run will complain
                digest.update(path.read_bytes())
                continue
            if isinstance(run, dict):
                run = {k: v for k, v in run.items() if k not in _VOLATILE_RUN_KEYS}
            digest.update(json.dumps(run, sort_keys=True, default=str).encode())
            continue
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    if not run_dir.is_dir():
        raise PublishError(
            f"run directory '{run_dir}' does not exist; fix: pass the --out folder of omicstwin run"
        )
    path = run_dir / "run.json"
    try:
        run_json = json.loads(path.read_text())
    except FileNotFoundError:
        raise PublishError(
            f"'{run_dir}' has no run.json; fix: pass a run directory written by omicstwin run"
        ) from None
    except (OSError, ValueError) as exc:
        raise PublishError(f"cannot read '{path}' ({exc}); fix: rerun omicstwin run") from None
    version = run_json.get("schema_version")
    if version not in SUPPORTED_RUN_SCHEMAS:
        raise PublishError(
            f"'{path}' has schema_version {version!r}, this omicstwin reads "
            f"{list(SUPPORTED_RUN_SCHEMAS)}; fix: rerun the study with this omicstwin version"
        )
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES_READ:
        file = run_dir / f"{name}.parquet"
        if file.exists():
            try:
                tables[name] = pd.read_parquet(file)
            except Exception as exc:  # pyarrow raises many types for a corrupt file
                raise PublishError(
                    f"cannot read '{file}' ({type(exc).__name__}: {exc}); fix: rerun the study "
                    "(omicstwin run) to rewrite it"
                ) from None
    for name in ("design", "rank_targets"):
        if name not in tables:
            raise PublishError(
                f"'{run_dir}' lacks {name}.parquet; fix: rerun omicstwin run so that the twin "
                "stages write it"
            )
    _require(tables, "design", ["condition", "donor", "time", "cell_type", "n_cells"])
    rank_cols = ["name", "rank", "score", "off_target", "p_value", "q_value"]
    _require(tables, "rank_targets", [*rank_cols, "best_cell_type", "best_time"])
    _require(tables, "rank_disease_genes", rank_cols)
    _require(tables, "rank_drugs", rank_cols)
    _require(
        tables,
        "perturbations",
        ["perturbation_id", "cell_type", "time", "reversal_score", "off_target", "q_value"],
    )
    _require(tables, "patients", ["patient_id", "target", "rank"])
    _require(tables, "patient_states", ["patient_id", "cell_type", "time"])
    _require(tables, "mnm", list(SCHEMAS["mnm"]))
    _require(tables, "centrality", list(SCHEMAS["centrality"]))
    for name, frame in tables.items():
        _check_table(name, frame)
    return run_json, tables


def _require(tables: dict[str, pd.DataFrame], name: str, columns: list[str]) -> None:
    if name not in tables:
        return
    missing = [c for c in columns if c not in tables[name].columns]
    if missing:
        raise PublishError(
            f"table '{name}' lacks columns {missing}; fix: rerun the study with this omicstwin "
            "version (omicstwin run)"
        )


# ----------------------------------------------------------------------------- checking

_EXTRA = {"kind": "string", "genes": "string", "dose": "float64"}
COLUMN_TYPES: dict[str, dict[str, str]] = {
    "design": {
        "condition": "string",
        "donor": "string",
        "time": "float64",
        "cell_type": "string",
        "n_cells": "int64",
    },
    "perturbations": SCHEMAS["perturbations"],
    "rank_targets": SCHEMAS["rank"] | _EXTRA,
    "rank_disease_genes": SCHEMAS["rank"],
    "rank_drugs": SCHEMAS["rank"] | _EXTRA | {"drug_name": "string"},
    "patients": SCHEMAS["patients"],
    "patient_states": SCHEMAS["patient_states"],
    "mnm": SCHEMAS["mnm"],
    "centrality": SCHEMAS["centrality"],
}
"""The dtype of every column publish reads (the declared schemas of ``omicstwin.schemas``)."""

REQUIRED_VALUES: dict[str, tuple[str, ...]] = {
    "design": ("donor", "cell_type"),
    "perturbations": ("perturbation_id", "cell_type", "time"),
    "rank_targets": ("name", "rank"),
    "rank_disease_genes": ("name", "rank"),
    "rank_drugs": ("name", "rank"),
    "patients": ("patient_id", "target", "rank"),
    "patient_states": ("patient_id", "cell_type", "time"),
    "mnm": tuple(SCHEMAS["mnm"]),
    "centrality": ("cell_type", "rank"),
}
"""Columns that must not hold missing values (they become NOT NULL database columns)."""

DONOR_COLUMNS = {"design": "donor", "patients": "patient_id", "patient_states": "patient_id"}
_INT32 = 2**31  # integer result columns are 32-bit INTEGER in the database


def _bad_value(table: str, column: str, row: int, value: Any, problem: str) -> TableContentError:
    return TableContentError(
        f"table '{table}' column '{column}' {problem} (row {row}: {value!r}); fix: rerun the "
        f"study with this omicstwin (omicstwin run) or correct {table}.parquet; nothing was "
        "published"
    )


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_numeric(table: str, column: str, col: pd.Series, dtype: str) -> None:
    """Raise unless ``col`` holds numbers of ``dtype`` (int64: whole numbers in 32 bits)."""
    kind = col.dtype.kind
    if kind == "b" or pd.api.types.is_bool_dtype(col):
        raise _bad_value(table, column, 0, col.iloc[0] if len(col) else None, "holds true/false")
    if kind not in "iuf":
        values = col.astype(object).to_numpy()
        is_number = np.array(
            [
                v is None
                or v is pd.NA
                or (
                    isinstance(v, int | float | np.integer | np.floating)
                    and not isinstance(v, bool)
                )
                for v in values
            ],
            dtype=bool,
        )
        if not is_number.all():
            # show a value that is not even a number in text form, when there is one
            parsed = pd.to_numeric(pd.Series(values[~is_number]), errors="coerce").isna()
            bad = np.flatnonzero(~is_number)
            i = int(bad[int(np.argmax(parsed.to_numpy()))] if parsed.any() else bad[0])
            what = "text" if isinstance(values[i], str) else type(values[i]).__name__
            raise _bad_value(table, column, i, values[i], f"must hold {dtype} numbers, not {what}")
    if dtype != "int64":
        return
    numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    present = ~np.isnan(numbers)
    bad = present & ((numbers != np.round(numbers)) | (np.abs(numbers) >= _INT32))
    if bad.any():
        i = _first(bad)
        raise _bad_value(
            table, column, i, col.iloc[i], "must hold whole numbers below 2^31 (int64 column)"
        )


def _check_table(name: str, frame: pd.DataFrame) -> None:
    """Check a run table's values against its declared schema before anything is written.

    Raises
    ------
    TableContentError
        Text (or booleans) in a numeric column, fractions in an integer column, a missing
        value in a required column, or a donor id that is empty, padded with whitespace or
        holds a line break.
    """
    types = COLUMN_TYPES.get(name, {})
    for column, dtype in types.items():
        if column in frame.columns and dtype in ("int64", "float64"):
            _check_numeric(name, column, frame[column], dtype)
    for column in REQUIRED_VALUES.get(name, ()):
        if column in frame.columns:
            missing = frame[column].isna().to_numpy(dtype=bool)
            if missing.any():
                i = _first(missing)
                what = "donor id" if DONOR_COLUMNS.get(name) == column else "value"
                raise _bad_value(name, column, i, None, f"has a missing {what}")
    column = DONOR_COLUMNS.get(name)
    if column in frame.columns:
        _check_donors(name, column, frame[column])


def _check_donors(table: str, column: str, col: pd.Series) -> None:
    """Donor ids: no surrounding whitespace, no line breaks or control characters, not empty."""
    values = col.astype(object).to_numpy()
    for value in pd.unique(values):  # donors repeat over many rows: check each id once
        text = str(value)
        if text and text == text.strip() and text.isprintable():
            continue
        i = next(k for k, v in enumerate(values) if v is value or v == value)
        raise _bad_value(
            table,
            column,
            i,
            value,
            "has a donor id that is empty, padded with whitespace or holds a line break",
        )


# ----------------------------------------------------------------------------- shaping


def _clean(value: Any) -> Any:
    """Python scalar for the DB driver: NaN/inf and pandas NA become NULL."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class _Rows:
    """Rows to insert: column names and one tuple of driver scalars per row."""

    columns: list[str]
    rows: list[tuple]

    def __len__(self) -> int:
        return len(self.rows)


def _column_values(col: pd.Series) -> list:
    """Return a column as driver scalars: NaN/inf and pandas NA become None (as :func:`_clean`)."""
    if pd.api.types.is_float_dtype(col):
        values = col.to_numpy(dtype="float64", na_value=np.nan)
        return [v if math.isfinite(v) else None for v in values.tolist()]
    if col.dtype.kind in "iub":  # numpy ints/bools: tolist() gives Python scalars, no NULLs
        return col.tolist()
    return [v if type(v) is str else _clean(v) for v in col.astype(object).tolist()]


def _records(frame: pd.DataFrame, columns: dict[str, str], **constant: Any) -> _Rows:
    """Rows of ``frame`` renamed by ``columns`` (target <- source), NULLs cleaned."""
    n = len(frame)
    values = [
        _column_values(frame[source]) if source in frame.columns else [None] * n
        for source in columns.values()
    ]
    values += [[value] * n for value in constant.values()]
    return _Rows([*columns, *constant], list(zip(*values, strict=True)) if values else [])


def _context_targets(perturbations: pd.DataFrame) -> pd.DataFrame:
    """Perturbation rows with their rank within each cell type x time (best reversal first)."""
    frame = sort_by_score(  # a missing score ranks last
        perturbations,
        "reversal_score",
        table="perturbations",
        within=["cell_type", "time"],
        tie_break=["perturbation_id"],
    ).copy()
    frame["context_rank"] = frame.groupby(["cell_type", "time"], sort=False).cumcount() + 1
    return frame


def _evidence(
    patients: pd.DataFrame, rank_targets: pd.DataFrame, contexts: pd.DataFrame | None
) -> pd.DataFrame:
    """Attach the study-level and context-level evidence of each personalised target (a gene)."""
    ranked = sort_by_score(rank_targets, "rank", table="rank")
    if "kind" in ranked.columns:
        single = ranked[ranked["kind"].astype("string") == "knockout"]
    else:
        single = ranked
    gene_col = "genes" if "genes" in single.columns else "name"
    study = single.drop_duplicates(gene_col)[[gene_col, "name", "rank", "score", "q_value"]]
    study = study.rename(
        columns={
            gene_col: "target",
            "name": "study_name",
            "rank": "study_rank",
            "score": "study_score",
            "q_value": "study_q_value",
        }
    )
    study["target"] = study["target"].astype("string")
    out = patients.copy()
    out["target"] = out["target"].astype("string")
    out = out.merge(study, on="target", how="left")
    if contexts is not None and {"cell_type", "time"} <= set(out.columns):
        ctx = contexts
        if "kind" in ctx.columns:
            ctx = ctx[ctx["kind"].astype("string") == "knockout"]
        gene = "genes" if "genes" in ctx.columns else "perturbation_id"
        ctx = ctx[[gene, "cell_type", "time", "context_rank", "q_value"]].rename(
            columns={gene: "target", "q_value": "context_q_value"}
        )
        ctx = ctx.drop_duplicates(["target", "cell_type", "time"])
        ctx["target"] = ctx["target"].astype("string")
        ctx["cell_type"] = ctx["cell_type"].astype("string")
        out["cell_type"] = out["cell_type"].astype("string")
        out = out.merge(ctx, on=["target", "cell_type", "time"], how="left")
    return out


def _weighted(scores: pd.Series, weights: pd.Series) -> float | None:
    # numpy on the arrays (pandas' sum/mean reduce the same NaN-free arrays the same way)
    s = scores.to_numpy(dtype="float64", na_value=np.nan)
    ok = ~np.isnan(s)
    if not ok.any():
        return None
    w = weights.to_numpy(dtype="float64", na_value=np.nan)[ok]
    s = s[ok]
    total = float(w.sum())
    value = float((s * w).sum() / total) if total > 0 else float(s.mean())
    return value if math.isfinite(value) else None


INTERVAL_COLUMNS = ("disease_score_low", "disease_score_high")


def _state_summary(states: pd.DataFrame) -> dict[str, Any]:
    """Cells, cell types, time points and (when known) the disease score per time point.

    Each context (cell type x time) also carries its 90% bootstrap interval
    (``disease_score_low`` / ``disease_score_high``) when ``patient_states`` has them; the
    per-time and overall means have none (an interval does not average).
    """
    if states.empty:
        return {"n_cells": 0, "cell_types": [], "time_points": [], "per_time": [], "contexts": []}
    states = states.sort_values(["time", "cell_type"], kind="stable")
    n_cells = states["n_cells"].fillna(0).astype("int64")
    per_time = []
    for t, group in states.groupby("time", sort=True):
        per_time.append(
            {
                "time": float(t),
                "n_cells": int(group["n_cells"].fillna(0).sum()),
                "disease_score": _weighted(group["disease_score"], group["n_cells"].fillna(0)),
            }
        )
    contexts = []
    for row in states.to_dict("records"):
        context = {
            "cell_type": str(row["cell_type"]),
            "time": float(row["time"]),
            "n_cells": int(row["n_cells"]) if pd.notna(row["n_cells"]) else 0,
            "disease_score": _clean(row["disease_score"]),
        }
        for bound in INTERVAL_COLUMNS:  # the 90% bootstrap interval, when the run wrote it
            if bound in row:
                context[bound] = _clean(row[bound])
        contexts.append(context)
    return {
        "n_cells": int(n_cells.sum()),
        "cell_types": sorted(states["cell_type"].astype(str).unique().tolist()),
        "time_points": sorted(float(t) for t in states["time"].unique()),
        "mean_disease_score": _weighted(states["disease_score"], states["n_cells"].fillna(0)),
        "per_time": per_time,
        "contexts": contexts,
    }


def null_calibration_summary(table: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per screen of ``null_calibration``: method, tests, permutations, share of p < 0.05.

    Stored in the study's run.json copy under ``null_calibration`` (the study detail reads it
    there); the per-bin histogram stays in the run directory.
    """
    if table is None or table.empty:
        return []
    out = []
    for screen, rows in table.groupby("screen", sort=False):
        first = rows.iloc[0]
        out.append(
            {
                "screen": str(screen),
                "method": str(first["method"]),
                "n_tests": int(first["n_tests"]),
                "n_permutations": int(first["n_permutations"]),
                "share_below_005": _clean(first["share_below_005"]),
            }
        )
    return out


def _arm(condition: str, case: str | None, control: str | None) -> str:
    if condition == case:
        return "case"
    if condition == control:
        return "control"
    return str(condition)


def _patient_rows(
    study_id: str,
    run_json: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    mapping: dict[str, tuple[str, str | None]],
) -> tuple[list[dict], pd.DataFrame]:
    """One record per donor, and the personalised targets keyed by donor."""
    config = run_json.get("config") or {}
    case, control = config.get("case"), config.get("control")
    design = tables["design"].copy()
    design["donor"] = design["donor"].astype(str)
    design["cell_type"] = design["cell_type"].astype(str)
    if "patient_states" in tables:
        states = tables["patient_states"].copy()
        states["donor"] = states["patient_id"].astype(str)
        states["cell_type"] = states["cell_type"].astype(str)
        if "n_cells" not in states.columns:
            states["n_cells"] = 0
        if "disease_score" not in states.columns:
            states["disease_score"] = np.nan
    else:
        states = design.assign(disease_score=np.nan)
    personal = tables.get("patients")
    if personal is None:
        personal = pd.DataFrame(columns=["patient_id", "target", "rank", "cell_type", "time"])
    personal = personal.copy()
    personal["donor"] = personal["patient_id"].astype(str)
    n_targets = personal.groupby("donor").size().to_dict()

    arms = design.groupby("donor")["condition"].first().astype(str).to_dict()
    if "patient_states" in tables and "arm" in tables["patient_states"].columns:
        arms.update(states.groupby("donor")["arm"].first().astype(str).to_dict())
    donors = sorted(set(arms) | set(personal["donor"].unique()) | set(states["donor"].unique()))
    records = []
    state_cols = ["cell_type", "time", "n_cells", "disease_score"]
    state_cols += [c for c in INTERVAL_COLUMNS if c in states.columns]
    states_of = {d: g[state_cols] for d, g in states.groupby("donor", sort=False)}
    times_of = {d: g.dropna() for d, g in design.groupby("donor", sort=False)["time"]}
    for donor in donors:
        patient_id, ref_hash = mapping.get(donor, (donor, None))
        try:
            check_id(patient_id, "patient id")
        except DatabaseError as exc:
            raise PublishError(
                f"donor {donor!r} of study '{study_id}' would become the patient id "
                f"{patient_id!r}, which is not a valid id ({str(exc).split('; fix')[0]}); fix: "
                "map the donor to a pseudonym with omicstwin patients import --db URL FILE.csv "
                "(columns study_id,donor,patient_id), then publish again"
            ) from None
        own_states = states_of.get(donor, states.iloc[:0][state_cols])
        summary = _state_summary(own_states)
        times = sorted({float(t) for t in times_of.get(donor, ())} | set(summary["time_points"]))
        arm = arms.get(donor)
        records.append(
            {
                "patient_id": patient_id,
                "study_id": study_id,
                "donor": donor,
                "arm": _arm(arm, case, control) if arm is not None else "case",
                "time_points": json.dumps(times),
                "external_ref_hash": ref_hash,
                "state_summary": json.dumps(summary, sort_keys=True),
                "n_targets": int(n_targets.get(donor, 0)),
            }
        )
    return records, personal


def _insert(conn: Connection, name: str, rows: _Rows | list[dict]) -> None:
    """Bulk-insert rows into a table in the connection's transaction.

    PostgreSQL: ``COPY ... FROM STDIN`` (psycopg); SQLite: one ``executemany`` of plain tuples
    on the driver cursor. Both skip SQLAlchemy's per-row parameter processing, which costs more
    than the insert itself (none of these columns needs a bind processor).
    """
    if not isinstance(rows, _Rows):
        columns = list(rows[0]) if rows else []
        rows = _Rows(columns, [tuple(r[c] for c in columns) for r in rows])
    if not rows.rows:
        return
    table = TABLES[name]
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in rows.columns)
    backend = conn.dialect.name
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if backend == "postgresql":
            with cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN") as copy:
                for row in rows.rows:
                    copy.write_row(row)
        elif backend == "sqlite":
            marks = ", ".join("?" * len(rows.columns))
            sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
            for start in range(0, len(rows.rows), _CHUNK):
                cursor.executemany(sql, rows.rows[start : start + _CHUNK])
        else:  # pragma: no cover - make_engine accepts only these two backends
            for start in range(0, len(rows.rows), _CHUNK):
                chunk = rows.rows[start : start + _CHUNK]
                conn.execute(
                    table.insert(), [dict(zip(rows.columns, r, strict=True)) for r in chunk]
                )
    finally:
        cursor.close()


# ----------------------------------------------------------------------------- publish


def _delete_study(conn: Connection, study_id: str) -> None:
    # Children first and explicitly: cheaper than relying on cascades, and portable.
    for name in (
        *("patient_targets", "patients", "context_targets", "targets", "disease_genes"),
        *("mnm_edges", "cell_type_centrality"),
    ):
        table = TABLES[name]
        conn.execute(table.delete().where(table.c.study_id == study_id))
    conn.execute(TABLES["drugs"].delete().where(TABLES["drugs"].c.study_id == study_id))
    conn.execute(TABLES["studies"].delete().where(TABLES["studies"].c.study_id == study_id))


def publish_run(
    run_dir: str | Path, db: str | Engine | None = None, *, study_id: str | None = None
) -> PublishResult:
    """Publish a run directory into the database (atomic, idempotent).

    Parameters
    ----------
    run_dir
        Output folder of ``omicstwin run`` (``run.json`` + parquet tables).
    db
        Database URL or engine (default ``sqlite:///omicstwin.db``).
    study_id
        Id of the study (default: see the module docstring).

    Returns
    -------
    PublishResult
        ``status`` is ``published`` (new), ``replaced`` (changed content) or ``unchanged``.

    Raises
    ------
    PublishError
        Missing or malformed run files, an invalid study id, or patient ids that already belong
        to another study. Subclasses: :class:`TableContentError` (a value of the wrong type, a
        missing required value, a bad donor id) and :class:`RetiredPseudonymError` (a record
        would take a retired pseudonym). The database is left as it was.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_json, tables = _read_run(run_dir)
    sid = check_id(study_id, "study id") if study_id else default_study_id(run_dir, run_json)
    digest = content_hash(run_dir)
    engine = db if isinstance(db, Engine) else make_engine(db)
    upgrade_db(engine)
    contexts = _context_targets(tables["perturbations"]) if "perturbations" in tables else None
    try:
        with writer_transaction(engine) as conn:
            return _publish_locked(conn, sid, run_json, tables, digest, contexts, started)
    except sa.exc.IntegrityError as exc:
        # Not expected (the checks run under the writer lock); say what happened plainly.
        raise PublishError(
            f"the database refused the rows of study '{sid}' ({_first_line(exc)}); nothing was "
            "published; fix: publish again, and if it recurs check that no other program writes "
            "into the omicstwin tables"
        ) from None


def _first_line(exc: sa.exc.DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _publish_locked(
    conn: Connection,
    sid: str,
    run_json: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    digest: str,
    contexts: pd.DataFrame | None,
    started: float,
) -> PublishResult:
    """Publish inside the writer transaction: compare, check, then replace the study."""
    studies = TABLES["studies"]
    old = conn.execute(sa.select(studies.c.content_hash).where(studies.c.study_id == sid)).scalar()
    if old == digest:
        logger.info("study %s unchanged (content hash %s)", sid, digest[:12])
        return PublishResult(sid, "unchanged", digest, {}, time.perf_counter() - started)
    mapping = _mapping(conn, sid)
    patients, personal = _patient_rows(sid, run_json, tables, mapping)
    _check_patient_clash(conn, sid, [p["patient_id"] for p in patients])
    kept_grants = _transition_records(conn, sid, patients, mapping)
    _delete_study(conn, sid)

    counts = {
        "targets": len(tables["rank_targets"]),
        "context_targets": 0 if contexts is None else len(contexts),
        "disease_genes": len(tables.get("rank_disease_genes", ())),
        "drugs": len(tables.get("rank_drugs", ())),
        "patients": len(patients),
        "cases": sum(p["arm"] == "case" for p in patients),
        "controls": sum(p["arm"] == "control" for p in patients),
        "patient_targets": len(personal),
        "mnm_edges": len(tables.get("mnm", ())),
        "cell_type_centrality": len(tables.get("centrality", ())),
    }
    calibration = null_calibration_summary(tables.get("null_calibration"))
    if calibration:  # stored beside run.json's own keys (no new column)
        run_json = {**run_json, "null_calibration": calibration}
    _insert_study(conn, sid, digest, run_json, tables["design"], counts)
    _insert_rankings(conn, sid, tables, contexts)
    _insert(conn, "patients", patients)
    if len(personal):
        _insert_patient_targets(conn, sid, personal, patients, tables["rank_targets"], contexts)
    if kept_grants:
        conn.execute(TABLES["grants"].insert(), kept_grants)
    status = "replaced" if old is not None else "published"
    seconds = time.perf_counter() - started
    logger.info("study %s %s in %.2f s", sid, status, seconds)
    return PublishResult(sid, status, digest, counts, seconds)


# database column -> run table column, per published ranking
_RANK_COLUMNS = {
    "name": "name",
    "rank": "rank",
    "score": "score",
    "off_target": "off_target",
    "p_value": "p_value",
    "q_value": "q_value",
    "cell_type": "best_cell_type",
    "time": "best_time",
}
_CONTEXT_TARGET_COLUMNS = {
    "name": "perturbation_id",
    "rank": "context_rank",
    "score": "reversal_score",
    "off_target": "off_target",
    "p_value": "p_value",
    "q_value": "q_value",
    "cell_type": "cell_type",
    "time": "time",
    "kind": "kind",
    "genes": "genes",
    "dose": "dose",
}
_PATIENT_TARGET_COLUMNS = {
    "patient_id": "patient_id",
    "rank": "rank",
    "target": "target",
    "cell_type": "cell_type",
    "time": "time",
    "reversal_score": "reversal_score",
    "p_value": "p_value",
    "q_value": "q_value",
    "study_name": "study_name",
    "study_rank": "study_rank",
    "study_score": "study_score",
    "study_q_value": "study_q_value",
    "context_rank": "context_rank",
    "context_q_value": "context_q_value",
}


def _insert_study(
    conn: Connection,
    sid: str,
    digest: str,
    run_json: dict[str, Any],
    design: pd.DataFrame,
    counts: dict[str, int],
) -> None:
    """Insert the study's own row: its hash, labels, axes, counts and the whole run.json.

    Parameters
    ----------
    conn
        The writer transaction.
    sid
        Study id.
    digest
        Content hash of the run directory.
    run_json
        The run's ``run.json``.
    design
        The run's design table (cell types and time points).
    counts
        Rows published per kind.
    """
    config = run_json.get("config") or {}
    seed = run_json.get("seed")
    conn.execute(
        TABLES["studies"]
        .insert()
        .values(
            study_id=sid,
            content_hash=digest,
            published_at=utcnow(),
            run_schema_version=int(run_json["schema_version"]),
            seed=int(seed) if isinstance(seed, int | float) else None,
            cohort=str(run_json.get("cohort")) if run_json.get("cohort") else None,
            case_label=config.get("case"),
            control_label=config.get("control"),
            cell_types=json.dumps(sorted(design["cell_type"].astype(str).unique().tolist())),
            time_points=json.dumps(sorted(float(t) for t in design["time"].dropna().unique())),
            counts=json.dumps(counts),
            run_json=json.dumps(run_json, sort_keys=True, default=str),
        )
    )


def _insert_rankings(
    conn: Connection, sid: str, tables: dict[str, pd.DataFrame], contexts: pd.DataFrame | None
) -> None:
    """Insert the study's rankings: targets, disease genes, drugs, context targets, the MNM.

    Parameters
    ----------
    conn
        The writer transaction.
    sid
        Study id.
    tables
        The run's tables (the optional rankings only when present).
    contexts
        Per-context targets (:func:`_context_targets`), or None.
    """
    _insert(
        conn,
        "targets",
        _records(
            tables["rank_targets"],
            _RANK_COLUMNS | {"kind": "kind", "genes": "genes", "dose": "dose"},
            study_id=sid,
        ),
    )
    if "rank_disease_genes" in tables:
        _insert(
            conn,
            "disease_genes",
            _records(tables["rank_disease_genes"], _RANK_COLUMNS, study_id=sid),
        )
    if "rank_drugs" in tables:
        _insert(
            conn,
            "drugs",
            _records(
                tables["rank_drugs"],
                _RANK_COLUMNS | {"drug_name": "drug_name", "genes": "genes", "dose": "dose"},
                study_id=sid,
            ),
        )
    if contexts is not None:
        _insert(
            conn,
            "context_targets",
            _records(contexts, _CONTEXT_TARGET_COLUMNS, study_id=sid),
        )
    # the multicellular network model and its centrality: study-level, no patient link
    for run_table, db_table in (("mnm", "mnm_edges"), ("centrality", "cell_type_centrality")):
        if run_table in tables:
            columns = {c: c for c in SCHEMAS[run_table]}
            _insert(conn, db_table, _records(tables[run_table], columns, study_id=sid))


def _insert_patient_targets(
    conn: Connection,
    sid: str,
    personal: pd.DataFrame,
    patients: list[dict],
    rank_targets: pd.DataFrame,
    contexts: pd.DataFrame | None,
) -> None:
    """Insert each patient's targets with the study- and context-level evidence beside them.

    Parameters
    ----------
    conn
        The writer transaction.
    sid
        Study id.
    personal
        Per-donor targets (:func:`_patient_rows`).
    patients
        The patient records just inserted (donor -> pseudonym).
    rank_targets
        The study's target ranking.
    contexts
        Per-context targets, or None.
    """
    linked = _evidence(personal, rank_targets, contexts)
    by_donor = {p["donor"]: p["patient_id"] for p in patients}
    linked["patient_id"] = linked["donor"].map(by_donor)
    _insert(conn, "patient_targets", _records(linked, _PATIENT_TARGET_COLUMNS, study_id=sid))


def _chunks(values: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _transition_records(
    conn: Connection,
    study_id: str,
    records: list[dict],
    mapping: dict[str, tuple[str, str | None]],
) -> list[dict]:
    """Retire the pseudonyms of records a re-publish drops; return the grants of those it keeps.

    A record stays when the same donor keeps the same pseudonym; its grants are re-inserted
    after the study's rows are replaced. Every other old record goes with its grants (foreign
    key cascade) and its pseudonym is retired. Writes nothing when it raises.

    Raises
    ------
    RetiredPseudonymError
        A new record would take a retired pseudonym (or one this publish retires) without a
        mapping row naming it.
    """
    patients, grants, retired = (
        TABLES["patients"],
        TABLES["grants"],
        TABLES["retired_pseudonyms"],
    )
    old = {
        r.patient_id: r.donor
        for r in conn.execute(
            sa.select(patients.c.patient_id, patients.c.donor).where(
                patients.c.study_id == study_id
            )
        )
    }
    new = {r["patient_id"]: r["donor"] for r in records}
    staying = sorted(pid for pid, donor in old.items() if new.get(pid) == donor)
    leaving = sorted(set(old) - set(staying))
    explicit = {pid for pid, _ in mapping.values()}
    candidates = sorted(pid for pid in new if pid not in explicit and pid not in staying)
    blocked = {}
    for chunk in _chunks(candidates):
        for r in conn.execute(sa.select(retired).where(retired.c.patient_id.in_(chunk))):
            blocked[r.patient_id] = (r.study_id, as_utc(r.retired_at))
    blocked |= {pid: (study_id, utcnow()) for pid in set(candidates) & set(leaving)}
    if blocked:
        pid = min(blocked)
        where, when = blocked[pid]
        of = f"of study '{where}' " if where else ""
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        raise RetiredPseudonymError(
            f"donor '{new[pid]}' of study '{study_id}' would get the patient id '{pid}'{more}, "
            f"retired when its record {of}was deleted on {when:%Y-%m-%d}: reusing it could "
            "pass that person's identity to someone else; fix: map the donor to a new "
            "pseudonym with omicstwin patients import --db URL FILE.csv (columns "
            f"study_id,donor,patient_id; a row naming '{pid}' itself reuses it deliberately), "
            "then publish again"
        )
    kept: list[dict] = []
    for chunk in _chunks(staying):
        kept += [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(grants.c.key_id, grants.c.patient_id, grants.c.created_at).where(
                    grants.c.patient_id.in_(chunk)
                )
            )
        ]
    _retire(conn, study_id, leaving, f"record dropped by a re-publish of study '{study_id}'")
    reused = sorted(set(new) & explicit)
    for chunk in _chunks(reused):  # deliberately reused: the pseudonym is live again
        conn.execute(retired.delete().where(retired.c.patient_id.in_(chunk)))
    return kept


def _retire(conn: Connection, study_id: str, patient_ids: list[str], reason: str) -> None:
    """Record ``patient_ids`` (records about to be deleted) as retired pseudonyms."""
    if not patient_ids:
        return
    retired = TABLES["retired_pseudonyms"]
    for chunk in _chunks(patient_ids):
        conn.execute(retired.delete().where(retired.c.patient_id.in_(chunk)))
    now = utcnow()
    conn.execute(
        retired.insert(),
        [
            {"patient_id": pid, "study_id": study_id, "retired_at": now, "reason": reason}
            for pid in patient_ids
        ],
    )
    logger.info("retired %d pseudonym(s) of study %s", len(patient_ids), study_id)


def delete_study(study_id: str, db: str | Engine | None = None) -> int:
    """Delete a published study with its patient records and their grants; retire its pseudonyms.

    Returns
    -------
    int
        The number of patient records deleted (their pseudonyms are retired).

    Raises
    ------
    PublishError
        No study with that id.
    """
    engine = db if isinstance(db, Engine) else make_engine(db)
    upgrade_db(engine)
    studies, patients = TABLES["studies"], TABLES["patients"]
    with writer_transaction(engine) as conn:
        if (
            conn.execute(
                sa.select(studies.c.study_id).where(studies.c.study_id == study_id)
            ).first()
            is None
        ):
            raise PublishError(
                f"no study {study_id!r} in the database; fix: check the id (GET /api/v1/studies "
                "lists them)"
            )
        pids = sorted(
            conn.execute(
                sa.select(patients.c.patient_id).where(patients.c.study_id == study_id)
            ).scalars()
        )
        _retire(conn, study_id, pids, f"study '{study_id}' deleted")
        _delete_study(conn, study_id)
    logger.info("study %s deleted (%d records)", study_id, len(pids))
    return len(pids)


def _mapping(conn: Connection, study_id: str) -> dict[str, tuple[str, str | None]]:
    mappings = TABLES["patient_mappings"]
    rows = conn.execute(
        sa.select(mappings.c.donor, mappings.c.patient_id, mappings.c.external_ref_hash).where(
            mappings.c.study_id == study_id
        )
    )
    return {r.donor: (r.patient_id, r.external_ref_hash) for r in rows}


def _check_patient_clash(conn: Connection, study_id: str, patient_ids: list[str]) -> None:
    patients = TABLES["patients"]
    clash: list[tuple[str, str]] = []
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start : start + 500]
        clash += [
            (r.patient_id, r.study_id)
            for r in conn.execute(
                sa.select(patients.c.patient_id, patients.c.study_id).where(
                    patients.c.patient_id.in_(chunk), patients.c.study_id != study_id
                )
            )
        ]
    duplicated = sorted({p for p in patient_ids if patient_ids.count(p) > 1})
    if clash or duplicated:
        others = sorted({s for _, s in clash})
        raise PublishError(
            f"{len(clash) + len(duplicated)} patient id(s) of study '{study_id}' are not unique "
            f"(already used by studies {others} or by two donors); fix: map these donors to "
            "distinct pseudonyms first with omicstwin patients import --db URL FILE.csv "
            "(columns study_id,donor,patient_id), then publish again"
        )


# ----------------------------------------------------------------------------- patients import


@dataclass
class ImportResult:
    """What a patients import did."""

    rows: int
    updated_records: int
    pending: int  # mappings stored for studies not (yet) published

    def one_line(self) -> str:
        """Summarise for the CLI."""
        return (
            f"imported {self.rows} mapping(s): {self.updated_records} patient record(s) updated, "
            f"{self.pending} kept for studies not yet published"
        )


def _read_mapping_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): v or "" for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PatientImportError(
            f"cannot read '{path}' ({exc}); fix: pass a UTF-8 CSV file"
        ) from None
    missing = [c for c in ("study_id", "donor") if c not in header]
    if missing:
        raise PatientImportError(
            f"'{path.name}' lacks columns {missing} (has {header}); fix: use the header "
            "study_id,donor,patient_id,external_ref (patient_id and external_ref optional)"
        )
    if "patient_id" not in header and "external_ref" not in header:
        raise PatientImportError(
            f"'{path.name}' maps nothing: it has neither a patient_id nor an external_ref column;"
            " fix: add one of them"
        )
    return rows


def import_patients(path: str | Path, db: str | Engine | None = None) -> ImportResult:
    """Import a donor -> patient record mapping (CSV) into the database, in one transaction.

    Columns: ``study_id``, ``donor`` (required), ``patient_id`` (pseudonym; blank keeps the
    donor id), ``external_ref`` (e.g. FHIR Patient id or MRN; stored only as a salted scrypt
    hash, blank keeps the stored one). Mappings are kept in their own table, so they apply to
    studies published later and survive re-publishing. Renaming a record also moves its grants.

    Raises
    ------
    PatientImportError
        Malformed file, invalid or duplicated pseudonyms, unknown donors of a published study,
        or a pseudonym already used by another patient. Nothing is changed then.
    """
    path = Path(path)
    rows = _read_mapping_csv(path)
    engine = db if isinstance(db, Engine) else make_engine(db)
    upgrade_db(engine)
    _check_mapping_rows(path, rows)
    with writer_transaction(engine) as conn:
        existing, published = _current_mappings(conn)
        final = _final_mappings(path, rows, existing, published)
        _check_unique_pseudonyms(path, final, existing, published)
        _rename_records(conn, final, published)
        updated, pending = _store_mappings(conn, final, published)
    logger.info("imported %d patient mapping(s)", len(rows))
    return ImportResult(len(rows), updated, pending)


def _check_mapping_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Check every row of a mapping file on its own, before the database is touched.

    Also strips ``external_ref`` in place (the reference is hashed, so stray spaces would make
    a different hash).

    Parameters
    ----------
    path
        The file (named in messages).
    rows
        Its rows (:func:`_read_mapping_csv`); line numbers start at 2, after the header.

    Raises
    ------
    PatientImportError
        An empty study_id or donor, an id with surrounding whitespace or a line break, a donor
        listed twice, or an invalid patient_id.
    """
    seen_pairs: set[tuple[str, str]] = set()
    for line, row in enumerate(rows, start=2):
        row["external_ref"] = (row.get("external_ref") or "").strip()
        if not row.get("study_id") or not row.get("donor"):
            raise PatientImportError(
                f"{path.name} line {line}: study_id and donor must not be empty; fix: fill them"
            )
        for column in ("study_id", "donor", "patient_id"):
            value = row.get(column) or ""
            if value != value.strip() or not value.isprintable():
                raise PatientImportError(
                    f"{path.name} line {line}: {column} {value!r} has surrounding whitespace or "
                    "a line break; fix: remove it (ids are compared exactly)"
                )
        pair = (row["study_id"], row["donor"])
        if pair in seen_pairs:
            raise PatientImportError(
                f"{path.name} line {line}: donor '{row['donor']}' of study '{row['study_id']}' "
                "appears twice; fix: keep one row per donor"
            )
        seen_pairs.add(pair)
        if row.get("patient_id"):
            try:
                check_id(row["patient_id"], "patient_id")
            except DatabaseError:
                raise PatientImportError(
                    f"{path.name} line {line}: invalid patient_id {row['patient_id']!r}; fix: use "
                    "1-128 characters from letters, digits and . _ : - (starting with a letter "
                    "or digit; no spaces or line breaks)"
                ) from None


def _current_mappings(
    conn: Connection,
) -> tuple[dict[tuple[str, str], tuple[str, str | None]], dict[tuple[str, str], str]]:
    """Read the stored mappings and the published records, keyed by (study, donor).

    Parameters
    ----------
    conn
        The writer transaction.

    Returns
    -------
    existing : dict
        ``(study_id, donor) -> (patient_id, external_ref_hash)`` of the mapping table.
    published : dict
        ``(study_id, donor) -> patient_id`` of the patient records.
    """
    mappings, patients = TABLES["patient_mappings"], TABLES["patients"]
    existing = {
        (r.study_id, r.donor): (r.patient_id, r.external_ref_hash)
        for r in conn.execute(sa.select(mappings))
    }
    published = {
        (r.study_id, r.donor): r.patient_id
        for r in conn.execute(
            sa.select(patients.c.study_id, patients.c.donor, patients.c.patient_id)
        )
    }
    return existing, published


def _final_mappings(
    path: Path,
    rows: list[dict[str, str]],
    existing: dict[tuple[str, str], tuple[str, str | None]],
    published: dict[tuple[str, str], str],
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Merge the file's rows into what is stored: blanks keep the stored pseudonym and hash.

    Parameters
    ----------
    path
        The file (named in messages).
    rows
        Its checked rows.
    existing, published
        The stored mappings and records (:func:`_current_mappings`).

    Returns
    -------
    dict
        ``(study_id, donor) -> (patient_id, external_ref_hash)`` per row of the file.

    Raises
    ------
    PatientImportError
        A row names a donor that a published study does not have.
    """
    studies = {sid for sid, _ in published}
    final: dict[tuple[str, str], tuple[str, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        key = (row["study_id"], row["donor"])
        if key[0] in studies and key not in published:
            raise PatientImportError(
                f"{path.name} line {line}: study '{key[0]}' has no donor '{key[1]}'; fix: "
                "check the donor id against the study's design"
            )
        old_pid, old_hash = existing.get(key, (published.get(key, key[1]), None))
        pid = row.get("patient_id") or old_pid
        ref = row.get("external_ref")
        final[key] = (pid, hash_external_ref(ref) if ref else old_hash)
    return final


def _check_unique_pseudonyms(
    path: Path,
    final: dict[tuple[str, str], tuple[str, str | None]],
    existing: dict[tuple[str, str], tuple[str, str | None]],
    published: dict[tuple[str, str], str],
) -> None:
    """Raise unless every pseudonym names one (study, donor) in the whole database afterwards.

    Parameters
    ----------
    path
        The file (named in messages).
    final
        The imported mappings (:func:`_final_mappings`).
    existing, published
        The stored mappings and records.

    Raises
    ------
    PatientImportError
        A pseudonym of the file is already used by another patient.
    """
    owners: dict[str, tuple[str, str]] = {}
    for key, pid in published.items():
        owners[pid] = key
    for key, (pid, _) in existing.items():
        owners.setdefault(pid, key)
    # the records the file maps give up their old pseudonyms (they may be swapped or reused)
    for key in final:
        old = published.get(key) or existing.get(key, (None,))[0]
        if old is not None and owners.get(old) == key:
            del owners[old]
    for key, (pid, _) in final.items():
        if pid in owners and owners[pid] != key:
            raise PatientImportError(
                f"{path.name}: patient id for donor '{key[1]}' of study '{key[0]}' is "
                "already used by another patient; fix: choose a distinct pseudonym"
            )
        owners[pid] = key


def _rename_records(
    conn: Connection,
    final: dict[tuple[str, str], tuple[str, str | None]],
    published: dict[tuple[str, str], str],
) -> None:
    """Give published records their new pseudonyms, which may no longer stay retired.

    Parameters
    ----------
    conn
        The writer transaction.
    final
        The imported mappings.
    published
        The records' current pseudonyms.
    """
    patients, retired = TABLES["patients"], TABLES["retired_pseudonyms"]
    # Two phases so that swapping pseudonyms between two records cannot collide midway.
    renames = [
        (key, published[key], pid)
        for key, (pid, _) in final.items()
        if key in published and published[key] != pid
    ]
    for i, (key, _, _) in enumerate(renames):
        _rename(conn, patients, key, f"~import~{i}")
    for key, _, new in renames:
        _rename(conn, patients, key, new)
    renamed_to = sorted(new for _, _, new in renames)
    for chunk in _chunks(renamed_to):  # deliberate reuse of a retired pseudonym
        conn.execute(retired.delete().where(retired.c.patient_id.in_(chunk)))


def _store_mappings(
    conn: Connection,
    final: dict[tuple[str, str], tuple[str, str | None]],
    published: dict[tuple[str, str], str],
) -> tuple[int, int]:
    """Replace the mapping rows of the file's donors, and the hashes of published records.

    Parameters
    ----------
    conn
        The writer transaction.
    final
        The imported mappings.
    published
        The published records (those get their external reference hash now).

    Returns
    -------
    updated : int
        Published records updated.
    pending : int
        Mappings kept for studies not (yet) published.
    """
    mappings, patients = TABLES["patient_mappings"], TABLES["patients"]
    updated = pending = 0
    for key in final:
        conn.execute(
            mappings.delete().where(mappings.c.study_id == key[0], mappings.c.donor == key[1])
        )
    for key, (pid, ref_hash) in final.items():
        conn.execute(
            mappings.insert().values(
                study_id=key[0], donor=key[1], patient_id=pid, external_ref_hash=ref_hash
            )
        )
        if key in published:
            conn.execute(
                patients.update()
                .where(patients.c.study_id == key[0], patients.c.donor == key[1])
                .values(external_ref_hash=ref_hash)
            )
            updated += 1
        else:
            pending += 1
    return updated, pending


def _rename(conn: Connection, patients: sa.Table, key: tuple[str, str], new: str) -> None:
    # ON UPDATE CASCADE carries the new id to patient_targets and grants (SQLite and PostgreSQL).
    conn.execute(
        patients.update()
        .where(patients.c.study_id == key[0], patients.c.donor == key[1])
        .values(patient_id=new)
    )
