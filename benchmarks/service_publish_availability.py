"""Availability under publish: patient-read latency while a large study (~1M rows) is published.

A small live study (with patient records) is published and served (``omicstwin serve``, 2
workers); a few keep-alive clients read patient rankings (audited: each read waits for its audit
row) and, as a control, a study ranking (not audited), each with a short pause between
requests. Meanwhile ``omicstwin publish`` (another process) writes a second study of ~1M rows in
one transaction. Reported for the requests *started during the publish*: count, p50, p99, max
latency and errors; the same figures before the publish as the baseline.

SQLite is run twice, on two databases built the same way and the same server set-up, the journal off
(``OMICSTWIN_AUDIT_JOURNAL=0``: the audit insert waits for the publish's write lock, the
behaviour before issue 14) and on (the default: the batch goes to the durable journal after
``OMICSTWIN_AUDIT_LOCK_WAIT_MS``). PostgreSQL (``--pg URL`` or ``$OMICSTWIN_TEST_PG_URL``) is run
once: it never uses the journal (row-level locks; audit inserts do not wait for a publish).

Usage: python benchmarks/service_publish_availability.py [--rows 1000000] [--clients 4]
       [--pause-ms 20] [--pg URL] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from service_load import drop_pg_database, free_port, fresh_pg_database, serve  # noqa: E402

from omicstwin.store.access import add_grant, create_key  # noqa: E402
from omicstwin.store.db import make_engine  # noqa: E402
from omicstwin.store.publish import publish_run  # noqa: E402
from tests.service.conftest import fabricate_run  # noqa: E402

CELL_TYPES = tuple(f"CT{i}" for i in range(10))
TIMES = (0.0, 3.0, 6.0, 12.0, 24.0, 48.0)


def build_big(folder: Path, rows: int) -> Path:
    """A study of about ``rows`` target + context rows, its donors named B*/D* (no clash)."""
    n_genes = 2000
    context = n_genes * len(CELL_TYPES) * len(TIMES)
    return fabricate_run(
        folder / "big",
        n_genes=n_genes,
        cell_types=CELL_TYPES,
        times=TIMES,
        n_cases=20,
        n_controls=5,
        n_patient_targets=50,
        n_combinations=max(0, rows - context - n_genes),
        seed=2,
        case_prefix="B",
        control_prefix="D",
    )


async def _reader(
    port: int, path: str, key: str, stop: float, pause: float, out: list[tuple]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    try:
        while time.time() < stop:
            started = time.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.append((started, time.time() - started, int(head[9:12])))
            await asyncio.sleep(pause)
    finally:
        writer.close()


def measure(
    url: str, big: Path, study_id: str, keys: tuple[str, str], args: argparse.Namespace
) -> dict:
    """Serve ``url``, read continuously, publish ``big`` meanwhile; latency per phase.

    ``keys``: a clinician key granted the read patients, and an admin key for the study reads.
    """
    port = free_port()
    proc = serve(url, port, 2)
    patient: list[tuple] = []
    study: list[tuple] = []
    window: dict[str, float] = {}

    async def main() -> None:
        stop = time.time() + 600
        paths = [f"/api/v1/patients/P{i + 1:03d}/targets?limit=10" for i in range(args.clients)]
        tasks = [
            asyncio.create_task(_reader(port, p, keys[0], stop, args.pause_ms / 1000, patient))
            for p in paths
        ]
        tasks += [
            asyncio.create_task(
                _reader(port, "/api/v1/studies/live/targets?limit=10", keys[1], stop, 0.02, study)
            )
            for _ in range(2)
        ]
        await asyncio.sleep(3.0)  # baseline
        window["start"] = time.time()
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "omicstwin.cli",
            "publish",
            str(big),
            "--db",
            url,
            "--study-id",
            study_id,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await publisher.communicate()
        window["end"] = time.time()
        if publisher.returncode:
            raise RuntimeError(f"publish failed: {err.decode()[-500:]}")
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "audit": audit_check(url, len(patient), args.clients),
        "publish_s": window["end"] - window["start"],
        "patient_before": _stats(patient, 0, window["start"]),
        "patient_during": _stats(patient, window["start"], window["end"]),
        "study_during": _stats(study, window["start"], window["end"]),
    }


def audit_check(url: str, answered: int, in_flight: int) -> str:
    """Whether every answered patient read left one audit row (after the server stopped)."""
    import sqlalchemy as sa

    from omicstwin.store.db import TABLES

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(TABLES["audit"])).scalar()
    try:
        from omicstwin.service.audit import AuditJournal, journal_path

        where = journal_path(engine)
        waiting = where is not None and AuditJournal(where).pending()
    except ImportError:  # before issue 14: no journal
        waiting = False
    engine.dispose()
    ok = answered <= rows <= answered + in_flight and not waiting
    return (
        f"{rows} audit rows for {answered} answered patient reads (+ <= {in_flight} cut off when "
        f"the clients stopped); journal {'not empty' if waiting else 'empty'}: "
        + ("ok" if ok else "MISMATCH")
    )


def _stats(samples: list[tuple], start: float, end: float) -> dict:
    chosen = [(lat, status) for t, lat, status in samples if start <= t < end]
    lat = np.array([lat for lat, _ in chosen]) * 1000
    if not len(lat):
        return {"n": 0, "p50": np.nan, "p99": np.nan, "max": np.nan, "errors": 0}
    return {
        "n": len(lat),
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
        "errors": sum(status != 200 for _, status in chosen),
    }


def _row(label: str, result: dict) -> str:
    cells = [f"{label:<34}", f"{result['publish_s']:>8.1f}"]
    for name in ("patient_before", "patient_during", "study_during"):
        s = result[name]
        cells.append(f"{s['n']:>6}{s['p50']:>8.1f}{s['p99']:>8.0f}{s['max']:>8.0f}{s['errors']:>5}")
    return "".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pause-ms", type=float, default=20.0)
    parser.add_argument("--pg", default=os.environ.get("OMICSTWIN_TEST_PG_URL"))
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="omicstwin-avail-") as tmp:
        t0 = time.perf_counter()
        live = fabricate_run(Path(tmp) / "live", n_cases=max(args.clients, 3), seed=3)
        big = build_big(Path(tmp), args.rows)
        print(f"fabricated the studies in {time.perf_counter() - t0:.1f} s")
        runs: list[tuple[str, str, dict[str, str]]] = []
        if args.backend in ("sqlite", "both"):
            runs += [
                (
                    "sqlite, journal off (before)",
                    f"sqlite:///{tmp}/off.db",
                    {"OMICSTWIN_AUDIT_JOURNAL": "0"},
                ),
                (
                    "sqlite, journal on (after)",
                    f"sqlite:///{tmp}/on.db",
                    {"OMICSTWIN_AUDIT_JOURNAL": "1"},
                ),
            ]
        pg_url = None
        if args.pg and args.backend in ("postgresql", "both"):
            pg_url = fresh_pg_database(args.pg)
            runs.append(("postgresql", pg_url, {}))
        try:
            keys: dict[str, tuple[str, str]] = {}
            for _, url, _ in runs:
                if url in keys:
                    continue
                publish_run(live, url, study_id="live")
                engine = make_engine(url)
                clinician = create_key(engine, name="avail", role="clinician")
                for i in range(args.clients):
                    add_grant(engine, key_name="avail", patient_id=f"P{i + 1:03d}")
                keys[url] = (clinician, create_key(engine, name="avail-admin", role="admin"))
                engine.dispose()
            print(
                f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.clients} "
                f"patient-read clients ({args.pause_ms:g} ms pause), 2 study-read clients; "
                "latency in ms\n"
                f"{'':<34}{'publish':>8}{'patient reads before publish':>37}"
                f"{'patient reads during publish':>37}{'study reads during publish':>37}\n"
                f"{'':<34}{'s':>8}" + f"{'n':>6}{'p50':>8}{'p99':>8}{'max':>8}{'err':>5}" * 3
            )
            audits: list[str] = []
            for label, url, env in runs:
                saved = {name: os.environ.get(name) for name in env}
                os.environ.update(env)
                try:
                    result = measure(url, big, "big", keys[url], args)
                finally:
                    for name, value in saved.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value
                print(_row(label, result), flush=True)
                audits.append(f"{label}: {result['audit']}")
            print(f"load average {os.getloadavg()[0]:.2f} after")
            print("\n".join(audits))
        finally:
            if pg_url is not None:
                drop_pg_database(args.pg, pg_url)


if __name__ == "__main__":
    main()
