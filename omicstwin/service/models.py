"""Response models of the service (pydantic), with the examples shown in the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from omicstwin.scores import SCORES, get_score

T = TypeVar("T")


def score_description(table: str, column: str, lead: str = "") -> str:
    """OpenAPI description of a score field, from the registry (:mod:`omicstwin.scores`).

    Rank-only scores say so ("Rank only: its order means something, its differences do not");
    calibrated ones name their unit. See ``GET /api/v1/scores``.
    """
    score = get_score(table, column)
    better = {"higher": "higher is better", "lower": "lower is better"}.get(
        score.direction, "ranked by absolute value"
    )
    if score.kind == "rank_only":
        kind = "Rank only (its order means something, its differences do not)"
    else:
        kind = f"Calibrated, in {score.unit}"
    return f"{lead}{kind}; {better}: {score.meaning}. Registry: {table}.{column} (GET /scores)."


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = _example(
        {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "no study 'sar_2022'; see GET /api/v1/studies",
        }
    )
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        None, description="Validation errors (422 only): location, message, type."
    )


class Page(BaseModel, Generic[T]):
    """A page of a list: the rows and the total number of rows matching the query."""

    data: list[T]
    count: int = Field(description="Rows matching the filters, before limit/offset.")


class Health(BaseModel):
    """Liveness and the database schema revision."""

    model_config = _example({"status": "ok", "schema_revision": "0001"})
    status: str
    schema_revision: str


class StudySummary(BaseModel):
    """One published study in the list of studies."""

    model_config = _example(
        {
            "study_id": "sar_2022",
            "published_at": "2026-01-31T12:00:00Z",
            "cohort": "ok: 3000 cells x 150 genes; 6 cell types; 5 time points",
            "cell_types": ["B", "CD14 Mono"],
            "time_points": [0.0, 6.0],
            "n_patients": 7,
            "n_targets": 68,
        }
    )
    study_id: str
    published_at: datetime
    cohort: str | None
    cell_types: list[str]
    time_points: list[float]
    n_patients: int
    n_targets: int


class NullCalibration(BaseModel):
    """How one screen's p-values compare with chance (the run's null_calibration table)."""

    screen: str = Field(description="targets, drugs or patients.")
    method: str = Field(description="The null: label_permutation, control_donors or none.")
    n_tests: int
    n_permutations: int = Field(
        description="Relabellings (or control donors) behind each p; the smallest p is 1/(n+1)."
    )
    share_below_005: float | None = Field(
        description="Share of p < 0.05: about 0.05 when nothing differs; more is signal."
    )


class StudyDetail(StudySummary):
    """A study with its provenance (run.json) and table sizes."""

    content_hash: str = Field(description="SHA-256 of run.json and the published tables.")
    seed: int | None
    case_label: str | None
    control_label: str | None
    counts: dict[str, int]
    versions: dict[str, Any]
    config: dict[str, Any]
    timings_s: dict[str, Any]
    failures: dict[str, Any]
    null_calibration: list[NullCalibration] = Field(
        default_factory=list,
        description="Per screen, how the run's own p-values compare with chance (empty: the "
        "run wrote no null_calibration table).",
    )


class TargetRow(BaseModel):
    """A target: study-level (``level`` study, best context) or in one cell type x time."""

    model_config = _example(
        {
            "name": "KO:ETS1",
            "level": "study",
            "rank": 1,
            "score": 0.1087,
            "off_target": 0.3413,
            "p_value": 0.0007,
            "q_value": 0.0024,
            "cell_type": "B",
            "time": 48.0,
            "kind": "knockout",
            "genes": "ETS1",
            "dose": 1.0,
        }
    )
    name: str
    level: str = Field(description="study (rank_targets) or context (cell type x time).")
    rank: int
    score: float | None = Field(description=score_description("rank", "score", "Reversal. "))
    off_target: float | None = Field(description=score_description("rank", "off_target"))
    p_value: float | None
    q_value: float | None
    cell_type: str | None
    time: float | None
    kind: str | None
    genes: str | None
    dose: float | None


class DiseaseGeneRow(BaseModel):
    """A ranked disease gene (perturbation that induces the disease state)."""

    model_config = _example(
        {
            "name": "PPARD",
            "rank": 1,
            "score": 0.0406,
            "off_target": 0.1116,
            "p_value": None,
            "q_value": None,
            "cell_type": "CD14 Mono",
            "time": 48.0,
        }
    )
    name: str
    rank: int
    score: float | None = Field(description=score_description("rank", "score"))
    off_target: float | None = Field(description=score_description("rank", "off_target"))
    p_value: float | None
    q_value: float | None
    cell_type: str | None
    time: float | None


class DrugRow(DiseaseGeneRow):
    """A ranked drug (its targets perturbed together)."""

    model_config = _example(
        {
            "name": "drug:DB00421",
            "drug_name": "Spironolactone",
            "rank": 1,
            "score": 0.0366,
            "off_target": 0.1567,
            "p_value": 0.0005,
            "q_value": 0.0203,
            "cell_type": "CD14 Mono",
            "time": 12.0,
            "genes": "NR3C1",
            "dose": 0.8,
        }
    )
    drug_name: str | None
    genes: str | None
    dose: float | None


class MnmEdgeRow(BaseModel):
    """An edge of the multicellular network model: sender -> receiver at one time point."""

    time: float
    source_cell_type: str = Field(
        description="Sender: the regulators are up-regulated DEGs in this cell type."
    )
    target_cell_type: str = Field(
        description="Receiver: the regulators are predicted upstream regulators of its DEGs."
    )
    n_regulators: int = Field(description=score_description("mnm", "n_regulators"))
    regulators: list[str] = Field(description="The regulators behind the edge, sorted.")


class CentralityRow(BaseModel):
    """A cell type ranked by its centrality in the multicellular network model."""

    cell_type: str
    centrality: float | None = Field(description=score_description("centrality", "centrality"))
    rank: int


class MulticellularNetwork(BaseModel):
    """The study's multicellular network model (Li et al. 2022) and its cell-type centrality."""

    model_config = _example(
        {
            "study_id": "sar_2022",
            "time": 48.0,
            "edges": [
                {
                    "time": 48.0,
                    "source_cell_type": "CD14 Mono",
                    "target_cell_type": "B",
                    "n_regulators": 2,
                    "regulators": ["ETS1", "STAT1"],
                }
            ],
            "count": 1,
            "centrality": [
                {"cell_type": "CD14 Mono", "centrality": 1.0, "rank": 1},
                {"cell_type": "B", "centrality": 0.84, "rank": 2},
            ],
        }
    )
    study_id: str
    time: float | None = Field(description="The time point asked for; null: every time point.")
    edges: list[MnmEdgeRow] = Field(
        description="A page of edges, by time, sender and receiver (empty: no edge, e.g. no "
        "predicted regulator is up-regulated in another cell type)."
    )
    count: int = Field(description="Edges matching the time filter, before limit/offset.")
    centrality: list[CentralityRow] = Field(
        description="Every cell type of the study by eigenvector centrality of the MNM (edges "
        "summed over all time points, whatever the time filter); 0 for cell types without an "
        "edge. Empty for a study published before schema 0004."
    )


class GeneScore(BaseModel):
    """A score of one gene in one study: study-level target, context target or disease gene."""

    model_config = _example(
        {
            "study_id": "sar_2022",
            "source": "context_target",
            "name": "KO:ETS1",
            "rank": 3,
            "score": 0.1087,
            "q_value": 0.0024,
            "cell_type": "B",
            "time": 48.0,
        }
    )
    study_id: str
    source: str = Field(description="study_target, context_target or disease_gene.")
    name: str
    rank: int
    score: float | None = Field(description=score_description("rank", "score"))
    q_value: float | None
    cell_type: str | None
    time: float | None


class TimeState(BaseModel):
    """Cells and disease score of a patient at one time point."""

    time: float
    n_cells: int
    disease_score: float | None


class ContextState(BaseModel):
    """Cells and disease score of a patient in one cell type x time."""

    cell_type: str
    time: float
    n_cells: int
    disease_score: float | None = Field(
        description=score_description("patient_states", "disease_score")
    )
    disease_score_low: float | None = Field(
        None,
        description="Lower end of the 90% bootstrap interval of disease_score over the donor's "
        "cells (absent when the run wrote no interval).",
    )
    disease_score_high: float | None = Field(
        None, description="Upper end of the 90% bootstrap interval of disease_score."
    )


class StateSummary(BaseModel):
    """A patient's sampled state (disease scores when the run wrote patient_states)."""

    n_cells: int
    cell_types: list[str]
    time_points: list[float]
    mean_disease_score: float | None = None
    per_time: list[TimeState]
    contexts: list[ContextState]


class PatientRecord(BaseModel):
    """A patient twin record (pseudonymous)."""

    model_config = _example(
        {
            "patient_id": "P01",
            "study_id": "sar_2022",
            "arm": "case",
            "time_points": [0.0, 6.0, 12.0],
            "has_external_ref": True,
            "n_targets": 68,
            "state_summary": {
                "n_cells": 430,
                "cell_types": ["B"],
                "time_points": [0.0],
                "mean_disease_score": 0.42,
                "per_time": [{"time": 0.0, "n_cells": 430, "disease_score": 0.42}],
                "contexts": [
                    {
                        "cell_type": "B",
                        "time": 0.0,
                        "n_cells": 430,
                        "disease_score": 0.42,
                        "disease_score_low": 0.31,
                        "disease_score_high": 0.55,
                    }
                ],
            },
            "targets_href": "/api/v1/patients/P01/targets",
        }
    )
    patient_id: str
    study_id: str
    arm: str = Field(description="case or control (controls have no personalised ranking).")
    time_points: list[float]
    has_external_ref: bool = Field(
        description="Whether an external record reference is linked (stored only as a hash)."
    )
    n_targets: int
    state_summary: StateSummary
    targets_href: str


class Evidence(BaseModel):
    """The study-level evidence behind a personalised target."""

    study_id: str
    name: str | None = Field(description="The study-level target (rank_targets name).")
    rank: int | None
    score: float | None = Field(description=score_description("rank", "score"))
    q_value: float | None
    context_rank: int | None = Field(description="Rank in the patient's best cell type x time.")
    context_q_value: float | None
    href: str


class PatientTargetRow(BaseModel):
    """One target of a patient's personalised ranking."""

    model_config = _example(
        {
            "rank": 1,
            "target": "PAX6",
            "cell_type": "CD14 Mono",
            "time": 48.0,
            "reversal_score": 0.1042,
            "p_value": 0.25,
            "q_value": 0.5,
            "evidence": {
                "study_id": "sar_2022",
                "name": "KO:PAX6",
                "rank": 5,
                "score": 0.0883,
                "q_value": 0.0024,
                "context_rank": 5,
                "context_q_value": 0.0024,
                "href": "/api/v1/studies/sar_2022/targets?cell_type=CD14%20Mono&time=48.0",
            },
        }
    )
    rank: int
    target: str
    cell_type: str | None
    time: float | None
    reversal_score: float | None = Field(
        description=score_description("patients", "reversal_score")
    )
    p_value: float | None = Field(
        None,
        description="The patient's own p-value of this target (null: the control donors' "
        "screens; the smallest p is 1/(controls + 1)); null if published before schema 0003.",
    )
    q_value: float | None = Field(
        None, description="Benjamini-Hochberg q-value within the patient's screen."
    )
    evidence: Evidence | None


class AuditRow(BaseModel):
    """One audited read of patient data."""

    model_config = _example(
        {
            "id": 1,
            "at": "2026-01-31T12:00:00Z",
            "key_name": "dr-smith",
            "role": "clinician",
            "action": "patient.record",
            "patient_id": "P01",
            "outcome": "allowed",
        }
    )
    id: int | None = Field(
        description="Row id; null while the row waits in the SQLite audit journal (a publish "
        "held the write lock), until it is moved into the audit table."
    )
    at: datetime
    key_name: str | None = Field(
        description="The key's name (also for a revoked or expired key); null: no known key."
    )
    role: str | None
    action: str = Field(description="patient.record, patient.targets, or patient.other.")
    patient_id: str | None = Field(description="The patient id asked for; null if not a valid id.")
    outcome: str = Field(
        description="allowed, denied, not_found, unauthenticated (no or an unknown key), "
        "denied_revoked_key, denied_expired_key, invalid_request (422), rate_limited (429), "
        "method_not_allowed or error."
    )


class GrantRow(BaseModel):
    """One grant of a patient record to a key."""

    model_config = _example(
        {
            "key_name": "dr-smith",
            "role": "clinician",
            "patient_id": "P01",
            "study_id": "sar_2022",
            "created_at": "2026-01-31T12:00:00Z",
        }
    )
    key_name: str
    role: str
    patient_id: str
    study_id: str | None = Field(description="The study of the patient record.")
    created_at: datetime


class ScoreInfo(BaseModel):
    """One registered score column (omicstwin.scores)."""

    direction: str = Field(
        description="higher or lower (is better), or magnitude (ranked by absolute value)."
    )
    kind: str = Field(description="calibrated (interpretable units) or rank_only (order only).")
    unit: str = Field(description="Unit of a calibrated score; empty for rank-only scores.")
    meaning: str


class ScoreRegistry(BaseModel):
    """Every score column of every result table: how to read and how much to trust it."""

    model_config = _example(
        {
            "tables": {
                "rank": {
                    "score": {
                        "direction": "higher",
                        "kind": "rank_only",
                        "unit": "",
                        "meaning": SCORES["rank"]["score"].meaning,
                    },
                    "q_value": {
                        "direction": "lower",
                        "kind": "calibrated",
                        "unit": "false discovery rate",
                        "meaning": "Benjamini-Hochberg q-value",
                    },
                }
            }
        }
    )
    tables: dict[str, dict[str, ScoreInfo]] = Field(
        description="Table -> score column -> its declaration (rank tables: targets, disease "
        "genes, drugs share the registry table 'rank'; patient targets: 'patients')."
    )
