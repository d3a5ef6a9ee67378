"""omicstwin.parallel: seeds, batching, the unit runner, client resolution and cluster profiles."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from distributed import Client, LocalCluster
from distributed.core import Status

from omicstwin import errors
from omicstwin.parallel import (
    FAILURE_COLUMNS,
    ClusterDependencyError,
    JobqueueProfile,
    LocalProfile,
    ParallelError,
    WorkUnit,
    batched,
    derive_seed,
    job_script,
    load_profile,
    resolve_client,
    run_units,
)

PROFILES = Path(__file__).resolve().parents[2] / "pipelines" / "cluster"


# --------------------------------------------------------------------------- unit functions
# module-level so that they pickle by reference into worker processes


def noisy(payload, *, seed, offset=0.0):
    """Random draws from the unit's seed; later units finish first (reverse completion order)."""
    time.sleep(0.01 * payload["delay"])
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "draw": np.arange(payload["n"]),
            "value": rng.normal(size=payload["n"]) + offset,
            "label": [f"{payload['name']}-{i}" for i in range(payload["n"])],
        }
    )


def fails_on(payload, *, seed):
    if payload.get("fail"):
        raise ValueError(f"bad unit {payload['name']}")
    return pd.DataFrame({"x": [seed % 7]})


def uses_matrix(payload, *, seed, matrix, scale):
    # the shared inputs arrive as the objects themselves, not futures
    assert isinstance(matrix, np.ndarray)
    return pd.DataFrame({"total": [float(matrix[payload].sum() * scale)]})


def not_a_frame(payload, *, seed):
    return [payload]


def make_units(n=12, base_seed=7):
    units = []
    for i in range(n):
        key = f"CT{i % 3}|{float(i // 3)}|null-{i}"
        payload = {"n": 1 + i % 4, "delay": n - i, "name": key}
        units.append(WorkUnit(key, payload, derive_seed(base_seed, key)))
    return units


@pytest.fixture
def thread_cluster():
    """Two in-process (thread) workers: fast to start; always shut down."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster


# --------------------------------------------------------------------------- seeds, batches


def test_derive_seed_is_stable_and_distinct():
    # a fixed value: the seed must not change across Python runs, machines or versions
    assert derive_seed(0, "CD4 T|24.0|null-3") == 5095467772997033882
    seeds = {derive_seed(1, f"unit-{i}") for i in range(1000)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, "a") != derive_seed(2, "a")
    # a fresh interpreter (different hash salt) gives the same seed
    code = "from omicstwin.parallel import derive_seed; print(derive_seed(0, 'CD4 T|24.0|null-3'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == derive_seed(0, "CD4 T|24.0|null-3")
    with pytest.raises(errors.InputTypeError):
        derive_seed("0", "a")


def test_batched():
    assert batched(range(7), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batched(["a", "b"], 5) == [["a", "b"]]
    assert batched([], 4) == []
    for bad in (0, -1, 1.5):
        with pytest.raises(errors.ParameterError):
            batched([1], bad)


# --------------------------------------------------------------------------- run_units


def test_in_process_order_unit_column_and_progress(capsys):
    units = make_units(6)
    calls = []
    results, failures = run_units(
        noisy, units, shared={"offset": 10.0}, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(i, 6) for i in range(1, 7)]
    assert list(results.columns) == ["unit", "draw", "value", "label"]
    expected_units = [u.key for u in units for _ in range(u.payload["n"])]
    assert results["unit"].tolist() == expected_units
    assert (results["value"] > 5).all()  # the shared keyword argument arrived
    assert failures.empty and list(failures.columns) == list(FAILURE_COLUMNS)
    assert capsys.readouterr().out == ""  # the library logs, never prints


def test_identical_in_process_one_and_many_workers():
    units = make_units(12)
    reference, _ = run_units(noisy, units)
    for n_workers in (1, 3):
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            order: list[int] = []
            results, failures = run_units(
                noisy, units, client=client, progress=lambda d, t, seen=order: seen.append(d)
            )
        pd.testing.assert_frame_equal(results, reference, check_exact=True)
        assert results.equals(reference) and failures.empty
        assert order == list(range(1, 13))


def test_default_local_cluster_with_processes_is_identical_and_closed():
    units = make_units(8)
    reference, _ = run_units(noisy, units)
    with resolve_client(n_workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        cluster = client.cluster
        results, _ = run_units(noisy, units, client=client)
    pd.testing.assert_frame_equal(results, reference, check_exact=True)
    assert client.status == "closed"
    assert cluster.status == Status.closed  # we created it, so we closed it


def test_shared_inputs_scattered_once(thread_cluster):
    matrix = np.arange(12.0).reshape(4, 3)
    units = [WorkUnit(f"row-{i}", i, 0) for i in range(4)]
    with Client(thread_cluster) as client:
        calls = []
        scatter = client.scatter

        def spy(data, **kwargs):
            calls.append((len(data), kwargs))
            return scatter(data, **kwargs)

        client.scatter = spy
        results, failures = run_units(
            uses_matrix, units, shared={"matrix": matrix, "scale": 2.0}, client=client
        )
        assert len(calls) == 1 and calls[0][0] == 2 and calls[0][1]["broadcast"] is True
        assert failures.empty
        assert results["total"].tolist() == [2.0 * matrix[i].sum() for i in range(4)]
        # a future passed by the caller is used as it is, not scattered again
        (pre,) = scatter([matrix], broadcast=True)
        run_units(uses_matrix, units, shared={"matrix": pre, "scale": 1.0}, client=client)
        assert len(calls) == 2 and calls[1][0] == 1
        # our scattered copies and task results are released after the run; the caller's
        # future is not (release is asynchronous, hence the polling)
        deadline = time.monotonic() + 5
        while set(thread_cluster.scheduler.tasks) != {pre.key} and time.monotonic() < deadline:
            time.sleep(0.02)
        assert set(thread_cluster.scheduler.tasks) == {pre.key}
        assert pre.status == "finished"


@pytest.mark.parametrize("distributed_run", [False, True])
def test_failures_become_rows(distributed_run, thread_cluster):
    units = [WorkUnit(f"u{i}", {"name": f"u{i}", "fail": i == 4}, i) for i in range(10)]
    with Client(thread_cluster) as client:
        results, failures = run_units(
            fails_on,
            units,
            client=client if distributed_run else None,
            max_failure_fraction=0.1,
        )
    assert results["unit"].tolist() == [f"u{i}" for i in range(10) if i != 4]
    assert failures.to_dict("records") == [
        {"unit": "u4", "error_type": "ValueError", "message": "bad unit u4"}
    ]


@pytest.mark.parametrize("distributed_run", [False, True])
def test_too_many_failures_raise(distributed_run, thread_cluster):
    units = [WorkUnit(f"u{i}", {"name": f"u{i}", "fail": i in (2, 5)}, i) for i in range(10)]
    with Client(thread_cluster) as client:
        with pytest.raises(ParallelError, match=r"2 of 10 work units failed") as info:
            run_units(
                fails_on,
                units,
                client=client if distributed_run else None,
                max_failure_fraction=0.1,
            )
    assert "ValueError: bad unit u" in str(info.value)
    assert isinstance(info.value, errors.OmicstwinError) and isinstance(info.value, ValueError)


def test_misaligned_shared_arrays_are_realigned_once():
    from omicstwin.parallel.tasks import _aligned

    raw = np.frombuffer(bytearray(8 * 12 + 1), dtype=np.float64, count=12, offset=1)
    raw = raw.reshape(4, 3)
    assert not raw.flags.aligned  # what a scattered array can look like on a process worker
    first, second = _aligned(raw), _aligned(raw)
    assert first.flags.aligned and first is second  # one copy per process, not per task
    np.testing.assert_array_equal(first, raw)
    aligned = np.ones(3)
    assert _aligned(aligned) is aligned and _aligned("text") == "text"


def test_bad_results_and_arguments():
    results, failures = run_units(not_a_frame, [WorkUnit("a", 1, 0)], max_failure_fraction=1.0)
    assert results.columns.tolist() == ["unit"] and results.empty
    assert failures.loc[0, "error_type"] == "TypeError"
    assert "expected a pandas DataFrame" in failures.loc[0, "message"]
    with pytest.raises(errors.ParameterError, match="not unique"):
        run_units(fails_on, [WorkUnit("a", {}, 0), WorkUnit("a", {}, 1)])
    with pytest.raises(errors.ParameterError):
        run_units(fails_on, [WorkUnit("a", {}, 0)], max_failure_fraction=1.5)
    empty, no_failures = run_units(fails_on, [])
    assert empty.empty and no_failures.empty


# --------------------------------------------------------------------------- resolve_client


def test_scheduler_address_never_closes_foreign_cluster(thread_cluster):
    with resolve_client(scheduler=thread_cluster.scheduler_address) as client:
        results, _ = run_units(fails_on, [WorkUnit("a", {}, 3)], client=client)
    assert client.status == "closed"  # our connection is closed ...
    assert thread_cluster.status == Status.running  # ... the cluster is not
    with Client(thread_cluster) as again:
        assert again.submit(sum, [1, 2]).result() == 3
    assert results["x"].tolist() == [3]


def test_in_process_and_invalid_combinations(thread_cluster):
    with resolve_client(n_workers=0) as client:
        assert client is None
    address = thread_cluster.scheduler_address
    bad = [
        {"scheduler": address, "profile": "local"},
        {"scheduler": address, "n_workers": 0},
        {"n_workers": -1},
        {"threads_per_worker": 0},
    ]
    for kwargs in bad:
        with pytest.raises(errors.ParameterError), resolve_client(**kwargs):
            pass


def test_local_profile_creates_and_closes(tmp_path):
    path = tmp_path / "threads.yaml"
    path.write_text(yaml.safe_dump({"kind": "local", "n_workers": 3, "processes": False}))
    with resolve_client(profile=path, n_workers=2) as client:  # n_workers overrides
        cluster = client.cluster
        assert len(client.scheduler_info()["workers"]) == 2
    assert cluster.status == Status.closed


# --------------------------------------------------------------------------- profiles


def test_shipped_profiles_validate():
    assert isinstance(load_profile("local"), LocalProfile)
    for name in ("slurm", "pbs"):
        spec = load_profile(name)
        assert isinstance(spec, JobqueueProfile) and spec.kind == name
        assert load_profile(PROFILES / f"{name}.yaml") == spec


def test_slurm_job_script_from_profile():
    pytest.importorskip("dask_jobqueue")
    raw = yaml.safe_load((PROFILES / "slurm.yaml").read_text())
    script = job_script("slurm")
    lines = script.splitlines()
    assert f"#SBATCH --cpus-per-task={raw['cores']}" in lines
    assert f"#SBATCH --mem={raw['memory'].removesuffix('iB')}" in lines  # 32GiB -> 32G
    assert f"#SBATCH -t {raw['walltime']}" in lines
    assert f"#SBATCH -A {raw['account']}" in lines
    assert f"#SBATCH -p {raw['queue']}" in lines
    for directive in raw["job_extra_directives"]:
        assert f"#SBATCH {directive}" in lines
    assert f"--nworkers {raw['processes']}" in script
    assert f"--nthreads {raw['cores'] // raw['processes']}" in script


def test_pbs_job_script_and_scale():
    pytest.importorskip("dask_jobqueue")
    raw = yaml.safe_load((PROFILES / "pbs.yaml").read_text())
    script = job_script(PROFILES / "pbs.yaml")
    assert f"#PBS -l walltime={raw['walltime']}" in script
    assert f"#PBS -q {raw['queue']}" in script
    assert f"ncpus={raw['cores']}" in script
    spec = load_profile("pbs")
    assert spec.scale_kwargs() == {"jobs": raw["jobs"]}
    assert spec.scale_kwargs(n_workers=6) == {"n": 6}
    with pytest.raises(errors.ParameterError, match="no job script"):
        job_script("local")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"kind": "slurm", "cores": 4, "memory": "8GB", "walltim": "1:00:00"}, "walltim"),
        ({"kind": "slurm", "cores": 4, "memory": "8GB", "walltime": "soon"}, "walltime"),
        ({"kind": "pbs", "cores": 4, "memory": "lots"}, "memory"),
        ({"kind": "slurm", "cores": 4, "memory": "8GB", "jobs": 1, "n_workers": 2}, "not both"),
        ({"kind": "local", "options": {"n_workers": 3}}, "repeat"),
        ({"kind": "kubernetes"}, "kind"),
    ],
)
def test_invalid_profiles(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(errors.ParameterError, match=match):
        load_profile(path)


def test_unknown_profile_name_lists_known():
    with pytest.raises(errors.ParameterError, match=r"known: .*local.*pbs.*slurm"):
        load_profile("nosuchprofile")


def test_missing_dask_jobqueue(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # makes the import fail
    with pytest.raises(ClusterDependencyError, match=r"pip install 'omicstwin\[cluster\]'") as e:
        job_script("slurm")
    assert isinstance(e.value, ValueError) and isinstance(e.value, ImportError)
    with pytest.raises(ClusterDependencyError), resolve_client(profile="slurm"):
        pass


def test_import_needs_neither_distributed_nor_jobqueue():
    code = (
        "import sys; sys.modules['dask_jobqueue'] = None; import omicstwin.parallel; "
        "print('distributed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
