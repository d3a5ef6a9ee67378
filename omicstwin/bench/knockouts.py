"""Which cell fates a knockout loses: terminal states, fate assignment and fate calling.

The question comes from Boolean models of differentiation (e.g. the Krumsiek 2011 myeloid
network that BEELINE simulates as ``HSC``): the wild type ends in a few fates (attractors) and a
knockout loses some of them. Here the answer is predicted from data alone:

1. **States.** Each trajectory branch's *terminal state* is the mean of the cells in the last
   ``end_fraction`` of that branch's pseudotime; the *progenitor state* is the mean of the
   earliest ``start_fraction`` of cells (by their smallest branch pseudotime).
2. **Fates.** Branches are named by marker genes (facts about the system, not about its
   knockouts): the assignment of branches to fates maximises the summed mean marker z-score
   (z-scored across branches, so a marker high in every branch does not count), solved as an
   assignment problem.
3. **Propagation.** A knockout is clamped in a state and propagated through an elasticity
   network (:func:`omicstwin.tl.perturb.propagate`), giving a shift ``delta``.
4. **Call.** For a state ``s`` and any other reference state ``r`` (another fate or the
   progenitor), the shift's *coordinate* towards ``r`` is
   ``t = <delta, r - s> / |r - s|^2`` (0 = stays, 1 = arrives at ``r``), computed without the
   knocked-out genes (a knockout trivially removes its own expression, which says nothing about
   whether the rest of the programme holds; otherwise every marker would lose its fate). The
   perturbed state has *left* its fate when ``t`` exceeds the spread of the fate's own cells
   along the same direction (the ``quantile`` of their coordinates): it then lies outside the
   range that cells of that fate occupy, towards another state. The rule and its threshold are
   the same for every gene and every fate; the threshold comes from the data's cell-to-cell
   spread, not from the answers.

   A gene that is needed only to *enter* a fate (expressed in progenitors, silent in every
   terminal state) cannot act from a terminal state, where its clamp is zero. With
   ``from_progenitor=True`` the same rule is also applied at the progenitor: the fate is lost
   when the knockout moves the progenitor *away* from it (coordinate towards the fate below
   the ``1 - quantile`` of the progenitor cells' own coordinates). Off by default: on BEELINE
   HSC the progenitor cells are spread too widely for the shift of such a gene (Gata2) to
   pass this threshold, so it changes no call there.

Everything is a pure function of arrays; printing and benchmark bookkeeping live in
``benchmarks/boolean_knockouts.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin.errors import EmptyDataError, InputTypeError, ParameterError
from omicstwin.tl.perturb import Perturbation, clamp_matrix, knockout, propagate
from omicstwin.tl.twin import shuffle_targets

__all__ = [
    "PROGENITOR",
    "FateStates",
    "assign_branch_fates",
    "baseline_lost_fates",
    "call_lost_fates",
    "fate_coordinates",
    "fate_states",
    "shuffle_targets",
]

PROGENITOR = "progenitor"


@dataclass(frozen=True)
class FateStates:
    """Terminal states of the branches (named by fate) and the progenitor state.

    Attributes
    ----------
    fates
        Fate name of each branch, in branch order.
    terminal
        (fates, genes) mean expression of each branch's terminal cells.
    terminal_cells
        Per fate, the row indices of its terminal cells.
    progenitor
        (genes,) mean expression of the progenitor cells.
    progenitor_cells
        Row indices of the progenitor cells.
    """

    fates: list[str]
    terminal: np.ndarray
    terminal_cells: list[np.ndarray]
    progenitor: np.ndarray
    progenitor_cells: np.ndarray


def _as_matrix(z: np.ndarray, name: str) -> np.ndarray:
    try:
        out = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"{name} must be a numeric array ({exc}); fix: pass floats") from exc
    if out.ndim != 2:
        raise InputTypeError(f"{name} must be 2-D, got {out.ndim}-D; fix: reshape it")
    if not np.isfinite(out).all():
        raise ParameterError(f"{name} holds NaN/infinite values; fix: impute or drop them")
    return out


def assign_branch_fates(
    terminal: np.ndarray, genes: Sequence[str], markers: Mapping[str, Sequence[str]]
) -> list[str]:
    """Name each branch by the fate whose markers it expresses (one fate per branch).

    Parameters
    ----------
    terminal
        (branches, genes) terminal-state expression.
    genes
        Gene names of the columns.
    markers
        Fate -> marker genes. Needs exactly one fate per branch.

    Returns
    -------
    list of str
        Fate of each branch. Each gene is z-scored across branches (a marker shared by every
        branch carries no information) and the branch -> fate assignment maximises the summed
        mean marker z-score (Hungarian algorithm), so two branches never get the same fate.

    Raises
    ------
    ParameterError
        The number of fates differs from the number of branches, or a marker is not a gene.
    """
    from scipy.optimize import linear_sum_assignment

    terminal = _as_matrix(terminal, "terminal")
    fates = list(markers)
    if len(fates) != terminal.shape[0]:
        raise ParameterError(
            f"{terminal.shape[0]} branches but {len(fates)} fates with markers; fix: give one "
            "fate (with its markers) per pseudotime branch"
        )
    index = {g: i for i, g in enumerate(genes)}
    unknown = sorted({m for ms in markers.values() for m in ms} - set(index))
    if unknown or any(len(ms) == 0 for ms in markers.values()):
        raise ParameterError(
            f"every fate needs >= 1 marker among the genes; unknown markers: {unknown}; fix: "
            "use gene names of the expression matrix"
        )
    sd = terminal.std(axis=0)
    zs = (terminal - terminal.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    score = np.array(
        [[zs[b, [index[m] for m in markers[f]]].mean() for f in fates] for b in range(len(zs))]
    )
    rows, cols = linear_sum_assignment(-score)
    out = [""] * len(zs)
    for b, f in zip(rows, cols, strict=True):
        out[b] = fates[f]
    return out


def fate_states(
    z: np.ndarray,
    pseudotime: np.ndarray,
    genes: Sequence[str],
    markers: Mapping[str, Sequence[str]],
    *,
    end_fraction: float = 0.15,
    start_fraction: float = 0.1,
) -> FateStates:
    """Terminal state of every branch (named by fate) and the progenitor state.

    Parameters
    ----------
    z
        Cells x genes expression (the space the network works in).
    pseudotime
        Cells x branches, NaN off-branch (BEELINE's ``PseudoTime.csv``).
    genes
        Gene names.
    markers
        Fate -> marker genes, one fate per branch (see :func:`assign_branch_fates`).
    end_fraction
        Share of each branch's cells, latest in pseudotime, that form its terminal state.
    start_fraction
        Share of all cells, earliest in pseudotime, that form the progenitor state.

    Returns
    -------
    FateStates
    """
    z = _as_matrix(z, "z")
    pt = np.asarray(pseudotime, dtype=np.float64)
    if pt.ndim == 1:
        pt = pt[:, None]
    if pt.shape[0] != z.shape[0]:
        raise ParameterError(
            f"pseudotime has {pt.shape[0]} rows for {z.shape[0]} cells; fix: align them"
        )
    if len(genes) != z.shape[1]:
        raise ParameterError(f"{len(genes)} gene names for {z.shape[1]} columns; fix: align them")
    if not (0 < end_fraction < 1 and 0 < start_fraction < 1):
        raise ParameterError(
            f"end_fraction ({end_fraction}) and start_fraction ({start_fraction}) are shares of "
            "cells; fix: use values in (0, 1)"
        )
    cells = []
    for b in range(pt.shape[1]):
        on = np.flatnonzero(np.isfinite(pt[:, b]))
        if on.size == 0:
            raise EmptyDataError(f"pseudotime branch {b} has no cells; fix: drop that column")
        # rank-based cut: the last end_fraction of the branch's cells, whatever the scale
        order = on[np.argsort(pt[on, b], kind="stable")]
        cells.append(order[-max(1, round(end_fraction * on.size)) :])
    terminal = np.vstack([z[c].mean(axis=0) for c in cells])
    fates = assign_branch_fates(terminal, genes, markers)
    first = np.nanmin(np.where(np.isfinite(pt), pt, np.inf), axis=1)
    on_any = np.flatnonzero(np.isfinite(first))
    order = on_any[np.argsort(first[on_any], kind="stable")]
    progenitor_cells = order[: max(1, round(start_fraction * on_any.size))]
    return FateStates(fates, terminal, cells, z[progenitor_cells].mean(axis=0), progenitor_cells)


def fate_coordinates(
    shift: np.ndarray, origin: np.ndarray, references: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """Coordinates of shifts towards reference states: ``<shift, r - origin> / |r - origin|^2``.

    Parameters
    ----------
    shift
        (n, genes) shifts (or cells minus ``origin``).
    origin
        (genes,) the state the shifts start from.
    references
        (R, genes) reference states.
    keep
        (genes,) boolean mask of the genes used (the knocked-out genes are left out).

    Returns
    -------
    numpy.ndarray
        (n, R): 0 = no move towards the reference, 1 = all the way. A reference equal to the
        origin on the kept genes gets 0.
    """
    direction = references[:, keep] - origin[keep]
    norm = (direction**2).sum(axis=1)
    out = np.atleast_2d(shift)[:, keep] @ direction.T
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def call_lost_fates(
    z: np.ndarray,
    genes: Sequence[str],
    states: FateStates,
    weights: sparse.spmatrix | np.ndarray,
    perturbations: Sequence[Perturbation] | None = None,
    *,
    n_steps: int | None = None,
    quantile: float = 0.99,
    from_progenitor: bool = False,
) -> pd.DataFrame:
    """Predict which fates each perturbation loses (see the module docstring for the rule).

    Parameters
    ----------
    z
        Cells x genes expression, the same space as ``states`` and ``weights``.
    genes
        Gene names.
    states
        From :func:`fate_states`.
    weights
        Elasticities, regulators (rows) x targets (columns).
    perturbations
        Default: the knockout of every gene.
    n_steps
        Propagation steps; ``None`` (default) for the steady state, which matches the question
        (which attractors remain), or 3 as CellOracle for local, short-range effects.
    quantile
        Spread of a fate's own cells beyond which a perturbed state has left the fate
        (0.99: further towards another state than 99% of the fate's cells are).
    from_progenitor
        Also apply the rule at the progenitor (fate lost when the progenitor moves away from
        it), meant for genes needed only to enter a fate.

    Returns
    -------
    pandas.DataFrame
        One row per perturbation x fate: ``perturbation_id``, ``fate``, ``terminal_score``
        (largest coordinate of the perturbed terminal state towards another state, divided by
        its threshold), ``towards`` (that state), ``progenitor_score`` (how far the perturbed
        progenitor moves away from the fate, divided by its threshold; NaN when not used) and
        ``lost`` (either score > 1).

    Raises
    ------
    ParameterError
        Shapes disagree, ``quantile`` is not in (0.5, 1), or no steady state exists.
    """
    z = _as_matrix(z, "z")
    genes = list(genes)
    n_genes = len(genes)
    w = sparse.csr_matrix(weights)
    if w.shape != (n_genes, n_genes) or z.shape[1] != n_genes:
        raise ParameterError(
            f"weights {w.shape} and expression {z.shape} must both have {n_genes} genes; fix: "
            "build them on the same gene list"
        )
    if not 0.5 < quantile < 1:
        raise ParameterError(f"quantile must be in (0.5, 1), got {quantile}")
    perts = list(perturbations) if perturbations is not None else [knockout(g) for g in genes]
    keeps = _unperturbed_genes(perts, genes)
    terminal_score, towards = _terminal_scores(
        z, genes, states, w, perts, keeps, n_steps=n_steps, quantile=quantile
    )
    progenitor_score = np.full((len(perts), len(states.fates)), np.nan)
    if from_progenitor:
        progenitor_score = _progenitor_scores(
            z, genes, states, w, perts, keeps, n_steps=n_steps, quantile=quantile
        )
    rows = []
    for row, p in enumerate(perts):
        for f, fate in enumerate(states.fates):
            prog = progenitor_score[row, f]
            rows.append(
                {
                    "perturbation_id": p.perturbation_id,
                    "fate": fate,
                    "terminal_score": terminal_score[row, f],
                    "towards": towards[row, f],
                    "progenitor_score": prog,
                    "lost": bool(terminal_score[row, f] > 1 or (np.isfinite(prog) and prog > 1)),
                }
            )
    return pd.DataFrame(rows)


def _unperturbed_genes(perts: list[Perturbation], genes: list[str]) -> np.ndarray:
    """Mask, per perturbation, the genes it leaves alone (fate coordinates use only those).

    Parameters
    ----------
    perts
        The perturbations.
    genes
        Gene names.

    Returns
    -------
    numpy.ndarray
        Boolean, perturbations x genes; False at each perturbation's measured genes.
    """
    index = {g: i for i, g in enumerate(genes)}
    keeps = np.ones((len(perts), len(genes)), bool)
    for row, p in enumerate(perts):
        keeps[row, [index[g] for g in p.genes if g in index]] = False
    return keeps


def _terminal_scores(
    z: np.ndarray,
    genes: list[str],
    states: FateStates,
    w: sparse.csr_matrix,
    perts: list[Perturbation],
    keeps: np.ndarray,
    *,
    n_steps: int | None,
    quantile: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Score how far each perturbation pushes each terminal state towards another state.

    Parameters
    ----------
    z, genes, states, n_steps, quantile
        As for :func:`call_lost_fates`.
    w
        Elasticities, regulators x targets (CSR).
    perts
        The perturbations.
    keeps
        Genes each perturbation leaves alone (:func:`_unperturbed_genes`).

    Returns
    -------
    terminal_score : numpy.ndarray
        Perturbations x fates: the largest coordinate towards another state over its
        threshold (the ``quantile`` of the fate's own cells along that direction).
    towards : numpy.ndarray
        Perturbations x fates: the name of that state.
    """
    n_fates = len(states.fates)
    # every other reference a terminal state can drift to: the other fates and the progenitor
    references = np.vstack([states.terminal, states.progenitor[None, :]])
    ref_names = [*states.fates, PROGENITOR]
    terminal_score = np.zeros((len(perts), n_fates))
    towards = np.empty((len(perts), n_fates), dtype=object)
    for f in range(n_fates):
        origin = states.terminal[f]
        mask, shift = clamp_matrix(perts, genes, origin)
        delta = propagate(origin, w, mask, shift, n_steps=n_steps)
        spread_cells = z[states.terminal_cells[f]] - origin
        others = np.array([r for r in range(len(references)) if r != f])
        for row in range(len(perts)):
            t = fate_coordinates(delta[row], origin, references[others], keeps[row])[0]
            limit = np.quantile(
                fate_coordinates(spread_cells, origin, references[others], keeps[row]),
                quantile,
                axis=0,
            )
            ratio = t / np.maximum(limit, np.finfo(float).eps)
            best = int(np.argmax(ratio))
            terminal_score[row, f] = ratio[best]
            towards[row, f] = ref_names[others[best]]
    return terminal_score, towards


def _progenitor_scores(
    z: np.ndarray,
    genes: list[str],
    states: FateStates,
    w: sparse.csr_matrix,
    perts: list[Perturbation],
    keeps: np.ndarray,
    *,
    n_steps: int | None,
    quantile: float,
) -> np.ndarray:
    """Score how far each perturbation pushes the progenitor away from each fate.

    Parameters
    ----------
    z, genes, states, n_steps, quantile
        As for :func:`call_lost_fates`.
    w
        Elasticities, regulators x targets (CSR).
    perts
        The perturbations.
    keeps
        Genes each perturbation leaves alone (:func:`_unperturbed_genes`).

    Returns
    -------
    numpy.ndarray
        Perturbations x fates: the coordinate towards the fate over the lower tail of the
        progenitor cells' coordinates (positive when the progenitor moves away from it).
    """
    progenitor_score = np.full((len(perts), len(states.fates)), np.nan)
    origin = states.progenitor
    mask, shift = clamp_matrix(perts, genes, origin)
    delta = propagate(origin, w, mask, shift, n_steps=n_steps)
    spread_cells = z[states.progenitor_cells] - origin
    for row in range(len(perts)):
        t = fate_coordinates(delta[row], origin, states.terminal, keeps[row])[0]
        # progenitor cells scatter both ways along a fate's direction; their lower tail is
        # how far "away from the fate" a progenitor naturally is
        low = np.quantile(
            fate_coordinates(spread_cells, origin, states.terminal, keeps[row]),
            1 - quantile,
            axis=0,
        )
        progenitor_score[row] = t / np.minimum(low, -np.finfo(float).eps)
    return progenitor_score


def baseline_lost_fates(
    states: FateStates,
    genes: Sequence[str],
    markers: Mapping[str, Sequence[str]],
    *,
    rule: str = "marker_or_expressed",
) -> pd.DataFrame:
    """Network-free baselines: a knockout loses the fates its gene marks or is expressed in.

    Parameters
    ----------
    states
        From :func:`fate_states`.
    genes
        Gene names.
    markers
        Fate -> marker genes.
    rule
        ``marker`` (the gene is a marker of the fate), ``expressed`` (the gene is *on* in the
        fate's terminal state: above the midpoint of the range of all terminal-state levels,
        a one-threshold Boolean discretisation) or ``marker_or_expressed``. The midpoint, not
        the median: when most genes are off in most fates the median falls inside the off
        state's noise floor and calls noise "expressed".

    Returns
    -------
    pandas.DataFrame
        ``perturbation_id``, ``fate``, ``lost``, one row per gene's knockout x fate.
    """
    if rule not in ("marker", "expressed", "marker_or_expressed"):
        raise ParameterError(
            f"unknown baseline rule '{rule}'; fix: use 'marker', 'expressed' or "
            "'marker_or_expressed'"
        )
    cut = 0.5 * (states.terminal.min() + states.terminal.max())
    rows = []
    for j, gene in enumerate(genes):
        for f, fate in enumerate(states.fates):
            is_marker = gene in markers.get(fate, ())
            expressed = bool(states.terminal[f, j] > cut)
            lost = {
                "marker": is_marker,
                "expressed": expressed,
                "marker_or_expressed": is_marker or expressed,
            }[rule]
            rows.append({"perturbation_id": f"KO:{gene}", "fate": fate, "lost": lost})
    return pd.DataFrame(rows)
