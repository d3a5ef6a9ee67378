"""The screens through a ``slurm`` profile (dask-jobqueue) on a real SLURM cluster.

Needs a test SLURM: ``eval "$(.ci/slurm.sh)"`` starts one node on loopback and sets
``OMICSTWIN_TEST_SLURM=1`` and ``SLURM_CONF``. Without it these tests skip, unless
``OMICSTWIN_REQUIRE_SLURM=1`` (CI), where they fail. They never submit to a SLURM that was not
marked for tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from omicstwin.parallel import ParallelError, resolve_client
from tests.parallel._screens import (
    REPO,
    assert_identical,
    fit_small_twin,
    run_screens,
    spying_resolve_client,
)

pytest.importorskip("dask_jobqueue")

JOB_NAME = "omicstwin-test"


def _slurm_problem() -> str | None:
    """Why the test SLURM cannot be used, or None."""
    if os.environ.get("OMICSTWIN_TEST_SLURM") != "1":
        return 'no test SLURM (OMICSTWIN_TEST_SLURM is not 1; `eval "$(.ci/slurm.sh)"` starts one)'
    for command in ("sbatch", "sinfo", "squeue", "scancel"):
        if shutil.which(command) is None:
            return f"OMICSTWIN_TEST_SLURM=1 but {command} is not on PATH"
    try:
        states = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    if states.returncode != 0 or not {"idle", "mix"} & set(states.stdout.split()):
        return f"no idle SLURM node (sinfo: {(states.stdout + states.stderr).strip()!r})"
    return None


@pytest.fixture
def slurm_partition():
    """The test SLURM's default partition (skip or, under OMICSTWIN_REQUIRE_SLURM=1, fail)."""
    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("OMICSTWIN_REQUIRE_SLURM") == "1":
            pytest.fail(f"OMICSTWIN_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)
    partitions = subprocess.run(
        ["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, check=True
    ).stdout.split()
    default = [p.removesuffix("*") for p in partitions if p.endswith("*")]
    yield (default or partitions)[0].removesuffix("*")
    # whatever a test left behind (a failed close) must not hold the node for the next one
    subprocess.run(["scancel", f"--name={JOB_NAME}"], capture_output=True, check=False)


def _profile(tmp_path: Path, queue: str, **changes) -> Path:
    """A slurm profile for the one-node loopback cluster: 2 jobs x 1 worker x 1 core."""
    profile = {
        "kind": "slurm",
        "description": "omicstwin tests: one node on loopback",
        "cores": 1,
        "memory": "2GB",
        "processes": 1,
        "walltime": "00:10:00",
        "queue": queue,
        "job_extra_directives": ["--nodes=1"],
        "job_script_prologue": [
            # the workers must import omicstwin (and these tests' helpers) from this checkout
            f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}",
            f"cd {REPO}",
            "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
        ],
        "local_directory": str(tmp_path / "spill"),
        "log_directory": str(tmp_path / "logs"),
        "interface": "lo",  # scheduler and workers on loopback
        "n_workers": 2,
        "start_timeout": 90,
        "options": {"job_name": JOB_NAME},
    } | changes
    path = tmp_path / "slurm-test.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def _our_jobs() -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", f"--name={JOB_NAME}", "--format=%i %t"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")[:-1]


def _wait_no_jobs(timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while (jobs := _our_jobs()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return jobs


def test_screens_on_slurm_identical_to_in_process(slurm_partition, tmp_path):
    config = fit_small_twin(tmp_path / "study")
    reference = run_screens(config, tmp_path / "in_process", workers=0)
    profile = _profile(tmp_path, slurm_partition)
    seen: list[dict] = []
    with spying_resolve_client(seen):
        run = run_screens(config, tmp_path / "slurm", profile=str(profile))
    assert_identical(run, reference)

    # the work ran in two SLURM jobs' workers, which import omicstwin from this checkout
    (facts,) = seen
    assert facts["cluster"] == "SLURMCluster"
    workers = facts["workers"]
    assert len(workers) == 2 and all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert os.getpid() not in {w["pid"] for w in workers.values()}
    assert all(w["omicstwin"] == str(REPO / "omicstwin" / "__init__.py") for w in workers.values())
    assert sum(w["executed"] for w in workers.values()) > 0
    logs = sorted((tmp_path / "logs").glob(f"{JOB_NAME}-*.err"))
    assert len(logs) == 2, logs
    assert all("Registered to" in log.read_text() for log in logs)
    # the cluster was ours: closing it cancelled the jobs
    assert _wait_no_jobs() == []


def test_refused_job_fails_at_once(slurm_partition, tmp_path):
    profile = _profile(tmp_path, "no-such-partition")
    start = time.monotonic()
    with (
        pytest.raises(ParallelError, match=r"SLURM refuses .*[Ii]nvalid partition"),
        resolve_client(profile=profile),
    ):
        pass
    assert time.monotonic() - start < 60
    assert _our_jobs() == []  # --test-only submitted nothing


def test_workers_that_never_start_fail_after_start_timeout(slurm_partition, tmp_path):
    # the job's shell exits before the worker starts, as with a wrong python on the nodes
    profile = _profile(tmp_path, slurm_partition, job_script_prologue=["exit 3"], start_timeout=8)
    with (
        pytest.raises(ParallelError, match=r"no dask worker started within start_timeout=8 s"),
        resolve_client(profile=profile),
    ):
        pass
    assert _wait_no_jobs() == []


def test_slurm_profile_without_sbatch(tmp_path, monkeypatch):
    # runs anywhere: no SLURM commands on PATH gives one clear error, not a hang
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(ParallelError, match="needs sbatch, which is not on PATH"),
        resolve_client(profile=_profile(tmp_path, "debug")),
    ):
        pass
