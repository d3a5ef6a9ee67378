"""The screens on a hand-started multi-process dask cluster (`dask scheduler` + 2 `dask worker`).

The pipeline connects through ``compute.scheduler``; its tables must be exactly those of the
in-process run, the tasks must have run in the two worker processes, and the cluster must
survive the run (it belongs to whoever started it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.parallel._screens import (
    REPO,
    assert_identical,
    fit_small_twin,
    run_screens,
    spying_resolve_client,
)

pytest.importorskip("distributed")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # own process group: the cleanup reaches a worker's nanny and its worker process together
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` on 127.0.0.1 (random port) and two single-thread `dask worker`s."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    processes = [
        _start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(2):
            processes.append(
                _start(
                    [
                        "worker",
                        address,
                        "--name",
                        f"w{i}",
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--local-directory",
                        str(tmp_path / f"w{i}"),
                    ],
                    tmp_path / f"worker{i}.log",
                )
            )
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def test_screens_on_dask_scheduler_identical_to_in_process(dask_cluster, tmp_path):
    from distributed import Client

    config = fit_small_twin(tmp_path / "study")
    reference = run_screens(config, tmp_path / "in_process", workers=0)
    seen: list[dict] = []
    with spying_resolve_client(seen):
        run = run_screens(config, tmp_path / "scheduler", scheduler=dask_cluster)
    assert_identical(run, reference)

    # the work ran in the two worker processes, which import omicstwin from this checkout
    (facts,) = seen
    workers = facts["workers"]
    assert len(workers) == 2 and all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert len({w["pid"] for w in workers.values()} | {os.getpid()}) == 3
    assert all(w["omicstwin"] == str(REPO / "omicstwin" / "__init__.py") for w in workers.values())
    assert sum(w["executed"] for w in workers.values()) > 0
    # our client is closed; the cluster we did not start still runs with its two workers
    with Client(dask_cluster, timeout=30) as client:
        assert len(client.scheduler_info()["workers"]) == 2
