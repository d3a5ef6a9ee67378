"""Dask client resolution and cluster profiles (``pipelines/cluster/*.yaml``).

Three ways to get workers, one context manager (:func:`resolve_client`):

- nothing given: a :class:`distributed.LocalCluster` that we create and close;
- ``scheduler="tcp://host:8786"``: connect to a running cluster, which we never close;
- ``profile="slurm"`` (a name in ``pipelines/cluster/`` or a path): a LocalCluster, or a
  dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` scaled to the profile's jobs, closed on exit.

A profile is a small YAML file validated by :data:`ClusterProfile` (pydantic); its fields are
the keyword arguments of the cluster class, plus how far to scale. :func:`job_script` renders a
profile's batch script without submitting anything.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omicstwin._logging import logger
from omicstwin._optional import require
from omicstwin.errors import ParameterError
from omicstwin.parallel.tasks import ClusterDependencyError, ParallelError

if TYPE_CHECKING:
    import distributed

__all__ = [
    "PROFILE_DIR_ENV",
    "ClusterProfile",
    "JobqueueProfile",
    "LocalProfile",
    "job_script",
    "load_profile",
    "profile_dirs",
    "resolve_client",
]

PROFILE_DIR_ENV = "OMICSTWIN_CLUSTER_PROFILES"
"""Environment variable: extra folders (``os.pathsep``-separated) searched for profile names."""

_INSTALL_HINT = "pip install 'omicstwin[cluster]'"
# SLURM accepts "MM", "HH:MM:SS", "D-HH:MM:SS"; PBS "HH:MM:SS"
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class _Profile(BaseModel):
    """Fields shared by every profile kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments of the cluster class, passed verbatim.",
    )

    @model_validator(mode="after")
    def _options_do_not_shadow_fields(self):
        clash = sorted(set(self.options) & (set(type(self).model_fields) | {"n_workers"}))
        if clash:
            raise ValueError(f"options repeat the profile fields {clash}; set them directly")
        return self


class LocalProfile(_Profile):
    """A :class:`distributed.LocalCluster` on this machine."""

    kind: Literal["local"]
    n_workers: int = Field(2, ge=1, description="Worker processes (or threads).")
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = Field(True, description="False: workers are threads of this process.")
    memory_limit: str | None = Field(None, description="Per worker, e.g. '4GB'; None: auto.")
    dashboard_address: str | None = Field(None, description="e.g. ':8787'; None: no dashboard.")

    def cluster_kwargs(self, n_workers: int | None = None) -> dict[str, Any]:
        """Keyword arguments of :class:`distributed.LocalCluster` (``n_workers`` overrides)."""
        kwargs: dict[str, Any] = {
            "n_workers": n_workers if n_workers is not None else self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "processes": self.processes,
            "dashboard_address": self.dashboard_address,
        }
        if self.memory_limit is not None:
            kwargs["memory_limit"] = self.memory_limit
        return kwargs | self.options


class JobqueueProfile(_Profile):
    """A dask-jobqueue ``SLURMCluster`` / ``PBSCluster``; each job runs ``processes`` workers."""

    kind: Literal["slurm", "pbs"]
    cores: int = Field(ge=1, description="Cores per job (shared by its worker processes).")
    memory: str = Field(description="Memory per job, e.g. '16GB' (shared by its processes).")
    processes: int = Field(1, ge=1, description="Worker processes per job.")
    walltime: str = Field("01:00:00", description="Job time limit, e.g. '02:00:00'.")
    queue: str | None = Field(None, description="Partition (SLURM) or queue (PBS).")
    account: str | None = Field(None, description="Account / project charged for the jobs.")
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(
        default_factory=list, description="Shell lines run before the worker starts."
    )
    local_directory: str | None = Field(None, description="Worker spill folder, e.g. '$TMPDIR'.")
    log_directory: str | None = None
    interface: str | None = Field(None, description="Network interface, e.g. 'ib0'.")
    jobs: int | None = Field(None, ge=0, description="Jobs to submit (default 1).")
    n_workers: int | None = Field(None, ge=0, description="Or: workers to scale to.")
    start_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds to wait for the first worker before failing (jobs that die at "
        "start would otherwise leave the run waiting); None: wait as long as the queue takes.",
    )

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            parse_bytes(value)
        except ValueError as exc:
            raise ValueError(f"memory {value!r} is not a size like '16GB'") from exc
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(f"walltime {value!r} is not like 'HH:MM:SS' or 'D-HH:MM:SS'")
        return value

    @model_validator(mode="after")
    def _one_scale(self):
        if self.jobs is not None and self.n_workers is not None:
            raise ValueError("set jobs or n_workers, not both")
        return self

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the dask-jobqueue cluster class."""
        kwargs = self.model_dump(
            exclude={"kind", "description", "options", "jobs", "n_workers", "start_timeout"},
            exclude_none=True,
        )
        # no dashboard unless asked for: login nodes are shared, and a fixed port may be taken
        kwargs.setdefault("scheduler_options", {"dashboard_address": None})
        return kwargs | self.options

    def scale_kwargs(self, n_workers: int | None = None) -> dict[str, int]:
        """Keyword arguments of ``cluster.scale`` (``n_workers`` overrides the profile)."""
        if n_workers is not None:
            return {"n": n_workers}
        if self.n_workers is not None:
            return {"n": self.n_workers}
        return {"jobs": self.jobs if self.jobs is not None else 1}


ClusterProfile = Annotated[LocalProfile | JobqueueProfile, Field(discriminator="kind")]
"""A cluster profile: :class:`LocalProfile` or :class:`JobqueueProfile`, chosen by ``kind``."""


def profile_dirs() -> list[Path]:
    """Return the folders searched for profile names, in order.

    ``OMICSTWIN_CLUSTER_PROFILES`` entries, then ``./pipelines/cluster``, then the source tree's
    ``pipelines/cluster`` (the wheel ships them inside the package).
    """
    dirs = [Path(p) for p in os.environ.get(PROFILE_DIR_ENV, "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "pipelines" / "cluster")
    package = Path(__file__).resolve().parents[1]
    dirs.append(package / "pipelines" / "cluster")  # shipped inside the wheel
    dirs.append(package.parent / "pipelines" / "cluster")  # source tree
    return list(dict.fromkeys(dirs))


def _profile_path(profile: str | Path) -> Path:
    path = Path(profile)
    if path.suffix in {".yaml", ".yml"} or len(path.parts) > 1:
        if not path.is_file():
            raise ParameterError(f"cluster profile file {str(path)!r} does not exist")
        return path
    for folder in profile_dirs():
        for suffix in (".yaml", ".yml"):
            if (folder / f"{profile}{suffix}").is_file():
                return folder / f"{profile}{suffix}"
    known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.y*ml")})
    raise ParameterError(
        f"unknown cluster profile {str(profile)!r} (known: {', '.join(known) or 'none'}); fix: "
        f"pass a YAML path, or put {profile}.yaml in pipelines/cluster/ or in ${PROFILE_DIR_ENV}"
    )


def load_profile(profile: str | Path | LocalProfile | JobqueueProfile):
    """Read and validate a cluster profile.

    Parameters
    ----------
    profile
        A profile name (``"local"``, ``"slurm"``, ``"pbs"``: see :func:`profile_dirs`), a path
        to a YAML file, or an already validated profile (returned as is).

    Returns
    -------
    LocalProfile or JobqueueProfile
    """
    from pydantic import TypeAdapter

    if isinstance(profile, LocalProfile | JobqueueProfile):
        return profile
    path = _profile_path(profile)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read cluster profile {str(path)!r}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParameterError(f"cluster profile {str(path)!r} is not a YAML mapping")
    try:
        return TypeAdapter(ClusterProfile).validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'profile'}: {e['msg']}" for e in exc.errors()
        )
        raise ParameterError(
            f"invalid cluster profile {str(path)!r}: {problems}; fix: see pipelines/README.md"
        ) from exc


def _jobqueue_class(kind: str):
    """Return the dask-jobqueue class of a profile kind (lazy import with an install hint)."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ClusterDependencyError(
            f"cluster profile kind {kind!r} needs dask-jobqueue, which is not installed; fix: "
            f"{_INSTALL_HINT}"
        ) from exc
    return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]


def _make_cluster(spec, n_workers: int | None):
    if isinstance(spec, LocalProfile):
        from distributed import LocalCluster

        return LocalCluster(**spec.cluster_kwargs(n_workers))
    cluster = _jobqueue_class(spec.kind)(**spec.cluster_kwargs())
    try:
        if spec.kind == "slurm":
            _check_slurm_job(cluster.job_script())
        scale = spec.scale_kwargs(n_workers)
        logger.info("submitting %s batch jobs: scale(%s)", spec.kind.upper(), scale)
        cluster.scale(**scale)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _check_slurm_job(script: str) -> None:
    """Validate a SLURM job script with ``sbatch --test-only`` (submits nothing).

    dask-jobqueue submits from a background task and only logs a refused submission, so a wrong
    partition or an impossible memory request would leave the run waiting for workers forever;
    SLURM's own check turns it into one error now.
    """
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="omicstwin-job-") as handle:
        handle.write(script)
        handle.flush()
        try:
            checked = subprocess.run(
                ["sbatch", "--test-only", handle.name],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ParallelError(
                "the slurm profile needs sbatch, which is not on PATH; fix: run omicstwin on a "
                "SLURM login node (or load the site's slurm module)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ParallelError(
                "sbatch --test-only did not answer in 120 s; fix: check that slurmctld is up "
                "(sinfo)"
            ) from exc
    if checked.returncode != 0:
        message = " ".join((checked.stderr or checked.stdout).split()) or "no message"
        raise ParallelError(
            f"SLURM refuses the profile's job ({message}); fix: the profile's queue, account, "
            "cores, memory or walltime (see sinfo and pipelines/cluster/slurm.yaml)"
        )


def _wait_for_first_worker(client, spec) -> None:
    """Fail when no worker of a batch-job profile arrives within ``spec.start_timeout``."""
    if not isinstance(spec, JobqueueProfile) or spec.start_timeout is None:
        return
    try:
        client.wait_for_workers(1, timeout=spec.start_timeout)
    except TimeoutError as exc:  # distributed's WorkerStartTimeoutError is one
        where = spec.log_directory or "the jobs' output files"
        raise ParallelError(
            f"no dask worker started within start_timeout={spec.start_timeout:g} s of "
            f"submitting the {spec.kind.upper()} jobs; fix: look at the job logs in {where} and "
            "the queue (squeue / qstat), or raise start_timeout"
        ) from exc


def job_script(profile: str | Path | JobqueueProfile) -> str:
    """Return the batch script a SLURM / PBS profile would submit, without submitting it.

    Parameters
    ----------
    profile
        A profile name, YAML path or validated :class:`JobqueueProfile`.

    Returns
    -------
    str
        The ``#SBATCH`` / ``#PBS`` script (``cluster.job_script()``); the scheduler address in
        it is the throw-away local one of this call.
    """
    spec = load_profile(profile)
    if not isinstance(spec, JobqueueProfile):
        raise ParameterError(
            f"cluster profile kind {spec.kind!r} has no job script; fix: use a slurm or pbs profile"
        )
    # building the cluster object starts a local scheduler but submits nothing until scale()
    with _jobqueue_class(spec.kind)(**spec.cluster_kwargs()) as cluster:
        return cluster.job_script()


@contextlib.contextmanager
def resolve_client(
    *,
    scheduler: str | None = None,
    profile: str | Path | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
) -> Iterator[distributed.Client | None]:
    """Yield a dask client for a run (or ``None`` to run in this process).

    Parameters
    ----------
    scheduler
        Address of a running scheduler (``tcp://host:8786``); we connect and on exit close only
        our client, never the cluster.
    profile
        Name (in :func:`profile_dirs`) or YAML path of a cluster profile; the cluster is built,
        scaled and closed on exit.
    n_workers
        ``0``: no dask at all, yield ``None`` (the in-process path for small inputs). Otherwise
        the LocalCluster's workers (default: one per core), or overrides the profile's scale.
    threads_per_worker
        Threads of each LocalCluster worker when no profile is given (1: our tasks are
        numpy-heavy and hold the GIL in places; processes scale better).

    Yields
    ------
    distributed.Client or None
    """
    if scheduler is not None and profile is not None:
        raise ParameterError("pass scheduler or profile, not both")
    if n_workers is not None and (isinstance(n_workers, bool) or n_workers < 0):
        raise ParameterError(f"n_workers must be >= 0, got {n_workers!r}")
    if threads_per_worker < 1:
        raise ParameterError(f"threads_per_worker must be >= 1, got {threads_per_worker!r}")
    if n_workers == 0:
        if scheduler is not None or profile is not None:
            raise ParameterError(
                "n_workers=0 runs in this process and cannot be combined with scheduler or profile"
            )
        logger.info("running in this process (n_workers=0)")
        yield None
        return

    require("distributed", what="a dask cluster (workers, a scheduler or a profile)")
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError) as exc:
            raise ParallelError(
                f"cannot connect to the dask scheduler at {scheduler!r}: {exc}; fix: check the "
                "address and that the scheduler is running"
            ) from exc
        logger.info("connected to the dask scheduler at %s", scheduler)
        try:
            yield client
        finally:
            client.close()  # our connection only: the cluster belongs to whoever started it
        return

    if profile is not None:
        spec = load_profile(profile)
        cluster = _make_cluster(spec, n_workers)
    else:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        )
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        if profile is not None:
            _wait_for_first_worker(client, spec)
    except BaseException:
        client.close()
        cluster.close()
        raise
    logger.info("started %r", cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
