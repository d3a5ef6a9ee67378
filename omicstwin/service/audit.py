"""The audit writer: group-committed audit rows, a durable journal under a publish, key last use.

Every access to a patient route waits for its audit row to be durable before it answers. The
writer thread commits the rows pending meanwhile in one transaction (group commit).

SQLite allows one writer at a time, and a publish holds the write lock for its whole
transaction (seconds for a large study). Audit rows must not wait for it: a batch that cannot
get the write lock within ``lock_wait`` (or comes after rows of this process still in the
journal) is appended to the **audit journal** instead, a JSON-lines file beside the database
(``<db>-audit-journal.jsonl``, mode 0600) shared by the worker processes under ``flock`` and
fsync'd per batch, so the row is durable before the data leaves. The writer drains the journal
into the audit table as soon as the write lock is free again (rows already in the table, after
a crash between commit and truncation, are not inserted twice); ``GET /audit`` lists the
undrained rows first. PostgreSQL has row-level locking: audit inserts never wait for a publish,
and no journal is used.

Keys' ``last_used_at`` is written by the same thread (throttled by the caller), never on the
request path and never while the journal holds rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from omicstwin._logging import logger
from omicstwin.store import access
from omicstwin.store.db import TABLES

JOURNAL_SUFFIX = "-audit-journal.jsonl"
_FIELDS = ("at", "key_name", "role", "action", "patient_id", "outcome")
DRAIN_INTERVAL = 0.2  # seconds between attempts to move journal rows into the table
PROBE_MS = 5  # how long such an attempt waits for the write lock


def journal_path(engine: Engine) -> Path | None:
    """Where the audit journal of a SQLite file database lives (None: no journal)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    db = Path(database).expanduser().resolve()
    return db.with_name(db.name + JOURNAL_SUFFIX)


def _encode(row: dict[str, Any]) -> bytes:
    values = {k: row.get(k) for k in _FIELDS}
    values["at"] = row["at"].isoformat()
    return json.dumps(values, separators=(",", ":")).encode("utf-8") + b"\n"


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        values = json.loads(line)
        values["at"] = datetime.fromisoformat(values["at"])
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a crash mid-write: its request never got an answer
    return {k: values.get(k) for k in _FIELDS}


class AuditJournal:
    """Append-only JSON lines of audit rows, shared by all worker processes of a database.

    Appends, reads and drains hold ``flock`` on the file (exclusive, shared, exclusive), so a
    reader never sees a row both in the journal and in the table, nor a half-written line.
    Appends and drains run on the writer thread only (one open file per process); each
    :meth:`snapshot` opens the file anew.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)  # audit rows name patients: owner only, even if pre-existing
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the file's directory entry is durable too
            finally:
                os.close(dir_fd)
            self._fd = fd
        return self._fd

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[int]:
        fd = self._open()
        fcntl.flock(fd, mode)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def pending(self) -> bool:
        """Whether rows wait in the journal (one ``stat``)."""
        try:
            return os.stat(self.path).st_size > 0
        except FileNotFoundError:
            return False

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and fsync before returning (the rows are then durable)."""
        data = b"".join(_encode(r) for r in rows)
        with self._locked(fcntl.LOCK_EX) as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)

    def _rows(self, fd: int) -> list[dict[str, Any]]:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        rows = [_decode(line) for line in b"".join(chunks).splitlines() if line.strip()]
        return [r for r in rows if r is not None]

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[list[dict[str, Any]]]:
        """Yield the undrained rows, oldest first; no drain commits while the block runs."""
        try:  # its own open file: flock does not exclude users of one open file
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield []
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield self._rows(fd)
        finally:
            os.close(fd)  # releases the lock

    def drain(self, conn: sa.Connection, *, wait_ms: int = 30_000) -> int:
        """Move the journal into the audit table in one transaction; return the rows moved.

        The write lock is only probed (``PROBE_MS``): while a publish holds it, new audit rows
        keep going to the journal without waiting for the attempt. ``wait_ms`` is the
        connection's busy timeout to restore. Raises the database's error (e.g. SQLite's
        "database is locked") with the journal left as it was.
        """
        with self._locked(fcntl.LOCK_EX) as fd:
            rows = self._rows(fd)
            if rows:
                with conn.begin():
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={PROBE_MS}")  # only a probe
                    try:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock first, or busy
                    finally:
                        conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
                    fresh = _not_in_table(conn, rows)
                    if fresh:
                        conn.execute(TABLES["audit"].insert(), fresh)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        return len(rows)

    def close(self) -> None:
        """Close this process's file (the journal itself stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _not_in_table(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not yet in the audit table (a drain that crashed after its commit left them)."""
    audit = TABLES["audit"]
    since = min(r["at"] for r in rows)
    cols = [audit.c[k] for k in _FIELDS]
    present = {
        (_naive(r[0]), *r[1:])
        for r in conn.execute(sa.select(*cols).where(audit.c.at >= since)).all()
    }
    return [r for r in rows if (_naive(r["at"]), *(r[k] for k in _FIELDS[1:])) not in present]


def _naive(at: datetime) -> datetime:
    return at.replace(tzinfo=None)


def _is_busy(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


class AuditWriter:
    """Appends audit rows with group commit: one transaction for all rows pending meanwhile.

    A request awaits its row's commit (or journal fsync) before it answers, so the audit row
    is durable before any data is returned; a failed write fails every request of the batch.
    Under load this turns one write transaction per patient read into one per batch.

    Parameters
    ----------
    engine
        The service's engine.
    journal
        SQLite: use the audit journal while a publish holds the write lock (None: wait).
    lock_wait
        SQLite: seconds to wait for the write lock before a batch goes to the journal.
    """

    def __init__(
        self, engine: Engine, *, journal: AuditJournal | None = None, lock_wait: float = 0.05
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.lock_wait = lock_wait
        self._pending: list[tuple[dict[str, Any], asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._touches: dict[int, datetime] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: sa.Connection | None = None  # used by the writer thread only
        self._next_drain = 0.0
        self._touch_after = 0.0  # deferred touches wait until then
        self._journaled = False  # this process put rows in the journal that are not drained

    async def write(self, row: dict[str, Any]) -> None:
        """Queue one audit row and wait until it is durable (raises if it could not be)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._wake:
            self._pending.append((row, done, loop))
            self._start()
            self._wake.notify()
        await done

    def touch(self, key_id: int, at: datetime) -> None:
        """Record a key's use (written later by the writer thread; never waited for)."""
        with self._wake:
            self._touches[key_id] = at
            self._start()
            self._wake.notify()

    def kick(self) -> None:
        """Start the thread if the journal holds rows (e.g. left by a stopped service)."""
        if self.journal is not None and self.journal.pending():
            with self._wake:
                self._journaled = True
                self._start()
                self._wake.notify()

    def _start(self) -> None:  # under self._wake
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="omicstwin-audit", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._pending or self._closed):
                    left = self._due()
                    if left is not None and left <= 0:
                        break
                    self._wake.wait(left)  # None: until notified
                if self._closed and not self._pending:
                    self._thread = None  # under the lock: the next write starts a new thread
                    touches, self._touches = self._touches, {}
                    break
                batch, self._pending = self._pending, []
                touches = {}
                if self._touches and time.monotonic() >= self._touch_after:
                    touches, self._touches = self._touches, {}
            if batch:
                self._write_batch(batch)
            if self._journal_waiting() and time.monotonic() >= self._next_drain:
                self._drain()
            if touches:
                self._apply_touches(touches)
        # closing: a last drain and the remaining touches, then let go of the connection
        if self._journal_waiting():
            self._drain()
        if touches:
            self._apply_touches(touches, requeue=False)
        self._drop(invalidate=False)
        if self.journal is not None:
            self.journal.close()

    def _due(self) -> float | None:  # under self._wake
        """Seconds until a drain or a deferred touch is due (None: nothing scheduled)."""
        due = []
        if self._touches:
            due.append(self._touch_after)
        if self._journal_waiting():
            due.append(self._next_drain)
        return min(due) - time.monotonic() if due else None

    def _journal_waiting(self) -> bool:
        # This process's flag, not a stat per batch: rows other workers journaled are theirs
        # to drain (each drain moves the whole file, whoever wrote it).
        return self._journaled

    def _write_batch(self, batch: list[tuple[dict, asyncio.Future, Any]]) -> None:
        rows = [row for row, _, _ in batch]
        error: BaseException | None = None
        try:
            if self._journal_waiting():
                self.journal.append(rows)  # keep the order: behind the rows already waiting
                self._journaled = True
            else:
                self._insert_or_journal(rows)
        except Exception as exc:  # handed to every waiting request
            error = exc
            self._drop(invalidate=True)
        for _, done, loop in batch:
            try:
                loop.call_soon_threadsafe(_settle, done, error)
            except RuntimeError:  # that event loop is closed: nobody waits any more
                pass

    def _insert_or_journal(self, rows: list[dict[str, Any]]) -> None:
        for attempt in (0, 1):
            try:
                self._insert(TABLES["audit"], rows)
                return
            except sa.exc.DBAPIError as exc:
                if self.journal is not None and _is_busy(exc):
                    # A publish holds the write lock: durable in the journal, drained later.
                    self.journal.append(rows)
                    self._journaled = True
                    self._next_drain = time.monotonic() + DRAIN_INTERVAL
                    return
                self._drop(invalidate=True)
                if attempt or not exc.connection_invalidated:  # a dropped connection: once more
                    raise

    def _connection(self) -> sa.Connection:
        # The writer thread keeps one connection (no pool checkout and ping per batch).
        if self._conn is None:
            conn = self.engine.connect()
            if self.journal is not None:
                wait_ms = int(self.lock_wait * 1000)
                conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
                conn.commit()
            self._conn = conn
        return self._conn

    def _insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        conn = self._connection()
        with conn.begin():
            conn.execute(table.insert(), rows)

    def _drain(self) -> None:
        self._next_drain = time.monotonic() + DRAIN_INTERVAL
        try:
            moved = self.journal.drain(self._connection(), wait_ms=int(self.lock_wait * 1000))
        except sa.exc.DBAPIError as exc:
            if not _is_busy(exc):
                self._drop(invalidate=True)
                self._next_drain = time.monotonic() + 5.0  # not the lock: retry, without a flood
                logger.error(
                    "cannot move the audit journal into the table (%s)", type(exc).__name__
                )
            return
        self._journaled = False
        if moved:
            logger.info("moved %d audit rows from the journal into the audit table", moved)

    def _apply_touches(self, touches: dict[int, datetime], *, requeue: bool = True) -> None:
        busy = self._journal_waiting()  # the write lock is (or was just) held: later
        if not busy:
            try:
                conn = self._connection()
                with conn.begin():
                    for key_id, at in touches.items():
                        access.touch_key(conn, key_id, at)
                return
            except Exception as exc:  # never the writer thread's end: last use is best effort
                busy = isinstance(exc, sa.exc.DBAPIError) and _is_busy(exc)
                if not busy:
                    self._drop(invalidate=True)
                    logger.warning("cannot record the last use of keys (%s)", type(exc).__name__)
                    return  # dropped: retrying a failing statement would only repeat the warning
        if requeue:
            with self._wake:
                for key_id, at in touches.items():
                    self._touches.setdefault(key_id, at)
                self._touch_after = time.monotonic() + DRAIN_INTERVAL

    def _drop(self, *, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if invalidate:
                    conn.invalidate()
                else:
                    if self.journal is not None:  # back to the pool with the engine's setting
                        conn.exec_driver_sql("PRAGMA busy_timeout=30000")
                        conn.commit()
                conn.close()
            except sa.exc.SQLAlchemyError:
                pass

    def close(self) -> None:
        """Write what is pending and stop the thread (a later write starts a new one)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        with self._wake:
            self._closed = False


def _settle(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():  # the request was cancelled (client gone); its row is written anyway
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
