"""The twin's network layers and their assembly into one multicellular network per time point.

- **intracellular**: a gene regulatory network per cell type x time point x condition, inferred
  from that context's cells with a registered method (:mod:`omicstwin.tl.grn`);
- **intercellular**: ligand (sender) -> receptor (receiver) edges per time point from a
  ligand-receptor resource, scored by the ligand's disease change in the sender times the
  fraction of receiver cells expressing the receptor;
- **temporal**: lagged regulator (t) -> target (t+1) edges within a cell type from donor-level
  pseudobulk trajectories.

All layers share the ``edges`` schema (:mod:`omicstwin.schemas`); :func:`to_networkx` turns a
table into a graph whose nodes are ``(cell_type, gene, time)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omicstwin._logging import logger
from omicstwin._stats import benjamini_hochberg, name_order, ridge, ridge_dual, top_k_mask
from omicstwin.errors import MissingKeyError, ParameterError
from omicstwin.pp.cohort import as_cohort
from omicstwin.schemas import conform
from omicstwin.scores import sort_by_score, top_rows
from omicstwin.tl._store import store_result

LAYERS = ("intracellular", "intercellular", "temporal")
CONTEXT_GRN_METHOD = "ridge"  # see context_grns: contexts have no pseudotime
ALL_CONDITIONS = "all"


# ----------------------------------------------------------------------------- gene rule

MAX_NETWORK_GENES = 5000  # default cap of stages.max_network_genes (keeps every gene <= 5,000)
_DE_Q = 0.05  # a gene DE in any context at q < 0.05 is a network target first
_MIN_REGULATOR_CPM = 1.0  # a regulator must reach 1 count per million in the pseudobulk


@dataclass(frozen=True)
class NetworkGenes:
    """The genes the regulatory layers are inferred on (:func:`network_genes`).

    Attributes
    ----------
    genes
        Targets and regulators, in the cohort's gene order.
    regulators
        Candidate regulators kept (in the order given), all among ``genes``; None: every gene.
    n_de, n_variable
        How many targets came from the DE table and from the variance ranking.
    """

    genes: list[str]
    regulators: list[str] | None
    n_de: int = 0
    n_variable: int = 0

    def params(self) -> dict:
        """Return a summary for run.json: counts, not names."""
        n_reg = None if self.regulators is None else len(self.regulators)
        return {
            "n_genes": len(self.genes),
            "n_regulators": n_reg,
            "n_de": self.n_de,
            "n_variable": self.n_variable,
        }


def network_genes(
    data,
    *,
    de: pd.DataFrame | None = None,
    regulators: Sequence[str] | None = None,
    max_genes: int | None = MAX_NETWORK_GENES,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
) -> NetworkGenes:
    """Choose the genes of the regulatory layers: regulators x (DE or variable) targets.

    **The rule.** A cohort of at most ``max_genes`` genes keeps every gene and every candidate
    regulator (the demo's 2,000 genes: nothing changes). A larger one keeps

    - **regulators**: the candidate regulators (prior TFs and receptors) that are expressed,
      i.e. reach a mean of 1 count per million over the donor pseudobulk samples;
    - **targets**: up to ``max_genes`` genes, first the genes DE in any cell type x time context
      (``q_value < 0.05`` in ``de``, most significant first), then the most variable genes of
      the pseudobulk (variance of log2 CPM over the donor x cell type x time samples of both
      arms, which carries the cell type, time and donor programmes the layers model);
    - the network genes are the targets plus the kept regulators (a regulator is also a
      target).

    Genes outside the rule still have twin states and can be perturbed; they have no edges, so
    perturbing one changes only itself (reversal 0), as a gene without an outgoing edge does
    today. The cap bounds every regulators x targets matrix of the layers (per context, per
    transition, per bootstrap) to ``n_regulators x (max_genes + n_regulators)``.

    Parameters
    ----------
    data
        AnnData, MuData or :class:`~omicstwin.pp.Cohort`.
    de
        The DE table (``SCHEMAS["de"]``); None: targets by variance only.
    regulators
        Candidate regulators; None: every gene is a candidate.
    max_genes
        The cap on targets (None: no cap, every gene).
    cell_type_key, time_key, condition_key, donor_key, case, control, layer
        The data contract (see :func:`omicstwin.io.validate_cohort`).

    Returns
    -------
    NetworkGenes
    """
    if max_genes is not None and max_genes < 1:
        raise ParameterError(f"max_genes must be >= 1 or None, got {max_genes}")
    cohort = as_cohort(data, locals())
    genes = cohort.genes
    if max_genes is None or len(genes) <= max_genes:
        return NetworkGenes(list(genes), None if regulators is None else list(regulators))
    keys, log_cpm = _donor_log_cpm(cohort)
    mean_cpm = (np.exp2(log_cpm) - 1.0).mean(axis=0)
    expressed = set(genes[mean_cpm >= _MIN_REGULATOR_CPM])
    kept_regs = None
    if regulators is not None:
        kept_regs = [g for g in dict.fromkeys(regulators) if g in expressed]
    order: list[str] = []
    n_de = 0
    if de is not None and len(de):
        hits = de[de["q_value"] < _DE_Q]
        best = hits.groupby("gene", observed=True)["q_value"].min()
        best = best[best.index.isin(genes)]
        # most significant first, ties by name: a deterministic order whatever the DE order
        ranked = best.reset_index().sort_values(["q_value", "gene"], kind="stable")
        order = ranked["gene"].astype(str).tolist()[:max_genes]
        n_de = len(order)
    variance = log_cpm.var(axis=0)
    chosen = set(order)
    # largest variance first, ties by gene order (stable)
    for j in np.argsort(-variance, kind="stable"):
        if len(order) >= max_genes:
            break
        if genes[j] not in chosen:
            order.append(genes[j])
            chosen.add(genes[j])
    keep = chosen | set(kept_regs or ())
    logger.info(
        "network genes: %d targets (%d DE, %d variable) + regulators = %d of %d genes",
        len(order),
        n_de,
        len(order) - n_de,
        len(keep),
        len(genes),
    )
    return NetworkGenes([g for g in genes if g in keep], kept_regs, n_de, len(order) - n_de)


# ----------------------------------------------------------------------------- intracellular


def context_grns(
    data,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
    method: str | None = None,
    regulators: Sequence[str] | None = None,
    prior: pd.DataFrame | None = None,
    min_cells: int = 30,
    top_k: int = 10,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    genes: Sequence[str] | None = None,
    key_added: str | None = "grn",
) -> pd.DataFrame:
    """Infer a GRN per cell type x time point x condition from that context's cells.

    Parameters
    ----------
    data
        AnnData or MuData with raw counts.
    cell_type_key, time_key, condition_key, donor_key, case, control, layer
        The data contract (see :func:`omicstwin.io.validate_cohort`).
    method
        A registered GRN method (:data:`omicstwin.tl.grn.GRN_METHODS`); default ``ridge``.
        Cohort contexts carry no pseudotime, and without it the package default
        (``lagged_ridge``, which wins on BEELINE by exploiting pseudotime) falls back to a
        bagged ensemble that costs ~16x the CPU of plain ridge for no measured gain on the
        simulated cohorts.
    regulators
        Candidate regulators (e.g. TFs); names absent from the data are dropped.
    prior
        Optional source -> target prior passed to the method.
    min_cells
        Contexts with fewer cells are skipped (logged).
    top_k
        Edges kept per target gene and context (strongest by absolute weight).
    seed
        Random seed of the method.
    progress
        Called as ``progress(done, total, context_label)`` after each context.
    genes
        Infer on these genes only (e.g. :attr:`NetworkGenes.genes` of :func:`network_genes`):
        each context's expression is densified on these columns only; None: every gene.
    key_added
        Also store ``{"results": table, "params": {...}}`` in ``data.uns[key_added]`` (the only
        mutation; the MuData itself for MuData input; read it back with
        :func:`omicstwin.get.edges`); ``None`` stores nothing. ``params``: method, min_cells,
        top_k, seed, n_regulators, n_genes.

    Returns
    -------
    pandas.DataFrame
        ``edges`` schema, layer ``intracellular``.
    """
    from omicstwin.tl import grn

    if top_k < 1:
        raise ParameterError(f"top_k must be >= 1, got {top_k}")
    cohort = as_cohort(data, locals())
    columns = _gene_columns(cohort.genes, genes)
    genes = list(cohort.genes[columns])
    candidates = None
    if regulators is not None:
        present = set(genes)
        candidates = [g for g in dict.fromkeys(regulators) if g in present]
        if not candidates:
            raise ParameterError(
                "none of the candidate regulators is among the genes; fix: pass regulator names "
                "that match var_names (e.g. gene symbols)"
            )
    arm_rows = np.flatnonzero(cohort.in_arms)
    obs = cohort.obs.iloc[arm_rows]
    groups = obs.groupby(["cell_type", "time", "condition"], sort=True, observed=True).indices
    rows = []
    method_name = method or CONTEXT_GRN_METHOD
    for done, ((cell_type, time, condition), positions) in enumerate(groups.items(), start=1):
        label = f"{cell_type} @ {time:g} ({condition})"
        if len(positions) < min_cells:
            logger.info("skipping %s: %d cells < min_cells=%d", label, len(positions), min_cells)
        else:
            expression = cohort.log_normalised(arm_rows[positions])
            if len(columns) < expression.shape[1]:
                expression = expression[:, columns]  # never densify genes outside the rule
            edges = grn.infer_grn(
                expression.toarray(),
                genes,
                method=method_name,
                regulators=candidates,
                prior=prior,
                seed=seed,
                top_per_target=top_k,
            )
            # the order of the table: by target, strongest |weight| first, ties by name
            edges = top_rows(
                edges, "weight", top_k, table="edges", within=["target"], tie_break=["source"]
            )
            edges["layer"] = "intracellular"
            edges["condition"] = condition
            edges["source_cell_type"] = edges["target_cell_type"] = cell_type
            edges["time_from"] = edges["time_to"] = time
            rows.append(edges)
        if progress is not None:
            progress(done, len(groups), label)
    params = {
        "method": method_name,
        "min_cells": min_cells,
        "top_k": top_k,
        "seed": seed,
        "n_regulators": len(candidates) if candidates else len(genes),
        "n_genes": len(genes),
    }
    return _store(data, key_added, _conform_edges(rows), params)


def _gene_columns(all_genes: pd.Index, genes: Sequence[str] | None) -> np.ndarray:
    """Positions of ``genes`` among the cohort's genes, in the cohort's order (None: all).

    Raises
    ------
    ParameterError
        None of ``genes`` is a gene of the cohort.
    """
    if genes is None:
        return np.arange(len(all_genes))
    columns = np.flatnonzero(all_genes.isin(list(genes)))
    if columns.size < 2:
        raise ParameterError(
            f"only {columns.size} of the {len(genes)} network genes are genes of the cohort; "
            "fix: pass names that match var_names (e.g. from network_genes)"
        )
    return columns


def _store(data, key_added: str | None, table: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Keep a result beside its parameters in ``data.uns[key_added]`` (see :mod:`omicstwin.tl`).

    ``data`` is what the verb was given: an AnnData, a MuData or a :class:`~omicstwin.pp.Cohort`.
    """
    store_result(data, key_added, table, params)
    return table


def _conform_edges(rows: list[pd.DataFrame]) -> pd.DataFrame:
    if not rows:
        from omicstwin.schemas import SCHEMAS

        return conform(pd.DataFrame(columns=list(SCHEMAS["edges"])), "edges")
    return conform(pd.concat(rows, ignore_index=True), "edges")


# ----------------------------------------------------------------------------- intercellular


def _split_complexes(lr: pd.DataFrame, genes: pd.Index) -> pd.DataFrame:
    """Keep pairs whose every subunit (``A_B`` complexes) is measured."""
    present = set(genes)
    ok = lr["ligand"].str.split("_").map(lambda s: all(g in present for g in s)) & lr[
        "receptor"
    ].str.split("_").map(lambda s: all(g in present for g in s))
    return lr.loc[ok, ["ligand", "receptor"]].drop_duplicates().reset_index(drop=True)


def _complex_values(table: np.ndarray, genes: pd.Index, names: pd.Series) -> np.ndarray:
    """Per complex, the minimum over its subunits (as CellPhoneDB and LIANA do): (groups, n)."""
    out = np.empty((table.shape[0], len(names)))
    for j, name in enumerate(names):
        out[:, j] = table[:, genes.get_indexer(name.split("_"))].min(axis=1)
    return out


def intercellular_edges(
    data,
    lr_pairs: pd.DataFrame,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
    de: pd.DataFrame | None = None,
    min_fraction: float = 0.1,
    autocrine: bool = False,
    n_permutations: int = 199,
    seed: int = 0,
    key_added: str | None = "intercellular",
) -> pd.DataFrame:
    """Ligand (sender) -> receptor (receiver) edges per time point, scored for the disease.

    A pair is kept at time t when the ligand is expressed by at least ``min_fraction`` of sender
    cells (in either arm) and the receptor by at least ``min_fraction`` of receiver cells in the
    case arm (complexes: every subunit). ``weight`` = the ligand's log2 fold change case vs
    control in the sender (from ``de`` when given, else from mean log-normalised expression)
    x the fraction of receiver cells expressing the receptor x the receptor's specificity (the
    receiver's share of its mean expression over all cell types, as in NATMI); up-regulated
    signalling is positive. The weight is scaled by ``max(r, 0)``, where r is the lagged donor
    coupling: the correlation over case donors of the sender's ligand level at t with the
    receiver's disease response at the next time point (patients who carry more of a ligand that
    drives a receiver respond more there later). ``stability`` = the fraction of case donors
    whose sender ligand expression exceeds the control mean (how consistently patients share
    the change).

    ``p_value`` is a **donor-label permutation test** of each edge (the relabellings of
    :func:`omicstwin.tl.nulls.study_labellings`: all distinct ones when few, else
    ``n_permutations`` seeded ones). Its statistic is the label-dependent part of the weight
    recomputed from donor means, ``lfc x max(r, 0)``: the ligand's case - control difference of
    donor means in the sender and the lagged donor coupling ``r`` over the (relabelled) case
    donors, with the receiver's response axis recomputed under each relabelling; the receptor's
    fraction and specificity are positive per-edge constants and cancel.
    ``p = (1 + #{b: T_b >= T_obs}) / (1 + B)``; ``q_value`` is BH over the tested edges. Only
    candidate signalling (weight > 0: the ligand up and the coupling positive) is tested; the
    other edges get p NaN (the twin never keeps them).

    Parameters
    ----------
    data
        AnnData or MuData with raw counts.
    lr_pairs
        Columns ``ligand``, ``receptor`` (e.g. ``omicstwin.io.load_table("liana_consensus")``).
    cell_type_key, time_key, condition_key, donor_key, case, control, layer
        The data contract (see :func:`omicstwin.io.validate_cohort`).
    de
        Optional DE table (``SCHEMAS["de"]``) providing the ligands' log fold changes.
    min_fraction
        Expression threshold (fraction of cells with a non-zero count).
    autocrine
        Also score sender == receiver pairs.
    n_permutations, seed
        Relabellings of the edges' permutation null and their seed (0: no test, p NaN).
    key_added
        Also store ``{"results": table, "params": {...}}`` in ``data.uns[key_added]`` (the only
        mutation; read it back with :func:`omicstwin.get.edges`); ``None`` stores nothing.
        ``params``: min_fraction, autocrine, n_pairs, ligand_lfc, n_permutations, exhaustive.

    Returns
    -------
    pandas.DataFrame
        ``edges`` schema, layer ``intercellular``, condition ``all``, sorted by weight; with
        ``p_value`` and ``q_value``.
    """
    _check_lr_arguments(lr_pairs, min_fraction)
    cohort = as_cohort(data, locals())
    case, control = cohort.keys.case, cohort.keys.control
    obs = cohort.obs[cohort.in_arms]
    pairs = _split_complexes(lr_pairs, cohort.genes)
    if pairs.empty:
        logger.warning("no ligand-receptor pair has all its genes measured")
        params = {"min_fraction": min_fraction, "autocrine": autocrine, "n_pairs": 0}
        return _store(data, key_added, _conform_edges([]), params)
    levels = _PairLevels.of(cohort, pairs)
    lfc_lookup = None
    if de is not None:
        lfc_lookup = de.set_index(["cell_type", "time", "gene"])["log_fc"]
    cell_types = sorted(obs["cell_type"].unique())
    null = _EdgeNull.of(levels, case, control, n_permutations, seed)
    rows = []
    for time in cohort.time_levels:
        rows += _time_point_edges(
            levels,
            time,
            cell_types,
            time_levels=cohort.time_levels,
            case=case,
            control=control,
            lfc_lookup=lfc_lookup,
            min_fraction=min_fraction,
            autocrine=autocrine,
            null=null,
        )
    table = _conform_edges(rows)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy(float))
    edges = sort_by_score(
        table,
        "weight",
        table="intercellular_edges",
        within=["time_from"],
        tie_break=["source_cell_type", "target_cell_type", "source", "target"],
    )
    params = {
        "min_fraction": min_fraction,
        "autocrine": autocrine,
        "n_pairs": len(pairs),
        "ligand_lfc": "de table" if de is not None else "mean log-normalised expression",
        "n_permutations": int(null.labels.shape[0] - 1) if null is not None else 0,
        "exhaustive": bool(null.exhaustive) if null is not None else False,
    }
    return _store(data, key_added, edges.reset_index(drop=True), params)


def _check_lr_arguments(lr_pairs: pd.DataFrame, min_fraction: float) -> None:
    """Raise before any work when the pair table or the threshold cannot be used.

    Parameters
    ----------
    lr_pairs
        The ligand-receptor table given to :func:`intercellular_edges`.
    min_fraction
        The expression threshold given to it.

    Raises
    ------
    MissingKeyError
        ``lr_pairs`` lacks a ``ligand`` or ``receptor`` column.
    ParameterError
        ``min_fraction`` is outside [0, 1).
    """
    for column in ("ligand", "receptor"):
        if column not in lr_pairs.columns:
            raise MissingKeyError(
                f"lr_pairs lacks the column '{column}'; columns present: {list(lr_pairs.columns)}"
                "; fix: pass a table with ligand and receptor columns"
            )
    if not 0 <= min_fraction < 1:
        raise ParameterError(f"min_fraction must be in [0, 1), got {min_fraction}")


@dataclass(frozen=True)
class _PairLevels:
    """Ligand and receptor levels of every measured pair, per arm group and per donor group.

    Rows of the arm tables (``mean``, ``lig_*``, ``rec_*``) are cell type x time x arm groups,
    found through ``index``; rows of the donor tables follow ``donor_keys``. Complexes take the
    minimum over their subunits (:func:`_complex_values`).
    """

    pairs: pd.DataFrame
    index: dict[tuple, int]
    mean: np.ndarray
    lig_mean: np.ndarray
    lig_frac: np.ndarray
    rec_mean: np.ndarray
    rec_frac: np.ndarray
    donor_keys: pd.DataFrame
    donor_mean: np.ndarray
    donor_lig: np.ndarray

    @classmethod
    def of(cls, cohort, pairs: pd.DataFrame) -> _PairLevels:
        """Read the pairs' levels from the cohort's log-normalised summaries.

        Parameters
        ----------
        cohort
            The :class:`~omicstwin.pp.Cohort` of the data.
        pairs
            Pairs whose every subunit is measured (:func:`_split_complexes`).

        Returns
        -------
        _PairLevels
        """
        summaries = cohort.log_summaries  # log-normalised means and fractions, shared with twin
        mean, fraction = summaries.arm_mean, summaries.arm_fraction
        genes, donor_mean = cohort.genes, summaries.donor_mean
        return cls(
            pairs=pairs,
            index={tuple(k): i for i, k in enumerate(summaries.arms.itertuples(index=False))},
            mean=mean,
            lig_mean=_complex_values(mean, genes, pairs["ligand"]),
            lig_frac=_complex_values(fraction, genes, pairs["ligand"]),
            rec_mean=_complex_values(mean, genes, pairs["receptor"]),
            rec_frac=_complex_values(fraction, genes, pairs["receptor"]),
            donor_keys=summaries.donors,
            donor_mean=donor_mean,
            donor_lig=_complex_values(donor_mean, genes, pairs["ligand"]),
        )


def _time_point_edges(
    levels: _PairLevels,
    time: float,
    cell_types: list[str],
    *,
    time_levels: list[float],
    case: str,
    control: str,
    lfc_lookup: pd.Series | None,
    min_fraction: float,
    autocrine: bool,
    null: _EdgeNull | None = None,
) -> list[pd.DataFrame]:
    """Score every sender -> receiver pair of cell types at one time point.

    Parameters
    ----------
    levels
        The pairs' levels (:class:`_PairLevels`).
    time
        The time point.
    cell_types
        Senders and receivers, sorted.
    time_levels
        Every time point of the cohort, in order (the coupling looks one ahead).
    case, control
        Labels of the arms.
    lfc_lookup
        Log fold changes by (cell type, time, gene) from a DE table, or None.
    min_fraction, autocrine
        As for :func:`intercellular_edges`.
    null
        The edges' permutation null (:class:`_EdgeNull`); None: p-values NaN.

    Returns
    -------
    list of pandas.DataFrame
        One ``edges`` frame (plus ``p_value``) per sender x receiver with a kept pair.
    """
    index, rec_mean, rec_frac = levels.index, levels.rec_mean, levels.rec_frac
    # receptor specificity (NATMI): the receiver's share of the receptor's expression over
    # all cell types of the case arm at this time; without it an up-regulated ligand fans
    # out to every cell type that expresses its receptor at all
    case_rows = [index[(c, time, case)] for c in cell_types if (c, time, case) in index]
    rec_total = rec_mean[case_rows].sum(axis=0)
    rows = []
    for sender in cell_types:
        ligand = _sender_ligands(levels, sender, time, case, control, lfc_lookup, min_fraction)
        if ligand is None:
            continue
        expressed, lfc, stability = ligand
        for receiver in cell_types:
            if receiver == sender and not autocrine:
                continue
            j_case = index.get((receiver, time, case))
            if j_case is None:
                continue
            keep = expressed & (rec_frac[j_case] >= min_fraction) & np.isfinite(lfc)
            if not keep.any():
                continue
            specificity = np.divide(
                rec_mean[j_case], rec_total, out=np.zeros_like(rec_total), where=rec_total > 0
            )
            coupling = _donor_coupling(levels, sender, receiver, time, time_levels, case, control)
            score = lfc * rec_frac[j_case] * specificity * np.maximum(coupling, 0.0)
            # only candidate signalling is tested (up-regulated and coupled, weight > 0): the
            # others are never kept by the twin and would only dilute BH
            p_value = np.full(int(keep.sum()), np.nan)
            tested = score[keep] > 0
            if null is not None and tested.any():
                candidates = keep.copy()
                candidates[keep] = tested
                p_value[tested] = null.p_values(sender, receiver, time, time_levels, candidates)
            rows.append(
                pd.DataFrame(
                    {
                        "layer": "intercellular",
                        "condition": ALL_CONDITIONS,
                        "source_cell_type": sender,
                        "target_cell_type": receiver,
                        "time_from": time,
                        "time_to": time,
                        "source": levels.pairs["ligand"][keep].to_numpy(),
                        "target": levels.pairs["receptor"][keep].to_numpy(),
                        "weight": score[keep],
                        "stability": stability[keep],
                        "p_value": p_value,
                    }
                )
            )
    return rows


def _sender_ligands(
    levels: _PairLevels,
    sender: str,
    time: float,
    case: str,
    control: str,
    lfc_lookup: pd.Series | None,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Compute the sender's side of every pair at one time point, shared by its receivers.

    Parameters
    ----------
    levels
        The pairs' levels (:class:`_PairLevels`).
    sender, time
        The sending cell type and the time point.
    case, control
        Labels of the arms.
    lfc_lookup
        Log fold changes by (cell type, time, gene) from a DE table, or None.
    min_fraction
        Expression threshold of the ligand in either arm.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(expressed, lfc, stability)`` per pair: whether the ligand passes ``min_fraction``,
        its log2 fold change, and the fraction of case donors above the control mean. None
        when the sender lacks an arm at this time point.
    """
    i_case = levels.index.get((sender, time, case))
    i_ctrl = levels.index.get((sender, time, control))
    if i_case is None or i_ctrl is None:
        return None
    lig_mean, donor_keys = levels.lig_mean, levels.donor_keys
    expressed = np.maximum(levels.lig_frac[i_case], levels.lig_frac[i_ctrl]) >= min_fraction
    if lfc_lookup is not None:
        lfc = _ligand_lfc(lfc_lookup, sender, time, levels.pairs["ligand"])
    else:  # mean log-normalised expression difference, in log2 units
        lfc = (lig_mean[i_case] - lig_mean[i_ctrl]) / np.log(2)
    in_sender = ((donor_keys["cell_type"] == sender) & (donor_keys["time"] == time)).to_numpy()
    case_donors = in_sender & (donor_keys["condition"] == case).to_numpy()
    stability = (levels.donor_lig[case_donors] > lig_mean[i_ctrl][None, :]).mean(axis=0)
    return expressed, lfc, stability


def _donor_coupling(
    pair_levels: _PairLevels, sender, receiver, time, levels, case, control
) -> np.ndarray:
    """Correlate, over case donors, the sender's ligand level with the receiver's later response.

    The response is the receiver's expression at the next time point projected on its
    case - control axis there. Patients differ in which cascade they carry and how strongly, so
    a ligand that really drives a receiver co-varies with that receiver's later response. Zero
    when it cannot be estimated (fewer than 3 donors, no variation, or no later time point).
    """
    donor_keys, donor_mean, donor_lig = (
        pair_levels.donor_keys,
        pair_levels.donor_mean,
        pair_levels.donor_lig,
    )
    mean, index = pair_levels.mean, pair_levels.index
    position = levels.index(time)
    later = levels[min(position + 1, len(levels) - 1)]
    i_case, i_ctrl = index.get((receiver, later, case)), index.get((receiver, later, control))
    n_pairs = donor_lig.shape[1]
    if i_case is None or i_ctrl is None:
        return np.zeros(n_pairs)
    axis = mean[i_case] - mean[i_ctrl]
    norm = np.linalg.norm(axis)
    if norm == 0:
        return np.zeros(n_pairs)
    cell_type, t, condition = donor_keys["cell_type"], donor_keys["time"], donor_keys["condition"]
    is_case = (condition == case).to_numpy()
    senders = donor_keys[is_case & (cell_type == sender).to_numpy() & (t == time).to_numpy()]
    receivers = donor_keys[is_case & (cell_type == receiver).to_numpy() & (t == later).to_numpy()]
    donors = sorted(set(senders["donor"]) & set(receivers["donor"]))
    if len(donors) < 3:
        return np.zeros(n_pairs)
    s_rows = senders.reset_index().set_index("donor").loc[donors, "index"].to_numpy()
    r_rows = receivers.reset_index().set_index("donor").loc[donors, "index"].to_numpy()
    response = (donor_mean[r_rows] - mean[i_ctrl]) @ axis / norm
    ligand = donor_lig[s_rows]
    ligand_c = ligand - ligand.mean(axis=0)
    response_c = response - response.mean()
    denominator = np.sqrt((ligand_c**2).sum(axis=0) * (response_c**2).sum())
    return np.divide(
        ligand_c.T @ response_c, denominator, out=np.zeros(n_pairs), where=denominator > 0
    )


class _EdgeNull:
    """The donor-label permutation null of the intercellular edges (see intercellular_edges).

    Holds the relabellings of the donors of either arm (observed first) and recomputes, per
    sender -> receiver and time point, the statistic ``lfc x max(r, 0)`` of every pair under
    each of them, vectorised over relabellings (one matrix product each).
    """

    def __init__(self, levels: _PairLevels, donors: list[str], labels: np.ndarray, exhaustive):
        self.levels, self.donors, self.labels, self.exhaustive = levels, donors, labels, exhaustive
        self._position = {d: i for i, d in enumerate(donors)}
        self._responses: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        keys = levels.donor_keys
        in_arms = keys["donor"].isin(self._position).to_numpy()
        self._contexts = {
            key: rows[in_arms[rows]]
            for key, rows in keys.groupby(["cell_type", "time"], observed=True).indices.items()
        }

    @classmethod
    def of(cls, levels: _PairLevels, case: str, control: str, n_permutations: int, seed: int):
        """Draw the relabellings (None without a test: no permutations or < 2 donors per arm)."""
        from omicstwin.tl.nulls import study_labellings

        keys = levels.donor_keys
        arm = keys.groupby("donor", observed=True)["condition"].first().astype(str)
        arm = arm[arm.isin([case, control])].sort_index()
        is_case = (arm == case).to_numpy()
        if n_permutations < 1 or is_case.sum() < 2 or (~is_case).sum() < 2:
            return None
        labels, exhaustive = study_labellings(is_case, n_permutations, seed)
        return cls(levels, list(arm.index), labels, exhaustive)

    def _context(self, cell_type, time) -> tuple[np.ndarray, np.ndarray]:
        """Donor positions and donor-table rows of the donors sampled in one context."""
        rows = self._contexts.get((cell_type, time), np.zeros(0, int))
        donors = self.levels.donor_keys["donor"].to_numpy()[rows]
        return np.array([self._position[d] for d in donors], int), rows

    def _contrast(self, positions: np.ndarray) -> np.ndarray:
        """(1 + B, n) weights of case mean - control mean over these donors, per labelling."""
        case = self.labels[:, positions]
        n_case = case.sum(axis=1, keepdims=True)
        n_ctrl = (~case).sum(axis=1, keepdims=True)
        ok = (n_case > 0) & (n_ctrl > 0)
        return np.where(ok, case / np.maximum(n_case, 1) - ~case / np.maximum(n_ctrl, 1), 0.0)

    def _response(self, receiver, later) -> tuple[np.ndarray, np.ndarray]:
        """Donor positions and their projection on the relabelled disease axis (1 + B, n)."""
        key = (receiver, later)
        if key not in self._responses:
            positions, rows = self._context(receiver, later)
            x = self.levels.donor_mean[rows]
            axis = self._contrast(positions) @ x  # (1 + B, genes)
            # a shift or a positive scale of the response does not change a correlation: the
            # control mean and the axis norm of _donor_coupling drop out
            self._responses[key] = (positions, axis @ x.T)
        return self._responses[key]

    def statistics(self, sender, receiver, time, time_levels, keep) -> np.ndarray:
        """``lfc x max(r, 0)`` of the kept pairs under every labelling, (1 + B, kept)."""
        later = time_levels[min(time_levels.index(time) + 1, len(time_levels) - 1)]
        s_pos, s_rows = self._context(sender, time)
        ligand = self.levels.donor_lig[s_rows][:, keep]
        lfc = self._contrast(s_pos) @ ligand / np.log(2)
        r_pos, response = self._response(receiver, later)
        common = np.intersect1d(s_pos, r_pos)
        lig = ligand[np.argsort(s_pos)][np.searchsorted(np.sort(s_pos), common)]
        res = response[:, np.argsort(r_pos)][:, np.searchsorted(np.sort(r_pos), common)]
        mask = self.labels[:, common].astype(float)  # (1 + B, n): the case donors
        n = mask.sum(axis=1)
        safe = np.maximum(n, 1.0)
        m_lig = mask @ lig / safe[:, None]
        m_res = (mask * res).sum(axis=1) / safe
        s_ll = mask @ lig**2 - n[:, None] * m_lig**2
        s_rr = (mask * res**2).sum(axis=1) - n * m_res**2
        s_lr = (mask * res) @ lig - n[:, None] * m_res[:, None] * m_lig
        denominator = np.sqrt(np.maximum(s_ll, 0.0) * np.maximum(s_rr, 0.0)[:, None])
        ok = (denominator > 1e-12) & (n[:, None] >= 3)
        r = np.divide(s_lr, denominator, out=np.zeros_like(s_lr), where=ok)
        return lfc * np.maximum(r, 0.0)

    def p_values(self, sender, receiver, time, time_levels, keep) -> np.ndarray:
        """Permutation p of each kept pair (:func:`omicstwin.tl.nulls.permutation_p`)."""
        from omicstwin.tl.nulls import permutation_p

        stats = self.statistics(sender, receiver, time, time_levels, keep)
        return permutation_p(stats[0], stats[1:].T)


def _ligand_lfc(lookup: pd.Series, sender: str, time: float, ligands: pd.Series) -> np.ndarray:
    """Ligand log fold changes from a DE table (complex: the mean over subunits; NaN if absent)."""
    out = np.full(len(ligands), np.nan)
    for j, name in enumerate(ligands):
        values = [lookup.get((sender, time, g), np.nan) for g in name.split("_")]
        out[j] = np.nanmean(values) if not np.all(np.isnan(values)) else np.nan
    return out


# ----------------------------------------------------------------------------- temporal


def temporal_edges(
    data,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
    regulators: Sequence[str] | None = None,
    window: int = 1,
    alpha: float = 1.0,
    top_k: int = 5,
    n_bootstrap: int = 20,
    seed: int = 0,
    genes: Sequence[str] | None = None,
    key_added: str | None = "temporal",
) -> pd.DataFrame:
    """Lagged regulator (t) -> target (t+1) edges per cell type from donor trajectories.

    Cells are not followed across time, donors are: each donor's pseudobulk (summed counts,
    log CPM) per cell type and time point is one trajectory. For the transition from time point
    k to k+1, every target's change ``y(k+1) - y(k)`` is regressed on the regulators' levels
    ``y(k)`` (ridge, all targets at once), pooling the transitions within ``window`` on either
    side: with a dozen donors per transition a single one cannot support many regulators, and
    neighbouring transitions share most of their dynamics. ``stability`` is the fraction of
    donor bootstrap fits in which the edge is at least as strong as its target's ``top_k``-th
    edge in the full fit.

    Parameters
    ----------
    data
        AnnData or MuData with raw counts.
    cell_type_key, time_key, condition_key, donor_key, case, control, layer
        The data contract (see :func:`omicstwin.io.validate_cohort`).
    regulators
        Candidate regulators (names absent from the data are dropped); default every gene.
    window
        Transitions pooled on either side of each transition.
    alpha
        Ridge penalty (scaled by the number of samples).
    top_k
        Edges kept per target gene, cell type and transition.
    n_bootstrap
        Donor bootstrap fits behind ``stability``.
    seed
        Seed of the bootstrap.
    genes
        Fit on these genes only (regulators and targets; e.g. :attr:`NetworkGenes.genes`);
        log CPM is still normalised over every gene. None: every gene.
    key_added
        Also store ``{"results": table, "params": {...}}`` in ``data.uns[key_added]`` (the only
        mutation; read it back with :func:`omicstwin.get.edges`); ``None`` stores nothing.
        ``params``: window, alpha, top_k, n_bootstrap, seed.

    Returns
    -------
    pandas.DataFrame
        ``edges`` schema, layer ``temporal``, condition ``all``.
    """
    if window < 0 or top_k < 1 or n_bootstrap < 1 or alpha <= 0:
        raise ParameterError(
            "need window >= 0, top_k >= 1, n_bootstrap >= 1 and alpha > 0; fix: use the defaults"
        )
    cohort = as_cohort(data, locals())
    obs = cohort.obs[cohort.in_arms]
    keys, log_cpm = _donor_log_cpm(cohort)
    columns = _gene_columns(cohort.genes, genes)
    if len(columns) < log_cpm.shape[1]:
        log_cpm = log_cpm[:, columns]
    genes = cohort.genes[columns]
    reg_idx = _regulator_index(genes, regulators)
    # one stream for the whole call, drawn cell type by cell type in sorted order
    rng = np.random.default_rng(seed)
    fit = _LaggedFit(genes, reg_idx, cohort.time_levels, window, alpha, top_k, n_bootstrap)
    rows = []
    for cell_type in sorted(obs["cell_type"].unique()):
        mask = (keys["cell_type"] == cell_type).to_numpy()
        rows += fit.cell_type_edges(
            cell_type, keys[mask].reset_index(drop=True), log_cpm[mask], rng
        )
    params = {
        "window": window,
        "alpha": alpha,
        "top_k": top_k,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }
    return _store(data, key_added, _conform_edges(rows), params)


def _donor_log_cpm(cohort) -> tuple[pd.DataFrame, np.ndarray]:
    """Log2 CPM of every donor x cell type x time pseudobulk sample of the two arms.

    Parameters
    ----------
    cohort
        The :class:`~omicstwin.pp.Cohort` of the data.

    Returns
    -------
    keys : pandas.DataFrame
        ``cell_type``, ``donor``, ``time`` per sample.
    log_cpm : numpy.ndarray
        Samples x genes.
    """
    pb = cohort.pseudobulk  # summed counts per donor x cell type x time, shared with DE
    in_arms = pb.obs["condition"].isin([cohort.keys.case, cohort.keys.control]).to_numpy()
    keys = pb.obs.loc[in_arms, ["cell_type", "donor", "time"]].reset_index(drop=True)
    n_cells = pb.obs["n_cells"].to_numpy(np.float64)[in_arms, None]
    sums = pb.X[in_arms] / n_cells * n_cells  # mean count x cells, as before: identical edges
    totals = sums.sum(axis=1, keepdims=True)
    return keys, np.log2(sums / np.maximum(totals, 1.0) * 1e6 + 1.0)


def _regulator_index(genes: pd.Index, regulators: Sequence[str] | None) -> np.ndarray:
    """Positions of the candidate regulators among the genes (every gene when None).

    Parameters
    ----------
    genes
        The cohort's genes.
    regulators
        Candidate names; absent ones are dropped, repeats kept once.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ParameterError
        No candidate is among the genes.
    """
    reg_idx = (
        np.arange(len(genes))
        if regulators is None
        else genes.get_indexer([g for g in dict.fromkeys(regulators) if g in set(genes)])
    )
    if reg_idx.size == 0:
        raise ParameterError("none of the regulators is among the genes; fix: check the names")
    return reg_idx


@dataclass(frozen=True)
class _LaggedFit:
    """The settings of :func:`temporal_edges`' per-transition ridge fits and their bootstrap."""

    genes: pd.Index
    reg_idx: np.ndarray
    levels: list[float]
    window: int
    alpha: float
    top_k: int
    n_bootstrap: int

    def cell_type_edges(
        self, cell_type: str, sub: pd.DataFrame, values: np.ndarray, rng: np.random.Generator
    ) -> list[pd.DataFrame]:
        """Fit every transition of one cell type's donor trajectories.

        Parameters
        ----------
        cell_type
            The cell type.
        sub
            Its samples' ``donor`` and ``time``.
        values
            Its samples' log CPM (rows of ``sub``).
        rng
            The call's random stream (advanced by the bootstrap).

        Returns
        -------
        list of pandas.DataFrame
            One ``edges`` frame per transition with enough donor pairs (at least 4).
        """
        genes, reg_idx, levels = self.genes, self.reg_idx, self.levels
        position = {
            (d, t): i for i, (d, t) in enumerate(zip(sub["donor"], sub["time"], strict=True))
        }
        rows = []
        for k in range(len(levels) - 1):
            x, y, donors = self._transition_samples(sub, values, position, k)
            if len(x) < 4:
                continue
            weight = ridge(x, y, self.alpha)
            keep = _top_mask(weight, reg_idx, genes[reg_idx], self.top_k)
            r, g, hits = self._bootstrap_hits(x, y, donors, weight, keep, rng)
            rows.append(
                pd.DataFrame(
                    {
                        "layer": "temporal",
                        "condition": ALL_CONDITIONS,
                        "source_cell_type": cell_type,
                        "target_cell_type": cell_type,
                        "time_from": levels[k],
                        "time_to": levels[k + 1],
                        "source": genes[reg_idx[r]],
                        "target": genes[g],
                        "weight": weight[r, g],
                        "stability": hits / self.n_bootstrap,
                    }
                )
            )
        return rows

    def _transition_samples(
        self, sub: pd.DataFrame, values: np.ndarray, position: dict, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Regulator levels at t and target changes to t+1, pooled around transition ``k``.

        Parameters
        ----------
        sub, values
            One cell type's samples and their log CPM.
        position
            ``(donor, time)`` -> row of ``values``.
        k
            The transition from ``levels[k]`` to ``levels[k + 1]``.

        Returns
        -------
        x, y, donors : numpy.ndarray
            One row per donor seen at both ends of a pooled transition (empty when none).
        """
        levels, reg_idx = self.levels, self.reg_idx
        # with a dozen donors per transition a single one cannot support many regulators, and
        # neighbouring transitions share most of their dynamics: pool those within the window
        pooled = range(max(0, k - self.window), min(len(levels) - 1, k + self.window + 1))
        x_rows, y_rows, donors = [], [], []
        for j in pooled:
            for donor in sorted(sub["donor"].unique()):
                a, b = position.get((donor, levels[j])), position.get((donor, levels[j + 1]))
                if a is not None and b is not None:
                    x_rows.append(values[a, reg_idx])
                    y_rows.append(values[b] - values[a])
                    donors.append(donor)
        return np.array(x_rows), np.array(y_rows), np.array(donors)

    def _bootstrap_hits(
        self,
        x: np.ndarray,
        y: np.ndarray,
        donors: np.ndarray,
        weight: np.ndarray,
        keep: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, per kept edge, the donor bootstrap fits that reach its target's cut.

        Parameters
        ----------
        x, y, donors
            The transition's samples (:meth:`_transition_samples`).
        weight
            The full fit, regulators x targets.
        keep
            Its kept edges (:func:`_top_mask`).
        rng
            The call's random stream.

        Returns
        -------
        r, g, hits : numpy.ndarray
            Regulator rows and target columns of the kept edges, and their bootstrap counts.
        """
        # a bootstrap fit "keeps" an edge when it reaches the full fit's top-k strength of
        # that target (one threshold per target: no sort per bootstrap); only the kept
        # edges' bootstrap weights are needed, so they are computed alone (dual form)
        threshold = np.where(keep, np.abs(weight), np.inf).min(axis=0)
        r, g = np.nonzero(keep)
        unique = np.unique(donors)
        hits = np.zeros(len(r))
        for _ in range(self.n_bootstrap):
            chosen = rng.choice(unique, size=len(unique), replace=True)
            sample = np.concatenate([np.flatnonzero(donors == d) for d in chosen])
            xs, dual = ridge_dual(x[sample], y[sample], self.alpha)
            boot = np.einsum("ij,ij->j", xs[:, r], dual[:, g])
            hits += np.abs(boot) >= threshold[g]
        return r, g, hits


def _top_mask(weight: np.ndarray, reg_idx: np.ndarray, names: Sequence[str], top_k: int):
    """Per target column, the ``top_k`` regulators by |weight| (never itself, never a zero).

    Ties at the cut go to the first regulator by name (:func:`omicstwin._stats.top_k_mask`).
    """
    self_edge = np.arange(weight.shape[1])[None, :] == reg_idx[:, None]
    return top_k_mask(weight, top_k, order=name_order(names), exclude=self_edge, nonzero=True)


# ----------------------------------------------------------------------------- assembly


def multicellular_network(*layers: pd.DataFrame) -> pd.DataFrame:
    """Concatenate layer tables into one ``edges`` table (one multicellular network per time).

    Parameters
    ----------
    *layers
        ``edges`` tables (e.g. of :func:`context_grns`, :func:`intercellular_edges`,
        :func:`temporal_edges`); empty ones are skipped.

    Returns
    -------
    pandas.DataFrame
        The ``edges`` schema, the layers one after the other.
    """
    frames = [conform(layer, "edges") for layer in layers if len(layer)]
    return _conform_edges(frames)


def to_networkx(edges: pd.DataFrame, *, time: float | None = None, condition: str | None = None):
    """Build a :class:`networkx.MultiDiGraph` from an ``edges`` table.

    Nodes are ``(cell_type, gene, time)``; intracellular and intercellular edges join nodes of
    the same time point, temporal edges join time t to the next. With ``time``, the network of
    that time point: its intracellular and intercellular edges plus temporal edges leaving it.
    With ``condition``, intracellular edges of that condition only (other layers are shared).

    Parameters
    ----------
    edges
        An ``edges`` table.
    time
        Keep the network of this time point only.
    condition
        Keep the intracellular edges of this condition only.

    Returns
    -------
    networkx.MultiDiGraph
        Nodes ``(cell_type, gene, time)`` with those attributes; edges carry layer, condition,
        weight and stability.
    """
    import networkx as nx

    if time is not None:
        same = (edges["time_from"] == time) & (edges["layer"] != "temporal")
        leaving = (edges["time_from"] == time) & (edges["layer"] == "temporal")
        edges = edges[same | leaving]
    if condition is not None:
        edges = edges[(edges["condition"] == condition) | (edges["condition"] == ALL_CONDITIONS)]
    graph = nx.MultiDiGraph()
    for row in edges.itertuples(index=False):
        source = (row.source_cell_type, row.source, row.time_from)
        target = (row.target_cell_type, row.target, row.time_to)
        for node in (source, target):
            if node not in graph:
                graph.add_node(node, cell_type=node[0], gene=node[1], time=node[2])
        graph.add_edge(
            source,
            target,
            layer=row.layer,
            condition=row.condition,
            weight=float(row.weight),
            stability=float(row.stability),
        )
    return graph
