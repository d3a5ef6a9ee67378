"""Plots from an AnnData/MuData plus key, or from a result table.

Every plot takes the data first: an AnnData/MuData a :mod:`omicstwin.tl` verb wrote back to
(``key=`` names the entry, as :mod:`omicstwin.get` reads it), or the result table itself (a
verb's return value, a run directory's parquet). Options are keyword-only; ``ax=`` draws into
existing axes. Each returns the :class:`matplotlib.figure.Figure` drawn on (``ax.figure`` when
``ax`` is given), or None when the table has nothing to draw.

No global state: figures are built on :class:`~matplotlib.figure.Figure` directly, never
through pyplot, so plotting selects no backend, opens no window and leaves no figure or rc
change behind (nothing to ``show``: display or save the returned figure). The plots use the
caller's rcParams; the HTML report draws its figures with these functions inside its own
``matplotlib.rc_context``.

matplotlib (and networkx for :func:`network` and :func:`mnm`) load on first use, not on
``import omicstwin``.
"""

from __future__ import annotations

import importlib

_EXPORTS = (
    "cohort_design",
    "de_counts",
    "enrichment",
    "mnm",
    "network",
    "null_calibration",
    "patient_ranks",
    "patient_trajectories",
    "perturbation_effects",
    "rankings",
    "regulators",
)

__all__ = list(_EXPORTS)
_MODULES = {"null_calibration": "omicstwin.pl._calibration", "mnm": "omicstwin.pl._mnm"}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _MODULES.get(name, "omicstwin.pl._plots")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'omicstwin.pl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
