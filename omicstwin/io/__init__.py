"""Input/output: reading h5ad/h5mu, the data contract, and data manifests.

Attributes load lazily so that manifest look-ups do not import anndata.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "read_data": "omicstwin.io.read",
    "rna_modality": "omicstwin.io.read",
    "CohortKeys": "omicstwin.io.validate",
    "CohortSummary": "omicstwin.io.validate",
    "TimeAxis": "omicstwin.io.validate",
    "validate_cohort": "omicstwin.io.validate",
    "check_raw_counts": "omicstwin.io.validate",
    "cohort_obs": "omicstwin.io.validate",
    "counts_matrix": "omicstwin.io.validate",
    "resolve_time": "omicstwin.io.validate",
    "harmonise_genes": "omicstwin.io.genes",
    "gene_plan": "omicstwin.io.genes",
    "Manifest": "omicstwin.io.manifests",
    "Resource": "omicstwin.io.manifests",
    "get_resource": "omicstwin.io.manifests",
    "load_manifests": "omicstwin.io.manifests",
    "load_table": "omicstwin.io.manifests",
    "load_gene_list": "omicstwin.io.manifests",
    "load_gene_sets": "omicstwin.io.manifests",
    "resolve": "omicstwin.io.manifests",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'omicstwin.io' has no attribute {name!r}")
