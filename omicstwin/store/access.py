"""API keys, patient grants, the audit trail, and salted hashes of external record references.

Keys are ``otk_`` + 43 URL-safe characters from :mod:`secrets` (256 random bits). Only their
SHA-256 is stored: with that much entropy a fast unsalted hash cannot be inverted, and it lets
the service find a key by an indexed equality lookup. External record references (MRNs, FHIR ids)
have little entropy, so they get a random salt and a slow hash (scrypt) instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
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


def create_key(engine: Engine, *, name: str, role: str) -> str:
    """Create an API key and return it; only its hash is stored, so it is shown once.

    Raises
    ------
    AccessError
        Unknown role, invalid or already used name.
    """
    if role not in ROLES:
        raise AccessError(f"unknown role '{role}'; fix: use one of {', '.join(ROLES)}")
    check_id(name, "key name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    keys = TABLES["api_keys"]
    with engine.begin() as conn:
        if conn.execute(sa.select(keys.c.id).where(keys.c.name == name)).first():
            raise AccessError(f"a key named '{name}' already exists; fix: choose another --name")
        conn.execute(
            keys.insert().values(name=name, role=role, key_hash=hash_key(key), created_at=utcnow())
        )
    return key


def list_keys(engine: Engine) -> list[dict]:
    """Name, role, creation time and revocation of every key (never the key or its hash)."""
    keys = TABLES["api_keys"]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(keys.c.name, keys.c.role, keys.c.created_at, keys.c.revoked_at).order_by(
                keys.c.id
            )
        )
        return [dict(row._mapping) for row in rows]


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


def authenticate(conn: Connection, key: str) -> Principal | None:
    """Return the principal of a valid, unrevoked key, or None."""
    keys = TABLES["api_keys"]
    row = conn.execute(
        sa.select(keys.c.id, keys.c.name, keys.c.role).where(
            keys.c.key_hash == hash_key(key), keys.c.revoked_at.is_(None)
        )
    ).first()
    return Principal(row.id, row.name, row.role) if row else None


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
