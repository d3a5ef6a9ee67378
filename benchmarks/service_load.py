"""Load benchmark of the query service: publish time, throughput and latency under concurrency.

Builds a study with >= 100k target rows (100k study-level targets: 2,000 knockouts + 98,000
pairs; 120k per-context perturbation rows) and >= 50 patients, publishes it to SQLite and (with
``--pg URL`` or ``$OMICSTWIN_TEST_PG_URL``) PostgreSQL, timing each, starts ``omicstwin serve``
(uvicorn) on loopback, and drives N concurrent keep-alive clients at

- the top-10 targets query   ``GET /api/v1/studies/bench/targets?limit=10``
- a per-context top-10       ``GET /api/v1/studies/bench/targets?cell_type=..&time=..&limit=10``
- the patient targets query  ``GET /api/v1/patients/{id}/targets?limit=10`` (audited: a write)

The client is a minimal asyncio HTTP/1.1 client (raw sockets) so that it costs little CPU on
the same machine; its CPU share (user+sys CPU / wall time of the client process) is reported
next to the server's (uvicorn processes; for PostgreSQL also the local server's processes, "db
CPU"), each as a share of one core. Target on 2 cores at 50 clients: >= 500 requests/s,
p99 <= 100 ms for the top-10 query. Measure on an otherwise idle machine: the load average is
printed before and after each backend.

Usage: python benchmarks/service_load.py [--clients 50] [--seconds 10] [--workers 2]
       [--pg URL] [--serve-backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omicstwin.store.access import create_key  # noqa: E402
from omicstwin.store.db import make_engine  # noqa: E402
from omicstwin.store.publish import publish_run  # noqa: E402
from tests.service.conftest import fabricate_run  # noqa: E402

CELL_TYPES = tuple(f"CT{i}" for i in range(10))
TIMES = (0.0, 3.0, 6.0, 12.0, 24.0, 48.0)


def build_study(folder: Path) -> Path:
    return fabricate_run(
        folder / "bench",
        n_genes=2000,
        cell_types=CELL_TYPES,
        times=TIMES,
        n_cases=50,
        n_controls=10,
        n_patient_targets=100,
        n_combinations=98_000,
        seed=1,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(
    port: int, paths: list[str], key: str, stop: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < stop:
            path = paths[i % len(paths)]
            i += 1
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(str(status))
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


def drive(port: int, paths: list[str], key: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    stop = started + seconds

    async def main() -> None:
        # Connections opened in one burst all land on the first uvicorn worker to accept; a
        # few ms between them lets every worker take a share (as real clients arriving would).
        async def staggered(k: int) -> None:
            await asyncio.sleep(0.005 * k)
            await _client(port, paths[k:] + paths[:k], key, stop, latencies, errors)

        await asyncio.gather(*(staggered(k) for k in range(clients)))

    asyncio.run(main())
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": len(errors),
        "client_cpu": cpu / wall,
    }


def serve(url: str, port: int, workers: int) -> subprocess.Popen:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omicstwin.cli",
            "serve",
            "--db",
            url,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                if b"200 OK" in s.recv(1024):
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not start")


def server_cpu(proc: subprocess.Popen) -> float:
    parent = psutil.Process(proc.pid)
    total = 0.0
    for p in [parent, *parent.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def db_cpu() -> float:
    """User+sys CPU seconds of the local PostgreSQL server processes (0 when none run here)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] in ("postgres", "postmaster"):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def fresh_pg_database(url: str) -> str:
    """A new database on the server of ``url`` (so the publish time is a real first publish)."""
    import sqlalchemy as sa

    server = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"omicstwin_bench_{os.getpid()}"
    with server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    server.dispose()
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(server_url: str, url: str) -> None:
    import sqlalchemy as sa

    server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        name = sa.engine.make_url(url).database
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


def run_load(url: str, label: str, key: str, args: argparse.Namespace) -> None:
    port = free_port()
    proc = serve(url, port, args.workers)
    try:
        scenarios = {
            "top-10 targets": ["/api/v1/studies/bench/targets?limit=10"],
            "top-10 in a context": [
                f"/api/v1/studies/bench/targets?cell_type={c}&time={t}&limit=10"
                for c in CELL_TYPES
                for t in TIMES
            ],
            "patient targets": [
                f"/api/v1/patients/P{i + 1:03d}/targets?limit=10" for i in range(50)
            ],
        }
        # warm-up: imports, pools, caches in every worker
        drive(port, scenarios["top-10 targets"], key, 8, 1.0)
        pg = label == "postgresql"
        print(
            f"\n{label}: {args.clients} clients, {args.seconds:.0f} s per query, "
            f"{args.workers} uvicorn workers, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.2f} (1 min) before"
        )
        print(
            f"{'query':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
            f"{'client CPU':>12}{'server CPU':>12}" + (f"{'db CPU':>9}" if pg else "")
        )
        for name, paths in scenarios.items():
            cpu0, db0, t0 = server_cpu(proc), db_cpu() if pg else 0.0, time.perf_counter()
            r = drive(port, paths, key, args.clients, args.seconds)
            wall = time.perf_counter() - t0
            share = (server_cpu(proc) - cpu0) / wall
            db = f"{(db_cpu() - db0) / wall:>8.0%}" if pg else ""
            print(
                f"{name:<22}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['errors']:>8}"
                f"{r['client_cpu']:>11.0%} {share:>11.0%} {db}"
            )
        print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pg", default=os.environ.get("OMICSTWIN_TEST_PG_URL"))
    parser.add_argument("--serve-backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="omicstwin-bench-") as tmp:
        t0 = time.perf_counter()
        run_dir = build_study(Path(tmp))
        print(f"fabricated the study in {time.perf_counter() - t0:.1f} s")
        urls = {"sqlite": f"sqlite:///{tmp}/bench.db"}
        if args.pg:
            urls["postgresql"] = fresh_pg_database(args.pg)
        keys = {}
        for label, url in urls.items():
            result = publish_run(run_dir, url, study_id="bench")
            print(f"publish into {label}: {result.seconds:.1f} s ({result.one_line()})")
            again = publish_run(run_dir, url, study_id="bench")
            print(f"  re-publish unchanged: {again.seconds:.2f} s ({again.status})")
            engine = make_engine(url)
            keys[label] = create_key(engine, name=f"bench-{os.getpid()}", role="admin")
            engine.dispose()
        try:
            for label, url in urls.items():
                if args.serve_backend in (label, "both"):
                    run_load(url, label, keys[label], args)
        finally:
            if "postgresql" in urls:
                drop_pg_database(args.pg, urls["postgresql"])


if __name__ == "__main__":
    main()
