"""Gene set enrichment of a run's results: GSEA prerank of DE contexts, ORA of top rankings.

Two analyses, one normalised table (the ``enrichment`` schema of :mod:`omicstwin.schemas`):

*Prerank* (:func:`prerank_contexts`). In every cell type x time context of a DE table the genes
are ranked by the signed statistic ``sign(log_fc) * -log10(p_value)`` (p-values floored at the
smallest positive double so ``p = 0`` stays finite; ties broken by ``log_fc``, then by gene name,
so the order never depends on the input row order) and tested with gseapy's preranked GSEA
(Subramanian et al., PNAS 2005; weight ``p = 1``), gene sets passed as dicts, no download, no
output folder, no plots. ``score`` is the NES, ``p_value`` the nominal p of the set, ``q_value``
the Benjamini-Hochberg adjustment within collection x context (computed here, not gseapy's FDR,
so every table of the package uses one rule), ``genes`` / ``n_overlap`` the leading edge.

The default p-value procedure is gseapy's port of fgsea's multilevel Monte Carlo
(``method="multilevel"``; Korotkevich et al., bioRxiv 2016): it resolves small p-values without
millions of permutations and never reports ``p = 0``; ``permutations`` then sets the number of
random gene sets used to normalise the ES into the NES. The classic gene-set permutation test
(``method="permutation"``) is available; its p-values are floored at ``1 / (permutations + 1)``
because a permutation p of 0 is not a probability.

*ORA* (:func:`ora_top`). The top ``k`` genes of a ranking table (targets or disease genes) are
tested for over-representation in each gene set against the background of every gene of the
ranking (the screened universe, not the genome: a gene that could not be ranked cannot be a
hit). ``p_value`` is the one-sided hypergeometric tail ``P(X >= hits)`` (= Fisher's exact test,
alternative "greater"); ``score`` the log2 odds ratio of the 2 x 2 table, with 0.5 added to every
cell when one is 0 (Haldane-Anscombe), so it is always finite.

Gene sets are always restricted to the tested universe first: ``set_size`` is the number of the
set's genes that were tested, and only sets with ``min_size <= set_size <= max_size`` (and
smaller than the universe) are tested. This is also what keeps the prerank fast.

Defaults and cost (measured by ``benchmarks/enrichment_validation.py`` on 2 cores, 30 contexts
x 2,000 genes): :func:`enrichment` with its defaults takes about 8 s wall. Prerank runs MSigDB
Hallmark only (about 0.25 s per context); Reactome (about 1.3 s per context), GO BP (about
1.0 s) and the classic permutation test (about 1.4 s for Hallmark) are available through
``collections=`` / ``method=`` when the budget allows. ORA is vectorised and runs all three
collections in a fraction of a second.

Results depend only on the inputs and ``seed``: gseapy's random streams are seeded per call and
its thread pool only splits deterministic work (checked with 1 and 4 rayon threads); each
collection is run in its own call, so adding a collection does not change another collection's
numbers.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from omicstwin._logging import logger
from omicstwin._optional import require
from omicstwin._stats import benjamini_hochberg
from omicstwin.errors import ParameterError
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.scores import sort_by_score

GeneSets = Mapping[str, Sequence[str]]
#: Collections are manifest names (``load_gene_sets``) or ``{collection: {term: genes}}``.
Collections = Sequence[str] | Mapping[str, GeneSets]

#: Every gene set collection shipped in ``data_manifests/genesets.yaml``.
ALL_COLLECTIONS: tuple[str, ...] = ("msigdb_hallmark", "reactome_pathways", "go_biological_process")
#: Prerank default: Hallmark only, so a demo-sized study stays within its time budget.
PRERANK_COLLECTIONS: tuple[str, ...] = ("msigdb_hallmark",)
#: ORA default: every collection (ORA is cheap).
ORA_COLLECTIONS: tuple[str, ...] = ALL_COLLECTIONS

PRERANK_METHODS = ("multilevel", "permutation")
#: ``-log10`` of this is the largest statistic magnitude (p = 0 from underflow stays finite).
_P_FLOOR = np.finfo(np.float64).tiny
_DE_COLUMNS = ("cell_type", "time", "gene", "log_fc", "p_value")


# =============================================================================== helpers


def _gseapy() -> Any:
    """Import gseapy lazily (it is heavy: Rust core, plotting, requests)."""
    return require("gseapy", what="gene set enrichment")


@cache
def _manifest_sets(name: str) -> dict[str, tuple[str, ...]]:
    from omicstwin.io.manifests import load_gene_sets

    return {term: tuple(genes) for term, genes in load_gene_sets(name).items()}


def load_collections(collections: Collections | str) -> dict[str, dict[str, tuple[str, ...]]]:
    """Resolve collections to ``{collection: {term: genes}}``.

    Parameters
    ----------
    collections
        A manifest name, a sequence of manifest names (``msigdb_hallmark``,
        ``reactome_pathways``, ``go_biological_process``), or a mapping
        ``{collection: {term: genes}}`` used as given (e.g. hand-made sets in tests).

    Returns
    -------
    dict
        Collection name -> term -> genes, in the given order.
    """
    if isinstance(collections, str):
        collections = (collections,)
    if isinstance(collections, Mapping):
        out = {}
        for name, sets in collections.items():
            if not isinstance(sets, Mapping):
                raise ParameterError(
                    f"collection '{name}' is a {type(sets).__name__}, not a mapping term -> "
                    "genes; fix: pass {collection: {term: [genes]}} or manifest names"
                )
            out[str(name)] = {str(t): tuple(str(g) for g in genes) for t, genes in sets.items()}
        return out
    names = list(collections)
    if not names:
        raise ParameterError(
            f"no gene set collection given; fix: pass one or more of {list(ALL_COLLECTIONS)}"
        )
    return {name: _manifest_sets(name) for name in names}


def _filter_sets(
    sets: Mapping[str, Sequence[str]], universe: Mapping[str, int], min_size: int, max_size: int
) -> dict[str, list[str]]:
    """Restrict each set to the universe (first occurrence kept) and keep sizes in range.

    A set covering the whole universe is dropped: it cannot be enriched in anything (gseapy
    refuses it too).
    """
    n = len(universe)
    out: dict[str, list[str]] = {}
    for term, genes in sets.items():
        kept = list(dict.fromkeys(g for g in genes if g in universe))
        if min_size <= len(kept) <= max_size and len(kept) < n:
            out[term] = kept
    return out


def _check_sizes(min_size: int, max_size: int) -> None:
    if int(min_size) < 1 or int(max_size) < int(min_size):
        raise ParameterError(
            f"gene set sizes must satisfy 1 <= min_size <= max_size, got min_size={min_size}, "
            f"max_size={max_size}; fix: e.g. min_size=15, max_size=500"
        )


def _empty() -> pd.DataFrame:
    return conform(
        pd.DataFrame({c: pd.Series(dtype=d) for c, d in SCHEMAS["enrichment"].items()}),
        "enrichment",
    )


def _finish(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty()
    table = pd.concat(frames, ignore_index=True)
    return conform(table, "enrichment")


# =============================================================================== prerank


def signed_statistic(log_fc: Any, p_value: Any) -> np.ndarray:
    """Return ``sign(log_fc) * -log10(p_value)``, p floored at the smallest positive double.

    ``p = 1`` and ``log_fc = 0`` give exactly 0 (never ``-0.0``).
    """
    p = np.clip(np.asarray(p_value, dtype=np.float64), _P_FLOOR, 1.0)
    return np.sign(np.asarray(log_fc, dtype=np.float64)) * -np.log10(p) + 0.0


def context_ranking(context: pd.DataFrame) -> pd.Series:
    """Rank one context's genes by the signed DE statistic, deterministically.

    Parameters
    ----------
    context
        Rows of one cell type x time context with ``gene``, ``log_fc`` and ``p_value``.

    Returns
    -------
    pandas.Series
        The statistic indexed by gene, in decreasing order. Genes with a missing ``log_fc`` or
        ``p_value`` are dropped; ties are broken by ``log_fc`` (larger first), then by gene
        name; a gene listed twice keeps its smallest p-value.
    """
    frame = context.loc[:, ["gene", "log_fc", "p_value"]]
    frame = frame[frame["log_fc"].notna() & frame["p_value"].notna() & frame["gene"].notna()]
    genes = frame["gene"].astype(str).to_numpy()
    log_fc = frame["log_fc"].to_numpy(dtype=np.float64)
    p = frame["p_value"].to_numpy(dtype=np.float64)
    if len(np.unique(genes)) < len(genes):
        by_p = pd.DataFrame({"gene": genes, "p_value": p})  # keep each gene's best row
        best = sort_by_score(by_p, "p_value", table="de", tie_break=["gene"]).index.to_numpy()
        _, first = np.unique(genes[best], return_index=True)
        keep = np.sort(best[first])
        logger.debug("context lists %d genes twice; kept the smallest p", len(genes) - len(keep))
        genes, log_fc, p = genes[keep], log_fc[keep], p[keep]
    ranked = pd.DataFrame(
        {"gene": genes, "statistic": signed_statistic(log_fc, p), "log_fc": log_fc}
    )
    ranked = sort_by_score(ranked, ["statistic", "log_fc"], table="prerank", tie_break=["gene"])
    return pd.Series(
        ranked["statistic"].to_numpy(),
        index=pd.Index(ranked["gene"].to_numpy(), name="gene"),
        name="statistic",
    )


def gsea_prerank(
    ranking: pd.Series,
    gene_sets: GeneSets,
    *,
    seed: int = 0,
    permutations: int = 1000,
    min_size: int = 15,
    max_size: int = 500,
    threads: int = 1,
    method: str = "multilevel",
) -> pd.DataFrame:
    """GSEA prerank of one ranked gene list (the kernel behind :func:`prerank_contexts`).

    Parameters
    ----------
    ranking
        Statistic indexed by unique gene names, already in decreasing order (it is used in the
        given order: gseapy is called with ``ascending=None``).
    gene_sets
        ``{term: genes}``; restricted to the ranking's genes before the call.
    seed, permutations, min_size, max_size, threads, method
        See :func:`prerank_contexts`.

    Returns
    -------
    pandas.DataFrame
        term, es, nes, p_value, set_size, n_overlap, genes (leading edge, ``;``-joined), one row
        per tested set, in gene set order; empty when no set has an allowed size.
    """
    _check_sizes(min_size, max_size)
    if method not in PRERANK_METHODS:
        raise ParameterError(
            f"unknown prerank method '{method}'; fix: use one of {list(PRERANK_METHODS)}"
        )
    if int(permutations) < 1:
        raise ParameterError(
            f"permutations must be >= 1, got {permutations}; fix: e.g. permutations=1000"
        )
    if int(threads) < 1:
        raise ParameterError(f"threads must be >= 1, got {threads}; fix: e.g. threads=1")
    columns = ["term", "es", "nes", "p_value", "set_size", "n_overlap", "genes"]
    universe = {g: i for i, g in enumerate(ranking.index.astype(str))}
    if len(universe) != len(ranking):
        raise ParameterError(
            "the ranking lists a gene twice; fix: rank each gene once (see context_ranking)"
        )
    sets = _filter_sets(gene_sets, universe, int(min_size), int(max_size))
    if not sets:
        return pd.DataFrame(columns=columns)
    gseapy = _gseapy()
    # A fresh float Series named by a string: gseapy renames unnamed Series in place.
    rnk = pd.Series(
        ranking.to_numpy(dtype=np.float64), index=list(universe), name="statistic", copy=True
    )
    # gseapy logs through a stderr handler it creates per call; its one warning here
    # ("Duplicated values ... order arbitrary") does not apply since ties are ordered above, so
    # it goes to our logger at debug level instead of the user's terminal
    with contextlib.redirect_stderr(io.StringIO()) as gseapy_log:
        result = gseapy.prerank(
            rnk=rnk,
            gene_sets=sets,
            outdir=None,
            no_plot=True,
            permutation_num=int(permutations),
            min_size=int(min_size),
            max_size=int(max_size),
            weight=1.0,
            ascending=None,  # keep our deterministic tie order; gseapy's sort is not stable
            threads=int(threads),
            seed=int(seed),
            method=method,
            verbose=False,
        )
    if gseapy_log.getvalue().strip():
        logger.debug("gseapy: %s", gseapy_log.getvalue().strip())
    res = result.res2d.set_index("Term")
    terms = [t for t in sets if t in res.index]
    lead = res.loc[terms, "Lead_genes"].fillna("").astype(str).to_numpy()
    p = pd.to_numeric(res.loc[terms, "NOM p-val"], errors="coerce").to_numpy(dtype=np.float64)
    if method == "permutation":
        p = np.maximum(p, 1.0 / (int(permutations) + 1))
    return pd.DataFrame(
        {
            "term": terms,
            "es": pd.to_numeric(res.loc[terms, "ES"], errors="coerce").to_numpy(np.float64),
            "nes": pd.to_numeric(res.loc[terms, "NES"], errors="coerce").to_numpy(np.float64),
            "p_value": p,
            "set_size": [len(sets[t]) for t in terms],
            "n_overlap": [len(s.split(";")) if s else 0 for s in lead],
            "genes": lead,
        },
        columns=columns,
    )


def _check_de(de: pd.DataFrame) -> None:
    if not isinstance(de, pd.DataFrame):
        raise ParameterError(
            f"de must be a pandas DataFrame (the de table), got {type(de).__name__}; fix: pass "
            "the table returned by omicstwin.tl.de.differential_expression or read de.parquet"
        )
    missing = [c for c in _DE_COLUMNS if c not in de.columns]
    if missing:
        raise ParameterError(
            f"the DE table lacks columns {missing} (columns present: {list(de.columns)}); fix: "
            "pass the de table of a run (cell_type, time, gene, log_fc, p_value, ...)"
        )


def prerank_contexts(
    de: pd.DataFrame,
    collections: Collections = PRERANK_COLLECTIONS,
    *,
    seed: int = 0,
    permutations: int = 1000,
    min_size: int = 15,
    max_size: int = 500,
    threads: int = 1,
    method: str = "multilevel",
    min_genes: int = 50,
) -> pd.DataFrame:
    """GSEA prerank of every cell type x time context of a DE table.

    Parameters
    ----------
    de
        The ``de`` table (cell_type, time, gene, log_fc, p_value, ...).
    collections
        Manifest names of gene set collections, or ``{collection: {term: genes}}``. Default
        :data:`PRERANK_COLLECTIONS` (Hallmark; see the module docstring for the cost of the
        others).
    seed
        Seed of gseapy's random streams; results are identical for a given seed.
    permutations
        Random gene sets per set: the null of the permutation test, or (multilevel) the sample
        that normalises ES into NES.
    min_size, max_size
        Allowed number of a set's genes among the context's ranked genes.
    threads
        gseapy (rayon) threads; results do not depend on it. gseapy caps it at
        ``os.cpu_count() - 1`` and sets ``RAYON_NUM_THREADS`` process-wide, which rayon reads
        once, at the first gseapy call of the process: later calls keep that thread count.
    method
        ``"multilevel"`` (fgsea multilevel p-values, default) or ``"permutation"``.
    min_genes
        Contexts with fewer ranked genes are skipped with a warning.

    Returns
    -------
    pandas.DataFrame
        The ``enrichment`` schema with ``analysis="prerank"``, ``ranking="de"``; ``q_value`` is
        BH within collection x context.
    """
    _check_de(de)
    _check_sizes(min_size, max_size)
    sets_by_collection = load_collections(collections)
    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    tested = dict.fromkeys(sets_by_collection, 0)
    groups = de.groupby(["cell_type", "time"], sort=True, dropna=False, observed=True)
    for (cell_type, time), context in groups:
        ranking = context_ranking(context)
        if len(ranking) < int(min_genes):
            skipped.append(f"{cell_type} @ {time} ({len(ranking)} genes)")
            continue
        for collection, sets in sets_by_collection.items():
            result = gsea_prerank(
                ranking,
                sets,
                seed=seed,
                permutations=permutations,
                min_size=min_size,
                max_size=max_size,
                threads=threads,
                method=method,
            )
            if result.empty:
                logger.info(
                    "prerank: no %s set has %d-%d genes among the %d genes of %s @ %s",
                    collection,
                    min_size,
                    max_size,
                    len(ranking),
                    cell_type,
                    time,
                )
                continue
            tested[collection] += len(result)
            frames.append(_prerank_frame(result, collection, cell_type, time))
    _warn_untested(skipped, tested, min_genes=min_genes, min_size=min_size, max_size=max_size)
    table = _finish(frames)
    return _sorted(table)


def _prerank_frame(result: pd.DataFrame, collection: str, cell_type, time) -> pd.DataFrame:
    """Turn one context's :func:`gsea_prerank` result into ``enrichment`` rows.

    Parameters
    ----------
    result
        The prerank result (term, nes, p_value, set_size, n_overlap, genes).
    collection
        The gene set collection tested.
    cell_type, time
        The context.

    Returns
    -------
    pandas.DataFrame
        ``analysis="prerank"``, ``ranking="de"``, NES as ``score``; ``q_value`` is BH within
        this collection x context.
    """
    return pd.DataFrame(
        {
            "analysis": "prerank",
            "collection": collection,
            "ranking": "de",
            "cell_type": str(cell_type),
            "time": float(time),
            "term": result["term"],
            "score": result["nes"],
            "p_value": result["p_value"],
            "q_value": benjamini_hochberg(result["p_value"].to_numpy()),
            "set_size": result["set_size"],
            "n_overlap": result["n_overlap"],
            "genes": result["genes"],
        }
    )


def _warn_untested(
    skipped: list[str], tested: dict[str, int], *, min_genes: int, min_size: int, max_size: int
) -> None:
    """Log the contexts too small to rank and the collections no context could test.

    Parameters
    ----------
    skipped
        ``"cell type @ time (n genes)"`` per context below ``min_genes``.
    tested
        Sets tested per collection over all contexts.
    min_genes, min_size, max_size
        As for :func:`prerank_contexts`.
    """
    if skipped:
        logger.warning(
            "prerank skipped %d context(s) with fewer than %d ranked genes: %s",
            len(skipped),
            min_genes,
            ", ".join(skipped),
        )
    for collection, n in tested.items():
        if n == 0:
            logger.warning(
                "prerank tested no %s set: none has %d-%d genes among a context's ranked genes; "
                "fix: lower min_size or check that genes are human symbols",
                collection,
                min_size,
                max_size,
            )


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    within = ["analysis", "ranking", "collection", "cell_type", "time"]
    ordered = sort_by_score(table, "p_value", table="enrichment", within=within, tie_break=["term"])
    return ordered.reset_index(drop=True)


# =============================================================================== ORA


def ranked_items(
    ranking: pd.DataFrame, column: str, *, split: str | None = ";", strip_prefix: str = ""
) -> list[str]:
    """Distinct items of a ranking table in rank order.

    Parameters
    ----------
    ranking
        A rank table (``rank_targets``, ``rank_disease_genes``, ``rank_drugs``, ...). Rows are
        taken in increasing ``rank`` when that column exists, else in table order.
    column
        Column holding the items (``genes`` for targets, ``name`` otherwise).
    split
        Separator of several items in one cell (a combination's genes), or None.
    strip_prefix
        Prefix removed from every item (e.g. ``"drug:"``).

    Returns
    -------
    list of str
        Items in order of first appearance (a gene perturbed several ways counts once, at its
        best rank; a combination contributes its genes at its rank).
    """
    if not isinstance(ranking, pd.DataFrame):
        raise ParameterError(
            f"a ranking must be a pandas DataFrame, got {type(ranking).__name__}; fix: pass a "
            "rank table such as rank_targets.parquet"
        )
    if column not in ranking.columns:
        raise ParameterError(
            f"the ranking has no column '{column}' (columns: {list(ranking.columns)}); fix: "
            "pass name_column= naming the column with the ranked items"
        )
    rows = ranking
    if "rank" in ranking.columns:
        rows = sort_by_score(ranking, "rank", table="rank")
    items: dict[str, None] = {}
    for value in rows[column]:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        parts = str(value).split(split) if split else [str(value)]
        for part in parts:
            part = part.strip()
            if strip_prefix and part.startswith(strip_prefix):
                part = part[len(strip_prefix) :]
            if part:
                items.setdefault(part, None)
    return list(items)


def log2_odds_ratio(hits: Any, set_size: Any, n_top: Any, n_universe: Any) -> np.ndarray:
    """log2 odds ratio of the ORA 2 x 2 table; 0.5 is added to all cells of a table with a 0.

    Cells: ``a = hits``, ``b = set_size - hits``, ``c = n_top - hits``,
    ``d = n_universe - set_size - n_top + hits``.
    """
    a = np.asarray(hits, dtype=np.float64)
    b = np.asarray(set_size, dtype=np.float64) - a
    c = np.asarray(n_top, dtype=np.float64) - a
    d = np.asarray(n_universe, dtype=np.float64) - a - b - c
    zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    a, b, c, d = (x + 0.5 * zero for x in (a, b, c, d))
    return np.log2(a) + np.log2(d) - np.log2(b) - np.log2(c)


def ora_top(
    ranking: pd.DataFrame,
    collections: Collections = ORA_COLLECTIONS,
    *,
    k: int = 50,
    name_column: str | None = None,
    ranking_name: str | None = None,
    min_size: int = 5,
    max_size: int = 500,
) -> pd.DataFrame:
    """Over-representation of a ranking's top ``k`` genes in gene sets, universe = the ranking.

    Parameters
    ----------
    ranking
        A rank table. Its genes: the ``;``-separated symbols of ``genes`` (rank_targets) when
        that column exists, else ``name`` (rank_disease_genes); see :func:`ranked_items`.
    collections
        Manifest names or ``{collection: {term: genes}}``; default all collections.
    k
        Number of top genes (distinct genes, in rank order) tested against the rest.
    name_column
        Column with the genes, overriding the choice above.
    ranking_name
        Label for the ``ranking`` column; default ``"rank_targets"`` when the genes come from a
        ``genes`` column, else ``"rank_disease_genes"``.
    min_size, max_size
        Allowed number of a set's genes in the universe. Sets without a hit are tested too
        (they count in the BH adjustment), so ``q_value`` is reproducible from the table.

    Returns
    -------
    pandas.DataFrame
        The ``enrichment`` schema with ``analysis="ora"``, ``cell_type="all"``, ``time`` NaN,
        ``score`` the log2 odds ratio, ``genes`` the hits in rank order; empty (with a
        warning) when the ranking has no more than ``k`` genes.

    Notes
    -----
    gseapy's offline ``enrich`` is not used: it skips sets without a hit before its FDR (which
    makes the adjustment depend on the hits) and loops over sets in Python with one scipy call
    each; here the test is one vectorised hypergeometric tail per collection.
    """
    if int(k) < 1:
        raise ParameterError(f"k must be >= 1, got {k}; fix: e.g. k=50")
    _check_sizes(min_size, max_size)
    column = name_column or ("genes" if "genes" in ranking.columns else "name")
    label = ranking_name or ("rank_targets" if column == "genes" else "rank_disease_genes")
    genes = ranked_items(ranking, column)
    n_universe = len(genes)
    if n_universe <= int(k):
        logger.warning(
            "ORA of %s skipped: the ranking has %d genes, not more than k=%d, so the top is the "
            "whole universe; fix: lower k",
            label,
            n_universe,
            k,
        )
        return _empty()
    universe = {g: i for i, g in enumerate(genes)}
    n_top = int(k)
    frames = []
    for collection, sets in load_collections(collections).items():
        kept = _filter_sets(sets, universe, int(min_size), int(max_size))
        if not kept:
            logger.warning(
                "ORA of %s: no %s set has %d-%d genes among the %d ranked genes",
                label,
                collection,
                min_size,
                max_size,
                n_universe,
            )
            continue
        terms = list(kept)
        positions = [np.sort([universe[g] for g in kept[t]]) for t in terms]
        set_size = np.array([len(p) for p in positions], dtype=np.int64)
        hits = np.array([int(np.searchsorted(p, n_top)) for p in positions], dtype=np.int64)
        p_value = stats.hypergeom.sf(hits - 1, n_universe, set_size, n_top)
        frames.append(
            pd.DataFrame(
                {
                    "analysis": "ora",
                    "collection": collection,
                    "ranking": label,
                    "cell_type": "all",
                    "time": np.nan,
                    "term": terms,
                    "score": log2_odds_ratio(hits, set_size, n_top, n_universe),
                    "p_value": p_value,
                    "q_value": benjamini_hochberg(p_value),
                    "set_size": set_size,
                    "n_overlap": hits,
                    "genes": [
                        ";".join(genes[i] for i in p[:h])
                        for p, h in zip(positions, hits, strict=True)
                    ],
                }
            )
        )
    return _sorted(_finish(frames))


# =============================================================================== study level


def enrichment(
    de: pd.DataFrame | None = None,
    rank_targets: pd.DataFrame | None = None,
    rank_disease_genes: pd.DataFrame | None = None,
    *,
    prerank_collections: Collections = PRERANK_COLLECTIONS,
    ora_collections: Collections = ORA_COLLECTIONS,
    k: int = 50,
    seed: int = 0,
    permutations: int = 1000,
    min_size: int = 15,
    max_size: int = 500,
    ora_min_size: int = 5,
    threads: int = 1,
    method: str = "multilevel",
) -> pd.DataFrame:
    """Compute the run's ``enrichment.parquet``: prerank of ``de``, ORA of the top rankings.

    Parameters
    ----------
    de
        The ``de`` table; prerank of every context (:func:`prerank_contexts`). None skips it.
    rank_targets, rank_disease_genes
        Rank tables; ORA of their top ``k`` genes (:func:`ora_top`). None skips one.
    prerank_collections, ora_collections
        Collections of each analysis (defaults: Hallmark for prerank, all for ORA).
    k
        Top genes of each ranking for ORA.
    seed, permutations, min_size, max_size, threads, method
        Prerank options (:func:`prerank_contexts`).
    ora_min_size
        Smallest set (genes in the ranking's universe) tested by ORA; rankings are often a few
        hundred genes, so the prerank's 15 would leave few sets.

    Returns
    -------
    pandas.DataFrame
        One table in the ``enrichment`` schema (prerank rows, then ORA rows).
    """
    frames = []
    if de is not None:
        frames.append(
            prerank_contexts(
                de,
                prerank_collections,
                seed=seed,
                permutations=permutations,
                min_size=min_size,
                max_size=max_size,
                threads=threads,
                method=method,
            )
        )
    for name, table in (("rank_targets", rank_targets), ("rank_disease_genes", rank_disease_genes)):
        if table is not None:
            frames.append(
                ora_top(
                    table,
                    ora_collections,
                    k=k,
                    ranking_name=name,
                    name_column=None if name == "rank_targets" else "name",
                    min_size=ora_min_size,
                    max_size=max_size,
                )
            )
    return _finish(frames)
