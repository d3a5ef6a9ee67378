"""Preprocessing: QC, normalisation, pseudobulk (scanpy underneath).

Exported verbs: :func:`filter_cohort` and :func:`qc_masks` (``omicstwin.pp.qc``),
:func:`pseudobulk` (``omicstwin.pp.pseudobulk``) and :func:`log_normalise`
(``omicstwin.pp.normalise``). Each takes the data first and returns a new object (the input is
never modified), so none has ``key_added``. ``omicstwin.pp.pseudobulk`` is the function here;
its module stays importable as ``from omicstwin.pp.pseudobulk import ...``.
"""

from __future__ import annotations

import importlib

# the verb shares its module's name: bind the function over the submodule attribute (the
# module is light; its heavy imports, anndata among them, happen inside the function)
from omicstwin.pp.pseudobulk import pseudobulk

#: exported verb -> submodule that defines it (loaded on first use)
_EXPORTS = {"filter_cohort": "qc", "qc_masks": "qc", "log_normalise": "normalise"}

__all__ = ["filter_cohort", "log_normalise", "pseudobulk", "qc_masks"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"omicstwin.pp.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'omicstwin.pp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
