"""Settings of the service, from environment variables (read once, when the app is built).

- ``OMICSTWIN_KEY_CACHE_SECONDS`` (10): how long a key lookup is cached; a revoked key stops
  working within this time (an expiry is honoured at its exact time).
- ``OMICSTWIN_AUTH_MAX_FAILURES`` (20): failed authentications (a presented key that is
  unknown, revoked, expired or malformed) one client address may make per window, per worker
  process; beyond that the address gets 429 with Retry-After (0: no limit).
- ``OMICSTWIN_AUTH_WINDOW_SECONDS`` (60): the window of that count, and the lock-out's length.
- ``OMICSTWIN_AUDIT_JOURNAL`` (1): SQLite; audit rows go to a durable journal file beside the
  database while a publish holds the write lock (0: wait for the lock instead).
- ``OMICSTWIN_AUDIT_LOCK_WAIT_MS`` (50): SQLite; how long an audit batch waits for the write
  lock before it goes to the journal.
- ``OMICSTWIN_KEY_TOUCH_SECONDS`` (60): a key's ``last_used_at`` is written at most this often
  (per worker process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from omicstwin.errors import OmicstwinError


class SettingsError(OmicstwinError, ValueError):
    """An environment variable of the service has an invalid value."""


@dataclass(frozen=True)
class Settings:
    """Knobs of the service (see the module docstring for the environment variables)."""

    key_cache_seconds: float = 10.0
    auth_max_failures: int = 20
    auth_window_seconds: float = 60.0
    audit_journal: bool = True
    audit_lock_wait_ms: int = 50
    key_touch_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read the ``OMICSTWIN_*`` variables (unset: the default).

        Raises
        ------
        SettingsError
            A variable is not a number, or is negative.
        """
        env = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            name = "OMICSTWIN_" + field.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(name, raw.strip(), field.type)
        return cls(**values)


def _parse(name: str, raw: str, kind: str) -> float | int | bool:
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean; fix: set it to 1 or 0")
    try:
        value = int(raw) if kind == "int" else float(raw)
    except ValueError:
        value = -1
    if not 0 <= value < 1e9:
        what = "a whole number" if kind == "int" else "a number"
        raise SettingsError(f"{name}={raw!r} is not {what} >= 0; fix: unset it or set e.g. 10")
    return value
