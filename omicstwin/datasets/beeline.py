"""BEELINE data (Pratapa et al., Nature Methods 2020): file readers and dataset loaders.

Every file is resolved through the data manifests (resources ``beeline_simulated``,
``beeline_synthetic`` and ``beeline_outputs``), so checksums are verified and nothing is read by
hard-coded path. The BEELINE file formats:

- ``ExpressionData.csv``: genes x cells, comma-separated, first column the gene names;
- ``PseudoTime.csv``: cells x branches (one column per trajectory branch, empty/NA when the cell
  is not on that branch);
- ``refNetwork.csv``: ``Gene1, Gene2, Type`` (+ or -);
- ``rankedEdges.csv``: tab-separated ``Gene1, Gene2, EdgeWeight``, sorted by weight;
- ``<model>-AUPRC.csv``, ``-EPr.csv``, ``-Times.csv``: methods x datasets. AUPRC is the raw
  area (not the ratio); EPr is the early *precision* (not the ratio); Times are seconds.

The benchmark runner that scores GRN methods on these datasets lives in
:mod:`omicstwin.bench.beeline` (evaluation sits above the analysis layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from omicstwin.errors import DataFileError, ParameterError
from omicstwin.scores import sort_by_score

__all__ = [
    "CURATED_MODELS",
    "N_CELLS",
    "N_REPLICATES",
    "SYNTHETIC_MODELS",
    "BeelineDataset",
    "dataset_name",
    "load_beeline_dataset",
    "load_published_ranked_edges",
    "load_published_scores",
    "model_set",
    "read_expression",
    "read_pseudotime",
    "read_ranked_edges",
    "write_ranked_edges",
]

CURATED_MODELS: tuple[str, ...] = ("HSC", "mCAD", "VSC", "GSD")
SYNTHETIC_MODELS: tuple[str, ...] = ("dyn-LI", "dyn-CY", "dyn-LL", "dyn-BF", "dyn-TF", "dyn-BFC")
N_REPLICATES = 10
N_CELLS = 2000
_PUBLISHED_METRICS = ("AUPRC", "AUROC", "EPr", "Times")


def model_set(model: str) -> tuple[str, str]:
    """Return (input resource, BEELINE set folder) of a model name."""
    if model in CURATED_MODELS:
        return "beeline_simulated", "Simulated"
    if model in SYNTHETIC_MODELS:
        return "beeline_synthetic", "Synthetic"
    raise ParameterError(
        f"unknown BEELINE model '{model}'; known models: {[*CURATED_MODELS, *SYNTHETIC_MODELS]}; "
        "fix: use one of them"
    )


def dataset_name(model: str, replicate: int) -> str:
    """BEELINE's dataset name, e.g. ``HSC_2000_0``."""
    if not 0 <= replicate < N_REPLICATES:
        raise ParameterError(
            f"replicate must be in 0..{N_REPLICATES - 1}, got {replicate}; fix: pick one of them"
        )
    return f"{model}_{N_CELLS}_{replicate}"


# ----------------------------------------------------------------------------- file readers


def read_expression(path: str | Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Read a BEELINE ``ExpressionData.csv`` (genes x cells).

    Returns
    -------
    tuple
        ``expression`` (cells x genes, float64), ``genes``, ``cells``.

    Raises
    ------
    DataFileError
        Missing or unparsable file, non-numeric values, or duplicated gene/cell names.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise DataFileError(
            f"cannot read the expression file '{path}' ({exc}); fix: pass BEELINE's "
            "ExpressionData.csv (genes x cells, comma-separated, gene names in the first column)"
        ) from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataFileError(
            f"the expression file '{path}' has {frame.shape[0]} genes x {frame.shape[1]} cells; "
            "fix: pass a non-empty genes x cells table"
        )
    try:
        values = frame.to_numpy(dtype=np.float64).T
    except ValueError as exc:
        raise DataFileError(
            f"the expression file '{path}' holds non-numeric values ({exc}); fix: genes as rows, "
            "cells as columns, numbers only"
        ) from exc
    genes = [str(g) for g in frame.index]
    cells = [str(c) for c in frame.columns]
    for what, names in (("gene", genes), ("cell", cells)):
        if len(set(names)) != len(names):
            dup = pd.Index(names)[pd.Index(names).duplicated()][:3].tolist()
            raise DataFileError(
                f"the expression file '{path}' has duplicated {what} names, e.g. {dup}; fix: "
                f"make the {what} names unique"
            )
    return values, genes, cells


def read_pseudotime(path: str | Path, cells: Sequence[str] | None = None) -> np.ndarray:
    """Read a BEELINE ``PseudoTime.csv`` as a cells x branches float array (NaN off-branch).

    Parameters
    ----------
    path
        The file: cells as rows (first column the cell ids), one column per branch.
    cells
        Cell order of the expression matrix; the rows are aligned to it (cells absent from the
        file get NaN). Default: the file's order.

    Raises
    ------
    DataFileError
        Unreadable file, or no cell of ``cells`` in it.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, index_col=0)
        values = frame.apply(pd.to_numeric, errors="coerce")
    except (OSError, ValueError) as exc:
        raise DataFileError(
            f"cannot read the pseudotime file '{path}' ({exc}); fix: pass BEELINE's "
            "PseudoTime.csv (cells as rows, one column per branch, NA off-branch)"
        ) from exc
    values.index = values.index.astype(str)
    if cells is not None:
        found = values.index.isin(list(cells)).sum()
        if found == 0:
            raise DataFileError(
                f"none of the cells of the expression matrix is in the pseudotime file '{path}' "
                f"(e.g. '{cells[0]}' vs '{values.index[0]}'); fix: pass the PseudoTime.csv of "
                "the same dataset"
            )
        values = values.reindex(list(cells))
    return values.to_numpy(dtype=np.float64)


def read_ranked_edges(path: str | Path) -> pd.DataFrame:
    """Read a BEELINE ``rankedEdges.csv`` (tab-separated Gene1, Gene2, EdgeWeight)."""
    try:
        return pd.read_csv(path, sep="\t", header=0, index_col=None)
    except (OSError, ValueError) as exc:
        raise DataFileError(
            f"cannot read the ranked edges '{path}' ({exc}); fix: pass a tab-separated file "
            "with the header Gene1, Gene2, EdgeWeight"
        ) from exc


def write_ranked_edges(edges: pd.DataFrame, path: str | Path) -> Path:
    """Write an :func:`~omicstwin.tl.grn.infer_grn` result in BEELINE's ``rankedEdges`` format.

    Tab-separated with the header ``Gene1, Gene2, EdgeWeight``, sorted by weight descending
    (BEELINE's evaluation uses absolute values, so a
    signed weight keeps its sign). Written atomically.
    """
    path = Path(path)
    out = pd.DataFrame(
        {
            "Gene1": edges["source"].to_numpy(),
            "Gene2": edges["target"].to_numpy(),
            "EdgeWeight": edges["weight"].to_numpy(dtype=np.float64),
        }
    )
    out = sort_by_score(out, "EdgeWeight", table="ranked_edges")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    out.to_csv(partial, sep="\t", index=False, float_format="%.10g")
    partial.replace(path)
    return path


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class BeelineDataset:
    """One BEELINE dataset: expression, pseudotime and the reference network."""

    name: str
    model: str
    expression: np.ndarray  # cells x genes
    genes: list[str]
    cells: list[str]
    pseudotime: np.ndarray  # cells x branches, NaN off-branch
    reference: pd.DataFrame  # Gene1, Gene2, Type


def load_beeline_dataset(model: str, replicate: int = 0) -> BeelineDataset:
    """Load one 2,000-cell replicate of a BEELINE model (checksum-verified).

    Parameters
    ----------
    model
        A curated model (``HSC``, ``mCAD``, ``VSC``, ``GSD``) or a synthetic one (``dyn-LI``,
        ``dyn-CY``, ``dyn-LL``, ``dyn-BF``, ``dyn-TF``, ``dyn-BFC``).
    replicate
        0..9.
    """
    from omicstwin.io.manifests import resolve

    res, folder = model_set(model)
    name = dataset_name(model, replicate)
    base = f"inputs/{folder}/{model}/{name}"
    expression, genes, cells = read_expression(resolve(res, f"{base}/ExpressionData.csv"))
    pseudotime = read_pseudotime(resolve(res, f"{base}/PseudoTime.csv"), cells)
    reference = pd.read_csv(resolve(res, f"{base}/refNetwork.csv"))
    return BeelineDataset(name, model, expression, genes, cells, pseudotime, reference)


def load_published_scores(model: str, metric: str = "AUPRC") -> pd.DataFrame:
    """BEELINE's published per-method scores of a model (methods x datasets).

    ``metric`` is ``AUPRC`` (raw area), ``AUROC``, ``EPr`` (early precision, not the ratio;
    published for the curated models only) or ``Times`` (seconds). Only the 2,000-cell,
    no-dropout replicates are kept, in replicate order.

    Raises
    ------
    ResourceNotFoundError
        BEELINE did not publish that metric for the model (e.g. EPr of the synthetic models).
    """
    from omicstwin.io.manifests import resolve

    if metric not in _PUBLISHED_METRICS:
        raise ParameterError(
            f"unknown BEELINE metric '{metric}'; fix: use one of {list(_PUBLISHED_METRICS)}"
        )
    from omicstwin.errors import ResourceNotFoundError
    from omicstwin.io.manifests import get_resource

    _, folder = model_set(model)
    file = f"outputs/{folder}/{model}/{model}-{metric}.csv"
    if file not in {entry.path for entry in get_resource("beeline_outputs").files}:
        raise ResourceNotFoundError(
            f"BEELINE published no {metric} file for {model} ('{file}' is not in the "
            "beeline_outputs manifest); fix: use AUPRC, AUROC or Times for the synthetic models"
        )
    path = resolve("beeline_outputs", file)
    table = pd.read_csv(path, index_col=0)
    columns = [dataset_name(model, r) for r in range(N_REPLICATES)]
    columns = [c for c in columns if c in table.columns]
    return table.loc[:, columns]


def load_published_ranked_edges(model: str, method: str, replicate: int = 0) -> pd.DataFrame:
    """Return a published method's ``rankedEdges.csv`` (shipped for replicate 0, curated models)."""
    from omicstwin.io.manifests import resolve

    _, folder = model_set(model)
    name = dataset_name(model, replicate)
    path = resolve("beeline_outputs", f"outputs/{folder}/{model}/{name}/{method}/rankedEdges.csv")
    return read_ranked_edges(path)
