"""omicstwin: multi-omics single-cell disease digital twins.

Submodules load lazily so that ``import omicstwin`` (and the CLI) stay fast:
``omicstwin.io`` (reading, validation, data manifests), ``omicstwin.datasets``
(ground-truth cohort simulator) and, in scanpy's style, ``omicstwin.pp`` (preprocessing),
``omicstwin.tl`` (the analysis verbs; their storage convention is in its docstring),
``omicstwin.get`` (tidy frames of stored results) and ``omicstwin.pl`` (plots).

>>> import omicstwin as ot
>>> ot.tl.differential_expression(adata)  # doctest: +SKIP
>>> ot.pl.de_counts(adata)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("omicstwin")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_SUBMODULES = (
    "bench",
    "datasets",
    "demo",
    "errors",
    "get",
    "io",
    "parallel",
    "pl",
    "pp",
    "schemas",
    "scores",
    "tl",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"omicstwin.{name}")
    raise AttributeError(f"module 'omicstwin' has no attribute {name!r}")
