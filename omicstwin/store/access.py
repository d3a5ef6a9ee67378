"""API keys, patient grants, the audit trail, and salted hashes of external record references.

Keys are ``otk_`` + 43 URL-safe characters from :mod:`secrets` (256 random bits). Only their
SHA-256 is stored: with that much entropy a fast unsalted hash cannot be inverted, and it lets
the service find a key by an indexed equality lookup. External record references (MRNs, FHIR ids)
have little entropy, so they get a random salt and a slow hash (scrypt) instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from omicstwin.errors import OmicstwinError
from omicstwin.store.db import TABLES, check_id, utcnow

Role = Literal["admin", "analyst", "clinician"]
ROLES: tuple[str, ...] = ("admin", "analyst", "clinician")
KEY_PREFIX = "otk_"
# scrypt cost: ~20 ms per reference; enough to make a dictionary of MRNs expensive.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class AccessError(OmicstwinError, ValueError):
    """An unknown role, a duplicate or unknown key name, or an unknown patient."""


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid API key."""

    key_id: int
    name: str
    role: str


KeyStatus = Literal["ok", "unknown", "revoked", "expired"]


@dataclass(frozen=True)
class KeyCheck:
    """What :func:`check_key` found for a presented key.

    ``principal`` is set only when ``status == "ok"``; ``key_name`` and ``key_id`` name the key
    record for ``ok``, ``revoked`` and ``expired`` (for the audit) and are None for ``unknown``.
    """

    status: KeyStatus
    principal: Principal | None
    key_name: str | None
    key_id: int | None
    expires_at: datetime | None


def hash_key(key: str) -> str:
    """Return the stored form of an API key (hex SHA-256)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hash_external_ref(ref: str, *, salt: bytes | None = None) -> str:
    """Return a salted scrypt hash of an external record reference, as ``scrypt$n$r$p$salt$hash``.

    The reference itself is never stored; :func:`verify_external_ref` checks a candidate.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        ref.strip().encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_external_ref(stored: str, ref: str) -> bool:
    """Whether ``ref`` is the reference whose hash is ``stored``."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        candidate = hashlib.scrypt(
            ref.strip().encode("utf-8"),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)


_LIFETIME_RE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_LIFETIME_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_lifetime(text: str) -> timedelta:
    """Parse a key lifetime such as ``90d``, ``12h``, ``2w`` or ``30m`` (minutes).

    Raises
    ------
    AccessError
        Not a positive whole number followed by m, h, d or w.
    """
    match = _LIFETIME_RE.match(text or "")
    if not match or int(match.group(1)) <= 0:
        raise AccessError(
            f"invalid key lifetime '{text}'; fix: use a positive whole number and a unit, "
            "e.g. 90d, 12h, 2w or 30m (minutes)"
        )
    return timedelta(**{_LIFETIME_UNITS[match.group(2)]: int(match.group(1))})


def parse_expiry(text: str) -> datetime:
    """Parse an ISO 8601 expiry time (a time without zone is taken as UTC).

    Raises
    ------
    AccessError
        Not an ISO 8601 date or date-time.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except (AttributeError, ValueError):
        raise AccessError(
            f"invalid expiry time '{text}'; fix: use ISO 8601, e.g. 2027-03-31 or "
            "2027-03-31T18:00:00+00:00"
        ) from None
    return as_utc(value)


def as_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` timezone-aware in UTC (SQLite gives back naive UTC times)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_expiry(expires_at: datetime | None) -> datetime | None:
    expires_at = as_utc(expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise AccessError(
            f"the expiry time {expires_at:%Y-%m-%d %H:%M} UTC is in the past; fix: give a "
            "future time or a lifetime (--expires-in 90d)"
        )
    return expires_at


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(engine: Engine, *, name: str, role: str, expires_at: datetime | None = None) -> str:
    """Create an API key and return it; only its hash is stored, so it is shown once.

    Parameters
    ----------
    engine
        The database.
    name
        Unique name of the key (who holds it); a valid id.
    role
        ``admin``, ``analyst`` or ``clinician``.
    expires_at
        When the key stops working (None: never). A time without zone is taken as UTC.

    Raises
    ------
    AccessError
        Unknown role, invalid or already used name, expiry in the past.
    """
    if role not in ROLES:
        raise AccessError(f"unknown role '{role}'; fix: use one of {', '.join(ROLES)}")
    check_id(name, "key name")
    expires_at = _check_expiry(expires_at)
    key = _new_key()
    keys = TABLES["api_keys"]
    with engine.begin() as conn:
        if conn.execute(sa.select(keys.c.id).where(keys.c.name == name)).first():
            raise AccessError(f"a key named '{name}' already exists; fix: choose another --name")
        conn.execute(
            keys.insert().values(
                name=name,
                role=role,
                key_hash=hash_key(key),
                created_at=utcnow(),
                expires_at=expires_at,
            )
        )
    return key


def rotate_key(engine: Engine, name: str, *, expires_at: datetime | None = None) -> str:
    """Give the key ``name`` a new secret and return it; the old secret stops working at once.

    The key record (name, role, grants, audit trail) stays; ``expires_at``, when given,
    replaces the key's expiry.

    Raises
    ------
    AccessError
        No such key, a revoked key, an expired key without a new expiry, expiry in the past.
    """
    expires_at = _check_expiry(expires_at)
    keys = TABLES["api_keys"]
    key = _new_key()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(keys.c.id, keys.c.revoked_at, keys.c.expires_at).where(keys.c.name == name)
        ).first()
        if row is None:
            raise AccessError(f"no key named '{name}'; fix: see omicstwin keys list")
        if row.revoked_at is not None:
            raise AccessError(
                f"key '{name}' is revoked; fix: create a new key (omicstwin keys create)"
            )
        old_expiry = as_utc(row.expires_at)
        if expires_at is None and old_expiry is not None and old_expiry <= utcnow():
            raise AccessError(
                f"key '{name}' expired on {old_expiry:%Y-%m-%d %H:%M} UTC; fix: rotate it with "
                "a new lifetime (--expires-in 90d or --expires-at ISO)"
            )
        values = {"key_hash": hash_key(key)}
        if expires_at is not None:
            values["expires_at"] = expires_at
        conn.execute(keys.update().where(keys.c.id == row.id).values(**values))
    return key


def list_keys(engine: Engine) -> list[dict]:
    """Name, role, created, expires, last used and revoked of every key (never key or hash)."""
    keys = TABLES["api_keys"]
    times = ("created_at", "expires_at", "last_used_at", "revoked_at")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(keys.c.name, keys.c.role, *(keys.c[t] for t in times)).order_by(keys.c.id)
        )
        return [
            {k: as_utc(v) if k in times else v for k, v in row._mapping.items()} for row in rows
        ]


def revoke_key(engine: Engine, name: str) -> None:
    """Revoke a key by name (kept for the audit trail; it no longer authenticates)."""
    keys = TABLES["api_keys"]
    with engine.begin() as conn:
        done = conn.execute(
            keys.update()
            .where(keys.c.name == name, keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        if done.rowcount == 0:
            raise AccessError(f"no active key named '{name}'; fix: see omicstwin keys list")


def check_key(conn: Connection, key: str, *, now: datetime | None = None) -> KeyCheck:
    """Look up a presented key: ``ok`` (with its principal), ``unknown``, ``revoked``, ``expired``.

    Parameters
    ----------
    conn
        A connection to the database.
    key
        The key as presented by the caller.
    now
        The time to check the expiry against (default: now, UTC).
    """
    keys = TABLES["api_keys"]
    row = conn.execute(
        sa.select(keys.c.id, keys.c.name, keys.c.role, keys.c.revoked_at, keys.c.expires_at).where(
            keys.c.key_hash == hash_key(key)
        )
    ).first()
    if row is None:
        return KeyCheck("unknown", None, None, None, None)
    expires_at = as_utc(row.expires_at)
    if row.revoked_at is not None:
        return KeyCheck("revoked", None, row.name, row.id, expires_at)
    now = as_utc(now) if now is not None else utcnow()
    if expires_at is not None and now >= expires_at:
        return KeyCheck("expired", None, row.name, row.id, expires_at)
    return KeyCheck("ok", Principal(row.id, row.name, row.role), row.name, row.id, expires_at)


def touch_key(conn: Connection, key_id: int, at: datetime) -> None:
    """Record that the key ``key_id`` was used at ``at`` (never moves ``last_used_at`` back).

    The caller commits. The service's database role needs only ``UPDATE (last_used_at)`` on
    ``api_keys`` for this.
    """
    keys = TABLES["api_keys"]
    conn.execute(
        keys.update()
        .where(
            keys.c.id == key_id,
            sa.or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < at),
        )
        .values(last_used_at=at)
    )


def authenticate(conn: Connection, key: str) -> Principal | None:
    """Return the principal of a valid (known, unrevoked, unexpired) key, or None."""
    return check_key(conn, key).principal


def add_grant(engine: Engine, *, key_name: str, patient_id: str) -> bool:
    """Let the key ``key_name`` read the record of ``patient_id``; False if already granted.

    Raises
    ------
    AccessError
        Unknown key name or patient id.
    """
    keys, patients, grants = TABLES["api_keys"], TABLES["patients"], TABLES["grants"]
    with engine.begin() as conn:
        key_id = conn.execute(sa.select(keys.c.id).where(keys.c.name == key_name)).scalar()
        if key_id is None:
            raise AccessError(f"no key named '{key_name}'; fix: see omicstwin keys list")
        known = conn.execute(
            sa.select(patients.c.patient_id).where(patients.c.patient_id == patient_id)
        ).first()
        if known is None:
            raise AccessError(
                "no patient record with that id; fix: check the id (patient ids come from the "
                "published study or from omicstwin patients import)"
            )
        exists = conn.execute(
            sa.select(grants.c.key_id).where(
                grants.c.key_id == key_id, grants.c.patient_id == patient_id
            )
        ).first()
        if exists:
            return False
        conn.execute(
            grants.insert().values(key_id=key_id, patient_id=patient_id, created_at=utcnow())
        )
    return True


def remove_grant(engine: Engine, *, key_name: str, patient_id: str) -> None:
    """Withdraw the grant of ``patient_id`` to the key ``key_name``.

    Raises
    ------
    AccessError
        Unknown key name, or the key holds no grant on that patient.
    """
    keys, grants = TABLES["api_keys"], TABLES["grants"]
    with engine.begin() as conn:
        key_id = conn.execute(sa.select(keys.c.id).where(keys.c.name == key_name)).scalar()
        if key_id is None:
            raise AccessError(f"no key named '{key_name}'; fix: see omicstwin keys list")
        done = conn.execute(
            grants.delete().where(grants.c.key_id == key_id, grants.c.patient_id == patient_id)
        )
        if done.rowcount == 0:
            raise AccessError(
                f"key '{key_name}' holds no grant on that patient; fix: see omicstwin grants "
                f"list --key-name {key_name}"
            )


def list_grants(
    conn_or_engine: Connection | Engine,
    *,
    key_name: str | None = None,
    patient_id: str | None = None,
) -> list[dict]:
    """Grants, optionally of one key and/or one patient, ordered by key name and patient id.

    Each row has ``key_name``, ``role``, ``patient_id``, ``study_id`` (the record's study) and
    ``created_at`` (UTC).
    """
    keys, grants, patients = TABLES["api_keys"], TABLES["grants"], TABLES["patients"]
    query = (
        sa.select(
            keys.c.name.label("key_name"),
            keys.c.role,
            grants.c.patient_id,
            patients.c.study_id,
            grants.c.created_at,
        )
        .select_from(
            grants.join(keys, keys.c.id == grants.c.key_id).outerjoin(
                patients, patients.c.patient_id == grants.c.patient_id
            )
        )
        .order_by(keys.c.name, grants.c.patient_id)
    )
    if key_name is not None:
        query = query.where(keys.c.name == key_name)
    if patient_id is not None:
        query = query.where(grants.c.patient_id == patient_id)

    def run(conn: Connection) -> list[dict]:
        return [
            {**row._mapping, "created_at": as_utc(row.created_at)} for row in conn.execute(query)
        ]

    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return run(conn)
    return run(conn_or_engine)


def is_granted(conn: Connection, key_id: int, patient_id: str) -> bool:
    """Whether the key ``key_id`` holds a grant on ``patient_id``."""
    grants = TABLES["grants"]
    return (
        conn.execute(
            sa.select(grants.c.key_id).where(
                grants.c.key_id == key_id, grants.c.patient_id == patient_id
            )
        ).first()
        is not None
    )


def audit_values(
    *, principal: Principal | None, action: str, patient_id: str | None, outcome: str
) -> dict:
    """Return the values of one audit row (timestamped now), for :func:`audit` or a batch."""
    return {
        "at": utcnow(),
        "key_name": principal.name if principal else None,
        "role": principal.role if principal else None,
        "action": action,
        "patient_id": patient_id,
        "outcome": outcome,
    }


def audit(
    conn: Connection,
    *,
    principal: Principal | None,
    action: str,
    patient_id: str | None,
    outcome: str,
) -> None:
    """Append one audit row (the caller commits, so the row and the read share a transaction)."""
    conn.execute(
        TABLES["audit"]
        .insert()
        .values(
            audit_values(principal=principal, action=action, patient_id=patient_id, outcome=outcome)
        )
    )
