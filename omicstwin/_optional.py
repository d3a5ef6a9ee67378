"""Optional dependencies: import on first use, or fail with the extra that installs them.

The core install (``pip install omicstwin``) is the analysis library: reading, validation,
the simulator, pseudobulk, DE, networks, regulators, the twin and its screens in process.
Everything else is an extra (see ``pyproject.toml``):

========== ============================================ =====================================
extra      packages                                     needed by
========== ============================================ =====================================
dask       dask[distributed]                            screens on a local or remote cluster
cluster    dask[distributed], dask-jobqueue             SLURM / PBS profiles
enrichment gseapy                                       ``tl.enrich``, the enrichment stage
report     jinja2, matplotlib                           ``omicstwin report``, ``pl``
service    fastapi, uvicorn, sqlalchemy, alembic, ...   ``publish``, ``serve``, keys, grants
postgres   psycopg                                      a PostgreSQL results database
nichenet   pyreadr                                      priors from NicheNet's 2018 networks
all        every extra above                            ``omicstwin run`` end to end
========== ============================================ =====================================
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from omicstwin.errors import OptionalDependencyError

EXTRA_OF: dict[str, str] = {
    "distributed": "dask",
    "dask": "dask",
    "dask_jobqueue": "cluster",
    "gseapy": "enrichment",
    "jinja2": "report",
    "matplotlib": "report",
    "fastapi": "service",
    "uvicorn": "service",
    "sqlalchemy": "service",
    "alembic": "service",
    "orjson": "service",
    "psycopg": "postgres",
    "arboreto": "grnboost",
    "pyreadr": "nichenet",
}
"""The extra that installs each optional top-level module."""


def install_hint(module: str) -> str:
    """Return the pip command that installs ``module`` with omicstwin."""
    extra = EXTRA_OF.get(module.split(".")[0])
    return f"pip install 'omicstwin[{extra}]'" if extra else f"pip install {module}"


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`OptionalDependencyError` naming the extra to install.

    Parameters
    ----------
    module
        Dotted module name, e.g. ``"gseapy"`` or ``"distributed"``.
    what
        What needs it, for the message (e.g. ``"gene set enrichment"``).

    Returns
    -------
    The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{what} needs {module.split('.')[0]}, which is not installed; "
            f"fix: {install_hint(module)}"
        ) from exc
