"""The fitted twin: states and elasticity networks per cell type x time, and what-if scoring.

**Fitting.** States are mean ``z = log1p(CP10k)`` per cell type x time point for the case arm,
the control arm and every donor. The network structure comes from the twin's edges (per-context
GRNs with TFs and receptors as candidate regulators, intercellular ligand -> receptor edges,
temporal edges); the weights used for propagation are refitted as elasticities: per context,
ridge regression of each target's z on its regulators' z over that context's cells (both arms),
all targets solved at once from the regulators' covariance (CellOracle fits the same kind of
per-cluster ridge model). Temporal elasticities come from donor-level states at t -> t+1.

**Simulating.** For each time point in order, every cell type's network propagates the clamp
(:func:`omicstwin.tl.perturb.propagate`) plus the carry-over of the previous time point through
the temporal elasticities. Intercellular signalling along the kept ligand -> receptor edges
(``n_intercellular`` per time point, smallest permutation p first) follows one of two models
(``params["intercellular_model"]``):

- ``receptor`` (the first model): each edge passes its ligand's change in the sender to its
  receptor in the receiver at the same time point (one relative unit per unit: ``kappa = 1``)
  and the receivers propagate again (one round of signalling per time point);
- ``programme``: the signal is ``ligand activity (sender) x receptor availability
  (receiver)``; its change at t moves the receiver at t + 1 along the ligand's prior target
  programme and along the receptor's own out-edges, each with a gain regressed over donors
  (:func:`estimate_gains`); a receptor knockout (availability 0) or a ligand-blocking drug
  (activity 0, :func:`omicstwin.tl.perturb.blocking_antibody`) removes the signal.

**Scores** (per perturbation, over every cell type, time point and gene except the perturbed
ones; ``d`` = disease vector = state - control, ``delta`` = perturbed - state):
``reversal = -<delta, d> / <d, d>`` (1 = the disease vector undone), ``off_target =
|delta - proj_d(delta)| / |d|`` (change orthogonal to the disease axis), and for disease genes
``induction = <delta, d> / <d, d>`` when the gene is moved to its case level in the control
state. These are the simulator's truth definitions (:func:`omicstwin.datasets.simulate_cohort`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin._stats import benjamini_hochberg, ridge_per_target
from omicstwin.errors import ParameterError
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.scores import rank, sort_by_score, top_rows
from omicstwin.tl._store import store_result
from omicstwin.tl.perturb import DEFAULT_STEPS, Perturbation, clamp_matrix, propagate


@dataclass
class Twin:
    """A fitted disease twin.

    Attributes
    ----------
    genes, cell_types, times
        Axes of every state array.
    states
        ``{"case": z, "control": z, <donor id>: z}``, each (times, cell types, genes).
    donors
        Donor id -> arm (case or control label).
    intracellular
        ``[t][c]`` elasticity matrix (regulators x targets, CSR) or None.
    temporal
        ``[t][c]`` elasticities from time t to t+1 (CSR) or None.
    intercellular
        Columns time_index, sender, ligand, receiver, receptor (indices), kappa and gain (see
        :func:`fit_twin`: ``params["intercellular_model"]`` says which one acts).
    params
        How it was fitted.
    network
        The intracellular edges the twin propagates through.
    programmes
        Ligand -> target programmes (``programme`` model): columns ligand, target (gene
        indices) and weight (prior weight x sign, unit norm per ligand); None otherwise.
    """

    genes: list[str]
    cell_types: list[str]
    times: list[float]
    states: dict[str, np.ndarray]
    donors: dict[str, str]
    intracellular: list[list[sparse.csr_matrix | None]]
    temporal: list[list[sparse.csr_matrix | None]]
    intercellular: pd.DataFrame
    params: dict = field(default_factory=dict)
    network: pd.DataFrame | None = None  # the intracellular edges the twin propagates through
    programmes: pd.DataFrame | None = None  # ligand -> target programmes (programme model)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(time points, cell types, genes)."""
        return len(self.times), len(self.cell_types), len(self.genes)

    def state(self, name: str) -> np.ndarray:
        """Return a state by name (``case``, ``control`` or a donor id)."""
        if name not in self.states:
            raise ParameterError(
                f"unknown twin state '{name}'; fix: use 'case', 'control' or a donor id such as "
                f"{sorted(self.donors)[:3]}"
            )
        return self.states[name]

    def regulators(self) -> list[str]:
        """Genes with an outgoing edge anywhere in the twin (the others only affect themselves)."""
        used = np.zeros(len(self.genes), bool)
        for layer in (self.intracellular, self.temporal):
            for row in layer:
                for w in row:
                    if w is not None:
                        used |= np.asarray(abs(w).sum(axis=1)).ravel() > 0
        used[self.intercellular["ligand"].to_numpy(int)] = True
        # a receptor's availability gates its ligands' signal: a receptor knockout acts too
        used[self.intercellular["receptor"].to_numpy(int)] = True
        return [g for g, u in zip(self.genes, used, strict=True) if u]

    def gene_roles(self) -> dict[str, str]:
        """Return the role of every gene: ``tf``, ``ligand``, ``receptor`` or ``other``.

        ``ligand`` and ``receptor``: of a kept ligand -> receptor edge; ``tf``: a candidate
        regulator with an outgoing edge (only when the twin was fitted with a candidate list;
        the pipeline's candidates are TFs and receptors, so a receptor outside the kept edges
        shows as ``tf``); ligand, then receptor win a tie.
        """
        roles = dict.fromkeys(self.genes, "other")
        candidates = set(self.params.get("tf_candidates") or ())
        for gene in self.regulators():
            if gene in candidates:
                roles[gene] = "tf"
        for column in ("receptor", "ligand"):
            for i in self.intercellular[column].to_numpy(int):
                roles[self.genes[i]] = column
        return roles


# ----------------------------------------------------------------------------- fitting


def fit_elasticities(
    z: np.ndarray, sources: np.ndarray, targets: np.ndarray, n_genes: int, *, alpha: float = 1.0
) -> sparse.csr_matrix:
    """Ridge elasticities of each target on its own regulators, all targets at once.

    Parameters
    ----------
    z
        Samples x genes (log-expression).
    sources, targets
        Edge list (gene indices); each target is regressed on its sources only.
    n_genes
        Size of the square output.
    alpha
        Ridge penalty on the covariance scale (:func:`omicstwin._stats.ridge_per_target`).

    Returns
    -------
    scipy.sparse.csr_matrix
        (genes x genes) with the coefficient of source -> target at ``[source, target]``.
    """
    rows, cols, coef = ridge_per_target(z, sources, targets, alpha=alpha)
    return sparse.csr_matrix((coef, (rows, cols)), shape=(n_genes, n_genes))


def fit_twin(
    data,
    edges: pd.DataFrame,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
    alpha: float = 1.0,
    n_intercellular: int = 50,
    min_cells: int = 10,
    network_level: str = "donors",
    regulators: Sequence[str] | None = None,
    top_k: int = 10,
    ligand_targets: pd.DataFrame | None = None,
    intercellular_model: str = "receptor",
    lr_selection: str = "weight",
    lr_max_p: float | None = None,
    key_added: str | None = "twin",
    network_genes: Sequence[str] | None = None,
) -> Twin:
    """Fit a twin: states per cell type x time (arms and donors) and elasticity networks.

    Parameters
    ----------
    data
        AnnData or MuData with raw counts (the data the edges were inferred from).
    edges
        The multicellular network (``edges`` schema, :mod:`omicstwin.tl.networks`).
    cell_type_key, time_key, condition_key, donor_key, case, control, layer
        The data contract (see :func:`omicstwin.io.validate_cohort`).
    alpha
        Ridge penalty of the elasticities.
    n_intercellular
        Intercellular edges kept per time point at most (the strongest positive ones among
        those passing ``lr_max_p``).
    min_cells
        Contexts with fewer cells get no intracellular network.
    network_level
        ``"donors"`` (default): each cell type's network is inferred and fitted on donor x time
        states centred within each time point, i.e. on how patients differ, and applied at every
        time point; ``"cells"``: the per-context intracellular edges of ``edges`` are fitted on
        that context's cells. Why donors: at ~1 UMI per gene and cell, single-cell
        co-expression carries little regulatory signal (per-context GRN AUPRC ratio ~1.1 on the
        simulated cohorts), while patients' differing disease programmes co-vary strongly; on the
        demo cohort the planted drivers move from ranks 9-19 to 6-10 with the same defaults.
    regulators, top_k
        Candidate regulators and edges kept per target for ``network_level="donors"``
        (default: every gene).
    ligand_targets
        Ligand -> target prior (columns ligand, target, weight, sign; e.g.
        ``omicstwin.tl.priors.load_prior("ligand_targets")``): the receiver's programme of
        each ligand is its targets among the twin's genes.
    intercellular_model
        ``"programme"``: a kept ligand -> receptor edge passes the change of
        ``ligand activity (sender) x receptor availability (receiver)`` at time t to the
        receiver at t + 1 (the lag of the edges' donor coupling) along two programmes, each
        with its own gain regressed over donors (:func:`estimate_gains`): the ligand's prior
        targets and the receptor's own out-edges in the receiver's network; a receptor
        knockout or a ligand-blocking drug (:func:`omicstwin.tl.perturb.blocking_antibody`)
        removes the signal. ``"receptor"`` (default): the first model, the ligand's change
        added to the receptor's z at the same time point with ``kappa = 1`` (a ligand-blocking
        drug passes only the unblocked share; a receptor knockout clamps the receptor, so the
        added change is overwritten). Without ``ligand_targets`` the programme model falls
        back to ``"receptor"`` with a warning. Why the default stays ``"receptor"``: on the
        simulated cohorts (``benchmarks/multicellular.py``, tuning seeds 0-2) the programme
        model did not rank planted ligands, receptors or TFs higher, and a shuffled prior did
        as well as the real one (the simulators plant random downstream TFs that no prior can
        know).
    lr_selection
        Which positive intercellular edges the twin keeps, ``n_intercellular`` per time point:
        ``"evidence"`` the smallest permutation ``p_value`` first
        (:func:`omicstwin.tl.networks.intercellular_edges`), ties by weight; ``"weight"``
        (default) the strongest. The default stays ``"weight"``: with a few donors the
        permutation p is coarse (4 + 3 donors: p >= 1/35) and the evidence order found fewer
        planted edges in the top 20 on the tuning seeds (0.20 vs 0.57, small cohorts).
    lr_max_p
        Also drop edges whose ``p_value`` exceeds this (None: no hard cut; with few donors the
        smallest attainable p can exceed any usual level).
    key_added
        Also store ``{"results": twin.network, "params": twin.params}`` in
        ``data.uns[key_added]`` (the only mutation; the intracellular edges the twin propagates
        through, ``edges`` schema; read them back with :func:`omicstwin.get.edges`). The twin
        itself holds arrays per donor: keep it with :func:`save_twin`. ``None`` stores nothing.
    network_genes
        For ``network_level="donors"``: infer and fit the networks on these genes only (e.g.
        :attr:`omicstwin.tl.networks.NetworkGenes.genes`, the rule of
        :func:`omicstwin.tl.networks.network_genes`); states keep every gene. None: every gene.

    Returns
    -------
    Twin
        The fitted twin.
    """
    from omicstwin.pp.cohort import as_cohort

    cohort = as_cohort(data, locals())
    case, control = cohort.keys.case, cohort.keys.control
    arm_rows = np.flatnonzero(cohort.in_arms)
    obs = cohort.obs.iloc[arm_rows]
    genes = list(cohort.genes)
    g_index = {g: i for i, g in enumerate(genes)}
    cell_types = sorted(obs["cell_type"].unique())
    times = cohort.time_levels
    c_index = {c: i for i, c in enumerate(cell_types)}
    t_index = {t: i for i, t in enumerate(times)}
    shape = (len(times), len(cell_types), len(genes))

    states, donors = _fit_states(cohort, obs, c_index, t_index, shape)
    if network_level not in ("donors", "cells"):
        raise ParameterError(f"network_level must be 'donors' or 'cells', got '{network_level}'")
    if lr_selection not in ("evidence", "weight"):
        raise ParameterError(f"lr_selection must be 'evidence' or 'weight', got '{lr_selection}'")
    if intercellular_model not in ("programme", "receptor"):
        raise ParameterError(
            f"intercellular_model must be 'programme' or 'receptor', got '{intercellular_model}'"
        )
    coupling = _intercellular_coupling(
        edges, n_intercellular, g_index, c_index, t_index, max_p=lr_max_p, by=lr_selection
    )
    programmes = None
    if intercellular_model == "programme" and ligand_targets is None:
        logger.warning(
            "no ligand -> target prior: the twin's intercellular edges add the ligand's change to "
            "the receptor (kappa = 1, no receptor programme); fix: pass ligand_targets "
            "(omicstwin.tl.priors.load_prior('ligand_targets'))"
        )
        intercellular_model = "receptor"
    elif intercellular_model == "programme":
        programmes = ligand_programmes(ligand_targets, genes)
    network, intracellular = _fit_intracellular(
        cohort,
        arm_rows,
        obs,
        edges,
        states,
        sorted(donors),
        (genes, cell_types, times),
        network_level=network_level,
        regulators=regulators,
        top_k=top_k,
        min_cells=min_cells,
        alpha=alpha,
        network_genes=network_genes,
    )
    if programmes is not None:
        coupling[["gain", "receptor_gain"]] = estimate_gains(
            states, sorted(donors), coupling, programmes, intracellular
        ).to_numpy()
    twin = Twin(
        genes=genes,
        cell_types=cell_types,
        times=times,
        states=states,
        donors=donors,
        intracellular=intracellular,
        temporal=_fit_temporal(edges, states, donors, g_index, c_index, t_index, alpha),
        intercellular=coupling,
        params={
            "alpha": alpha,
            "n_intercellular": n_intercellular,
            "case": case,
            "control": control,
            "network_level": network_level,
            "top_k": top_k,
            "intercellular_model": intercellular_model,
            "lr_selection": lr_selection,
            "lr_max_p": lr_max_p,
            "tf_candidates": None if regulators is None else sorted(set(regulators) & set(genes)),
        },
        network=network,
        programmes=programmes,
    )
    store_result(data, key_added, conform(twin.network, "edges"), twin.params)
    return twin


def _fit_states(cohort, obs, c_index, t_index, shape) -> tuple[dict[str, np.ndarray], dict]:
    """Compute the mean log-normalised states of both arms and of every donor.

    Parameters
    ----------
    cohort
        The cohort view of the data (:func:`omicstwin.pp.cohort.as_cohort`); its cached log
        summaries are shared with the networks step.
    obs
        Observations of the cells in either arm (columns ``cell_type``, ``condition``,
        ``donor``).
    c_index, t_index
        Cell type -> axis index and time point -> axis index.
    shape
        (time points, cell types, genes) of every state.

    Returns
    -------
    states
        ``{"case": z, "control": z, <donor id>: z}``, donors in sorted order.
    donors
        Donor id -> arm label (the condition of the donor's first cell).
    """
    case, control = cohort.keys.case, cohort.keys.control
    states: dict[str, np.ndarray] = {}
    summaries = cohort.log_summaries  # mean log-normalised expression, shared with networks
    keys, mean = summaries.arms, summaries.arm_mean
    for arm in (case, control):
        states["case" if arm == case else "control"] = _state(
            keys, mean, arm, "condition", c_index, t_index, shape
        )
    dkeys, dmean = summaries.donors, summaries.donor_mean
    donors = obs.groupby("donor")["condition"].first().to_dict()
    for donor in sorted(donors):
        states[donor] = _state(dkeys, dmean, donor, "donor", c_index, t_index, shape)
    return states, donors


def _fit_intracellular(
    cohort,
    arm_rows,
    obs,
    edges,
    states,
    donors,
    axes,
    *,
    network_level,
    regulators,
    top_k,
    min_cells,
    alpha,
    network_genes=None,
) -> tuple[pd.DataFrame, list[list[sparse.csr_matrix | None]]]:
    """Fit the intracellular networks at the chosen level; also return the edges they use.

    Parameters
    ----------
    cohort, arm_rows, obs
        The cohort view, the positions of the cells in either arm and their observations.
    edges
        The multicellular network (its ``intracellular`` layer is the per-context fallback).
    states, donors
        From :func:`_fit_states`; ``donors`` sorted.
    axes
        ``(genes, cell_types, times)`` of the twin.
    network_level, regulators, top_k, min_cells, alpha, network_genes
        As in :func:`fit_twin`.

    Returns
    -------
    network
        The intracellular edges used (``edges`` schema for ``"donors"``; otherwise the input's
        intracellular rows).
    intracellular
        ``[t][c]`` CSR elasticities or None.
    """
    genes, cell_types, times = axes
    if network_level == "donors":
        network, intracellular = _donor_networks(
            states, donors, genes, cell_types, times, regulators, top_k, alpha, network_genes
        )
    else:
        network, intracellular = None, [[None] * len(cell_types) for _ in times]
    if network is None:  # "cells", or too few donors: the twin uses the per-context edges
        intra = edges[edges["layer"] == "intracellular"]  # a copy, so made only when needed
        network = intra.reset_index(drop=True)
        if network_level == "cells":
            indices = tuple({v: i for i, v in enumerate(axis)} for axis in axes)
            _fit_cell_networks(
                intracellular, cohort, arm_rows, obs, intra, indices, min_cells, alpha
            )
    return network, intracellular


def _fit_cell_networks(grid, cohort, arm_rows, obs, intra, indices, min_cells, alpha) -> None:
    """Fill ``grid[t][c]`` with elasticities fitted on each context's cells (``"cells"`` level).

    Parameters
    ----------
    grid
        ``[t][c]`` list of lists, filled in place; contexts without enough cells or without
        edges stay None.
    cohort, arm_rows, obs
        The cohort view, the positions of the cells in either arm and their observations.
    intra
        The intracellular edges of the multicellular network (per cell type and time point).
    indices
        ``(g_index, c_index, t_index)``: gene, cell type and time point -> axis index.
    min_cells, alpha
        As in :func:`fit_twin`.
    """
    g_index, c_index, t_index = indices
    groups = obs[["cell_type", "time", "condition", "donor"]].reset_index(drop=True)
    contexts = groups.groupby(["cell_type", "time"]).indices
    for (cell_type, time), positions in contexts.items():
        block = intra[(intra["source_cell_type"] == cell_type) & (intra["time_from"] == time)]
        if len(positions) < min_cells or block.empty:
            continue
        # densify one context at a time, never the whole cohort's matrix
        z = cohort.log_normalised(arm_rows[positions]).toarray()
        grid[t_index[time]][c_index[cell_type]] = fit_elasticities(
            z,
            block["source"].map(g_index).to_numpy(),
            block["target"].map(g_index).to_numpy(),
            len(g_index),
            alpha=alpha,
        )


def _fit_temporal(
    edges, states, donors, g_index, c_index, t_index, alpha
) -> list[list[sparse.csr_matrix | None]]:
    """Temporal elasticities ``[t][c]`` from donor states at t -> t+1 along the temporal edges.

    Parameters
    ----------
    edges
        The multicellular network; only its ``temporal`` layer is used.
    states, donors
        From :func:`_fit_states`; donors are the samples of the lagged regression (sorted).
    g_index, c_index, t_index
        Gene, cell type and time point -> axis index.
    alpha
        Ridge penalty.

    Returns
    -------
    list of list
        ``[t][c]`` CSR elasticities; None where no edge leaves that context or t is the last
        time point (nothing to carry over to).
    """
    temporal = [[None] * len(c_index) for _ in t_index]
    lagged = edges[edges["layer"] == "temporal"]
    donor_z = {d: states[d] for d in donors}
    for (cell_type, time), block in lagged.groupby(["source_cell_type", "time_from"]):
        t, c = t_index[time], c_index[cell_type]
        if t + 1 >= len(t_index):
            continue
        x = np.array([donor_z[d][t, c] for d in sorted(donor_z)])
        y = np.array([donor_z[d][t + 1, c] for d in sorted(donor_z)])
        temporal[t][c] = _fit_lagged(
            x,
            y,
            block["source"].map(g_index).to_numpy(),
            block["target"].map(g_index).to_numpy(),
            len(g_index),
            alpha,
        )
    return temporal


def _intercellular_coupling(
    edges, n_intercellular, g_index, c_index, t_index, *, max_p=None, by="weight"
) -> pd.DataFrame:
    """Keep the strongest positive ligand -> receptor edges per time point, as axis indices.

    Parameters
    ----------
    edges
        The multicellular network; only its ``intercellular`` layer is used.
    n_intercellular
        Edges kept per time point at most.
    g_index, c_index, t_index
        Gene, cell type and time point -> axis index.
    max_p
        Keep only edges whose permutation ``p_value`` is at most this (None: no filter).
    by
        ``"evidence"``: smallest ``p_value`` first, ties by weight; ``"weight"``: strongest
        first. Either needs p-values only when it uses them (else an error naming the fix).

    Returns
    -------
    pandas.DataFrame
        Columns time_index, sender, ligand, receiver, receptor, kappa and gain (NaN until
        estimated; see :class:`Twin`); a complex acts through its first subunit.
    """
    inter = edges[(edges["layer"] == "intercellular") & (edges["weight"] > 0)]
    if max_p is not None or by == "evidence":
        if "p_value" not in inter.columns or (len(inter) and inter["p_value"].isna().all()):
            raise ParameterError(
                "the intercellular edges carry no p_value; fix: score them with "
                "omicstwin.tl.networks.intercellular_edges(n_permutations > 0) or pass "
                "lr_selection='weight', lr_max_p=None (the strongest edges whatever their "
                "evidence)"
            )
    if max_p is not None:
        inter = inter[inter["p_value"] <= max_p]
    order = ["p_value", "weight"] if by == "evidence" else "weight"
    inter = top_rows(
        inter, order, n_intercellular, table="intercellular_edges", within=["time_from"]
    )
    return pd.DataFrame(
        {
            "time_index": inter["time_from"].map(t_index).to_numpy(int),
            "sender": inter["source_cell_type"].map(c_index).to_numpy(int),
            "ligand": inter["source"].map(lambda g: _first_subunit(g, g_index)).to_numpy(int),
            "receiver": inter["target_cell_type"].map(c_index).to_numpy(int),
            "receptor": inter["target"].map(lambda g: _first_subunit(g, g_index)).to_numpy(int),
            "kappa": 1.0,
            "gain": np.nan,
            "receptor_gain": np.nan,
        }
    )


def ligand_programmes(ligand_targets: pd.DataFrame, genes: Sequence[str]) -> pd.DataFrame:
    """Each ligand's programme in a receiver: its prior targets among the twin's genes.

    Parameters
    ----------
    ligand_targets
        Columns ligand, target, weight, sign (a ligand -> target prior).
    genes
        The twin's genes.

    Returns
    -------
    pandas.DataFrame
        ligand, target (gene indices) and weight: ``weight x sign`` summed over repeated rows,
        scaled to unit norm per ligand (so a programme score ``<w, z>`` moves by ``g`` when
        ``z`` moves by ``g w``); the ligand itself is left out of its own programme.
    """
    from omicstwin.errors import MissingKeyError

    for column in ("ligand", "target", "weight", "sign"):
        if column not in ligand_targets.columns:
            raise MissingKeyError(
                f"ligand_targets lacks the column '{column}'; columns present: "
                f"{list(ligand_targets.columns)}; fix: pass a ligand -> target prior with "
                "ligand, target, weight and sign columns"
            )
    index = {g: i for i, g in enumerate(genes)}
    table = pd.DataFrame(
        {
            "ligand": ligand_targets["ligand"].map(index),
            "target": ligand_targets["target"].map(index),
            "weight": pd.to_numeric(ligand_targets["weight"], errors="coerce")
            * pd.to_numeric(ligand_targets["sign"], errors="coerce"),
        }
    ).dropna()
    table = table[(table["ligand"] != table["target"]) & (table["weight"] != 0)]
    table = table.astype({"ligand": int, "target": int})
    table = table.groupby(["ligand", "target"], as_index=False)["weight"].sum()
    norm = np.sqrt((table["weight"] ** 2).groupby(table["ligand"]).transform("sum"))
    table["weight"] = table["weight"] / norm
    return table[table["weight"] != 0].reset_index(drop=True)


def _programme_index(programmes: pd.DataFrame | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Ligand index -> (target indices, unit weights)."""
    if programmes is None or programmes.empty:
        return {}
    return {
        int(ligand): (block["target"].to_numpy(int), block["weight"].to_numpy(float))
        for ligand, block in programmes.groupby("ligand", sort=True)
    }


def gain_samples(
    states, donors, edge: tuple[int, int, int, int], programmes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the regression samples of one edge's gains, over donors and transitions t -> t+1.

    ``x`` = the sender's ligand z x the receiver's receptor z at t; ``receptor`` = the receptor
    z at t (the covariate); ``y`` (samples, k) = the receiver's programme scores ``<w, z>`` at
    t + 1 for the k programme vectors ``programmes`` (k, genes), for every donor sampled in the
    three contexts; ``group`` = the transition (all are centred within it before the fit).
    ``edge``: sender, ligand, receiver, receptor (axis indices).
    """
    sender, ligand, receiver, receptor = edge
    x, a, y, group = [], [], [], []
    n_t = next(iter(states.values())).shape[0] if states else 0
    for t in range(n_t - 1):
        for donor in donors:
            z = states[donor]
            here = (z[t, sender].any(), z[t, receiver].any(), z[t + 1, receiver].any())
            if not all(here):
                continue  # a donor not sampled in a context has an all-zero state there
            x.append(z[t, sender, ligand] * z[t, receiver, receptor])
            a.append(z[t, receiver, receptor])
            y.append(programmes @ z[t + 1, receiver])
            group.append(t)
    y = np.asarray(y, float).reshape(len(x), programmes.shape[0])
    return np.asarray(x, float), np.asarray(a, float), y, np.asarray(group, int)


def shrunk_slope(
    x: np.ndarray, y: np.ndarray, group: np.ndarray, covariate: np.ndarray | None = None
) -> float:
    """Slope of y on x (one intercept per group, optional covariate), shrunk by its t.

    OLS slope ``b`` of x and its t statistic (residual df = n - groups - 1 - covariates); the
    gain is ``b x max(0, 1 - 1 / t^2)`` (positive-part James-Stein shrinkage): a slope the
    donors cannot tell from zero (|t| <= 1) gives no gain, a clear one is kept nearly whole.
    0 with too few samples or no variation.
    """
    if x.size == 0:
        return 0.0
    levels, inverse = np.unique(group, return_inverse=True)
    columns = [x] if covariate is None else [x, covariate]
    df = x.size - levels.size - len(columns)
    if df < 1:
        return 0.0
    count = np.bincount(inverse)

    def centred(v):
        return v - (np.bincount(inverse, v) / count)[inverse]

    design = np.column_stack([centred(c) for c in columns])
    yc = centred(y)
    gram = design.T @ design
    scale = max(float(np.trace(gram)), 1e-300)
    if np.linalg.cond(gram) > 1e10 or gram[0, 0] <= 1e-12 * scale:
        return 0.0
    inverse_gram = np.linalg.inv(gram)
    coef = inverse_gram @ (design.T @ yc)
    residual = yc - design @ coef
    sigma2 = float(residual @ residual) / df
    if sigma2 <= 0:
        return float(coef[0])
    t2 = coef[0] ** 2 / (sigma2 * inverse_gram[0, 0])
    return float(coef[0] * max(0.0, 1.0 - 1.0 / t2))


def receptor_programme(twin_or_grid, t: int, receiver: int, receptor: int) -> np.ndarray:
    """Return the receptor's own programme in the receiver: its out-edges, unit norm (genes,).

    Read from the receiver's intracellular elasticities at time index t (empty without any).
    """
    grid = twin_or_grid.intracellular if isinstance(twin_or_grid, Twin) else twin_or_grid
    w = grid[t][receiver]
    if w is None:
        return np.zeros(0)
    row = np.asarray(w[receptor].todense()).ravel()
    norm = np.linalg.norm(row)
    return row / norm if norm > 0 else np.zeros(0)


def estimate_gains(
    states: dict[str, np.ndarray],
    donors: Sequence[str],
    coupling: pd.DataFrame,
    programmes: pd.DataFrame,
    intracellular: list[list[sparse.csr_matrix | None]] | None = None,
) -> pd.DataFrame:
    """Per kept edge, the gains of ligand x receptor on the receiver's programmes.

    Two programmes per edge: the ligand's prior programme (``gain``) and the receptor's own
    out-edges in the receiver's intracellular network (``receptor_gain``, when
    ``intracellular`` is given and the receptor has any: the donor networks learn what
    co-varies with the receptor downstream). For every distinct sender, ligand, receiver,
    receptor: the donors' programme scores at t + 1 regressed on their ligand x receptor level
    at t with the receptor's own level at t as a covariate (so a programme that only follows
    the receptor's availability gets no signalling gain), pooled over transitions with one
    intercept per transition (time-centred, as the donor networks), the slope shrunk by
    :func:`shrunk_slope`. Signed: negative when more signal goes with a lower programme.
    Estimated over all donors and transitions whatever the arm (label-free). 0 where a
    programme is missing.

    Returns
    -------
    pandas.DataFrame
        ``gain`` and ``receptor_gain``, one row per row of ``coupling``.
    """
    index = _programme_index(programmes)
    keys = ["sender", "ligand", "receiver", "receptor"]
    gains = pd.DataFrame({"gain": 0.0, "receptor_gain": 0.0}, index=coupling.index)
    if coupling.empty:
        return gains
    n_g = next(iter(states.values())).shape[2]
    for _, rows in coupling.groupby(keys, sort=True).groups.items():
        edge = tuple(int(v) for v in coupling.loc[rows[0], keys])
        vectors = np.zeros((2, n_g))
        if edge[1] in index:
            targets, weights = index[edge[1]]
            vectors[0, targets] = weights
        if intracellular is not None:
            own = receptor_programme(
                intracellular, int(coupling.loc[rows[0], "time_index"]), edge[2], edge[3]
            )
            if own.size:
                vectors[1] = own
        present = np.abs(vectors).sum(axis=1) > 0
        if not present.any():
            continue
        x, a, y, group = gain_samples(states, donors, edge, vectors)
        for k, column in enumerate(("gain", "receptor_gain")):
            if present[k]:
                gains.loc[rows, column] = shrunk_slope(x, y[:, k], group, covariate=a)
    return gains


def _donor_networks(
    states, donors, genes, cell_types, times, regulators, top_k, alpha, network_genes=None
):
    """Per cell type: structure and elasticities from donor x time states (time-centred).

    With ``network_genes`` the ridge fits see only those columns (regulators x network genes,
    never regulators x all genes); the elasticities are placed back in the genes x genes grid.
    """
    from omicstwin.tl.grn import infer_grn

    columns = np.arange(len(genes))
    if network_genes is not None:
        wanted = set(network_genes)
        columns = np.array([j for j, g in enumerate(genes) if g in wanted], dtype=np.int64)
    sub_genes = [genes[j] for j in columns]
    g_index = {g: i for i, g in enumerate(sub_genes)}  # position among the fitted columns
    candidates = None if regulators is None else [g for g in regulators if g in g_index]
    grid = [[None] * len(cell_types) for _ in times]
    rows = []
    if len(donors) < 3:
        return None, grid
    for c, cell_type in enumerate(cell_types):
        # times x donors x network genes
        x = np.stack([states[d][:, c, columns] for d in donors], axis=1)
        x = (x - x.mean(axis=1, keepdims=True)).reshape(-1, len(columns))  # donor variation only
        found = infer_grn(x, sub_genes, method="ridge", regulators=candidates, top_per_target=top_k)
        found = top_rows(
            found, "weight", top_k, table="edges", within=["target"], tie_break=["source"]
        )
        src, tgt, coef = ridge_per_target(
            x,
            found["source"].map(g_index).to_numpy(),
            found["target"].map(g_index).to_numpy(),
            alpha=alpha,
        )
        w = sparse.csr_matrix((coef, (columns[src], columns[tgt])), shape=(len(genes), len(genes)))
        for t in range(len(times)):
            grid[t][c] = w
        coo = w.tocoo()
        rows.append(
            pd.DataFrame(
                {
                    "layer": "intracellular",
                    "condition": "donors",
                    "source_cell_type": cell_type,
                    "target_cell_type": cell_type,
                    "time_from": np.nan,  # one network per cell type, used at every time point
                    "time_to": np.nan,
                    "source": np.array(genes)[coo.row],
                    "target": np.array(genes)[coo.col],
                    "weight": coo.data,
                    "stability": 1.0,
                }
            )
        )
    network = conform(pd.concat(rows, ignore_index=True), "edges") if rows else None
    return network, grid


def _first_subunit(name: str, index: dict[str, int]) -> int:
    """Return the gene a complex acts through: its first subunit (all are measured)."""
    return index[name.split("_")[0]]


def _state(keys, mean, label, column, c_index, t_index, shape) -> np.ndarray:
    out = np.zeros(shape)
    for row, key in enumerate(keys.itertuples(index=False)):
        if getattr(key, column) == label:
            out[t_index[key.time], c_index[key.cell_type]] = mean[row]
    return out


def _fit_lagged(x, y, sources, targets, n_genes, alpha) -> sparse.csr_matrix:
    """Elasticities of z(t+1) on regulators' z(t) over donors (same solver, stacked samples).

    Only the genes on an edge enter the fit: with 20,000 genes the regulators x (2 x genes)
    covariance of every context would otherwise be formed (~0.5 GB each).
    """
    used = np.unique(np.concatenate([sources, targets]))
    if used.size == n_genes:  # every gene is on an edge: the whole-matrix form, as before
        stacked = np.concatenate([x, y], axis=1)
        shifted = fit_elasticities(stacked, sources, targets + n_genes, 2 * n_genes, alpha=alpha)
        return shifted[:n_genes, n_genes:].tocsr()
    m = used.size
    stacked = np.concatenate([x[:, used], y[:, used]], axis=1)
    rows, cols, coef = ridge_per_target(
        stacked, np.searchsorted(used, sources), np.searchsorted(used, targets) + m, alpha=alpha
    )
    return sparse.csr_matrix((coef, (used[rows], used[cols - m])), shape=(n_genes, n_genes))


# ----------------------------------------------------------------------------- simulating


@dataclass
class _Accumulator:
    """Running sums for reversal and off-target scores (per perturbation and per context)."""

    n: int
    dot: np.ndarray = None
    dd: np.ndarray = None
    xx: np.ndarray = None
    rows: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dot, self.dd, self.xx = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)

    def add(self, delta: np.ndarray, d: np.ndarray, mask: np.ndarray, context: tuple) -> None:
        """Add one context: sums over all genes minus the clamped (perturbed) coordinates."""
        rows, cols = np.nonzero(mask)
        clamped = delta[rows, cols]
        # einsum, not BLAS: BLAS sums in an order that depends on its thread count, and dask
        # workers run single-threaded, so results would differ in the last bits by worker
        dot = np.einsum("ij,j->i", delta, d) - np.bincount(
            rows, clamped * d[cols], minlength=self.n
        )
        dd = float(np.einsum("i,i->", d, d)) - np.bincount(rows, d[cols] ** 2, minlength=self.n)
        xx = np.einsum("ij,ij->i", delta, delta) - np.bincount(rows, clamped**2, minlength=self.n)
        self.dot += dot
        self.dd += dd
        self.xx += xx
        self.rows.append((context, dot, dd, xx))


def _scores(dot, dd, xx, sign: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(dd > 0, sign * dot / dd, 0.0)
        off = np.where(
            dd > 0,
            np.sqrt(np.maximum(xx - dot**2 / np.where(dd > 0, dd, 1), 0))
            / np.sqrt(np.where(dd > 0, dd, 1)),
            0.0,
        )
    return score, off


def simulate_contexts(
    twin: Twin,
    perturbations: Sequence[Perturbation],
    z: np.ndarray,
    *,
    acting: set[int] | None = None,
    n_steps: int | None = DEFAULT_STEPS,
    shifts: Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
):
    """Simulate perturbations of the state ``z`` (T, C, G); yield ``(t, c, delta, mask)``.

    The simulation of the module docstring, one cell type x time context at a time in time
    order: ``delta`` (perturbations x genes) is the context's final shift, ``mask`` its clamped
    coordinates. ``acting``: indices of the cell types the perturbations act in (default all).
    """
    n_t, n_c, n_g = twin.shape
    acting = set(range(n_c)) if acting is None else acting
    p = len(perturbations)
    activity = blocked_activity(perturbations, twin.genes)
    programme = twin.params.get("intercellular_model") == "programme"
    targets = _programme_index(twin.programmes) if programme else {}
    previous = None
    for t in range(n_t):
        first, masks, shifts_t = [], [], []
        for c in range(n_c):
            z0 = z[t, c]
            if shifts is not None:
                mask, shift = shifts(t, c, z0)
            elif c in acting:
                mask, shift = clamp_matrix(perturbations, twin.genes, z0)
            else:
                mask, shift = np.zeros((p, n_g), bool), np.zeros((p, n_g))
            carry = None
            if previous is not None and twin.temporal[t - 1][c] is not None:
                carry = (twin.temporal[t - 1][c].T.tocsr() @ previous[c].T).T
            if programme and previous is not None:
                signal = _programme_signal(twin, t - 1, c, z, previous, activity, targets)
                if signal is not None:
                    carry = signal if carry is None else carry + signal
            w = twin.intracellular[t][c]
            if w is None:
                delta = np.where(mask, shift, 0.0 if carry is None else carry)
            else:
                delta = propagate(z0, w, mask, shift, extra=carry, n_steps=n_steps)
            first.append((delta, carry))
            masks.append(mask)
            shifts_t.append(shift)
        current = []
        signals = twin.intercellular[twin.intercellular["time_index"] == t]
        for c in range(n_c):
            delta, carry = first[c]
            incoming = signals[signals["receiver"] == c] if not programme else signals[:0]
            if len(incoming) and twin.intracellular[t][c] is not None:
                extra = np.zeros((p, n_g)) if carry is None else carry.copy()
                for row in incoming.itertuples():
                    change = first[row.sender][0][:, row.ligand]
                    if row.ligand in activity:  # a blocked ligand passes only its free share
                        level = z[t, row.sender, row.ligand]
                        change = (level + change) * activity[row.ligand] - level
                    extra[:, row.receptor] += row.kappa * change
                delta = propagate(
                    z[t, c],
                    twin.intracellular[t][c],
                    masks[c],
                    shifts_t[c],
                    extra=extra,
                    n_steps=n_steps,
                )
            current.append(delta)
            yield t, c, delta, masks[c]
        previous = current


def blocked_activity(
    perturbations: Sequence[Perturbation], genes: Sequence[str]
) -> dict[int, np.ndarray]:
    """Gene index -> (P,) share of its protein activity left by each perturbation's blocks.

    Only genes some perturbation blocks (:attr:`omicstwin.tl.perturb.Perturbation.blocks`)
    appear; 1 where a perturbation leaves the gene alone.
    """
    index = {g: i for i, g in enumerate(genes)}
    out: dict[int, np.ndarray] = {}
    for row, perturbation in enumerate(perturbations):
        for gene, factor in getattr(perturbation, "blocks", ()):
            j = index.get(gene)
            if j is None:
                raise ParameterError(
                    f"perturbation '{perturbation.perturbation_id}' blocks the unknown gene "
                    f"'{gene}'; fix: use a gene of the twin (its var_names)"
                )
            out.setdefault(j, np.ones(len(perturbations)))[row] *= factor
    return out


def _programme_signal(twin, t, receiver, z, previous, activity, targets) -> np.ndarray | None:
    """Return the receiver's programme input at t + 1 from the kept edges of time t (P, genes).

    Per edge: ``[(L + dL) a_L (A + dA) a_R - L A] x (gain w + receptor_gain v)`` with L the
    sender's ligand z, A the receiver's receptor z at t (before the perturbation), dL, dA their
    shifts, a the shares of activity left by blocks, w the ligand's unit prior programme and v
    the receptor's unit out-edges in the receiver (:func:`receptor_programme`). None without
    edges.
    """
    rows = twin.intercellular
    rows = rows[(rows["time_index"] == t) & (rows["receiver"] == receiver)]
    if "receptor_gain" not in rows.columns:
        rows = rows.assign(receptor_gain=0.0)
    rows = rows[(rows["gain"].fillna(0) != 0) | (rows["receptor_gain"].fillna(0) != 0)]
    if rows.empty:
        return None
    out = np.zeros_like(previous[receiver])
    for row in rows.itertuples():
        ligand = z[t, row.sender, row.ligand] + previous[row.sender][:, row.ligand]
        receptor = z[t, receiver, row.receptor] + previous[receiver][:, row.receptor]
        if row.ligand in activity:
            ligand = ligand * activity[row.ligand]
        if row.receptor in activity:
            receptor = receptor * activity[row.receptor]
        change = ligand * receptor - z[t, row.sender, row.ligand] * z[t, receiver, row.receptor]
        if row.gain and row.ligand in targets:
            genes, weights = targets[row.ligand]
            out[:, genes] += row.gain * change[:, None] * weights[None, :]
        if row.receptor_gain:
            own = receptor_programme(twin, t, receiver, row.receptor)
            if own.size:
                out += row.receptor_gain * change[:, None] * own[None, :]
    return out


def run_perturbations(
    twin: Twin,
    perturbations: Sequence[Perturbation],
    *,
    state: str = "case",
    reference: str = "control",
    cell_types: Sequence[str] | None = None,
    n_steps: int | None = DEFAULT_STEPS,
    shifts: Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    sign: float = -1.0,
    keep_delta: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]:
    """Simulate perturbations on a twin state and score them against ``reference``.

    Parameters
    ----------
    twin
        A fitted :class:`Twin`.
    perturbations
        What to simulate (all at once).
    state
        Perturbed state: ``case``, ``control`` or a donor id (a patient's own twin).
    reference
        State defining the disease axis: ``d = states[state] - states[reference]`` for
        reversal (``sign=-1``), ``d = states[reference] - states[state]`` for induction
        (``sign=+1``, e.g. ``state='control'``, ``reference='case'``).
    cell_types
        Where the perturbation acts (default: every cell type); effects still spread.
    n_steps
        Propagation steps per network (None: steady state).
    shifts
        Optional ``shifts(t, c, z0) -> (mask, shift)`` overriding the clamp (used by the
        induction screen, which moves a gene to its case level).
    sign
        -1 for reversal (moving against ``d``), +1 for induction.
    keep_delta
        Also return the full shift array (P, T, C, G); only for a few perturbations.

    Returns
    -------
    summary, per_context, delta
        ``summary``: perturbation_id, kind, genes, dose, score, off_target. ``per_context``:
        the same per cell type and time point. ``delta`` or None.
    """
    z = twin.state(state)
    d_all = z - twin.state(reference) if sign < 0 else twin.state(reference) - z
    n_t, n_c, n_g = twin.shape
    acting = (
        set(range(n_c))
        if cell_types is None
        else {twin.cell_types.index(c) for c in cell_types if c in twin.cell_types}
    )
    if cell_types is not None and not acting:
        raise ParameterError(
            f"none of {list(cell_types)} is a cell type of the twin ({twin.cell_types})"
        )
    p = len(perturbations)
    acc = _Accumulator(p)
    full = np.zeros((p, n_t, n_c, n_g)) if keep_delta else None
    for t, c, delta, mask in simulate_contexts(
        twin, perturbations, z, acting=acting, n_steps=n_steps, shifts=shifts
    ):
        acc.add(delta, d_all[t, c], mask, (twin.cell_types[c], twin.times[t]))
        if full is not None:
            full[:, t, c] = delta
    score, off = _scores(acc.dot, acc.dd, acc.xx, sign)
    summary = pd.DataFrame(
        {
            "perturbation_id": [q.perturbation_id for q in perturbations],
            "kind": [q.kind for q in perturbations],
            "genes": [";".join(q.genes) for q in perturbations],
            "dose": [q.dose for q in perturbations],
            "score": score,
            "off_target": off,
        }
    )
    parts = []
    for (cell_type, time), dot, dd, xx in acc.rows:
        s, o = _scores(dot, dd, xx, sign)
        parts.append(
            pd.DataFrame(
                {
                    "perturbation_id": summary["perturbation_id"],
                    "cell_type": cell_type,
                    "time": time,
                    "score": s,
                    "off_target": o,
                }
            )
        )
    return summary, pd.concat(parts, ignore_index=True), full


# ----------------------------------------------------------------------------- screens


def shuffle_targets(
    weights: sparse.spmatrix | np.ndarray, seed: int = 0, *, max_rounds: int = 100
) -> sparse.csr_matrix:
    """Permute the targets of a network's edges (the shuffled-network control).

    Each regulator keeps its out-degree and its weights, each target its in-degree; only who
    regulates whom is lost. A plain permutation can give a regulator the same target twice
    (a sparse constructor would then *sum* the two weights) or make a self-loop, so such edges
    swap targets with random other edges until none is left (swaps keep both degree
    sequences); whatever is still bad after ``max_rounds`` is dropped.
    """
    rng = np.random.default_rng(seed)
    coo = sparse.coo_matrix(weights)
    rows, data = coo.row, coo.data
    cols = rng.permutation(coo.col)
    n_cols = coo.shape[1]

    def bad_edges(cols: np.ndarray) -> np.ndarray:
        key = rows.astype(np.int64) * n_cols + cols
        _, first = np.unique(key, return_index=True)
        duplicate = np.ones(key.size, bool)
        duplicate[first] = False
        return np.flatnonzero(duplicate | (rows == cols))

    for _ in range(max_rounds):
        bad = bad_edges(cols)
        if bad.size == 0:
            break
        partners = rng.integers(0, cols.size, size=bad.size)
        for i, j in zip(bad, partners, strict=True):
            cols[i], cols[j] = cols[j], cols[i]
    keep = np.ones(cols.size, bool)
    keep[bad_edges(cols)] = False
    return sparse.csr_matrix((data[keep], (rows[keep], cols[keep])), shape=coo.shape)


def randomised(twin: Twin, seed: int) -> Twin:
    """Return a null twin: every network's edges get their targets permuted.

    Permuting the target column of an edge list keeps each regulator's out-degree and each
    target's in-degree (a degree-preserving randomisation) and the weights; only who regulates
    whom is lost (:func:`shuffle_targets` repairs duplicated edges and self-loops by swaps).
    States and intercellular couplings are kept.
    """
    seeds = iter(np.random.default_rng(seed).integers(0, 2**63 - 1, size=10_000))

    def shuffle(w):
        return None if w is None else shuffle_targets(w, int(next(seeds)))

    return Twin(
        genes=twin.genes,
        cell_types=twin.cell_types,
        times=twin.times,
        states=twin.states,
        donors=twin.donors,
        intracellular=[[shuffle(w) for w in row] for row in twin.intracellular],
        temporal=[[shuffle(w) for w in row] for row in twin.temporal],
        intercellular=twin.intercellular,
        params={**twin.params, "null_seed": seed},
        programmes=twin.programmes,
    )


def target_screen(
    twin: Twin,
    perturbations: Sequence[Perturbation] | None = None,
    *,
    state: str = "case",
    n_permutations: int = 1999,
    seed: int = 0,
    n_steps: int | None = DEFAULT_STEPS,
    client: Any = None,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
    memory_per_worker: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank perturbations by how far they move the disease state back towards the controls.

    Each perturbation is simulated once, on the label-free reference state (per context the
    mean of all donors' states, :func:`omicstwin.tl.nulls.reference_state`); its score is the
    reversal ``-<delta, d> / <d, d>`` of the disease vector ``d`` = mean of the case donors'
    states - mean of the control donors' (each donor weighted equally). Its p-value is a
    **donor-label permutation test**: the arm labels are permuted among the donors, ``d``
    recomputed and the perturbation rescored, ``p = (1 + #{b: s_b >= s_obs}) / (1 + B)`` per
    perturbation (test statistic: the change along the disease vector, ``-<delta, d>``); BH q
    over perturbations. Because the networks and the reference state are
    fitted without the labels, this is the whole procedure's null, exact under no disease (see
    :mod:`omicstwin.tl.nulls` for the design and its one conditioned ingredient).

    Parameters
    ----------
    twin
        A fitted twin (with donor states; without >= 2 donors per arm p and q are NaN).
    perturbations
        Default: a knockout of every gene that has an outgoing edge and of every ligand and
        receptor of a kept intercellular edge (:meth:`Twin.regulators`): TFs, ligands and
        receptors compete on one ranking (other genes only change themselves, which the score
        excludes, so their reversal is exactly 0).
    state
        ``case`` (study level) or a case donor id: that patient's disease vector (the patient's
        state - the control mean), tested against the control donors' own (each control - the
        mean of the other controls); see :func:`omicstwin.tl.patients.patient_screen`.
    n_permutations
        Relabellings B of the null: all distinct ones when there are at most this many (an
        exact test; the small preset's 4 + 3 donors have 34), else B seeded random ones
        (p >= 1 / (B + 1): with hundreds of targets BH needs B in the thousands).
    seed
        Seed of the random relabellings.
    n_steps
        Propagation steps.
    client
        A ``distributed.Client`` (see :func:`omicstwin.parallel.resolve_client`): batches of
        perturbations run as dask tasks, the twin scattered once; ``None`` runs in process.
        Results are identical either way (no random numbers in the tasks).
    batch_size
        Perturbations per task (perturbations never interact, so batching is exact).
    progress
        Called as ``progress(done, total)`` after each finished task (the CLI's progress bar).
    memory_per_worker
        GB one task may hold; the batch shrinks below ``batch_size`` to fit it
        (:func:`screen_batch_size`). None: ``batch_size`` as given. Results are identical for
        any batch size.

    Returns
    -------
    ranking, per_context
        ``ranking``: name, rank, score (reversal, a rank score: see :mod:`omicstwin.scores`),
        off_target, p_value, q_value, best_cell_type, best_time, kind, genes, dose and role
        (of a single-gene perturbation's gene, :meth:`Twin.gene_roles`; else ``other``).
        ``per_context``: the ``perturbations.parquet`` rows (perturbation_id, kind, genes,
        dose, cell_type, time, reversal_score, off_target, p_value, q_value), p and q from the
        study-level test. ``ranking.attrs["null"]``: method, n_permutations, exhaustive.
    """
    from omicstwin.tl import nulls
    from omicstwin.tl.perturb import single_gene_perturbations

    if perturbations is None:
        perturbations = single_gene_perturbations(twin.regulators())
    perturbations = list(perturbations)
    donors = nulls.donor_states(twin)
    weights, exhaustive, method = _screen_contrasts(twin, donors, state, n_permutations, seed)
    scores, per_context, n_failed = _project_screen(
        twin,
        perturbations,
        weights,
        donors=donors,
        n_steps=n_steps,
        client=client,
        batch_size=batch_size,
        progress=progress,
        memory_per_worker=memory_per_worker,
    )
    summary = pd.DataFrame(
        {
            "perturbation_id": [q.perturbation_id for q in perturbations],
            "kind": [q.kind for q in perturbations],
            "genes": [";".join(q.genes) for q in perturbations],
            "dose": [q.dose for q in perturbations],
            "score": scores["score"][:, 0],
            "off_target": scores["off_target"][:, 0],
        }
    )
    summary["p_value"] = scores["p_value"][:, 0]
    summary["q_value"] = benjamini_hochberg(summary["p_value"].to_numpy())
    ranking = _ranking(summary, per_context)
    roles = twin.gene_roles()
    ranking["role"] = [
        roles.get(genes, "other") if ";" not in genes else "other" for genes in ranking["genes"]
    ]
    ranking.attrs["failures"] = n_failed  # counted in run.json
    ranking.attrs["null"] = {
        "method": method,
        "n_permutations": int(weights.shape[0] - 1),
        "exhaustive": bool(exhaustive),
    }
    return ranking, _per_context_table(summary, per_context)


def _screen_contrasts(twin, donors, state, n_permutations, seed):
    """Contrast weights (observed first, then the null's) for a study or a patient screen."""
    from omicstwin.tl import nulls

    is_case, is_control = donors.is_case, donors.is_control
    if state == "case":
        if is_case.sum() < 2 or is_control.sum() < 2:
            labels = is_case[None]
            return nulls.study_weights(labels, donors.present, is_control[None]), True, "none"
        arms = is_case | is_control
        labels, exhaustive = nulls.study_labellings(is_case[arms], n_permutations, seed)
        full = np.zeros((labels.shape[0], len(donors.ids)), bool)
        full[:, arms] = labels
        control = np.broadcast_to(arms, full.shape) & ~full
        return nulls.study_weights(full, donors.present, control), exhaustive, "label_permutation"
    if state not in donors.ids:
        twin.state(state)  # raises the unknown-state error
        raise ParameterError(f"state '{state}' is not a donor; fix: use 'case' or a donor id")
    from omicstwin.tl.patients import patient_contrasts

    weights = patient_contrasts(donors, [donors.ids.index(state)])
    return weights, True, "control_donors"


def _project_screen(
    twin,
    perturbations,
    weights,
    *,
    donors,
    n_steps,
    client,
    batch_size,
    progress,
    n_tested=1,
    memory_per_worker=None,
):
    """Score perturbations against contrasts in batches (dask when given a client).

    The batch is ``batch_size`` or fewer perturbations, as :func:`screen_batch_size` fits in
    ``memory_per_worker`` GB.

    Contrasts ``0 .. n_tested - 1`` are scored (overall and per context) and tested against
    the remaining ones, the null (:func:`omicstwin.tl.nulls.permutation_p` on the statistic
    ``-<delta, d>``, counted inside the tasks so only small tables travel).
    """
    from omicstwin.parallel import WorkUnit, batched, run_units
    from omicstwin.tl.nulls import reference_state

    size = screen_batch_size(twin, batch_size, memory_per_worker, n_contrasts=n_tested)
    batches = batched(list(range(len(perturbations))), size)
    units = [WorkUnit(f"screen-{k}", {"indices": b}, 0) for k, b in enumerate(batches)]
    shared = {
        "twin": twin,
        "perturbations": perturbations,
        "weights": weights,
        "donors": donors,
        "reference": reference_state(twin, donors),
        "n_steps": n_steps,
        "n_tested": n_tested,
    }
    results, failures = run_units(
        _screen_unit, units, shared=shared, client=client, progress=progress
    )
    if len(failures):
        logger.warning(
            "%d of %d screen tasks failed: %s",
            len(failures),
            len(units),
            failures["message"].iloc[0],
        )
    p = len(perturbations)
    out = {key: np.full((p, n_tested), np.nan) for key in ("score", "off_target", "p_value")}
    summary = results[results["part"] == "summary"]
    index = summary["index"].to_numpy(int)
    for key, prefix in (("score", "s"), ("off_target", "o"), ("p_value", "p")):
        out[key][index] = summary[[f"{prefix}{j}" for j in range(n_tested)]].to_numpy(float)
    ids = np.array([q.perturbation_id for q in perturbations], dtype=object)
    context = results[results["part"] == "context"]
    # one order whatever the batches: contrast, time, cell type, perturbation (one batch's)
    t_pos = context["time"].map({t: i for i, t in enumerate(twin.times)}).to_numpy(int)
    c_pos = context["cell_type"].map({c: i for i, c in enumerate(twin.cell_types)}).to_numpy(int)
    context = context.iloc[
        np.lexsort(
            (context["index"].to_numpy(int), c_pos, t_pos, context["contrast"].to_numpy(int))
        )
    ]
    per_context = pd.DataFrame(
        {
            "perturbation_id": ids[context["index"].to_numpy(int)],
            "contrast": context["contrast"].to_numpy(int),
            "cell_type": context["cell_type"].to_numpy(object),
            "time": context["time"].to_numpy(float),
            "score": context["score"].to_numpy(float),
            "off_target": context["off_target"].to_numpy(float),
        }
    )
    if n_tested == 1:
        per_context = per_context.drop(columns="contrast")
    return out, per_context, len(failures)


# Bytes one perturbation holds per gene while a batch is simulated and scored: per context its
# clamp mask (1) and shift (8), its first-round delta and carry-over (8 + 8) kept for the
# intercellular round, the previous and current time point's deltas (8 + 8) and ~2 temporaries
# of the context being propagated (16); checked against tracemalloc in the tests.
_BYTES_PER_GENE_CONTEXT = 57
_BYTES_PER_GENE = 48  # propagate's transposed copies of one context's delta and shift


def screen_batch_size(
    twin: Twin, batch_size: int, memory_per_worker: float | None, *, n_contrasts: int = 1
) -> int:
    """Perturbations per screen task: ``batch_size``, or fewer to fit ``memory_per_worker``.

    A batch of P perturbations holds about ``P x genes x (57 x contexts + 48)`` bytes while it
    is simulated (a (P, genes) array of a few kinds per cell type, see
    :func:`simulate_contexts`) plus its per-context scores (``P x contrasts x contexts``); the
    twin itself is shared and not counted. Perturbations never interact, so the batch size
    changes the memory, never the results.

    Parameters
    ----------
    twin
        The twin screened.
    batch_size
        The largest batch.
    memory_per_worker
        GB one task may hold (None: no limit).
    n_contrasts
        Contrasts scored per context (patients of a patient screen).

    Returns
    -------
    int
        At least 1.
    """
    if memory_per_worker is None:
        return batch_size
    if memory_per_worker <= 0:
        raise ParameterError(f"memory_per_worker must be > 0 GB, got {memory_per_worker}")
    n_t, n_c, n_g = twin.shape
    per_perturbation = n_g * (_BYTES_PER_GENE_CONTEXT * n_c + _BYTES_PER_GENE) + (
        8 * 4 * n_contrasts * n_t * n_c
    )
    fits = int(memory_per_worker * 2**30 // per_perturbation)
    return max(1, min(batch_size, fits))


def _aligned(twin: Twin) -> Twin:
    """Return the twin with its arrays in aligned memory.

    Arrays unpickled in a dask worker can sit at odd addresses, which sends numpy down other
    (slower, differently rounding) loops; one aligned copy per task keeps results identical to
    the in-process run.
    """

    def fix(array):
        return array if array.flags.aligned else np.require(array, requirements=["A", "C"])

    def fix_sparse(w):
        if w is None:
            return None
        return sparse.csr_matrix((fix(w.data), fix(w.indices), fix(w.indptr)), shape=w.shape)

    if all(a.flags.aligned for a in twin.states.values()):
        return twin
    return Twin(
        genes=twin.genes,
        cell_types=twin.cell_types,
        times=twin.times,
        states={k: fix(v) for k, v in twin.states.items()},
        donors=twin.donors,
        intracellular=[[fix_sparse(w) for w in row] for row in twin.intracellular],
        temporal=[[fix_sparse(w) for w in row] for row in twin.temporal],
        intercellular=twin.intercellular,
        params=twin.params,
        network=twin.network,
        programmes=twin.programmes,
    )


def _screen_unit(
    payload: dict,
    *,
    seed: int,
    twin: Twin,
    perturbations: list,
    weights: np.ndarray,
    donors,
    reference: np.ndarray,
    n_steps: int | None,
    n_tested: int,
) -> pd.DataFrame:
    """One dask task: a batch of perturbations scored against every contrast."""
    from omicstwin.tl.nulls import permutation_p, project_perturbations

    twin = _aligned(twin)
    index = np.asarray(payload["indices"], int)
    chosen = [perturbations[i] for i in index]
    out = project_perturbations(
        twin,
        chosen,
        weights,
        donors=donors,
        reference=reference,
        n_steps=n_steps,
        context_contrasts=range(n_tested),
    )
    statistic, null = out["statistic"], out["statistic"][:, n_tested:]
    summary = pd.DataFrame(
        {
            "part": "summary",
            "index": index,
            **{f"s{j}": out["score"][:, j] for j in range(n_tested)},
            **{f"o{j}": out["off_target"][:, j] for j in range(n_tested)},
            **{f"p{j}": permutation_p(statistic[:, j], null) for j in range(n_tested)},
        }
    )
    n_t, n_c, _ = twin.shape
    p, k = len(index), n_tested
    # contrast, time, cell type, perturbation order (as run_perturbations' per-context table)
    grid = np.indices((k, n_t, n_c, p)).reshape(4, -1)
    context = pd.DataFrame(
        {
            "part": "context",
            "index": index[grid[3]],
            "contrast": grid[0],
            "cell_type": np.array(twin.cell_types, dtype=object)[grid[2]],
            "time": np.asarray(twin.times, float)[grid[1]],
            "score": out["context_score"][grid[3], grid[0], grid[1], grid[2]],
            "off_target": out["context_off"][grid[3], grid[0], grid[1], grid[2]],
        }
    )
    return pd.concat([summary, context], ignore_index=True)


def _ranking(summary: pd.DataFrame, per_context: pd.DataFrame) -> pd.DataFrame:
    best = sort_by_score(
        per_context, "score", table="rank", within=["perturbation_id"]
    ).drop_duplicates("perturbation_id")
    table = summary.merge(
        best[["perturbation_id", "cell_type", "time"]].rename(
            columns={"cell_type": "best_cell_type", "time": "best_time"}
        ),
        on="perturbation_id",
        how="left",
    ).rename(columns={"perturbation_id": "name"})
    table = rank(table, "score", table="rank", tie_break=["name"])
    columns = [
        "name",
        "rank",
        "score",
        "off_target",
        "p_value",
        "q_value",
        "best_cell_type",
        "best_time",
        "kind",
        "genes",
        "dose",
    ]
    return table[columns].reset_index(drop=True)


def _per_context_table(summary: pd.DataFrame, per_context: pd.DataFrame) -> pd.DataFrame:
    info = summary[["perturbation_id", "kind", "genes", "dose", "p_value", "q_value"]]
    table = per_context.merge(info, on="perturbation_id").rename(
        columns={"score": "reversal_score"}
    )
    columns = [
        "perturbation_id",
        "kind",
        "genes",
        "dose",
        "cell_type",
        "time",
        "reversal_score",
        "off_target",
        "p_value",
        "q_value",
    ]
    return table[columns]


def disease_gene_screen(
    twin: Twin,
    *,
    genes: Sequence[str] | None = None,
    n_steps: int | None = DEFAULT_STEPS,
    memory_per_worker: float | None = None,
) -> pd.DataFrame:
    """Rank genes by disease induction: move each to its case level in the control state.

    ``induction = <delta, d> / <d, d>`` with ``d = case - control`` (the gene's own coordinates
    excluded): how much of the disease the gene's change alone recreates in healthy cells.

    Parameters
    ----------
    twin
        A fitted twin.
    genes
        Genes to screen (default: the twin's regulators, :meth:`Twin.regulators`).
    n_steps
        Propagation steps (None: to the steady state).
    memory_per_worker
        GB a batch of genes may hold (:func:`screen_batch_size`); None: all genes at once.
        Genes never interact, so batches change the memory, never the results.

    Returns
    -------
    pandas.DataFrame
        name, rank, score (induction), off_target, best_cell_type, best_time.
    """
    genes = list(genes) if genes is not None else twin.regulators()
    size = screen_batch_size(twin, max(1, len(genes)), memory_per_worker)
    parts = [_induction(twin, genes[i : i + size], n_steps) for i in range(0, len(genes), size)]
    if not parts:
        parts = [_induction(twin, [], n_steps)]
    summary = pd.concat([p[0] for p in parts], ignore_index=True)
    per_context = pd.concat([p[1] for p in parts], ignore_index=True)
    summary["p_value"] = np.nan
    summary["q_value"] = np.nan
    table = _ranking(summary, per_context)
    table["name"] = genes_from_ids(table["name"])
    return table[list(SCHEMAS["rank"])]


def _induction(twin: Twin, genes: list[str], n_steps: int | None):
    """Induction of a batch of genes (:func:`disease_gene_screen`): summary and per-context."""
    index = [twin.genes.index(g) for g in genes]
    case, control = twin.state("case"), twin.state("control")
    rows = np.arange(len(index))

    def shifts(t, c, z0):
        mask = np.zeros((len(index), len(twin.genes)), bool)
        mask[rows, index] = True
        shift = np.zeros(mask.shape)
        shift[rows, index] = case[t, c, index] - control[t, c, index]
        return mask, shift

    from omicstwin.tl.perturb import Perturbation

    perts = [Perturbation(f"to_case:{g}", "overexpression", (g,), (1.0,)) for g in genes]
    summary, per_context, _ = run_perturbations(
        twin, perts, state="control", reference="case", sign=1.0, shifts=shifts, n_steps=n_steps
    )
    return summary, per_context


def genes_from_ids(ids: pd.Series) -> pd.Series:
    """``KO:STAT6`` -> ``STAT6`` (the gene part of single-gene perturbation ids)."""
    return ids.str.split(":", n=1).str[-1]


def what_if(
    twin: Twin,
    perturbations: Perturbation | Sequence[Perturbation],
    *,
    state: str = "case",
    min_change: float = 1e-3,
    n_steps: int | None = DEFAULT_STEPS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ask the twin what a perturbation (or drug, or combination) would do.

    Parameters
    ----------
    twin
        A fitted (or loaded, :func:`load_twin`) twin.
    perturbations
        One perturbation or a few (:mod:`omicstwin.tl.perturb` builds them).
    state
        ``case``, ``control`` or a donor id (that patient's twin).
    min_change
        Genes whose z changes by less are left out of the long table.
    n_steps
        Propagation steps (None: steady state).

    Returns
    -------
    summary, changes
        ``summary``: perturbation_id, kind, genes, dose, score (reversal), off_target.
        ``changes``: perturbation_id, cell_type, time, gene, z_before, z_after, delta.
    """
    if isinstance(perturbations, Perturbation):
        perturbations = [perturbations]
    reference = "control" if state != "control" else "case"
    summary, _, delta = run_perturbations(
        twin, perturbations, state=state, reference=reference, n_steps=n_steps, keep_delta=True
    )
    z = twin.state(state)
    p, t, c, g = np.nonzero(np.abs(delta) >= min_change)
    changes = pd.DataFrame(
        {
            "perturbation_id": np.array([q.perturbation_id for q in perturbations])[p],
            "cell_type": np.array(twin.cell_types)[c],
            "time": np.array(twin.times, float)[t],
            "gene": np.array(twin.genes)[g],
            "z_before": z[t, c, g],
            "z_after": z[t, c, g] + delta[p, t, c, g],
            "delta": delta[p, t, c, g],
        }
    )
    return summary, changes.sort_values(
        ["perturbation_id", "time", "cell_type", "gene"], kind="stable"
    ).reset_index(drop=True)


def save_twin(twin: Twin, path) -> None:
    """Write a twin to a folder: meta.json, states.npz, networks.npz, intercellular.parquet.

    Also network.parquet and programmes.parquet when the twin has them. No pickles, so a
    saved twin loads with any Python and cannot run code when opened.
    """
    import json
    from pathlib import Path

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(twin.states)
    np.savez_compressed(
        folder / "states.npz", **{f"s{i}": twin.states[n] for i, n in enumerate(names)}
    )
    arrays = {}
    for layer, grid in (("intra", twin.intracellular), ("temporal", twin.temporal)):
        for t, row in enumerate(grid):
            for c, w in enumerate(row):
                if w is not None:
                    w = w.tocsr()
                    key = f"{layer}_{t}_{c}"
                    arrays[f"{key}_data"], arrays[f"{key}_indices"] = w.data, w.indices
                    arrays[f"{key}_indptr"] = w.indptr
    np.savez_compressed(folder / "networks.npz", **arrays)
    twin.intercellular.to_parquet(folder / "intercellular.parquet")
    if twin.network is not None:
        twin.network.to_parquet(folder / "network.parquet")
    if twin.programmes is not None:
        twin.programmes.to_parquet(folder / "programmes.parquet")
    meta = {
        "format": 1,
        "genes": twin.genes,
        "cell_types": twin.cell_types,
        "times": [float(t) for t in twin.times],
        "state_names": names,
        "donors": twin.donors,
        "params": twin.params,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def load_twin(path) -> Twin:
    """Read a twin written by :func:`save_twin`."""
    import json
    from pathlib import Path

    from omicstwin.errors import DataFileError

    folder = Path(path)
    if not (folder / "meta.json").is_file():
        raise DataFileError(
            f"'{folder}' holds no twin (meta.json missing); fix: pass the folder "
            "written by save_twin / omicstwin run"
        )
    meta = json.loads((folder / "meta.json").read_text())
    with np.load(folder / "states.npz") as data:
        states = {n: data[f"s{i}"] for i, n in enumerate(meta["state_names"])}
    n_g, n_t, n_c = len(meta["genes"]), len(meta["times"]), len(meta["cell_types"])
    grids = {
        "intra": [[None] * n_c for _ in range(n_t)],
        "temporal": [[None] * n_c for _ in range(n_t)],
    }
    with np.load(folder / "networks.npz") as data:
        for key in {k.rsplit("_", 1)[0] for k in data.files}:
            layer, t, c = key.split("_")
            grids[layer][int(t)][int(c)] = sparse.csr_matrix(
                (data[f"{key}_data"], data[f"{key}_indices"], data[f"{key}_indptr"]),
                shape=(n_g, n_g),
            )
    network_path = folder / "network.parquet"
    programmes_path = folder / "programmes.parquet"
    return Twin(
        genes=meta["genes"],
        cell_types=meta["cell_types"],
        times=meta["times"],
        states=states,
        donors=meta["donors"],
        intracellular=grids["intra"],
        temporal=grids["temporal"],
        intercellular=pd.read_parquet(folder / "intercellular.parquet"),
        params=meta["params"],
        network=pd.read_parquet(network_path) if network_path.is_file() else None,
        programmes=pd.read_parquet(programmes_path) if programmes_path.is_file() else None,
    )
