"""Baseline target rankings a reviewer would put beside the twin's (``rank_targets``).

Each baseline is a pure function of a run's tables (``de.parquet``, ``regulators.parquet``,
``edges.parquet``) and priors and returns a gene ranking: a frame ``gene, score, rank`` (rank 1
= best; ties by gene name), through the score registry (``SCORES["baseline"]``). Genes a
baseline cannot score are absent (they count as not ranked).

- :func:`de_log_fc`: largest ``|log2 FC|`` over cell type x time contexts;
- :func:`de_contexts`: number of contexts in which the gene is a DEG (ties: largest ``|log2 FC|``);
- :func:`tf_activity_ulm`: TF activity by decoupler's univariate linear model (ULM) on a prior
  network (CollecTRI), per context, on the DE statistic; a TF's score is its largest ``|t|``;
- :func:`li2022_count`: Li et al. 2022's upstream-regulator ranking (predicted contexts);
- :func:`out_degree`: distinct targets of the gene in the network edges (all layers);
- :func:`random_ranking`: a seeded permutation of the candidate genes;
- :func:`rank_average`: combined evidence, the mean of several rankings' ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from omicstwin.errors import MissingKeyError, ParameterError
from omicstwin.scores import rank

_COLUMNS = ["gene", "score", "rank"]


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingKeyError(
            f"{what} lacks columns {missing}; columns present: {list(frame.columns)}; fix: pass "
            f"the run's {what}"
        )


def ranking_from_scores(scores: pd.Series | Mapping[str, float]) -> pd.DataFrame:
    """Turn gene -> score (higher first) into a ranking ``gene, score, rank`` (ties by gene)."""
    series = pd.Series(scores, dtype=float)
    table = pd.DataFrame({"gene": series.index.astype(str), "score": series.to_numpy()})
    if table.empty:
        return pd.DataFrame(columns=_COLUMNS)
    table = rank(table, "score", table="baseline", tie_break=["gene"])
    return table[_COLUMNS].reset_index(drop=True)


def _tested(de: pd.DataFrame) -> pd.DataFrame:
    _require(de, ["cell_type", "time", "gene", "log_fc", "p_value"], "DE table")
    return de[de["p_value"].notna() & de["log_fc"].notna()]


def de_log_fc(de: pd.DataFrame) -> pd.DataFrame:
    """Rank genes by their largest ``|log2 FC|`` (case over control) over the DE contexts."""
    de = _tested(de)
    return ranking_from_scores(de.assign(a=de["log_fc"].abs()).groupby("gene")["a"].max())


def de_contexts(de: pd.DataFrame, **deg_rule) -> pd.DataFrame:
    """Rank genes by the number of cell type x time contexts in which they are DEGs.

    ``deg_rule``: keywords of :func:`omicstwin.tl.regulators.degs_of` (default: its rule).
    Ties are broken by the largest ``|log2 FC|``, added as a fraction below one context.
    """
    from omicstwin.tl.regulators import degs_of

    de = _tested(de)
    count = degs_of(de, **deg_rule).groupby(de["gene"]).sum().astype(float)
    largest = de["log_fc"].abs().groupby(de["gene"]).max()
    tie = largest / (largest.max() + 1.0) if len(largest) else largest
    return ranking_from_scores(count + tie.reindex(count.index).fillna(0.0))


def de_statistic(de: pd.DataFrame) -> pd.Series:
    """Return the signed DE z per row, ``sign(log2 FC) x Phi^-1(1 - p / 2)``."""
    p = np.clip(de["p_value"].to_numpy(float), 1e-300, 1.0)
    return pd.Series(np.sign(de["log_fc"].to_numpy(float)) * stats.norm.isf(p / 2), de.index)


def ulm(statistic: pd.Series, net: pd.DataFrame, *, tmin: int = 5) -> pd.Series:
    """Return decoupler's ULM activities of one sample (t-value of the slope on weights).

    For each source with at least ``tmin`` targets among the statistic's genes, the genes'
    weights are the source's signed edge weights (0 for non-targets) and the activity is the
    t-value of the slope of a univariate linear model of the statistic on them:
    ``t = r sqrt(df / ((1 - r)(1 + r)))`` with ``r`` their Pearson correlation and
    ``df = n_genes - 2`` (``decoupler.mt.ulm``, version 2).

    Parameters
    ----------
    statistic
        gene -> statistic (one sample: a DE context).
    net
        ``source``, ``target`` and optionally ``weight`` (default 1).
    tmin
        Minimum targets among the genes (decoupler's default 5).

    Returns
    -------
    pandas.Series
        source -> activity (t-value), sources sorted by name.
    """
    _require(net, ["source", "target"], "prior network")
    genes = pd.Index(statistic.index)
    net = net.drop_duplicates(["source", "target"])
    net = net[net["target"].isin(genes)]
    counts = net["source"].value_counts()
    net = net[net["source"].isin(counts.index[counts >= tmin])]
    if net.empty or len(genes) < 3:
        return pd.Series(dtype=float)
    sources = pd.Index(sorted(net["source"].unique()))
    weight = net["weight"].to_numpy(float) if "weight" in net else np.ones(len(net))
    adj = np.zeros((len(genes), len(sources)))
    adj[genes.get_indexer(net["target"]), sources.get_indexer(net["source"])] = weight
    y = statistic.to_numpy(float)
    centred = adj - adj.mean(axis=0)
    cov = (y - y.mean()) @ centred / (len(y) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / (adj.std(axis=0, ddof=1) * y.std(ddof=1))
        t = r * np.sqrt((len(y) - 2) / ((1.0 - r + 2.2e-16) * (1.0 + r + 2.2e-16)))
    return pd.Series(t, index=sources)


def tf_activity_ulm(de: pd.DataFrame, net: pd.DataFrame, *, tmin: int = 5) -> pd.DataFrame:
    """Rank TFs by their largest ``|ULM activity|`` over the DE contexts.

    Per cell type x time context, the gene statistic is :func:`de_statistic` over the genes
    tested there and the activity of each TF is :func:`ulm` on the prior ``net`` (CollecTRI).
    """
    de = _tested(de)
    best: pd.Series | None = None
    for _, ctx in de.groupby(["cell_type", "time"], sort=True, observed=True):
        statistic = de_statistic(ctx)
        statistic.index = ctx["gene"].to_numpy()
        activity = ulm(statistic, net, tmin=tmin).abs()
        best = activity if best is None else best.combine(activity, max, fill_value=0.0)
    return ranking_from_scores(best.dropna() if best is not None else {})


def li2022_count(regulators: pd.DataFrame, *, q_threshold: float | None = None) -> pd.DataFrame:
    """Li et al. 2022: regulators by the number of contexts they are predicted in.

    Predicted: the table's ``predicted`` column (``q_threshold=None``) or overlap q below
    ``q_threshold``.

    Ties by the summed -log10 overlap p (:func:`omicstwin.tl.regulators.rank_regulators`); the
    score is ``n_contexts`` plus that evidence scaled below one context.
    """
    from omicstwin.tl.regulators import rank_regulators

    ranked = rank_regulators(regulators, scheme="li2022", q_threshold=q_threshold)
    if ranked.empty:
        return pd.DataFrame(columns=_COLUMNS)
    evidence = ranked["evidence"].astype(float)
    score = ranked["n_contexts"].astype(float) + evidence / (evidence.max() + 1.0)
    return ranking_from_scores(pd.Series(score.to_numpy(), index=ranked["regulator"]))


def out_degree(edges: pd.DataFrame, *, layers: Iterable[str] | None = None) -> pd.DataFrame:
    """Rank genes by the number of distinct targets they have as a source in ``edges``.

    ``layers``: restrict to these layers (default every layer: intracellular, intercellular,
    temporal). Self-loops (a temporal gene -> itself) are not counted.
    """
    _require(edges, ["source", "target"], "edges table")
    if layers is not None:
        _require(edges, ["layer"], "edges table")
        edges = edges[edges["layer"].isin(list(layers))]
    edges = edges[edges["source"] != edges["target"]]
    return ranking_from_scores(edges.groupby("source")["target"].nunique().astype(float))


def random_ranking(genes: Iterable[str], *, seed: int = 0) -> pd.DataFrame:
    """Rank ``genes`` in a seeded random order (the score is a uniform draw)."""
    genes = list(dict.fromkeys(genes))
    draws = np.random.default_rng(seed).random(len(genes))
    return ranking_from_scores(pd.Series(draws, index=genes))


def rank_average(
    rankings: Mapping[str, pd.DataFrame], *, weights: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Combine rankings by the (weighted) mean of their ranks; score = minus that mean.

    A gene missing from a ranking takes that ranking's length + 1 there; genes in no ranking
    are absent.
    """
    if not rankings:
        raise ParameterError("rank_average needs at least one ranking")
    weights = dict(weights or {})
    genes = pd.Index(sorted(set().union(*(set(r["gene"]) for r in rankings.values()))))
    total = np.zeros(len(genes))
    norm = 0.0
    for name, table in rankings.items():
        w = float(weights.get(name, 1.0))
        ranks = pd.Series(table["rank"].to_numpy(float), index=table["gene"].to_numpy())
        total += w * ranks.reindex(genes).fillna(len(table) + 1).to_numpy()
        norm += w
    return ranking_from_scores(pd.Series(-total / norm, index=genes))


def recall_at(ranking: pd.DataFrame, planted: Iterable[str], *, k: int = 20) -> float:
    """Fraction of the ``planted`` genes among the top ``k`` of a ranking."""
    planted = set(planted)
    if not planted:
        return float("nan")
    top = set(ranking.sort_values("rank", kind="stable")["gene"].head(k))
    return len(top & planted) / len(planted)
