"""Upstream regulators and the multicellular network model (MNM) of Li et al. 2022.

An open replacement for the commercial upstream-regulator analysis Li et al. used: for each
cell type x time point and each regulator with prior targets (e.g. CollecTRI), the regulator's
targets are compared with the context's DEGs:

- ``overlap_p``: one-sided Fisher exact test (hypergeometric upper tail) of the overlap between
  the regulator's prior targets and the DEGs, within the genes tested in that context;
- ``z_score``: activation z-score from the sign agreement of target fold changes,
  ``z = sum_i s_i / sqrt(N)`` over the N prior targets among the DEGs, where ``s_i = +1`` when
  the DEG moves in the direction the prior sign predicts for an activated regulator and -1
  otherwise (Kraemer et al., Bioinformatics 2014, the statistic behind that tool);
- ``direction``: activated (z >= 2), inhibited (z <= -2), else undetermined.

The MNM links sender -> receiver at a time point when a predicted upstream regulator of the
receiver's DEGs is itself up-regulated in the sender. Regulators are ranked as in Li 2022 (number
of target cell type x time point pairs in which they are predicted) and as in Lilja 2023 (total
downstream target genes, ties broken by the number of target cell types); cell types are ranked by
eigenvector centrality of the MNM (as in scDrugPrio).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse, stats

from omicstwin._stats import benjamini_hochberg
from omicstwin.errors import MissingKeyError, ParameterError
from omicstwin.schemas import conform
from omicstwin.scores import rank, sort_by_score

Z_ACTIVATED = 2.0


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingKeyError(
            f"{what} lacks columns {missing}; columns present: {list(frame.columns)}; fix: pass "
            f"a table with {columns}"
        )


# The DEG signature for regulator analysis: nominal p < 0.05 and |log2 FC| >= 0.25, chosen by
# calibration on no-disease cohorts (benchmarks/deg_rule.py; issue 11), not by planted-driver
# ranks. Upstream-regulator analysis is a second-level test whose own Fisher q-values (BH within
# each cell type x time context) control false regulators, so the DEG list need not be FDR
# controlled itself; what must be calibrated is the regulator calls. Evidence (6 cell types x 5
# time points, 6 case + 4 control donors, 300 genes, 6,000 cells; seeds 0-9 of the own
# simulator with no driver input and of the independent generator with disease=False, then the
# same seeds with disease; CollecTRI prior, calls at overlap q < 0.05):
#
#   rule                       DEGs/context   contexts with a   false calls   power (planted
#                              (no disease)   false call        per cohort    TFs called)
#   p < 0.05 & |lfc| >= 0.25   16.3 / 8.4     0.021             0.5           0.080
#   p < 0.01 & |lfc| >= 0.25    3.5 / 1.5     0.004             0.1           0.045
#   q < 0.05 & |lfc| >= 0.25    0.1 / 0.1     0.000             0.0           0.000
#   q < 0.1                     0.2 / 0.1     0.004             0.1           0.020
#   top 30 by p, |lfc| >= 0.25   30 / 30      0.014             1.6           0.090
#
# (DEGs per context: own simulator / independent generator; the other columns pooled.) Every
# rule keeps false calls in at most ~2% of no-disease contexts (<= 5% asked); the nominal rule
# has the best power among the threshold rules, FDR-filtered DEG lists are almost empty with a
# dozen donors (q < 0.05: no planted regulator called in 20 disease cohorts), and the top-30
# rule's gain over the nominal rule (+0.010, paired 95% interval [-0.016, 0.036]) is noise
# while it makes three times the false calls per no-disease cohort, so the default stays. The
# nominal rule's DEGs on a no-disease cohort (4,216 on the 2,000-gene demo) are the DE test's
# expected ~5% false positives, which the second-level test filters. On the demo design itself
# (2,000 genes, 42 contexts, 10 + 6 donors; own simulator, seeds 0-1, `--size demo`): 98 DEGs
# per no-disease context, false calls in 1.2% of contexts (0.5 per cohort), and all 10 planted
# regulators called with disease, against 2.5 of 10 for q < 0.05 & |lfc| >= 0.25 and 8.5 for
# the top-30 rule (false calls in 3.6% of contexts). Caveat: BH runs within
# each context, so ~half of the no-disease cohorts have one false regulator call somewhere
# among their 30 contexts.
DEG_COLUMN = "p_value"
DEG_ALPHA = 0.05
DEG_LFC = 0.25


def degs_of(
    de: pd.DataFrame,
    *,
    deg_column: str = DEG_COLUMN,
    deg_alpha: float = DEG_ALPHA,
    lfc_threshold: float = DEG_LFC,
) -> pd.Series:
    """Boolean mask of the DEG rows of a DE table (``deg_column < deg_alpha``, ``|log_fc|``).

    The defaults (nominal p < 0.05, ``|log2 FC| >= 0.25``) are the signature chosen by
    calibration on no-disease cohorts (see the note at :data:`DEG_COLUMN`).
    """
    if deg_column not in ("p_value", "q_value"):
        raise ParameterError(f"deg_column must be 'p_value' or 'q_value', got '{deg_column}'")
    return (de[deg_column] < deg_alpha) & (de["log_fc"].abs() >= lfc_threshold)


def upstream_regulators(
    de: pd.DataFrame,
    prior: pd.DataFrame,
    *,
    deg_column: str = DEG_COLUMN,
    deg_alpha: float = DEG_ALPHA,
    lfc_threshold: float = DEG_LFC,
    min_targets: int = 3,
) -> pd.DataFrame:
    """Predict upstream regulators of each cell type x time point's DEGs from a prior network.

    Parameters
    ----------
    de
        DE table (``SCHEMAS["de"]``): cell_type, time, gene, log_fc, q_value. Genes with a
        missing q-value are treated as untested in that context (not in the universe).
    prior
        Regulator -> target table with columns ``source``, ``target`` and optionally
        ``weight`` (its sign is the mode of regulation; missing means activation).
    deg_column, deg_alpha, lfc_threshold
        What counts as a DEG: ``deg_column`` (``p_value`` or ``q_value``) below ``deg_alpha``
        and ``|log_fc| >= lfc_threshold``. Default nominal p < 0.05 and ``|log2 FC| >= 0.25``,
        chosen by calibration on no-disease cohorts (false regulator calls in 2% of contexts)
        and power on disease cohorts (``benchmarks/deg_rule.py``; the evidence is in the note
        at :data:`DEG_COLUMN`).
    min_targets
        Regulators need at least this many prior targets among the tested genes of a context.

    Returns
    -------
    pandas.DataFrame
        ``SCHEMAS["regulators"]`` rows plus ``overlap_q`` (BH within the context) and
        ``n_prior_targets`` (targets among the tested genes), sorted by context and p.
    """
    _require(de, ["cell_type", "time", "gene", "log_fc", "q_value", deg_column], "the DE table")
    _require(prior, ["source", "target"], "the prior network")
    if min_targets < 1:
        raise ParameterError(f"min_targets must be >= 1, got {min_targets}")
    prior = prior.drop_duplicates(["source", "target"])
    sign = np.sign(prior["weight"].to_numpy(float)) if "weight" in prior else np.ones(len(prior))
    sign[sign == 0] = 1.0
    regulators = pd.Index(sorted(prior["source"].unique()))
    rows = []
    for (cell_type, time), ctx in de.groupby(["cell_type", "time"], sort=True, observed=True):
        ctx = ctx[ctx["q_value"].notna()]
        genes = pd.Index(ctx["gene"])
        if genes.empty:
            continue
        t_pos = genes.get_indexer(prior["target"])
        keep = t_pos >= 0
        matrix = sparse.csr_matrix(
            (sign[keep], (regulators.get_indexer(prior["source"][keep]), t_pos[keep])),
            shape=(len(regulators), len(genes)),
        )
        is_deg = degs_of(
            ctx, deg_column=deg_column, deg_alpha=deg_alpha, lfc_threshold=lfc_threshold
        ).to_numpy()
        direction = np.sign(ctx["log_fc"].to_numpy()) * is_deg
        n_prior = np.asarray(abs(matrix).sum(axis=1)).ravel()
        overlap = np.asarray(abs(matrix) @ is_deg.astype(float)).ravel()
        agreement = np.asarray(matrix @ direction).ravel()
        universe, n_deg = len(genes), int(is_deg.sum())
        tested = n_prior >= min_targets
        # P(X >= overlap) for X ~ Hypergeom(universe, n_deg, n_prior): one-sided Fisher test
        p = stats.hypergeom.sf(overlap - 1, universe, n_deg, n_prior)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(overlap > 0, agreement / np.sqrt(overlap), 0.0)
        frame = pd.DataFrame(
            {
                "cell_type": cell_type,
                "time": time,
                "regulator": regulators,
                "z_score": z,
                "overlap_p": p,
                "n_targets": overlap.astype(int),
                "n_prior_targets": n_prior.astype(int),
            }
        )[tested]
        frame["overlap_q"] = benjamini_hochberg(frame["overlap_p"].to_numpy())
        rows.append(frame)
    if not rows:
        return conform(pd.DataFrame(columns=list(_REGULATOR_COLUMNS)), "regulators")
    table = pd.concat(rows, ignore_index=True)
    table["direction"] = np.select(
        [table["z_score"] >= Z_ACTIVATED, table["z_score"] <= -Z_ACTIVATED],
        ["activated", "inhibited"],
        "undetermined",
    )
    extra = table[["overlap_q", "n_prior_targets"]]
    table = pd.concat([conform(table, "regulators"), extra.reset_index(drop=True)], axis=1)
    return sort_by_score(
        table,
        "overlap_p",
        table="regulators",
        within=["cell_type", "time"],
        tie_break=["regulator"],
    ).reset_index(drop=True)


_REGULATOR_COLUMNS = (
    "cell_type",
    "time",
    "regulator",
    "z_score",
    "overlap_p",
    "n_targets",
    "direction",
)


def predicted(regulators: pd.DataFrame, *, q_threshold: float = 0.05) -> pd.DataFrame:
    """Rows of an upstream-regulator table that count as predicted regulators (overlap q)."""
    return regulators[regulators["overlap_q"] < q_threshold]


def rank_regulators(
    regulators: pd.DataFrame, *, scheme: str = "li2022", q_threshold: float = 0.05
) -> pd.DataFrame:
    """Rank upstream regulators across cell types and time points.

    Parameters
    ----------
    regulators
        Output of :func:`upstream_regulators`.
    scheme
        ``"li2022"``: number of (target cell type x time point) pairs in which the regulator is
        predicted, ties by the summed -log10 overlap p. ``"lilja2023"``: total downstream target
        genes (sum of ``n_targets`` over predicted contexts), ties by number of target cell types.
    q_threshold
        Overlap q-value below which a regulator counts as predicted in a context.

    Returns
    -------
    pandas.DataFrame
        regulator, rank, n_contexts, n_cell_types, n_targets_total, evidence, best_cell_type,
        best_time (the context with the smallest p).
    """
    if scheme not in ("li2022", "lilja2023"):
        raise ParameterError(f"unknown ranking scheme '{scheme}'; fix: use 'li2022' or 'lilja2023'")
    hits = predicted(regulators, q_threshold=q_threshold).copy()
    columns = [
        "regulator",
        "rank",
        "n_contexts",
        "n_cell_types",
        "n_targets_total",
        "evidence",
        "best_cell_type",
        "best_time",
    ]
    if hits.empty:
        return pd.DataFrame(columns=columns)
    hits["evidence"] = -np.log10(np.maximum(hits["overlap_p"], 1e-300))
    best = sort_by_score(
        hits, "overlap_p", table="regulators", tie_break=["cell_type", "time"]
    ).drop_duplicates("regulator")
    grouped = hits.groupby("regulator").agg(
        n_contexts=("cell_type", "size"),
        n_cell_types=("cell_type", "nunique"),
        n_targets_total=("n_targets", "sum"),
        evidence=("evidence", "sum"),
    )
    grouped = grouped.join(
        best.set_index("regulator")[["cell_type", "time"]].rename(
            columns={"cell_type": "best_cell_type", "time": "best_time"}
        )
    )
    keys = ["n_contexts", "evidence"] if scheme == "li2022" else ["n_targets_total", "n_cell_types"]
    grouped = rank(grouped.reset_index(), keys, table="rank_regulators", tie_break=["regulator"])
    return grouped[columns].reset_index(drop=True)


def multicellular_network_model(
    de: pd.DataFrame,
    regulators: pd.DataFrame,
    *,
    q_threshold: float = 0.05,
    deg_column: str = DEG_COLUMN,
    deg_alpha: float = DEG_ALPHA,
    lfc_threshold: float = DEG_LFC,
) -> pd.DataFrame:
    """MNM edges of Li et al. 2022: sender -> receiver per time point.

    An edge exists when a predicted upstream regulator (overlap q < ``q_threshold``) of the
    receiver's DEGs is itself up-regulated (a DEG, as in :func:`upstream_regulators`, with
    positive log fold change) in the sender; self-loops are excluded.

    Parameters
    ----------
    de
        The ``de`` table.
    regulators
        The table of :func:`upstream_regulators` of that DE table.
    q_threshold
        A regulator is predicted in a context when its overlap q is below this.
    deg_column, deg_alpha, lfc_threshold
        What counts as a DEG (as in :func:`upstream_regulators`).

    Returns
    -------
    pandas.DataFrame
        time, source_cell_type, target_cell_type, n_regulators, regulators (``;``-joined).
    """
    is_deg = degs_of(de, deg_column=deg_column, deg_alpha=deg_alpha, lfc_threshold=lfc_threshold)
    up = de[is_deg & (de["log_fc"] > 0)]
    up = up[["cell_type", "time", "gene"]].rename(
        columns={"cell_type": "source_cell_type", "gene": "regulator"}
    )
    hits = predicted(regulators, q_threshold=q_threshold)[["cell_type", "time", "regulator"]]
    hits = hits.rename(columns={"cell_type": "target_cell_type"})
    joined = up.merge(hits, on=["time", "regulator"])
    joined = joined[joined["source_cell_type"] != joined["target_cell_type"]]
    columns = ["time", "source_cell_type", "target_cell_type", "n_regulators", "regulators"]
    if joined.empty:
        return pd.DataFrame(columns=columns)
    edges = (
        joined.groupby(["time", "source_cell_type", "target_cell_type"], observed=True)["regulator"]
        .agg(n_regulators="nunique", regulators=lambda s: ";".join(sorted(set(s))))
        .reset_index()
    )
    return edges[columns].sort_values(columns[:3], kind="stable").reset_index(drop=True)


def cell_type_centrality(mnm: pd.DataFrame, *, cell_types: list[str] | None = None) -> pd.DataFrame:
    """Rank cell types by eigenvector centrality of the MNM (edges summed over time points).

    The graph is treated as undirected with edge weight = number of regulators summed over
    time: eigenvector centrality of a directed acyclic graph is degenerate (all zero), and a
    cascade is close to acyclic. Centralities are scaled to a maximum of 1.

    Parameters
    ----------
    mnm
        The edges of :func:`multicellular_network_model`.
    cell_types
        Cell types to rank besides those of the edges (absent ones get centrality 0).

    Returns
    -------
    pandas.DataFrame
        cell_type, centrality, rank.
    """
    names = sorted(
        set(cell_types or []) | set(mnm["source_cell_type"]) | set(mnm["target_cell_type"])
    )
    index = {name: i for i, name in enumerate(names)}
    adjacency = np.zeros((len(names), len(names)))
    for row in mnm.itertuples():
        a, b = index[row.source_cell_type], index[row.target_cell_type]
        adjacency[a, b] += float(row.n_regulators)
        adjacency[b, a] += float(row.n_regulators)
    if len(names) and adjacency.any():
        # leading eigenvector of the symmetric adjacency (deterministic, also for graphs with
        # several components, where networkx refuses); isolated cell types get 0
        _, vectors = np.linalg.eigh(adjacency)
        vector = np.abs(vectors[:, -1])
        vector[adjacency.sum(axis=1) == 0] = 0.0
        values = vector / vector.max()
    else:
        values = np.zeros(len(names))
    scores = dict(zip(names, values, strict=True))
    table = pd.DataFrame({"cell_type": list(scores), "centrality": list(scores.values())})
    table = rank(table, "centrality", table="centrality", tie_break=["cell_type"])
    return table.reset_index(drop=True)
