"""The score registry: direction and meaning of every score column, and the one way to rank.

Every numeric column of every result table (:data:`omicstwin.schemas.SCHEMAS`) is either a score,
registered here with

- ``direction``: ``"higher"`` (larger is better / stronger / ranked first), ``"lower"`` (smaller
  is better: p-values, ranks, off-target change) or ``"magnitude"`` (signed effect whose size is
  its strength and whose sign is its direction: log fold changes, activation z-scores, network
  weights; ranked by absolute value);
- ``kind``: ``"calibrated"`` (in interpretable units, named by ``unit``) or ``"rank_only"`` (its
  order means something, its differences do not);
- ``unit`` and ``meaning``: what a value says;

or listed in :data:`DESCRIPTIVE` (times, doses, means, counts that describe a row, not score it).
Tables that are rankings without a declared schema (``rank_regulators``, the
intercellular layer's own ordering, the per-context DE prerank list) are registered too.

Every ranking in the package sorts through :func:`sort_by_score` / :func:`rank` /
:func:`top_rows` (tables) or :func:`argsort_scores` (arrays), so direction is declared once,
never hard-coded. The tie rule (also :func:`omicstwin._stats.top_k_mask`'s): best score first,
then the ``tie_break`` columns ascending (names), then the input order (stable sort); missing
scores come last whatever the direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omicstwin.errors import OmicstwinError

__all__ = [
    "DESCRIPTIVE",
    "SCORES",
    "Score",
    "ScoreError",
    "argsort_scores",
    "get_score",
    "rank",
    "sort_by_score",
    "top_rows",
]

DIRECTIONS = ("higher", "lower", "magnitude")
KINDS = ("calibrated", "rank_only")


class ScoreError(OmicstwinError, ValueError):
    """A column is sorted as a score but not registered as one."""


@dataclass(frozen=True)
class Score:
    """Direction and meaning of one score column.

    Attributes
    ----------
    direction
        ``higher``, ``lower`` or ``magnitude`` (see the module docstring).
    kind
        ``calibrated`` (interpretable units) or ``rank_only``.
    unit
        Unit of a calibrated score (e.g. ``log2 fold change``); empty for rank-only scores.
    meaning
        What a value says.
    """

    direction: str
    kind: str
    unit: str
    meaning: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS or self.kind not in KINDS:
            raise ValueError(f"bad score declaration {self}")


P_VALUE = Score("lower", "calibrated", "probability", "p-value of the row's test")
Q_VALUE = Score("lower", "calibrated", "false discovery rate", "Benjamini-Hochberg q-value")
RANK = Score("lower", "rank_only", "", "position in the ranking, 1 = best")
REVERSAL = Score(
    "higher",
    "calibrated",
    "fraction of the disease vector",
    "share of the case - control difference the perturbation undoes (1 = undone, 0 = no "
    "change along the disease axis, < 0 = worse)",
)
# The twin's reversal has the truth's form (-<delta, d> / <d, d>) but not its units: the
# elasticities are shrunken ridge fits of donor variation and propagation stops after n_steps,
# so a planted driver's knockout scores several-fold below its true reversal (0.11 vs 0.47 on
# the demo). Its order is what the twin estimates; read it as a rank.
TWIN_REVERSAL = Score(
    "higher",
    "rank_only",
    "",
    "twin-simulated reversal -<delta, d>/<d, d> of the disease vector (rank score: larger = "
    "undoes more of the case - control difference; > 0 towards control, < 0 away; the size "
    "is not a calibrated share of the disease, the twin's shrunken elasticities understate it)",
)
OFF_TARGET = Score(
    "lower",
    "calibrated",
    "fraction of the disease vector",
    "size of the change orthogonal to the disease axis, relative to the disease vector's size",
)
LOG_FC = Score("magnitude", "calibrated", "log2 fold change", "case over control")

SCORES: dict[str, dict[str, Score]] = {
    "de": {"log_fc": LOG_FC, "p_value": P_VALUE, "q_value": Q_VALUE},
    "de_timecourse": {
        "statistic": Score(
            "higher",
            "calibrated",
            "chi-square (df column)",
            "likelihood-ratio statistic of the condition x time terms",
        ),
        "p_value": P_VALUE,
        "q_value": Q_VALUE,
    },
    "edges": {
        "weight": Score(
            "magnitude",
            "rank_only",
            "",
            "signed edge weight (regression coefficient or elasticity, ligand-receptor score); "
            "comparable within a layer and context only",
        ),
        "stability": Score(
            "higher", "calibrated", "fraction", "share of bootstrap fits that keep the edge"
        ),
        "p_value": P_VALUE,  # intercellular edges: donor-label permutation test
        "q_value": Q_VALUE,
    },
    "intercellular_edges": {  # the intercellular layer ranks up-regulated signalling first
        "weight": Score(
            "higher",
            "rank_only",
            "",
            "ligand log2 FC x receptor fraction x receptor specificity x donor coupling; "
            "positive = up-regulated signalling",
        ),
        "p_value": P_VALUE,  # the twin's evidence order: smallest p first, ties by weight
    },
    "regulators": {
        "activation_z": Score(
            "magnitude",
            "calibrated",
            "z (standard deviations)",
            "bias-corrected activation z-score (Kraemer et al. 2014): > 0 activated, < 0 inhibited",
        ),
        "activation_z_uncorrected": Score(
            "magnitude",
            "calibrated",
            "z (standard deviations)",
            "activation z-score without the DEG-list x prior sign-bias term (for comparison)",
        ),
        "p_value": Score(
            "lower", "calibrated", "probability", "one-sided Fisher p of prior targets vs DEGs"
        ),
        "q_value": Q_VALUE,
        "n_targets": Score("higher", "calibrated", "genes", "prior targets among the DEGs"),
    },
    "perturbations": {
        "reversal_score": TWIN_REVERSAL,
        "off_target": OFF_TARGET,
        "p_value": P_VALUE,
        "q_value": Q_VALUE,
    },
    "rank": {  # rank_targets, rank_drugs (reversal) and rank_disease_genes (induction)
        "rank": RANK,
        "score": Score(
            "higher",
            "rank_only",
            "",
            "rank score: reversal (targets, drugs), how much of the disease vector the "
            "perturbation undoes in the twin; induction (disease genes), how much of it the "
            "gene's change alone recreates in control cells. Sizes are not calibrated shares",
        ),
        "off_target": OFF_TARGET,
        "p_value": P_VALUE,
        "q_value": Q_VALUE,
    },
    "patients": {
        "reversal_score": TWIN_REVERSAL,
        "rank": RANK,
        "p_value": P_VALUE,
        "q_value": Q_VALUE,
    },
    "patient_states": {
        "disease_score": Score(
            "higher",
            "calibrated",
            "fraction of the peak disease shift",
            "position on the disease axis fitted without the donor: 0 = control mean, 1 = case "
            "mean at the cell type's peak (higher = more diseased)",
        ),
        "disease_score_low": Score(
            "higher", "calibrated", "fraction of the peak disease shift", "interval's lower end"
        ),
        "disease_score_high": Score(
            "higher", "calibrated", "fraction of the peak disease shift", "interval's upper end"
        ),
    },
    "null_calibration": {
        "n_observed": Score("higher", "calibrated", "tests", "p-values in the bin"),
        "share_below_005": Score(
            "lower", "calibrated", "fraction", "share of p < 0.05 (about 0.05 under no disease)"
        ),
    },
    "enrichment": {
        "score": Score(
            "higher",
            "calibrated",
            "NES (prerank) or log2 odds ratio (ora)",
            "enrichment of the term; higher is more enriched",
        ),
        "p_value": P_VALUE,
        "q_value": Q_VALUE,
    },
    "validation": {
        "precision": Score("higher", "calibrated", "fraction", "hits / k"),
        "random_precision": Score(
            "higher", "calibrated", "fraction", "expected precision at k of a random ranking"
        ),
        "random_p95": Score(
            "higher", "calibrated", "fraction", "95th percentile of random precision at k"
        ),
        "p_value": P_VALUE,
    },
    "rank_regulators": {
        "rank": RANK,
        "n_contexts": Score(
            "higher", "calibrated", "contexts", "target cell type x time pairs predicted in"
        ),
        "evidence": Score(
            "higher", "rank_only", "", "summed -log10 overlap p over the predicted contexts"
        ),
        "n_targets_total": Score(
            "higher", "calibrated", "genes", "downstream target genes summed over contexts"
        ),
        "n_cell_types": Score("higher", "calibrated", "cell types", "target cell types"),
    },
    "mnm": {
        "n_regulators": Score(
            "higher",
            "calibrated",
            "regulators",
            "predicted upstream regulators of the receiver's DEGs that are up-regulated in the "
            "sender at that time point",
        ),
    },
    "centrality": {
        "centrality": Score(
            "higher", "rank_only", "", "eigenvector centrality in the MNM, scaled to max 1"
        ),
        "rank": RANK,
    },
    "truth": {  # a simulated cohort's truth tables (uns["truth"]: reversal, patient_reversal)
        "reversal": REVERSAL,
        "rank": RANK,
    },
    "ranked_edges": {  # BEELINE's rankedEdges.csv file format (omicstwin.datasets.beeline)
        "EdgeWeight": Score(
            "higher",
            "rank_only",
            "",
            "signed edge weight, sorted descending as BEELINE's files are (its evaluation then "
            "uses absolute values)",
        ),
    },
    "baseline": {  # a baseline gene ranking of omicstwin.bench.baselines
        "score": Score(
            "higher",
            "rank_only",
            "",
            "the baseline's evidence for the gene as a target (|log2 FC|, DE contexts, |TF "
            "activity|, predicted contexts, out-degree, minus mean rank); higher ranks first",
        ),
        "rank": RANK,
    },
    "prerank": {  # one context's DE genes, ranked for GSEA (omicstwin.tl.enrich)
        "statistic": Score(
            "higher",
            "rank_only",
            "",
            "sign(log_fc) x -log10 p: most up-regulated first, most down-regulated last",
        ),
        "log_fc": Score("higher", "calibrated", "log2 fold change", "case over control"),
    },
}

# numeric columns of declared schemas that describe a row rather than score it
DESCRIPTIVE: dict[str, set[str]] = {
    "de": {"time", "mean_case", "mean_control", "n_donors_case", "n_donors_control"},
    "de_timecourse": {"df"},
    "edges": {"time_from", "time_to"},
    "regulators": {"time", "n_prior_targets", "n_degs", "n_universe"},
    "perturbations": {"dose", "time"},
    "rank": {"best_time"},
    "patients": {"time"},
    "qc": {
        *("time", "n_cells", "n_cells_kept", "median_genes", "n_low_genes", "n_high_mito"),
        *("n_high_ribo", "n_doublets", "median_counts", "median_pct_mito", "median_pct_ribo"),
        "doublet_rate",
    },
    "gene_map": {"suffix_removed", "n_merged"},
    "patient_states": {"time", "n_cells"},
    "null_calibration": {"bin_low", "bin_high", "n_tests", "n_expected", "n_permutations"},
    "enrichment": {"time", "set_size", "n_overlap"},
    "validation": {"k", "n_ranked", "n_known", "hits"},
    "mnm": {"time"},
}


def get_score(table: str, column: str) -> Score:
    """Return the registered score of ``table.column``.

    Raises
    ------
    ScoreError
        Not registered (the message lists the table's scores).
    """
    try:
        return SCORES[table][column]
    except KeyError:
        known = sorted(SCORES.get(table, {}))
        raise ScoreError(
            f"'{column}' of table '{table}' is not a registered score (registered: "
            f"{known or sorted(SCORES)}); fix: declare it in omicstwin.scores.SCORES"
        ) from None


def _as_list(columns: str | Sequence[str]) -> list[str]:
    return [columns] if isinstance(columns, str) else list(columns)


def sort_by_score(
    frame: pd.DataFrame,
    columns: str | Sequence[str],
    *,
    table: str,
    within: Sequence[str] = (),
    tie_break: Sequence[str] = (),
) -> pd.DataFrame:
    """Sort best first by registered scores (the package's one ranking order).

    Parameters
    ----------
    frame
        Any table holding the columns.
    columns
        Score column(s), most important first; each sorts in its registered direction
        (``magnitude``: by absolute value, largest first).
    table
        Registry table the scores belong to (a schema name or a registered ranking).
    within
        Group columns placed before the scores (ascending): a ranking per group.
    tie_break
        Columns that break ties among equal scores (ascending, e.g. the name).

    Returns
    -------
    pandas.DataFrame
        ``frame`` reordered (index kept); stable, missing scores last.
    """
    scores = _as_list(columns)
    directions = [get_score(table, c).direction for c in scores]
    by = [*within, *scores, *tie_break]
    ascending = [True] * len(within) + [d == "lower" for d in directions]
    ascending += [True] * len(tie_break)
    magnitude = {c for c, d in zip(scores, directions, strict=True) if d == "magnitude"}

    def key(column: pd.Series) -> pd.Series:
        return column.abs() if column.name in magnitude else column

    return frame.sort_values(
        by, ascending=ascending, kind="stable", na_position="last", key=key if magnitude else None
    )


def rank(
    frame: pd.DataFrame,
    columns: str | Sequence[str],
    *,
    table: str,
    tie_break: Sequence[str] = (),
    rank_column: str = "rank",
) -> pd.DataFrame:
    """Sort by :func:`sort_by_score` and number the rows 1, 2, ... in ``rank_column``."""
    out = sort_by_score(frame, columns, table=table, tie_break=tie_break)
    out[rank_column] = np.arange(1, len(out) + 1)
    return out


def top_rows(
    frame: pd.DataFrame,
    column: str,
    k: int,
    *,
    table: str,
    within: Sequence[str],
    tie_break: Sequence[str] = (),
) -> pd.DataFrame:
    """Return the ``k`` best rows of each ``within`` group (groups ascending, best first)."""
    ordered = sort_by_score(frame, column, table=table, within=within, tie_break=tie_break)
    return ordered.groupby(list(within), sort=False).head(k)


def argsort_scores(values: np.ndarray, *, table: str, column: str) -> np.ndarray:
    """Return indices ordering one registered score's array best first (stable for ties)."""
    direction = get_score(table, column).direction
    values = np.asarray(values, dtype=np.float64)
    if direction == "lower":
        return np.argsort(values, kind="stable")
    if direction == "magnitude":
        return np.argsort(-np.abs(values), kind="stable")
    return np.argsort(-values, kind="stable")
