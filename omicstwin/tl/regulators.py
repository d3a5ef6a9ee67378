"""Upstream regulators and the multicellular network model (MNM) of Li et al. 2022.

An open replacement for the commercial upstream-regulator analysis Li et al. used: for each
cell type x time point and each regulator with prior targets (transcription factors from
CollecTRI, or a typed prior of ligands, receptors, kinases and TFs), the regulator's targets are
compared with the context's DEGs within an explicit universe of genes:

- ``p_value``: one-sided Fisher exact test (hypergeometric upper tail) of the overlap between
  the regulator's prior targets and the DEGs, within the universe (the genes tested in the
  context, a given background list, or the prior's genes); ``q_value``: BH within the context;
- ``activation_z``: the bias-corrected activation z-score of Kraemer et al. (Bioinformatics
  2014, the statistic behind IPA's upstream-regulator analysis), which removes the expected
  agreement that a skewed DEG list (most DEGs up) and a skewed prior (most edges activating)
  produce for any regulator (see :func:`activation_z`);
- ``predicted``: the call, by the default rule (overlap q < 0.05) or Li's (overlap p < 0.05
  and ``|activation_z| >= 2``); ``direction``: activated (z >= 2), inhibited (z <= -2), else
  undetermined.

The MNM links sender -> receiver at a time point when a predicted upstream regulator of the
receiver's DEGs is itself up-regulated in the sender. Regulators are ranked as in Li 2022 (number
of target cell type x time point pairs in which they are predicted) and as in Lilja 2023 (total
downstream target genes, ties broken by the number of target cell types); cell types are ranked by
eigenvector centrality of the MNM (as in scDrugPrio). :func:`regulators_from_tables` runs the
whole analysis on exported DE tables (Seurat, monocle, DESeq2, edgeR, scanpy).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse, stats

from omicstwin._stats import benjamini_hochberg
from omicstwin.errors import (
    DataFileError,
    EmptyDataError,
    MissingKeyError,
    OmicstwinWarning,
    ParameterError,
)
from omicstwin.schemas import SCHEMAS, conform
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


RULES = ("default", "li2022")
REGULATOR_TYPES = ("tf", "ligand", "receptor", "kinase", "other")
# the default call: overlap q < Q_PREDICTED (BH within the context); Li et al. 2022's call:
# overlap p < P_LI2022 and |activation z| >= Z_ACTIVATED (IPA's thresholds)
Q_PREDICTED = 0.05
P_LI2022 = 0.05
# the bias-corrected z needs this many prior targets among the DEGs, else it is 0 (no call).
# With N <= 3 the uncorrected z can never reach 2 (at most sqrt(3)), but the corrected one can:
# under its own null (x_i = +-1 with mean u) P(|z| >= 2) reaches 0.20 at N = 1 (u = 0.6) and
# 0.10-0.17 at N = 2-3, where from N = 4 it is 0.07-0.125 for |u| <= 0.7, the same as the
# uncorrected z's discreteness at those N (0.125 at N = 4). On no-disease cohorts of the
# simulator (seed 1) all 26 corrected |z| >= 2 without this minimum had N = 1-2 targets.
MIN_Z_TARGETS = 4


def activation_z(
    agreement: np.ndarray,
    weight_sum: np.ndarray,
    weight_sq_sum: np.ndarray,
    dataset_bias: float,
    regulator_bias: np.ndarray,
) -> np.ndarray:
    """Bias-corrected activation z-score of Kraemer et al. 2014 (vectorised over regulators).

    For the N prior targets of a regulator among the DEGs, ``x_i = s_i d_i`` is +1 when target
    i moves as an activated regulator predicts (edge sign ``s_i`` times the DEG's direction
    ``d_i``) and -1 otherwise, with edge weight ``w_i`` (1 for an unweighted prior). With the
    dataset bias ``u_D`` (mean direction of the DEG list: ``(n_up - n_down) / n_DEG``) and the
    regulator bias ``u_R`` (weighted mean sign of the regulator's prior edges into the
    universe), the agreement expected by chance is ``u = u_D * u_R`` and

        z = sum_i w_i (x_i - u) / sqrt( sum_i w_i^2 (1 - u^2) ),

    the paper's weighted form: under its null the ``x_i`` are independent with mean ``u`` and
    variance ``1 - u^2``. With ``u = 0`` this is the uncorrected ``sum_i w_i x_i /
    sqrt(sum_i w_i^2)``. z is 0 where it is undefined (no targets among the DEGs, or
    ``|u| = 1``, where every ``x_i`` equals ``u`` and the signs carry no information);
    :func:`upstream_regulators` also sets it to 0 below :data:`MIN_Z_TARGETS` targets.

    Parameters
    ----------
    agreement
        ``sum_i w_i x_i`` per regulator.
    weight_sum, weight_sq_sum
        ``sum_i w_i`` and ``sum_i w_i^2`` over the regulator's targets among the DEGs.
    dataset_bias
        ``u_D``.
    regulator_bias
        ``u_R`` per regulator.
    """
    u = dataset_bias * np.asarray(regulator_bias, dtype=float)
    variance = np.asarray(weight_sq_sum, dtype=float) * (1.0 - u**2)
    numerator = np.asarray(agreement, dtype=float) - u * np.asarray(weight_sum, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(variance > 1e-12, numerator / np.sqrt(np.maximum(variance, 1e-300)), 0.0)
    return z


def _typed_prior(prior: pd.DataFrame, molecule_types: list[str] | None) -> pd.DataFrame:
    """Prior edges with sign, weight magnitude and regulator type, filtered to the types."""
    _require(prior, ["source", "target"], "the prior network")
    prior = prior.drop_duplicates(["source", "target"])
    weight = prior["weight"].to_numpy(float) if "weight" in prior else np.ones(len(prior))
    if np.isnan(weight).any():
        bad = prior.loc[np.isnan(weight), ["source", "target"]].iloc[0].tolist()
        raise ParameterError(
            f"the prior's weight is missing for {int(np.isnan(weight).sum())} edges (first "
            f"{bad[0]} -> {bad[1]}); fix: give every edge a signed weight (or drop the column)"
        )
    types = (
        prior["regulator_type"].astype("string").fillna("tf").str.lower()
        if "regulator_type" in prior
        else pd.Series("tf", index=prior.index, dtype="string")
    )
    unknown = sorted(set(types) - set(REGULATOR_TYPES))
    if unknown:
        raise ParameterError(
            f"the prior's regulator_type has unknown values {unknown}; fix: use "
            f"{list(REGULATOR_TYPES)}"
        )
    # a zero weight asserts no regulation: the edge is not a target
    edges = pd.DataFrame(
        {
            "source": prior["source"].astype(str).to_numpy(),
            "target": prior["target"].astype(str).to_numpy(),
            "sign": np.where(weight < 0, -1.0, 1.0),
            "w": np.abs(weight),
            "regulator_type": types.to_numpy(),
        }
    )[weight != 0]
    if molecule_types is not None:
        wanted = [str(t).lower() for t in molecule_types]
        unknown = sorted(set(wanted) - set(REGULATOR_TYPES))
        if unknown:
            raise ParameterError(
                f"unknown molecule types {unknown}; fix: choose among {list(REGULATOR_TYPES)}"
            )
        edges = edges[edges["regulator_type"].isin(wanted)]
        if edges.empty:
            raise ParameterError(
                f"the prior has no regulators of types {wanted} (types present: "
                f"{sorted(set(types))}); fix: choose molecule_types among those"
            )
    return edges.reset_index(drop=True)


def _regulator_types(edges: pd.DataFrame) -> pd.Series:
    """One type per regulator: the most frequent among its edges (ties alphabetically)."""
    counts = edges.groupby(["source", "regulator_type"], observed=True).size().reset_index()
    counts = counts.sort_values(["source", 0, "regulator_type"], ascending=[True, False, True])
    return counts.drop_duplicates("source").set_index("source")["regulator_type"]


def _tested_mask(ctx: pd.DataFrame, tested_column: str) -> np.ndarray:
    return ctx[tested_column].notna().to_numpy()


def _signature(
    ctx: pd.DataFrame,
    tested: np.ndarray,
    *,
    deg_column: str,
    deg_alpha: float,
    lfc_threshold: float,
    top_n: int | None,
) -> np.ndarray:
    """DEG mask of one context: the rule, then (``top_n``) the N best by q, then p."""
    is_deg = tested & degs_of(
        ctx, deg_column=deg_column, deg_alpha=deg_alpha, lfc_threshold=lfc_threshold
    ).to_numpy(dtype=bool)
    if top_n is not None and is_deg.sum() > top_n:
        hits = ctx[is_deg]
        keys = [c for c in ("q_value", "p_value") if c in hits and hits[c].notna().any()]
        order = sort_by_score(hits, keys, table="de", tie_break=["gene"]) if keys else hits
        keep = ctx.index.isin(order.index[:top_n])
        is_deg &= keep
    return is_deg


def _universe_genes(
    universe: str | list[str], ctx_genes: pd.Index, tested: np.ndarray, prior_genes: pd.Index
) -> pd.Index:
    if isinstance(universe, str):
        if universe == "tested":
            return pd.Index(ctx_genes[tested])
        return prior_genes
    return universe  # already an Index of the given background


def upstream_regulators(
    de: pd.DataFrame,
    prior: pd.DataFrame,
    *,
    deg_column: str = DEG_COLUMN,
    deg_alpha: float = DEG_ALPHA,
    lfc_threshold: float = DEG_LFC,
    min_targets: int = 3,
    universe: str | list[str] | pd.Index = "tested",
    top_n: int | None = None,
    rule: str = "default",
    molecule_types: list[str] | None = None,
) -> pd.DataFrame:
    """Predict upstream regulators of each cell type x time point's DEGs from a prior network.

    Parameters
    ----------
    de
        DE table (``SCHEMAS["de"]``): cell_type, time, gene, log_fc (log2), p_value and/or
        q_value. A gene is tested in a context when it has a p-value (a q-value when the table
        has no p-values at all, as monocle exports).
    prior
        Regulator -> target table with columns ``source``, ``target``, optionally ``weight``
        (its sign is the mode of regulation, its magnitude the edge's weight ``w_i`` in the
        z-score; missing means activation with weight 1; zero-weight edges are dropped) and
        ``regulator_type`` (``tf``, ``ligand``, ``receptor``, ``kinase``, ``other``; missing
        means ``tf``).
    deg_column, deg_alpha, lfc_threshold
        What counts as a DEG: ``deg_column`` (``p_value`` or ``q_value``) below ``deg_alpha``
        and ``|log_fc| >= lfc_threshold``. Default nominal p < 0.05 and ``|log2 FC| >= 0.25``,
        chosen by calibration on no-disease cohorts (false regulator calls in 2% of contexts)
        and power on disease cohorts (``benchmarks/deg_rule.py``; the evidence is in the note
        at :data:`DEG_COLUMN`).
    min_targets
        Regulators need at least this many prior targets in the universe of a context.
    universe
        The background of the overlap test: ``"tested"`` (the genes tested in the context;
        needs a table with non-DEG rows), ``"prior"`` (every gene the prior names, for DEG-only
        tables) or a list of genes (e.g. all genes measured). DEGs outside the universe are
        not counted.
    top_n
        Keep only the ``top_n`` DEGs of each context by q (then p, then name) among those
        passing the rule (Li et al. 2022 gave IPA the top 5,000 DEGs by q).
    rule
        ``"default"``: predicted when the overlap q < 0.05 (BH within the context);
        ``"li2022"``: overlap p < 0.05 and ``|activation_z| >= 2`` (Li et al. 2022, IPA).
    molecule_types
        Test only regulators of these types (Li et al. filtered IPA's regulators by type).

    Returns
    -------
    pandas.DataFrame
        ``SCHEMAS["regulators"]``: cell_type, time, regulator, regulator_type, activation_z
        (bias-corrected, :func:`activation_z`; 0 with fewer than :data:`MIN_Z_TARGETS` targets
        among the DEGs), p_value, q_value, predicted, direction,
        n_targets (prior targets among the DEGs), n_prior_targets (in the universe), n_degs and
        n_universe (of the context) and activation_z_uncorrected (``u = 0``, for comparison);
        sorted by context and p.

    Raises
    ------
    ParameterError
        A bad option, a DE table whose every tested gene is a DEG with ``universe="tested"``
        (no background: p would be 1 for every regulator), no p-values for ``deg_column``.
    """
    _check_options(universe, top_n, rule, min_targets, deg_column)
    _require(de, ["cell_type", "time", "gene", "log_fc", deg_column], "the DE table")
    if de[deg_column].notna().sum() == 0 and len(de):
        other = "q_value" if deg_column == "p_value" else "p_value"
        raise ParameterError(
            f"the DE table has no {deg_column} values; fix: deg_column='{other}' (e.g. for a "
            "monocle export with q-values only)"
        )
    has_p = "p_value" in de and de["p_value"].notna().any()
    tested_column = "p_value" if has_p else "q_value"
    _require(de, [tested_column], "the DE table")
    edges = _typed_prior(prior, molecule_types)
    types = _regulator_types(edges)
    prior_genes = pd.Index(
        sorted(set(prior["source"].astype(str)) | set(prior["target"].astype(str)))
    )
    given = None if isinstance(universe, str) else pd.Index(sorted(set(map(str, universe))))
    regulators = pd.Index(sorted(edges["source"].unique()))
    rows = []
    for (cell_type, time), ctx in de.groupby(["cell_type", "time"], sort=True, observed=True):
        duplicated = ctx["gene"][ctx["gene"].duplicated()]
        if len(duplicated):
            gene = duplicated.iloc[0]
            raise ParameterError(
                f"gene '{gene}' appears {int((ctx['gene'] == gene).sum())} times in context "
                f"{cell_type} x {time}; fix: one row per gene per context"
            )
        ctx = ctx.reset_index(drop=True)
        tested = _tested_mask(ctx, tested_column)
        if not tested.any():
            continue
        is_deg = _signature(
            ctx,
            tested,
            deg_column=deg_column,
            deg_alpha=deg_alpha,
            lfc_threshold=lfc_threshold,
            top_n=top_n,
        )
        # a table of DEG rows only (every tested gene significant) has no background: every
        # regulator would get p = 1 without a word
        significant = (ctx[deg_column] < deg_alpha).to_numpy()
        if isinstance(universe, str) and universe == "tested" and significant[tested].all():
            raise ParameterError(
                f"every tested gene of context {cell_type} x {time} is significant "
                f"({int(tested.sum())} rows: a table of DEGs only), so the overlap test has no "
                "background; fix: universe='prior' (the prior's "
                "genes) or a list of all genes measured (CLI: --universe prior or "
                "--background FILE)"
            )
        genes = _universe_genes(
            universe if given is None else given,
            pd.Index(ctx["gene"].astype(str)),
            tested,
            prior_genes,
        )
        frame = _context_table(ctx, is_deg, genes, edges, regulators, min_targets)
        frame.insert(0, "cell_type", cell_type)
        frame.insert(1, "time", time)
        rows.append(frame)
    if not rows:
        return conform(pd.DataFrame(columns=list(SCHEMAS["regulators"])), "regulators")
    table = pd.concat(rows, ignore_index=True)
    table["regulator_type"] = types.reindex(table["regulator"]).to_numpy()
    table["direction"] = np.select(
        [table["activation_z"] >= Z_ACTIVATED, table["activation_z"] <= -Z_ACTIVATED],
        ["activated", "inhibited"],
        "undetermined",
    )
    table["predicted"] = _call(table, rule)
    table = conform(table, "regulators")
    return sort_by_score(
        table,
        "p_value",
        table="regulators",
        within=["cell_type", "time"],
        tie_break=["regulator"],
    ).reset_index(drop=True)


def _check_options(universe, top_n, rule, min_targets, deg_column) -> None:
    if min_targets < 1:
        raise ParameterError(f"min_targets must be >= 1, got {min_targets}")
    if rule not in RULES:
        raise ParameterError(f"unknown rule '{rule}'; fix: use one of {list(RULES)}")
    if top_n is not None and (isinstance(top_n, bool) or int(top_n) != top_n or top_n < 1):
        raise ParameterError(f"top_n must be a positive integer or None, got {top_n!r}")
    if isinstance(universe, str) and universe not in ("tested", "prior"):
        raise ParameterError(
            f"unknown universe '{universe}'; fix: 'tested', 'prior' or a list of genes"
        )
    if not isinstance(universe, str) and len(universe) == 0:
        raise ParameterError("the universe gene list is empty; fix: give the genes measured")
    if deg_column not in ("p_value", "q_value"):
        raise ParameterError(f"deg_column must be 'p_value' or 'q_value', got '{deg_column}'")


def _context_table(
    ctx: pd.DataFrame,
    is_deg: np.ndarray,
    genes: pd.Index,
    edges: pd.DataFrame,
    regulators: pd.Index,
    min_targets: int,
) -> pd.DataFrame:
    """Overlap test and activation z of every regulator in one context (vectorised)."""
    position = genes.get_indexer(edges["target"])
    keep = position >= 0
    rows = regulators.get_indexer(edges["source"][keep])
    shape = (len(regulators), len(genes))
    w = edges["w"].to_numpy()[keep]
    s = edges["sign"].to_numpy()[keep]
    incidence = sparse.csr_matrix((np.ones(keep.sum()), (rows, position[keep])), shape=shape)
    weights = sparse.csr_matrix((w, (rows, position[keep])), shape=shape)
    signed = sparse.csr_matrix((w * s, (rows, position[keep])), shape=shape)
    squared = sparse.csr_matrix((w * w, (rows, position[keep])), shape=shape)
    # direction over the universe: +-1 for its DEGs, 0 elsewhere
    deg_genes = ctx.loc[is_deg, ["gene", "log_fc"]]
    direction = np.zeros(len(genes))
    at = genes.get_indexer(deg_genes["gene"].astype(str))
    inside = at >= 0
    direction[at[inside]] = np.sign(deg_genes["log_fc"].to_numpy(float)[inside])
    is_member = (direction != 0).astype(float)
    n_deg = int(is_member.sum())
    n_prior = np.asarray(incidence.sum(axis=1)).ravel()
    overlap = np.asarray(incidence @ is_member).ravel()
    agreement = np.asarray(signed @ direction).ravel()
    weight_sum = np.asarray(weights @ is_member).ravel()
    weight_sq_sum = np.asarray(squared @ is_member).ravel()
    total_w = np.asarray(weights.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        regulator_bias = np.where(total_w > 0, np.asarray(signed.sum(axis=1)).ravel() / total_w, 0)
    dataset_bias = float(direction.sum() / n_deg) if n_deg else 0.0
    # P(X >= overlap) for X ~ Hypergeom(universe, n_deg, n_prior): one-sided Fisher test
    p = stats.hypergeom.sf(overlap - 1, len(genes), n_deg, n_prior)
    frame = pd.DataFrame(
        {
            "regulator": regulators,
            "activation_z": np.where(
                overlap >= MIN_Z_TARGETS,
                activation_z(agreement, weight_sum, weight_sq_sum, dataset_bias, regulator_bias),
                0.0,
            ),
            "activation_z_uncorrected": activation_z(
                agreement, weight_sum, weight_sq_sum, 0.0, regulator_bias
            ),
            "p_value": np.minimum(p, 1.0),
            "n_targets": overlap.astype(int),
            "n_prior_targets": n_prior.astype(int),
            "n_degs": n_deg,
            "n_universe": len(genes),
        }
    )[n_prior >= min_targets]
    frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy())
    return frame.reset_index(drop=True)


def _call(table: pd.DataFrame, rule: str) -> np.ndarray:
    if rule == "li2022":
        return (
            (table["p_value"] < P_LI2022) & (table["activation_z"].abs() >= Z_ACTIVATED)
        ).to_numpy()
    return (table["q_value"] < Q_PREDICTED).to_numpy()


def predicted(regulators: pd.DataFrame, *, q_threshold: float | None = None) -> pd.DataFrame:
    """Rows of an upstream-regulator table that count as predicted regulators.

    ``q_threshold=None`` (default) uses the table's ``predicted`` column (the rule chosen in
    :func:`upstream_regulators`); a number overrides it with ``q_value < q_threshold``.
    """
    if q_threshold is None:
        _require(regulators, ["predicted"], "the upstream-regulator table")
        return regulators[regulators["predicted"].astype(bool)]
    _require(regulators, ["q_value"], "the upstream-regulator table")
    return regulators[regulators["q_value"] < q_threshold]


def rank_regulators(
    regulators: pd.DataFrame, *, scheme: str = "li2022", q_threshold: float | None = None
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
        None (default): a regulator counts as predicted in a context where the table's
        ``predicted`` column says so (the rule of :func:`upstream_regulators`); a number:
        where its overlap q-value is below it.

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
    hits["evidence"] = -np.log10(np.maximum(hits["p_value"], 1e-300))
    best = sort_by_score(
        hits, "p_value", table="regulators", tie_break=["cell_type", "time"]
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
    q_threshold: float | None = None,
    deg_column: str = DEG_COLUMN,
    deg_alpha: float = DEG_ALPHA,
    lfc_threshold: float = DEG_LFC,
) -> pd.DataFrame:
    """MNM edges of Li et al. 2022: sender -> receiver per time point.

    An edge exists when a predicted upstream regulator (the ``predicted`` column) of the
    receiver's DEGs is itself up-regulated (a DEG, as in :func:`upstream_regulators`, with
    positive log fold change) in the sender; self-loops are excluded.

    Parameters
    ----------
    de
        The ``de`` table.
    regulators
        The table of :func:`upstream_regulators` of that DE table.
    q_threshold
        None (default): the regulator table's ``predicted`` column; a number: a regulator is
        predicted in a context when its overlap q is below it.
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


# ------------------------------------------------------------------ external DE tables

SCHEMES = ("li2022", "lilja2023")
_COMBINED_PRIOR = "regulator_prior"
_BUILT_PRIORS = ("regulator_prior", "ligand_targets", "receptor_targets")


def load_regulator_prior(
    prior: str | Path | pd.DataFrame | None = None, *, source: str | None = None
) -> pd.DataFrame:
    """Load the prior for regulator analysis: a DataFrame, a csv/tsv file or a named prior.

    ``None``: the combined typed regulator prior (TFs, ligands, receptors, kinases;
    :func:`omicstwin.tl.priors.load_prior` ``("regulator_prior")``), built from ``source``
    (default ``omnipath``, academic use; ``permissive`` for open licences only) on first use
    and cached. A built prior's name (``ligand_targets``, ``receptor_targets``,
    ``regulator_prior``) goes through the same cache; any other name is a manifest table
    (e.g. ``collectri``, TFs only).
    """
    from omicstwin.io.priors import DEFAULT_SOURCE
    from omicstwin.tl.priors import load_prior

    if isinstance(prior, pd.DataFrame):
        return prior
    if prior is not None and Path(prior).suffix.lower() in (".csv", ".tsv", ".txt", ".gz"):
        path = Path(prior)
        if not path.is_file():
            raise DataFileError(
                f"prior file '{path}' does not exist; fix: a csv with source, target, weight"
            )
        table = pd.read_csv(path, sep=None, engine="python")
        _require(table, ["source", "target"], f"prior file '{path}'")
        return table
    source = source or DEFAULT_SOURCE
    name = _COMBINED_PRIOR if prior is None else str(prior)
    if name in _BUILT_PRIORS:
        table = load_prior(name, source=source)
        if name != _COMBINED_PRIOR:  # a programme: ligand/receptor -> target with a sign
            key = "ligand" if name == "ligand_targets" else "receptor"
            table = pd.DataFrame(
                {
                    "source": table[key],
                    "target": table["target"],
                    "weight": table["weight"] * table["sign"],
                    "regulator_type": key,
                }
            )
        return table
    from omicstwin.io.manifests import load_table

    return load_table(name)


def read_de_tables(
    tables: Sequence[str | Path | pd.DataFrame | tuple],
    **read_options: object,
) -> pd.DataFrame:
    """Read and stack exported DE tables (:func:`omicstwin.io.de_tables.read_de_table`).

    Each item is a path or DataFrame, a ``"FILE:CELL_TYPE[:TIME]"`` string, or a tuple
    ``(path_or_frame, cell_type[, time])``. Everything is checked here, before any
    computation: formats, columns, time labels and one time unit across the tables, and no gene
    given twice for the same cell type and time by two tables. ``attrs``: ``time_unit``,
    ``has_p_value`` (every table has p-values), ``n_capped``.
    """
    from omicstwin.io.de_tables import parse_table_spec, read_de_table

    if not len(tables):
        raise EmptyDataError("no DE tables given; fix: give at least one table")
    frames = []
    for item in tables:
        cell_type = time = None
        if isinstance(item, tuple):
            item, cell_type, *rest = item
            time = rest[0] if rest else None
        elif isinstance(item, str):
            item, cell_type, time = parse_table_spec(item)
        options = dict(read_options)
        if cell_type is not None:
            options["cell_type"] = cell_type
            options.pop("cell_type_column", None)
        if time is not None:
            options["time"] = time
            options.pop("time_column", None)
        frames.append(read_de_table(item, **options))
    units = sorted({f.attrs["time_unit"] for f in frames} - {""})
    if len(units) > 1:
        raise ParameterError(f"the DE tables mix time units {units}; fix: one unit for all tables")
    de = pd.concat(frames, ignore_index=True)
    clash = de.duplicated(["cell_type", "time", "gene"], keep=False)
    if clash.any():
        row = de[clash].iloc[0]
        sources = [
            f.attrs["source"]
            for f in frames
            if ((f["cell_type"] == row["cell_type"]) & (f["time"] == row["time"])).any()
        ]
        raise ParameterError(
            f"cell type '{row['cell_type']}' at time {row['time']:g} comes from several tables "
            f"({', '.join(sources)}); fix: give each table its own FILE:CELL_TYPE[:TIME]"
        )
    de.attrs.update(
        time_unit=units[0] if units else "",
        has_p_value=all(f.attrs["has_p_value"] for f in frames),
        n_capped=sum(f.attrs["n_capped"] for f in frames),
    )
    return de


def regulators_from_tables(
    tables: Sequence[str | Path | pd.DataFrame | tuple],
    *,
    prior: str | Path | pd.DataFrame | None = None,
    prior_source: str | None = None,
    universe: str | Path | list[str] = "tested",
    top_n: int | None = None,
    rule: str = "default",
    molecule_types: list[str] | None = None,
    deg_alpha: float = DEG_ALPHA,
    lfc_threshold: float = DEG_LFC,
    min_targets: int = 3,
    **read_options: object,
) -> dict[str, pd.DataFrame]:
    """Upstream regulators, MNM, centrality and rankings of exported DE tables.

    The Python side of ``omicstwin regulators``: reads the tables (:func:`read_de_tables`;
    ``read_options`` are :func:`omicstwin.io.de_tables.read_de_table`'s ``format``, ``gene``,
    ``log_fc``, ``p_value``, ``q_value``, ``fc_base``, ``cell_type``, ``time``,
    ``cell_type_column``, ``time_column``), then runs :func:`upstream_regulators`,
    :func:`multicellular_network_model`, :func:`cell_type_centrality` and
    :func:`rank_regulators` (both schemes). DEGs are the calibrated default (p < 0.05,
    ``|log2 FC| >= 0.25``); when a table has no p-values (monocle exports q only) they are
    called by q < ``deg_alpha`` instead, with a warning.

    Parameters
    ----------
    tables
        Paths / DataFrames / ``"FILE:CELL_TYPE[:TIME]"`` / ``(table, cell_type[, time])``.
    prior, prior_source
        See :func:`load_regulator_prior` (``prior_source`` is its ``source``).
    universe
        ``"tested"``, ``"prior"``, a list of genes or a file of genes (one per line).
    top_n, rule, molecule_types, deg_alpha, lfc_threshold, min_targets
        As in :func:`upstream_regulators`.
    **read_options
        Keywords of :func:`omicstwin.io.de_tables.read_de_table` for every table.

    Returns
    -------
    dict of pandas.DataFrame
        ``regulators``, ``mnm``, ``centrality``, ``rank_regulators`` (with a ``scheme``
        column: li2022 rows, then lilja2023 rows).
    """
    from omicstwin.io.de_tables import read_gene_list

    if isinstance(universe, str | Path) and str(universe) not in ("tested", "prior"):
        universe = read_gene_list(universe)
    _check_options(universe, top_n, rule, min_targets, DEG_COLUMN)
    de = read_de_tables(tables, **read_options)
    prior_table = load_regulator_prior(prior, source=prior_source)
    deg_column = DEG_COLUMN
    if not de.attrs["has_p_value"]:
        deg_column = "q_value"
        warnings.warn(
            f"a DE table has no p-values: DEGs are called by q < {deg_alpha} and "
            f"|log2 FC| >= {lfc_threshold} instead of the calibrated p-value rule",
            OmicstwinWarning,
            stacklevel=2,
        )
    deg_rule = {"deg_column": deg_column, "deg_alpha": deg_alpha, "lfc_threshold": lfc_threshold}
    regulators = upstream_regulators(
        de,
        prior_table,
        universe=universe,
        top_n=top_n,
        rule=rule,
        molecule_types=molecule_types,
        min_targets=min_targets,
        **deg_rule,
    )
    mnm = multicellular_network_model(de, regulators, **deg_rule)
    centrality = cell_type_centrality(mnm, cell_types=sorted(de["cell_type"].unique()))
    rankings = pd.concat(
        [rank_regulators(regulators, scheme=s).assign(scheme=s) for s in SCHEMES],
        ignore_index=True,
    )
    rankings = rankings[["scheme", *[c for c in rankings.columns if c != "scheme"]]]
    out = {
        "regulators": regulators,
        "mnm": mnm,
        "centrality": centrality,
        "rank_regulators": rankings,
    }
    for table in out.values():
        table.attrs["time_unit"] = de.attrs["time_unit"]
    return out
