"""Every parameter's bounds and defaults, and every endpoint's roles, declared once.

The FastAPI route signatures are built from these declarations (``Limit``, ``Offset``,
``StudyId``, ... and ``Endpoint.limit`` defaults), and the fast lane parses its requests with
the same declarations (``IntRange.parse``, ``FloatRange.parse``, ``Text.valid``,
``Endpoint.roles``), so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Path, Query

from omicstwin.store.db import ID_PATTERN

PREFIX = "/api/v1"
HOT_MAX_OFFSET = 10_000  # deeper pages walk too much of an index to run on the event loop
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # printable: NUL bytes would break PostgreSQL queries
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
OUTCOMES = (
    "allowed",
    "denied",
    "not_found",
    "unauthenticated",
    "denied_revoked_key",
    "denied_expired_key",
    "invalid_request",
    "rate_limited",
    "method_not_allowed",
    "error",
)
"""Audit outcomes: the read was answered, denied by role or grant, the record does not exist,
no valid key (none, unknown, malformed), a revoked or an expired key (with its name), invalid
parameters (422), the address was rate limited (429), another method than GET, a server error."""

_UINT_RE = re.compile(r"[0-9]{1,7}")  # the canonical integers the fast lane takes
_DECIMAL_RE = re.compile(r"-?[0-9]{1,10}(?:\.[0-9]{1,17})?")  # and its canonical decimals


# ----------------------------------------------------------------------------- bounds


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer parameter's inclusive bounds."""

    low: int
    high: int

    def parse(self, raw: str | None, default: int) -> int | None:
        """Parse a canonical value (digits only) within bounds; None: leave it to FastAPI."""
        if raw is None:
            return default
        if not _UINT_RE.fullmatch(raw):
            return None
        number = int(raw)
        return number if self.low <= number <= self.high else None


@dataclass(frozen=True, slots=True)
class FloatRange:
    """A finite float parameter's inclusive bounds."""

    low: float
    high: float

    def parse(self, raw: str) -> float | None:
        """Parse a plain decimal within bounds; None: leave it to FastAPI."""
        if not _DECIMAL_RE.fullmatch(raw):
            return None
        number = float(raw)
        return number if self.low <= number <= self.high else None


@dataclass(frozen=True, slots=True)
class Text:
    """A string parameter's pattern (anchored) and maximum length."""

    pattern: str
    max_length: int
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.pattern))

    def valid(self, value: str) -> bool:
        """Whether FastAPI would accept ``value``."""
        return len(value) <= self.max_length and self._re.fullmatch(value) is not None


LIMIT = IntRange(1, 500)
OFFSET = IntRange(0, 1_000_000)
TIME = FloatRange(-1e9, 1e9)
MIN_SCORE = FloatRange(-1e6, 1e6)
MAX_Q = FloatRange(0.0, 1.0)
ID = Text(ID_PATTERN, 128)  # study ids, patient pseudonyms, key names
CELL_TYPE = Text(TEXT_PATTERN, 128)
SYMBOL = Text(SYMBOL_PATTERN, 64)


# ----------------------------------------------------------------------------- roles

STUDY_ROLES = ("admin", "analyst")
ADMIN_ROLES = ("admin",)
ALL_ROLES = ("admin", "analyst", "clinician")
GRANT_EXEMPT = ("admin",)  # roles that read every patient record without a grant


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint's allowed roles, default page size and audit action (patient routes)."""

    roles: tuple[str, ...]
    limit: int = 50
    action: str | None = None


STUDIES = Endpoint(STUDY_ROLES)
STUDY = Endpoint(STUDY_ROLES)
TARGETS = Endpoint(STUDY_ROLES)
DISEASE_GENES = Endpoint(STUDY_ROLES)
DRUGS = Endpoint(STUDY_ROLES)
GENE = Endpoint(STUDY_ROLES, limit=100)
MNM = Endpoint(STUDY_ROLES, limit=LIMIT.high)  # edges per page: a study's MNM is small
PATIENT = Endpoint(ALL_ROLES, action="patient.record")  # + a grant, unless GRANT_EXEMPT
PATIENT_TARGETS = Endpoint(ALL_ROLES, action="patient.targets")
AUDIT = Endpoint(ADMIN_ROLES, limit=100)
GRANTS = Endpoint(ADMIN_ROLES, limit=100)


# ----------------------------------------------------------------------------- FastAPI

StudyId = Annotated[
    str,
    Path(
        pattern=ID.pattern, max_length=ID.max_length, examples=["sar_2022"], description="Study id."
    ),
]
PatientId = Annotated[
    str,
    Path(
        pattern=ID.pattern,
        max_length=ID.max_length,
        examples=["P01"],
        description="Patient pseudonym.",
    ),
]
Symbol = Annotated[
    str,
    Path(
        pattern=SYMBOL.pattern, max_length=SYMBOL.max_length, examples=["ETS1"], description="Gene."
    ),
]
Limit = Annotated[
    int,
    Query(ge=LIMIT.low, le=LIMIT.high, description=f"Rows per page ({LIMIT.low}..{LIMIT.high})."),
]
Offset = Annotated[int, Query(ge=OFFSET.low, le=OFFSET.high, description="Rows to skip (0..1e6).")]
MinScore = Annotated[
    float | None,
    Query(
        ge=MIN_SCORE.low,
        le=MIN_SCORE.high,
        allow_inf_nan=False,
        description="Keep rows with score >= this.",
    ),
]
MaxQ = Annotated[
    float | None,
    Query(
        ge=MAX_Q.low,
        le=MAX_Q.high,
        allow_inf_nan=False,
        description="Keep rows with q_value <= this.",
    ),
]
CellType = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=CELL_TYPE.max_length,
        pattern=CELL_TYPE.pattern,
        examples=["CD14 Mono"],
        description="Rank within this cell type (per-context perturbation scores).",
    ),
]
Time = Annotated[
    float | None,
    Query(
        ge=TIME.low,
        le=TIME.high,
        allow_inf_nan=False,
        examples=[48.0],
        description="Rank within this time point (in the study's unit).",
    ),
]
MnmTime = Annotated[
    float | None,
    Query(
        ge=TIME.low,
        le=TIME.high,
        allow_inf_nan=False,
        examples=[48.0],
        description="Only the edges of this time point (in the study's unit).",
    ),
]
IdFilter = Annotated[
    str | None, Query(pattern=ID.pattern, max_length=ID.max_length, description="Filter.")
]
OutcomeFilter = Annotated[
    str | None, Query(pattern="^(" + "|".join(OUTCOMES) + ")$", description="Filter.")
]
GrantKeyName = Annotated[
    str | None,
    Query(
        pattern=ID.pattern,
        max_length=ID.max_length,
        examples=["dr-smith"],
        description="Only this key's grants.",
    ),
]
GrantPatient = Annotated[
    str | None,
    Query(
        pattern=ID.pattern,
        max_length=ID.max_length,
        examples=["P01"],
        description="Only grants on this patient record.",
    ),
]
