"""Failed-authentication rate limiting, and the guard of the patient routes.

``FailureLimiter``: per client address, more than ``max_failures`` failed authentications (a
presented key that is unknown, revoked, expired or malformed) within ``window`` seconds make
every further ``/api/v1`` request of that address (but ``/health``) a 429 with ``Retry-After``
for ``window`` seconds. Other addresses are not affected. The limit is per worker process (N
workers: up to N x the limit), and the address is the TCP peer's: behind a proxy, limit there.
Lock-outs are logged at warning level with the address and the count, never a key or its hash.

``PatientGuard``: every response of a patient route (``/api/v1/patients...``) carries
``Cache-Control: no-store``, and every request there leaves an audit row before its response
starts: the route (or the fast lane) writes it for the reads it answers; the guard writes it
for whatever else answers (422, 405, 429, unknown sub-paths, unexpected errors).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omicstwin._logging import logger

AUDITED = "omicstwin.audited"  # scope flag: this request's audit row is written
NO_STORE = (b"cache-control", b"no-store")
_MAX_ADDRESSES = 65_536


class FailureLimiter:
    """Counts failed authentications per client address; locks an address out for a while.

    Parameters
    ----------
    max_failures
        Failures allowed per window (0: no limit).
    window
        Seconds of the sliding window, and of the lock-out.
    """

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures, self.window = max_failures, window
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # address -> monotonic time the lock-out ends

    def retry_after(self, address: str) -> int:
        """Seconds the address must wait (0: not locked out)."""
        if not self._locked:
            return 0
        until = self._locked.get(address)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self._locked[address]
            self._failures.pop(address, None)
            return 0
        return max(1, math.ceil(left))

    def failure(self, address: str, reason: str) -> None:
        """Count one failed authentication of ``address`` (``reason``: unknown, revoked, ...)."""
        if self.max_failures <= 0:
            return
        now = time.monotonic()
        seen = self._failures.get(address)
        if seen is None:
            if len(self._failures) >= _MAX_ADDRESSES:
                self._forget(now)
            seen = self._failures[address] = deque()
        seen.append(now)
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) > self.max_failures and address not in self._locked:
            self._locked[address] = now + self.window
            logger.warning(
                "%d failed authentications (last: %s key) from %s within %g s: answering 429 "
                "to that address for %g s",
                len(seen),
                reason,
                address,
                self.window,
                self.window,
            )

    def _forget(self, now: float) -> None:
        stale = [a for a, s in self._failures.items() if not s or s[-1] <= now - self.window]
        for address in stale:
            del self._failures[address]
        if len(self._failures) >= _MAX_ADDRESSES:  # a flood of addresses: start over
            self._failures.clear()


def client_address(scope: Scope) -> str:
    """Return the TCP peer's address (``unknown`` when the server does not say)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


Responder = Callable[[int], Any]  # status -> ASGI response (a problem document)


class PatientGuard:
    """ASGI middleware: rate limit, ``Cache-Control: no-store`` and the complete audit trail.

    Parameters
    ----------
    app
        The wrapped application.
    prefix
        The API prefix (``/api/v1``): only its paths are rate limited (``/health`` never).
    limiter
        The failed-authentication limiter.
    audit_other
        ``await audit_other(scope, status)`` writes the audit row of a patient-route request
        that nothing else audited (raises if it cannot be written).
    responder
        Builds the problem response for a status (429, 500).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str,
        limiter: FailureLimiter,
        audit_other: Callable[[Scope, int], Awaitable[None]],
        responder: Callable[..., Any],
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.patients = prefix + "/patients"
        self.health = prefix + "/health"
        self.limiter = limiter
        self.audit_other = audit_other
        self.responder = responder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a locked-out address, else pass on (patient routes: audited, no-store)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        patient = path == self.patients or path.startswith(self.patients + "/")
        if path.startswith(self.prefix) and path != self.health:
            wait = self.limiter.retry_after(client_address(scope))
            if wait:
                await self._refuse(scope, receive, send, wait, patient)
                return
        if not patient:
            await self.app(scope, receive, send)
            return
        scope[AUDITED] = False
        started = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if not scope.get(AUDITED):
                    scope[AUDITED] = True
                    await self.audit_other(scope, message["status"])
                message = {**message, "headers": [*message.get("headers", ()), NO_STORE]}
                started = True
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        except Exception as exc:
            if started:
                raise
            # Answered here (not by the server error middleware) so that the 500 is audited
            # and carries no-store too; logged like every unexpected error: type and route only.
            route = scope.get("route")
            logger.error(
                "unexpected %s in %s", type(exc).__name__, getattr(route, "path", "unknown route")
            )
            response = self.responder(
                500, "internal error; the administrator can find it in the server log"
            )
            try:
                await response(scope, receive, guarded)
            except Exception as again:  # the audit row itself cannot be written
                logger.error(
                    "cannot write the audit row of a failed request (%s)", type(again).__name__
                )
                if not started:
                    response.headers.append("cache-control", "no-store")
                    await response(scope, receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, wait: int, patient: bool
    ) -> None:
        response = self.responder(
            429,
            f"too many failed authentications from this address; retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )
        if patient:
            response.headers.append("cache-control", "no-store")
            await self.audit_other(scope, 429)
        await response(scope, receive, send)
