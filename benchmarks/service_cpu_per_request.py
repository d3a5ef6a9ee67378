"""CPU time per request of the service itself, through its ASGI app (no network, no uvicorn).

Throughput on a shared machine moves with the other load (``service_load.py`` prints the load
average for that reason); CPU time per request does much less, so this compares code versions
under the same conditions: run it on two checkouts one after the other. Each scenario is run
5 x 3,000 requests after a warm-up; the best run's process CPU time (all threads: the audit
writer's commits included) per request is printed, in microseconds.

Usage: python benchmarks/service_cpu_per_request.py [--requests 3000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omicstwin.service import create_app  # noqa: E402
from omicstwin.store.access import create_key  # noqa: E402
from omicstwin.store.db import make_engine  # noqa: E402
from omicstwin.store.publish import publish_run  # noqa: E402
from tests.service.conftest import fabricate_run  # noqa: E402

SCENARIOS = [
    ("top-10 targets (fast lane)", "/api/v1/studies/study_a/targets", b"limit=10"),
    ("top-10 in a context", "/api/v1/studies/study_a/targets", b"cell_type=B&time=6&limit=10"),
    ("patient targets (audited)", "/api/v1/patients/P001/targets", b"limit=10"),
    ("patient record (route)", "/api/v1/patients/P001", b""),
    ("studies (route)", "/api/v1/studies", b""),
]


def _scope(path: str, query: bytes, key: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"x"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def _cpu_per_request(app, path: str, query: bytes, key: str, n: int) -> float:
    statuses: set[int] = set()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    for _ in range(200):
        await app(_scope(path, query, key), receive, send)
    started = time.process_time()
    for _ in range(n):
        await app(_scope(path, query, key), receive, send)
    cpu = time.process_time() - started
    if statuses != {200}:
        raise RuntimeError(f"{path}: answered {sorted(statuses)}")
    return cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omicstwin-cpu-") as tmp:
        url = f"sqlite:///{tmp}/cpu.db"
        publish_run(fabricate_run(Path(tmp) / "study_a", n_genes=300), url)
        engine = make_engine(url)
        key = create_key(engine, name="cpu", role="admin")
        engine.dispose()
        app = create_app(url)

        async def run() -> None:
            async with app.router.lifespan_context(app):
                for name, path, query in SCENARIOS:
                    best = min(
                        [
                            await _cpu_per_request(app, path, query, key, args.requests)
                            for _ in range(args.repeats)
                        ]
                    )
                    print(f"{name:<30}{best:8.1f} us CPU per request", flush=True)

        asyncio.run(run())
        app.state.engine.dispose()


if __name__ == "__main__":
    main()
