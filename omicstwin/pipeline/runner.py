"""The one runner: for each declared stage, key -> cache hit or timed run -> record.

Each stage writes its tables into the run directory atomically and records itself in the stage
cache (:mod:`omicstwin.store.cache`), so an unchanged re-run skips it and a killed run resumes.
``run.json`` records the schema version, package versions, config, seed, input checksums,
per-stage timings and failures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from omicstwin._logging import logger
from omicstwin.pipeline.config import RunConfig
from omicstwin.pipeline.stage import RunContext, Stage, data_path
from omicstwin.pipeline.stages import STAGES

StageWrapper = Callable[[str], contextlib.AbstractContextManager]


def run_pipeline(
    config: RunConfig,
    out: str | Path,
    *,
    stage: StageWrapper | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Run every available stage and write the run directory.

    Parameters
    ----------
    config
        The validated config.
    out
        Run directory (created).
    stage
        Context-manager factory wrapping each stage (the CLI shows progress with it).
    use_cache
        Skip stages whose inputs, parameters and code are unchanged since a finished run into
        the same directory (:mod:`omicstwin.store.cache`); a killed run resumes where it stopped.

    Returns
    -------
    dict
        The ``run.json`` content, plus ``top_targets`` and ``report``.
    """
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a run killed mid-write leaves its temporary file behind (never a final name); one run
    # writes a run directory at a time, so any left now is stale
    for stale in out.rglob(".*.partial"):
        stale.unlink(missing_ok=True)
    check_extras(config)  # a missing optional package fails now, not after the screens
    if config.disease is not None:  # an unknown id fails now, not after the screens
        from omicstwin.bench.known_biology import resolve_disease

        resolve_disease(config.disease)
    runner = Runner(config, out, stage=stage, use_cache=use_cache)
    for declared in STAGES:
        runner.run_stage(declared)
    run = runner.write_run_json()
    top = pd.read_parquet(out / "rank_targets.parquet").head(10)
    run["top_targets"] = top["name"].str.removeprefix("KO:").tolist()
    run["report"] = str(out / "report.html")
    return run


def check_extras(config: RunConfig) -> None:
    """Fail before the first stage when the config needs an extra that is not installed.

    The report needs ``[report]``, prerank GSEA ``[enrichment]`` (``stages.enrichment_prerank:
    []`` skips it), and workers, a scheduler or a profile ``[dask]``.
    """
    from omicstwin._optional import require

    require("jinja2", what="the report stage")
    if config.stages.enrichment_prerank:
        require("gseapy", what="prerank enrichment (stages.enrichment_prerank: [] skips it)")
    if config.qc.doublets and config.qc.doublet_threshold is None:
        require(
            "skimage", what="scrublet's automatic doublet threshold (or set qc.doublet_threshold)"
        )
    compute = config.compute
    if compute.workers or compute.scheduler or compute.profile:
        require("distributed", what="screens on a dask cluster (compute.workers: 0 runs here)")


class Runner:
    """Runs declared stages in order: cache keys, reuse, timing, records and ``run.json``."""

    def __init__(
        self,
        config: RunConfig,
        out: Path,
        *,
        stage: StageWrapper | None = None,
        use_cache: bool = True,
    ) -> None:
        from omicstwin.store.cache import StageCache

        self.config, self.out = config, out
        self.cache = StageCache(out, enabled=use_cache)
        self.wrap = stage or (lambda _name: contextlib.nullcontext())
        self.context = RunContext(config, out, data_path(config, out))
        self.keys: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.run_json: dict[str, Any] | None = None

    @cached_property
    def data_sha(self) -> str:
        """sha256 of the input file (read once it exists: after the simulate stage)."""
        from omicstwin.io.manifests import sha256_of

        return sha256_of(self.context.data_path)

    def key(self, stage: Stage) -> str:
        """Return the stage's cache key, from its declaration only."""
        upstream = [self.keys[name] for name in stage.upstream if name in self.keys]
        parts: dict[str, Any] = {"upstream": upstream, "params": stage.param_values(self.config)}
        if stage.reads_input:
            parts["data"] = self.data_sha
        return self.cache.key(stage.name, **parts)

    def run_stage(self, stage: Stage) -> None:
        """Reuse the stage when its key and outputs are unchanged, else run and record it."""
        if not stage.active(self.config):
            if stage.remove_when_off:
                for path in stage.output_paths(self.out):
                    path.unlink(missing_ok=True)
            return
        if stage.needs_run_json:
            self.write_run_json()
        key = self.keys[stage.name] = self.key(stage)
        record = self.cache.hit(stage.name, key)
        if record is not None:
            self.timings[stage.name] = 0.0
            self.context.reused.append(stage.name)
            logger.info("stage %s: unchanged, reused", stage.name)
        else:
            with self.timed(stage.name):
                extra = stage.run(self.context) or {}
                self.cache.record(stage.name, key, stage.output_paths(self.out), extra)
            record = {"key": key, **extra}
        self.context.records[stage.name] = record
        self.failures.update(record.get("failures", {}))

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Wrap a stage (progress bar), hand its progress callback to the context, time it."""
        started = time.perf_counter()
        with self.wrap(name) as handle:
            # the CLI's stage context yields a progress callback; others yield nothing
            self.context.progress = handle if callable(handle) else (lambda _done, _total: None)
            yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        logger.info("stage %s: %.1f s", name, self.timings[name])

    def write_run_json(self) -> dict[str, Any]:
        """Write ``run.json`` (first call: its content; later calls: timings and reuse)."""
        from omicstwin.store.rundir import SCHEMA_VERSION, package_versions, write_json

        if self.run_json is None:
            cohort = self.context.records["validate"]["cohort"]
            self.run_json = {
                "schema_version": SCHEMA_VERSION,
                "versions": package_versions(),
                "config": self.config.model_dump(mode="json"),
                "seed": self.config.seed,
                "inputs": {str(self.context.data_path): self.data_sha},
                "cohort": cohort["line"],
                "genes": cohort.get("genes"),  # gene id harmonisation (omicstwin.io.genes)
                "time_unit": cohort.get("time_unit"),
                "skipped_groups": cohort["skipped"],
                "cached_stages": self.context.reused,
                "timings_s": self.timings,
                "failures": self.failures,
                "tables": sorted(p.stem for p in self.out.glob("*.parquet")),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        write_json(self.out / "run.json", self.run_json)
        return self.run_json
