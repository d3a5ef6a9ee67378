"""Analysis tools: differential expression, networks, regulators, the twin and its screens.

Pure kernels live in the submodules (``omicstwin.tl.de``, ``.grn``, ``.networks``,
``.regulators``, ``.perturb``, ``.twin``, ``.enrich``); this namespace exports the verbs, loaded
on first use (``import omicstwin.tl`` imports none of them, so neither gseapy nor dask load
until a verb that needs them runs).

Conventions (DESIGN.md, conventions 1-2)
----------------------------------------
- **Signature.** The data object comes first and is positional (AnnData/MuData for the verbs
  that compute on cells; a result table or a :class:`~omicstwin.tl.twin.Twin` otherwise). A
  verb's other required inputs may follow it positionally (``intercellular_edges(adata,
  lr_pairs)``, ``upstream_regulators(de, prior)``, ``fit_twin(adata, edges)``); every option
  is keyword-only. ``tests/test_package_structure.py`` checks this for every exported verb.
- **Write-back.** A verb that computes on an AnnData/MuData returns its result table *and*
  stores it on the object it was given (the MuData itself for MuData input) as::

      data.uns[key_added] = {"results": <pandas.DataFrame>, "params": <dict>}

  ``results`` is exactly the returned table (the declared schema of
  :mod:`omicstwin.schemas`); ``params`` holds the parameters and the facts of the run beside
  it (keys, method, thresholds, skipped contexts, ...; ``None`` values are written as ``""`` so
  the object always writes to h5ad/h5mu). ``key_added=None`` stores nothing. This is the only
  mutation of the data object. :mod:`omicstwin.get` reads the entries back as tidy frames
  (``get.de(adata)``, ``get.edges(adata, key="intercellular")``, ``get.params(adata, key)``) and
  :mod:`omicstwin.pl` draws them.
- Verbs whose input is already a table (regulators, screens, enrichment) return a table and
  store nothing; ``get`` and ``pl`` accept those tables directly.

==============================  ===============  =========================================
verb                            default key      ``results``
==============================  ===============  =========================================
``differential_expression``     ``"de"``         ``de`` table
``timecourse_de``               ``"de_timecourse"``  ``de_timecourse`` table
``context_grns``                ``"grn"``        ``edges`` (intracellular)
``intercellular_edges``         ``"intercellular"``  ``edges`` (intercellular)
``temporal_edges``              ``"temporal"``   ``edges`` (temporal)
``fit_twin``                    ``"twin"``       ``edges`` the twin propagates through
==============================  ===============  =========================================
"""

from __future__ import annotations

import importlib

#: exported verb -> submodule that defines it
_EXPORTS = {
    "differential_expression": "de",
    "timecourse_de": "de",
    "context_grns": "networks",
    "intercellular_edges": "networks",
    "temporal_edges": "networks",
    "multicellular_network": "networks",
    "to_networkx": "networks",
    "upstream_regulators": "regulators",
    "rank_regulators": "regulators",
    "multicellular_network_model": "regulators",
    "cell_type_centrality": "regulators",
    "fit_twin": "twin",
    "target_screen": "twin",
    "disease_gene_screen": "twin",
    "patient_screen": "patients",
    "patient_states": "patients",
    "what_if": "twin",
    "enrichment": "enrich",
    "prerank_contexts": "enrich",
    "ora_top": "enrich",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"omicstwin.tl.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'omicstwin.tl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
