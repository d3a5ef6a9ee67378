"""Simulated cohorts with known truth, and benchmark loaders (BEELINE).

Attributes load lazily: ``omicstwin.datasets.beeline`` must not pull in the simulator, so that
``omicstwin grn`` starts fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PRESETS": "omicstwin.datasets.simulate",
    "SimulationParams": "omicstwin.datasets.simulate",
    "SimulationPriors": "omicstwin.datasets.simulate",
    "simulate_cohort": "omicstwin.datasets.simulate",
    "simulate_independent": "omicstwin.datasets.independent",
    "generate": "omicstwin.datasets.generators",
    "GENERATORS": "omicstwin.datasets.generators",
    "simulate_atlas": "omicstwin.datasets.atlas",
    "write_atlas": "omicstwin.datasets.atlas",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'omicstwin.datasets' has no attribute {name!r}")
