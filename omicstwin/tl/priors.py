"""Build and load the regulator priors, reproducibly and cached.

``build_prior(name, source=...)`` reads the source's manifest resources
(:mod:`omicstwin.io.priors`), computes the prior with the kernels of
:mod:`omicstwin.tl.signalling` and caches it with its provenance; ``load_prior`` returns the
cached table after verifying its checksum, building it first when it is missing, corrupt, or was
built from other inputs or parameters. The command line is ``omicstwin priors build NAME``.

This sits in ``tl`` rather than ``io`` because it runs ``tl`` kernels (``io`` may not import
``tl``, see ``tests/test_layers.py``); ``omicstwin.io.priors`` holds the resolution, cache and
provenance it uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from omicstwin._logging import logger
from omicstwin.errors import ChecksumError, ParameterError
from omicstwin.io import priors as store
from omicstwin.io.priors import DEFAULT_SOURCE
from omicstwin.tl import signalling

#: the default parameters of each prior (recorded in its provenance; a change rebuilds it)
PROGRAMME_PARAMS: dict[str, Any] = {
    "damping": signalling.DEFAULT_DAMPING,
    "signal_quantile": signalling.DEFAULT_SIGNAL_QUANTILE,
    "max_targets": signalling.DEFAULT_MAX_TARGETS,
}
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "ligand_targets": PROGRAMME_PARAMS,
    "receptor_targets": PROGRAMME_PARAMS,
    "regulator_types": {"kinase_go_terms": list(store.KINASE_GO_TERMS)},
    "regulator_prior": PROGRAMME_PARAMS,  # passed on to the two programmes it is built from
}
#: bumped when a recipe changes what it computes, so old caches rebuild
RECIPE_VERSION = 1


def _parameters(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    defaults = DEFAULT_PARAMS[name]
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise ParameterError(
            f"prior '{name}' has no parameter(s) {unknown}; fix: use {sorted(defaults) or 'none'}"
        )
    return {**defaults, **(params or {}), "recipe_version": RECIPE_VERSION}


def _programme(kind: str) -> Callable[[str, dict[str, Any], Path | None], pd.DataFrame]:
    compute = (
        signalling.ligand_target_prior if kind == "ligand" else signalling.receptor_target_prior
    )

    def recipe(source: str, params: dict[str, Any], out: Path | None) -> pd.DataFrame:
        return compute(
            store.load_lr_pairs(source),
            store.load_signalling(source),
            store.load_tf_targets(source),
            damping=params["damping"],
            signal_quantile=params["signal_quantile"],
            max_targets=params["max_targets"],
        )

    return recipe


def _types(source: str, params: dict[str, Any], out: Path | None) -> pd.DataFrame:
    lr_pairs = store.load_lr_pairs(source)
    tf_targets = store.load_tf_targets(source)
    genes = set(tf_targets["source"].astype(str))
    if store.SOURCES[source].signalling != "reactome_pathways":  # pathway members: not a network
        edges = store.load_signalling(source)
        nodes = pd.concat([edges["source"], edges["target"]]).astype(str).unique()
        genes |= {g for node in nodes for g in signalling.split_complex(node)}
    return signalling.regulator_types(
        store.load_tfs(),
        lr_pairs,
        store.load_kinases(params["kinase_go_terms"]),
        genes=sorted(genes),
    )


def _regulator_prior(source: str, params: dict[str, Any], out: Path | None) -> pd.DataFrame:
    upstream = {
        name: load_prior(name, source=source, out=out, params=_upstream_params(name, params))
        for name in _DEPENDS["regulator_prior"]
    }
    return signalling.regulator_prior(
        store.load_tf_targets(source),
        upstream["ligand_targets"],
        upstream["receptor_targets"],
        upstream["regulator_types"],
    )


def _upstream_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key in DEFAULT_PARAMS[name]}


_RECIPES = {
    "ligand_targets": _programme("ligand"),
    "receptor_targets": _programme("receptor"),
    "regulator_types": _types,
    "regulator_prior": _regulator_prior,
}
#: priors built from other priors: their output sha256s are inputs of the dependent one
_DEPENDS = {"regulator_prior": ("ligand_targets", "receptor_targets", "regulator_types")}


def _inputs(
    name: str, source: str, out: Path | None, params: dict[str, Any]
) -> list[dict[str, Any]]:
    inputs = store.input_record(store.SOURCES[source].resources(name))
    for upstream in _DEPENDS.get(name, ()):
        build_prior(upstream, source=source, out=out, params=_upstream_params(upstream, params))
        provenance = store.read_provenance(upstream, source, out) or {}
        inputs.append({"prior": upstream, "sha256": provenance.get("output", {}).get("sha256")})
    return inputs


def build_prior(
    name: str,
    *,
    source: str = DEFAULT_SOURCE,
    out: str | Path | None = None,
    force: bool = False,
    params: dict[str, Any] | None = None,
) -> Path:
    """Build a prior (or reuse a verified, current cache) and return its parquet path.

    Parameters
    ----------
    name
        ``ligand_targets``, ``receptor_targets``, ``regulator_types`` or ``regulator_prior``.
    source
        ``omnipath`` (default; academic use), ``nichenet_v1`` (academic use; needs pyreadr) or
        ``permissive`` (open licences only); see :mod:`omicstwin.io.priors`.
    out
        Folder to write to (``<out>/<source>/<name>.parquet`` and ``.json``); default the cache
        ``$OMICSTWIN_CACHE_DIR/priors`` (``~/.cache/omicstwin/priors``).
    force
        Rebuild even when the cache is current.
    params
        Overrides of :data:`DEFAULT_PARAMS` (``damping``, ``signal_quantile``, ``max_targets``
        for the programmes).

    Returns
    -------
    pathlib.Path
        The parquet file; its provenance JSON lies beside it.
    """
    store.check_prior(name, source)
    out = Path(out) if out is not None else None
    parameters = _parameters(name, params)
    inputs = _inputs(name, source, out, parameters)
    reason = "--force" if force else None
    if reason is None:
        reason = store.stale_reason(store.read_provenance(name, source, out), inputs, parameters)
    if reason is None:
        try:
            return store.verify_output(name, source, out)
        except ChecksumError as exc:
            logger.warning("%s; rebuilding it", exc)
            reason = "its output checksum failed"
    logger.info("building prior '%s' from '%s' (%s)", name, source, reason)
    started = time.perf_counter()
    table = _RECIPES[name](source, parameters, out)
    provenance = {
        "inputs": inputs,
        "parameters": parameters,
        "academic_only": store.SOURCES[source].academic_only(name),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    return store.write_prior(table, name, source, out=out, provenance=provenance)


def load_prior(
    name: str,
    *,
    source: str = DEFAULT_SOURCE,
    out: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Return a prior as a table, building it first if it is missing, stale or corrupt.

    Parameters
    ----------
    name
        ``ligand_targets`` (``ligand, target, weight, sign``), ``receptor_targets``
        (``receptor, target, weight, sign``), ``regulator_types`` (``gene, regulator_type``) or
        ``regulator_prior`` (``source, target, weight, regulator_type``; weight signed).
    source
        See :func:`build_prior`.
    out
        Cache folder (default ``$OMICSTWIN_CACHE_DIR/priors``).
    params
        Parameter overrides, as in :func:`build_prior`.

    Returns
    -------
    pandas.DataFrame
        The verified table.
    """
    build_prior(name, source=source, out=out, params=params)
    return pd.read_parquet(store.verify_output(name, source, out))


def prior_provenance(
    name: str, *, source: str = DEFAULT_SOURCE, out: str | Path | None = None
) -> dict[str, Any]:
    """Return the provenance of a built prior (raises when it was never built there).

    Parameters
    ----------
    name
        The prior's name.
    source
        Its source.
    out
        Cache folder (default ``$OMICSTWIN_CACHE_DIR/priors``).

    Returns
    -------
    dict
        The provenance JSON, with ``output_verified`` telling whether the parquet still matches.
    """
    store.check_prior(name, source)
    provenance = store.read_provenance(name, source, out)
    if provenance is None:
        folder = store.prior_paths(name, source, out)[0].parent
        raise ParameterError(
            f"prior '{name}' ({source}) was never built in '{folder}'; fix: omicstwin priors "
            f"build {name} --source {source}"
        )
    try:
        store.verify_output(name, source, out)
        provenance["output_verified"] = True
    except ChecksumError:
        provenance["output_verified"] = False
    return provenance
