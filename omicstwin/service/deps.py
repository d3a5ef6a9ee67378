"""What the routes and the fast lane share.

Keys (``KeyCache``, ``Auth``), the ``require`` dependency, the audit write, the JSON
serialiser, and the per-app ``Service`` that holds them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter
from sqlalchemy.engine import Engine
from starlette.types import Scope

from omicstwin.service import queries as q
from omicstwin.service.audit import AuditWriter
from omicstwin.service.errors import ApiError, unauthorized
from omicstwin.service.guard import AUDITED, FailureLimiter, client_address
from omicstwin.service.hotpath import HotReader, Rankings
from omicstwin.service.settings import Settings
from omicstwin.store import access
from omicstwin.store.access import Principal

try:  # optional: a faster JSON encoder for the hot endpoints (same bytes, see json_response)
    import orjson
except ImportError:  # pragma: no cover - exercised without the extra
    orjson = None

_bearer = HTTPBearer(auto_error=False, description="An API key: omicstwin keys create.")
_wallclock = time.time  # the clock expiries are compared with (tests move it)
_KEY_MEMO = "omicstwin.key"  # scope: this request's KeyResult


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class KeyResult:
    """What a presented key turned out to be (``status``: ok, unknown, revoked, expired, none).

    ``principal`` only when ok; ``key_name`` also for revoked and expired keys (for the audit).
    """

    status: str
    principal: Principal | None = None
    key_name: str | None = None
    expires: float | None = None  # POSIX time of the key's expiry (None: never)


NO_KEY = KeyResult("none")  # no Authorization header
_UNKNOWN = KeyResult("unknown")  # an unknown, malformed or oversized key


def _posix(value: Any) -> float | None:
    """Return a timestamp column as POSIX time (SQLite's raw driver returns text, in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _key_result(row: tuple) -> KeyResult:
    key_id, name, role, revoked_at, expires_at = row
    if revoked_at is not None:
        return KeyResult("revoked", None, name)
    # "expired" is decided per request (the entry may outlive the expiry in the cache)
    return KeyResult("ok", Principal(key_id, name, role), name, _posix(expires_at))


class KeyCache:
    """key hash -> what the key is, for a few seconds: saves a query per request under load.

    A hit costs a hash and a dict lookup on the event loop (no database, no thread); a miss
    is one indexed lookup on the worker's hot-path connection. Valid, revoked and expired keys
    are cached (a revocation takes effect within ``ttl``); an expiry is compared with the
    clock on every request, so it is honoured at its exact time. Unknown keys are not cached.
    A valid key's use is passed to ``touch`` at most every ``touch_every`` seconds.
    """

    def __init__(
        self,
        reader: HotReader,
        ttl: float,
        touch: Callable[[int, datetime], None] | None = None,
        touch_every: float = 60.0,
    ) -> None:
        self.reader, self.ttl = reader, ttl
        self.touch, self.touch_every = touch, touch_every
        self._items: dict[str, tuple[KeyResult, float]] = {}
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> KeyResult:
        """Return what ``key`` is now."""
        digest = access.hash_key(key)
        now = time.monotonic()
        hit = self._items.get(digest)
        if hit is not None and hit[1] > now:
            result = hit[0]
        else:
            result = self._load(digest, now)
        if result.status != "ok":
            return result
        if result.expires is not None and _wallclock() >= result.expires:
            return KeyResult("expired", None, result.key_name, result.expires)
        if self.touch is not None:
            key_id = result.principal.key_id
            if now - self._touched.get(key_id, -math.inf) >= self.touch_every:
                self._touched[key_id] = now
                self.touch(key_id, datetime.now(UTC))
        return result

    def _load(self, digest: str, now: float) -> KeyResult:
        rows = self.reader.run(lambda cur, sql: q.fetch(cur, sql["key"], key_hash=digest))
        result = _key_result(rows[0]) if rows else _UNKNOWN
        with self._lock:
            if result is _UNKNOWN:
                self._items.pop(digest, None)
            else:
                if len(self._items) > 10_000:
                    self._items.clear()
                self._items[digest] = (result, now + self.ttl)
        return result

    def lookup(self, key: str) -> Principal | None:
        """Return the principal of a valid key, else None."""
        return self.check(key).principal


class Auth:
    """The one place a request's key is checked (once per request) and failures are counted."""

    def __init__(self, keys: KeyCache, limiter: FailureLimiter) -> None:
        self.keys, self.limiter = keys, limiter

    def check(self, scope: Scope) -> KeyResult:
        """Return the request's key, as HTTPBearer reads it (first Authorization header)."""
        memo = scope.get(_KEY_MEMO)
        if memo is not None:
            return memo
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if header is None:
            result = NO_KEY
        else:
            scheme, credentials = get_authorization_scheme_param(header)
            if scheme.lower() == "bearer" and credentials and len(credentials) <= 256:
                result = self.keys.check(credentials)
            else:
                result = _UNKNOWN
            if result.status != "ok":
                self.limiter.failure(client_address(scope), result.status)
        scope[_KEY_MEMO] = result
        return result

    def principal(self, scope: Scope) -> Principal | None:
        """Return the principal of the request's valid key, else None."""
        return self.check(scope).principal


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(*roles: str) -> Callable[..., Any]:
    """Dependency: a valid key whose role is one of ``roles`` (401 / 403 otherwise).

    ``async`` so that FastAPI runs it on the event loop: no thread-pool hop per request.
    ``credentials`` documents the bearer scheme in OpenAPI; the key is read by ``Auth``.
    """

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = request.app.state.auth.principal(request.scope)
        if principal is None:
            raise unauthorized()
        if principal.role not in roles:
            raise ApiError(403, f"the role '{principal.role}' cannot read this resource")
        return principal

    return dependency


# ----------------------------------------------------------------------------- audit

KEY_OUTCOMES = {"revoked": "denied_revoked_key", "expired": "denied_expired_key"}


def audit_row(key: KeyResult, action: str, patient_id: str | None, outcome: str) -> dict:
    """Return an audit row: the key's name also for a revoked or expired key, never the key."""
    row = access.audit_values(
        principal=key.principal, action=action, patient_id=patient_id, outcome=outcome
    )
    row["key_name"] = key.key_name
    return row


# ----------------------------------------------------------------------------- service


@dataclass(slots=True)
class Service:
    """One app's engine, hot reader, audit writer and key checks (routes and lane share it)."""

    engine: Engine
    settings: Settings
    revision: str
    reader: HotReader
    auditor: AuditWriter
    keys: KeyCache
    limiter: FailureLimiter
    auth: Auth
    rankings: Rankings

    async def audit(
        self, scope: Scope, key: KeyResult, action: str, patient_id: str | None, outcome: str
    ) -> None:
        """Write (group-commit) a patient request's audit row; return once it is committed."""
        await self.auditor.write(audit_row(key, action, patient_id, outcome))
        scope[AUDITED] = True


# ----------------------------------------------------------------------------- JSON

_ADAPTERS: dict[Any, TypeAdapter] = {}


def json_response(body: dict[str, Any], model: Any) -> Response:
    """Serialise a body that matches ``model`` (FastAPI does not re-validate a Response).

    orjson writes byte for byte what FastAPI's pydantic serialisation of these models writes
    (compact, keys in field order, UTF-8, shortest float repr, NaN/inf as null) at a seventh of
    its cost; without orjson, pydantic serialises the validated body.
    """
    if orjson is not None:
        return Response(orjson.dumps(body), media_type="application/json")
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS.setdefault(model, TypeAdapter(model))
    return Response(adapter.dump_json(adapter.validate_python(body)), media_type="application/json")
