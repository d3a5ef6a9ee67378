"""``omicstwin run``: a study config to a run directory, stage by stage, cached and resumable.

- :mod:`~omicstwin.pipeline.config`: the run config (:class:`RunConfig`, :func:`load_config`);
- :mod:`~omicstwin.pipeline.stage`: what a stage declares (:class:`Stage`) and reads
  (:class:`RunContext`, with the run's one :class:`~omicstwin.pp.cohort.Cohort`);
- :mod:`~omicstwin.pipeline.stages`: the declared stages, in order (:data:`STAGES`);
- :mod:`~omicstwin.pipeline.runner`: the one runner (:func:`run_pipeline`).
"""

from __future__ import annotations

from pathlib import Path

from omicstwin.pipeline.config import (
    Compute,
    RunConfig,
    SimulatedData,
    Stages,
    load_config,
)
from omicstwin.pipeline.runner import run_pipeline
from omicstwin.pipeline.stage import RunContext, Stage, data_path
from omicstwin.pipeline.stages import STAGES

__all__ = [
    "STAGES",
    "Compute",
    "RunConfig",
    "RunContext",
    "SimulatedData",
    "Stage",
    "Stages",
    "data_path",
    "load_config",
    "run_pipeline",
]


def _data_path(config: RunConfig, out: Path, *_unused: object) -> Path:
    """Former helper, kept for callers: :func:`data_path` (the other arguments are unused)."""
    return data_path(config, Path(out))
