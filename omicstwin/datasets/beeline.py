"""BEELINE benchmark (Pratapa et al., Nature Methods 2020): readers and the benchmark runner.

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

The benchmark (:func:`run_beeline_benchmark`) scores a method of
:data:`omicstwin.tl.grn.GRN_METHODS` on the 2,000-cell replicates with the exact BEELINE metrics
of :mod:`omicstwin.tl.metrics` and lines it up with the published methods' medians.
"""

from __future__ import annotations

import resource as _resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from omicstwin._logging import logger
from omicstwin.errors import DataFileError, ParameterError

__all__ = [
    "CURATED_MODELS",
    "SYNTHETIC_MODELS",
    "BeelineDataset",
    "format_benchmark_table",
    "format_reproduction",
    "load_beeline_dataset",
    "load_published_ranked_edges",
    "load_published_scores",
    "read_expression",
    "read_pseudotime",
    "read_ranked_edges",
    "reproduce_published",
    "run_beeline_benchmark",
    "shuffle_expression",
    "summarise_benchmark",
    "write_ranked_edges",
]

CURATED_MODELS: tuple[str, ...] = ("HSC", "mCAD", "VSC", "GSD")
SYNTHETIC_MODELS: tuple[str, ...] = ("dyn-LI", "dyn-CY", "dyn-LL", "dyn-BF", "dyn-TF", "dyn-BFC")
N_REPLICATES = 10
N_CELLS = 2000
_PUBLISHED_METRICS = ("AUPRC", "AUROC", "EPr", "Times")


def _model_set(model: str) -> tuple[str, str]:
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
    out = out.sort_values("EdgeWeight", ascending=False, kind="mergesort")
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

    res, folder = _model_set(model)
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

    _, folder = _model_set(model)
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

    _, folder = _model_set(model)
    name = dataset_name(model, replicate)
    path = resolve("beeline_outputs", f"outputs/{folder}/{model}/{name}/{method}/rankedEdges.csv")
    return read_ranked_edges(path)


# ----------------------------------------------------------------------------- benchmark


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (BLAS threads count)."""
    own = _resource.getrusage(_resource.RUSAGE_SELF)
    kids = _resource.getrusage(_resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def shuffle_expression(expression: np.ndarray, seed: int = 0) -> np.ndarray:
    """Permute each gene's values independently across cells (the randomised control)."""
    rng = np.random.default_rng(seed)
    return rng.permuted(expression, axis=0)


def run_beeline_benchmark(
    models: Sequence[str] = (*CURATED_MODELS, *SYNTHETIC_MODELS),
    *,
    replicates: int = N_REPLICATES,
    method: str | None = None,
    controls: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **params,
) -> pd.DataFrame:
    """Score a GRN method on BEELINE replicates with the exact BEELINE metrics.

    Parameters
    ----------
    models
        BEELINE model names.
    replicates
        Number of replicates per model (the first ``replicates`` of 0..9).
    method
        A name of :data:`omicstwin.tl.grn.GRN_METHODS`; default its default method.
    controls
        Also score the method on shuffled expression (each gene permuted across cells, so any
        structure left is chance).
    seed
        Passed to the method and to the shuffling.
    progress
        Called with one line per dataset (the CLI prints it; the library never prints).
    **params
        Passed on to the method.

    Returns
    -------
    pandas.DataFrame
        One row per (model, dataset, variant) with ``auprc``, ``auprc_ratio``,
        ``early_precision``, ``epr``, ``cpu_s`` (inference CPU seconds), ``n_genes``,
        ``density``; ``variant`` is ``observed`` or ``shuffled``.
    """
    from omicstwin.tl.grn import DEFAULT_METHOD, infer_grn
    from omicstwin.tl.metrics import score_grn

    method = method or DEFAULT_METHOD
    if not 1 <= replicates <= N_REPLICATES:
        raise ParameterError(
            f"replicates must be in 1..{N_REPLICATES}, got {replicates}; fix: pick one of them"
        )
    rows = []
    for model in models:
        _model_set(model)
        for replicate in range(replicates):
            data = load_beeline_dataset(model, replicate)
            variants = [("observed", data.expression)]
            if controls:
                variants.append(("shuffled", shuffle_expression(data.expression, seed)))
            for variant, expression in variants:
                started = _cpu_seconds()
                edges = infer_grn(
                    expression,
                    data.genes,
                    method=method,
                    pseudotime=data.pseudotime,
                    seed=seed,
                    **params,
                )
                cpu = _cpu_seconds() - started
                scores = score_grn(data.reference, edges)
                rows.append(
                    {
                        "model": model,
                        "dataset": data.name,
                        "variant": variant,
                        "method": method,
                        "auprc": scores.auprc,
                        "auprc_ratio": scores.auprc_ratio,
                        "early_precision": scores.early_precision,
                        "epr": scores.early_precision_ratio,
                        "cpu_s": cpu,
                        "n_genes": scores.n_genes,
                        "density": scores.density,
                    }
                )
            line = (
                f"{data.name}: AUPRC ratio {rows[-len(variants)]['auprc_ratio']:.2f}, "
                f"EPR {rows[-len(variants)]['epr']:.2f}, CPU {rows[-len(variants)]['cpu_s']:.3f} s"
            )
            logger.info(line)
            if progress is not None:
                progress(line)
    return pd.DataFrame(rows)


def summarise_benchmark(results: pd.DataFrame) -> pd.DataFrame:
    """Medians per model of :func:`run_beeline_benchmark`, next to the published methods.

    Published AUPRC and early precision are divided by each dataset's density (computed from its
    reference network) so that both sides are ratios; published times are BEELINE's seconds per
    dataset (wall time of each method's container, as reported in ``<model>-Times.csv``).

    Returns
    -------
    pandas.DataFrame
        One row per model: ``ours_auprc_ratio``, ``ours_epr``, ``ours_cpu_s``,
        ``shuffled_auprc_ratio``, ``shuffled_epr``, ``grnboost2_auprc_ratio``,
        ``grnboost2_epr``, ``grnboost2_s``, ``best_method``, ``best_auprc_ratio``,
        ``best_epr_method``, ``best_epr``, ``n_replicates``.
    """
    from omicstwin.errors import ResourceNotFoundError

    rows = []
    for model, group in results.groupby("model", sort=False):
        observed = group[group["variant"] == "observed"]
        shuffled = group[group["variant"] == "shuffled"]
        density = observed.set_index("dataset")["density"]
        row: dict[str, object] = {
            "model": model,
            "n_replicates": len(observed),
            "ours_auprc_ratio": observed["auprc_ratio"].median(),
            "ours_epr": observed["epr"].median(),
            "ours_cpu_s": observed["cpu_s"].median(),
            "shuffled_auprc_ratio": shuffled["auprc_ratio"].median() if len(shuffled) else np.nan,
            "shuffled_epr": shuffled["epr"].median() if len(shuffled) else np.nan,
        }
        auprc = load_published_scores(str(model), "AUPRC").loc[:, density.index]
        ratio = auprc.div(density, axis=1).median(axis=1).dropna()
        row["grnboost2_auprc_ratio"] = ratio.get("GRNBOOST2", np.nan)
        row["best_method"] = ratio.idxmax()
        row["best_auprc_ratio"] = ratio.max()
        try:
            ep = load_published_scores(str(model), "EPr").loc[:, density.index]
            epr = ep.div(density, axis=1).median(axis=1).dropna()
            row["grnboost2_epr"] = epr.get("GRNBOOST2", np.nan)
            row["best_epr_method"] = epr.idxmax()
            row["best_epr"] = epr.max()
        except ResourceNotFoundError:  # BEELINE published EPr for the curated models only
            row["grnboost2_epr"] = np.nan
            row["best_epr_method"] = ""
            row["best_epr"] = np.nan
        try:
            times = load_published_scores(str(model), "Times").loc[:, density.index]
            row["grnboost2_s"] = times.median(axis=1).get("GRNBOOST2", np.nan)
        except (ResourceNotFoundError, KeyError):
            row["grnboost2_s"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def reproduce_published(model: str = "HSC", replicate: int = 0) -> pd.DataFrame:
    """Re-score the shipped rankedEdges of BEELINE's methods with our metrics.

    Returns one row per method with our AUPRC and early precision next to the published ones;
    on ``HSC_2000_0`` GRNBOOST2 gives 0.4166, GENIE3 0.4619, PIDC 0.4639.
    """
    from omicstwin.tl.metrics import score_grn

    data_name = dataset_name(model, replicate)
    data = load_beeline_dataset(model, replicate)
    published = load_published_scores(model, "AUPRC")[data_name]
    published_ep = load_published_scores(model, "EPr")[data_name]
    rows = []
    for method in ("GRNBOOST2", "GENIE3", "PIDC"):
        edges = load_published_ranked_edges(model, method, replicate)
        scores = score_grn(data.reference, edges)
        rows.append(
            {
                "dataset": data_name,
                "method": method,
                "auprc": scores.auprc,
                "published_auprc": float(published.get(method, np.nan)),
                "early_precision": scores.early_precision,
                "published_early_precision": float(published_ep.get(method, np.nan)),
            }
        )
    return pd.DataFrame(rows)


def format_reproduction(table: pd.DataFrame) -> str:
    """Plain-text table of :func:`reproduce_published` (printed by the CLI and the script)."""
    lines = [
        "Reproducing BEELINE's published scores from the shipped rankedEdges "
        f"({table['dataset'].iloc[0]}):",
        f"  {'method':<10} {'AUPRC':>7} {'published':>9}   {'EP':>6} {'published':>9}",
    ]
    for row in table.itertuples():
        lines.append(
            f"  {row.method:<10} {row.auprc:>7.4f} {row.published_auprc:>9.4f}   "
            f"{row.early_precision:>6.4f} {row.published_early_precision:>9.4f}"
        )
    return "\n".join(lines)


def format_benchmark_table(summary: pd.DataFrame, method: str) -> str:
    """Plain-text table of :func:`summarise_benchmark` (printed by the CLI and the script)."""

    def num(value: object, fmt: str = ".2f") -> str:
        return "-" if value is None or pd.isna(value) else format(value, fmt)

    header = (
        f"{'model':<8} {'n':>2} | {method[:12]:>12} {'GRNBoost2':>9} {'best published':>20} | "
        f"{'EPR ours':>8} {'GRNB2':>6} {'best':>15} | {'CPU s ours':>10} {'GRNB2 s':>8} | "
        f"{'shuffled AUPRCr':>15} {'EPR':>5}"
    )
    lines = [
        "Median over replicates. AUPRC ratio = AUPRC / density; EPR = early precision / density "
        "(BEELINE's published EPr files are early precision and are divided by density here; "
        "synthetic models have no published EPr). Published times are BEELINE's seconds per "
        "dataset; ours are CPU seconds of inference.",
        header,
        "-" * len(header),
    ]
    for row in summary.itertuples():
        best = f"{row.best_method} {num(row.best_auprc_ratio)}"
        best_epr = f"{row.best_epr_method} {num(row.best_epr)}" if row.best_epr_method else "-"
        lines.append(
            f"{row.model:<8} {row.n_replicates:>2} | {num(row.ours_auprc_ratio):>12} "
            f"{num(row.grnboost2_auprc_ratio):>9} {best:>20} | {num(row.ours_epr):>8} "
            f"{num(row.grnboost2_epr):>6} {best_epr:>15} | {num(row.ours_cpu_s, '.3f'):>10} "
            f"{num(row.grnboost2_s, '.1f'):>8} | {num(row.shuffled_auprc_ratio):>15} "
            f"{num(row.shuffled_epr):>5}"
        )
    beats = summary["ours_auprc_ratio"] >= summary["grnboost2_auprc_ratio"]
    above_best = summary["ours_auprc_ratio"] > summary["best_auprc_ratio"]
    lines.append(
        f">= GRNBoost2 on {int(beats.sum())}/{len(summary)} models; above the best published "
        f"method on {int(above_best.sum())}/{len(summary)}: "
        f"{', '.join(summary.loc[above_best, 'model'].astype(str)) or 'none'}"
    )
    return "\n".join(lines)
