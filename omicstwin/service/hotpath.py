"""The hot reads: short indexed statements on one connection per worker, on the event loop.

``HotReader`` runs them; the ``*_reader`` factories build the reads that the routes and the
fast lane share (so both answer from the same statements, with the same grant check).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from omicstwin.service import queries as q
from omicstwin.service.params import GRANT_EXEMPT
from omicstwin.store.access import Principal

Read = Callable[[Any, dict[str, q.Compiled]], Any]  # read(cursor, statements)


class HotReader:
    """One DBAPI connection per worker for the hot, indexed reads, used on the event loop.

    The statements it runs (``queries.hot_statements``) are primary-key or index-range lookups
    that take well under a millisecond, so running them inline costs less than a hop to a
    thread pool and back (and the GIL contention that comes with it under load). Anything
    that can scan (filters, counts over a study, gene lookups, listings) still runs in the
    thread pool. PostgreSQL: the connection is in autocommit (each read its own snapshot, never
    idle in a transaction) with a statement timeout, and is replaced once on a disconnect.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sql = q.hot_statements(engine.dialect)
        self._fairy: Any = None
        self._lock = threading.Lock()  # one event loop per worker; guards odd multi-loop use
        self._dbapi_error = engine.dialect.loaded_dbapi.Error

    def _connection(self) -> Any:
        if self._fairy is None:
            fairy = self.engine.raw_connection()
            if self.engine.dialect.name == "postgresql":
                fairy.driver_connection.autocommit = True
                with fairy.driver_connection.cursor() as cursor:
                    cursor.execute("SET statement_timeout = 5000")  # ms: never stall the loop
            self._fairy = fairy
        return self._fairy

    def run(self, read: Read) -> Any:
        """Run ``read(cursor, statements)`` (retried once on a fresh connection if it dropped)."""
        with self._lock:
            for attempt in (0, 1):
                fairy = self._connection()
                cursor = fairy.cursor()
                try:
                    return read(cursor, self.sql)
                except self._dbapi_error as exc:
                    dropped = self.engine.dialect.is_disconnect(exc, fairy, cursor)
                    if attempt or not dropped:
                        raise
                    self._discard(invalidate=True)
                finally:
                    try:
                        cursor.close()
                    except self._dbapi_error:
                        pass
            raise AssertionError("unreachable")

    def _discard(self, *, invalidate: bool) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            if invalidate:
                fairy.invalidate()
            else:
                fairy.close()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._discard(invalidate=False)


class Rankings:
    """Reads of one unfiltered ranking page, with a cache of context sizes (one per app)."""

    def __init__(self) -> None:
        self.sizes: dict[tuple[str, str, str, float | None], int] = {}

    def reader(
        self, study_id: str, cell_type: str | None, time: float | None, limit: int, offset: int
    ) -> Read:
        """Read one page, study level or in one cell type x time (None: no such study)."""

        def read(cur: Any, sql: dict[str, q.Compiled]) -> dict[str, Any] | None:
            counts = q.fetch(cur, sql["study_counts"], study_id=study_id)
            if not counts:
                return None
            page = {"study_id": study_id, "limit": limit, "offset": offset}
            if cell_type is None:
                rows = q.fetch(cur, sql["targets"], **page)
                return {
                    "data": q.target_rows(rows, "study"),
                    "count": json.loads(counts[0][0]).get("targets", 0),
                }
            ctx = {"study_id": study_id, "cell_type": cell_type, "time": time}
            rows = q.fetch(cur, sql["context_targets"], **(page | ctx))
            count = self._size(cur, sql, counts[0][1], ctx)
            return {"data": q.target_rows(rows, "context"), "count": count}

        return read

    def _size(self, cur: Any, sql: dict[str, q.Compiled], content: str, ctx: dict[str, Any]) -> int:
        # A context's size changes only with the study's content: cache it by content hash
        # (a COUNT over a context's index range costs more than the page itself).
        size_key = (ctx["study_id"], content, ctx["cell_type"], ctx["time"])
        count = self.sizes.get(size_key)
        if count is None:
            count = q.fetch(cur, sql["context_count"], **ctx)[0][0]
            if len(self.sizes) >= 4096:
                self.sizes.clear()
            self.sizes[size_key] = count
        return count


def granted(principal: Principal, patient_id: str, read: Read) -> Read:
    """Check the grant, then read.

    The read returns ``(outcome, data)``, the outcome one of allowed, denied, not_found.
    """

    def run(cur: Any, sql: dict[str, q.Compiled]) -> tuple[str, Any]:
        allowed = principal.role in GRANT_EXEMPT or bool(
            q.fetch(cur, sql["grant"], key_id=principal.key_id, patient_id=patient_id)
        )
        if not allowed:
            return "denied", None
        data = read(cur, sql)
        return ("not_found" if data is None else "allowed"), data

    return run


def patient_record_reader(patient_id: str) -> Read:
    """Read a patient's record (None: no such patient)."""

    def read(cur: Any, sql: dict[str, q.Compiled]) -> dict[str, Any] | None:
        rows = q.fetch(cur, sql["patient"], patient_id=patient_id)
        return q.patient_record(rows[0]) if rows else None

    return read


def patient_targets_reader(patient_id: str, limit: int, offset: int) -> Read:
    """Read one page of a patient's ranking (None: no such patient)."""

    def read(cur: Any, sql: dict[str, q.Compiled]) -> dict[str, Any] | None:
        total = q.fetch(cur, sql["patient_total"], patient_id=patient_id)
        if not total:
            return None
        rows = q.fetch(
            cur, sql["patient_targets"], patient_id=patient_id, limit=limit, offset=offset
        )
        return {"data": q.patient_target_rows(rows), "count": total[0][0]}

    return read
