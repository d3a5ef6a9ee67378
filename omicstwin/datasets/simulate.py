"""Ground-truth simulator of a time-resolved, multicellular case/control single-cell cohort."""

from __future__ import annotations

import itertools
import time as _time
from dataclasses import asdict, dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin.datasets._model import LigandReceptorEdge, TwinModel
from omicstwin.errors import ParameterError
from omicstwin.scores import argsort_scores, rank

PBMC_CELL_TYPES = (
    "CD14 Mono",
    "CD4 T",
    "CD8 T",
    "B",
    "NK",
    "CD16 Mono",
    "cDC",
    "Treg",
    "pDC",
    "Plasma",
)
# Typical PBMC proportions, same order as PBMC_CELL_TYPES.
_PBMC_PROPORTIONS = (0.18, 0.30, 0.15, 0.12, 0.10, 0.05, 0.03, 0.03, 0.02, 0.02)
ENDOTYPE_NAMES = ("A", "B", "C", "D")
# Cascade strengths (relative units): driver -> first ligand, hop TF -> next ligand, and the
# gain of a cascade ligand-receptor coupling. Chosen so the signal stays detectable 3 hops on.
_DRIVER_EDGE = 0.45
_HOP_EDGE = 0.6
_CASCADE_KAPPA = 1.5
# Driver and cascade TFs are hubs (CollecTRI out-degree) whose target programs make the DEGs.
_MIN_HUB_TARGETS = 30
_MAX_HUB_TARGETS = 400  # not generic mega-hubs (SP1, MYC, TP53) whose programs cover everything
_PROGRAM_SIZE = 0.02  # fraction of n_genes drawn from each hub's targets


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of :func:`simulate_cohort` (presets fill them; keywords override).

    Attributes
    ----------
    n_genes, n_cells
        Matrix size (cells are spread over donors x time points x cell types).
    cell_types
        Names; the first is where the disease starts.
    time_points, time_unit
        Sampled times (numeric) and their unit.
    n_case, n_control
        Donors per arm (each donor is sampled at every time point).
    n_endotypes
        Disease endotypes (>= 2), assigned to patients in turn.
    onset_index
        Index of the time point at which the drivers switch on (0 = baseline, no disease).
    driver_input
        Input to each driver TF at full strength (relative units; 1 doubles its baseline).
    strength_range
        Per-patient multiplier of the driver input, uniform in this range.
    cell_noise
        SD of intrinsic per-cell fluctuations of core genes (fraction of their level).
    donor_gene_sd
        SD of per-donor, per-gene log expression effects.
    library_sd
        SD of log library size per cell.
    dropout_midpoint
        Mean count at which extra dropout removes half of the reads (logistic in log mean).
    seed
        Random seed: the same seed gives identical output.
    """

    n_genes: int = 150
    n_cells: int = 3000
    cell_types: tuple[str, ...] = PBMC_CELL_TYPES[:6]
    time_points: tuple[float, ...] = (0, 6, 12, 24, 48)
    time_unit: str = "h"
    n_case: int = 4
    n_control: int = 3
    n_endotypes: int = 2
    onset_index: int = 1
    driver_input: float = 2.0
    strength_range: tuple[float, float] = (0.6, 1.4)
    cell_noise: float = 0.25
    donor_gene_sd: float = 0.1
    library_sd: float = 0.3
    dropout_midpoint: float = 0.02
    seed: int = 0


PRESETS: dict[str, SimulationParams] = {
    "small": SimulationParams(),
    "demo": SimulationParams(
        n_genes=2000,
        n_cells=30000,
        time_points=(0, 6, 12, 24, 48, 72, 168),
        n_case=10,
        n_control=6,
    ),
    # Li et al. 2022 (seasonal allergic rhinitis): 10 PBMC cell types x 7 time points
    "sar_like": SimulationParams(
        n_genes=2000,
        n_cells=50000,
        cell_types=PBMC_CELL_TYPES,
        time_points=(0, 6, 12, 24, 48, 72, 168),
        n_case=10,
        n_control=6,
    ),
}


@dataclass(frozen=True)
class SimulationPriors:
    """Prior knowledge the simulator draws gene names and edges from."""

    tfs: tuple[str, ...]
    collectri: pd.DataFrame
    ligand_receptor: pd.DataFrame

    @classmethod
    def from_manifests(cls) -> SimulationPriors:
        """Load the Lambert TF list, CollecTRI and the LIANA consensus through data manifests."""
        return _manifest_priors()


@cache
def _manifest_priors() -> SimulationPriors:
    from omicstwin.io.manifests import load_gene_list, load_table

    return SimulationPriors(
        tfs=tuple(load_gene_list("lambert2018_tfs")),
        collectri=load_table("collectri"),
        ligand_receptor=load_table("liana_consensus"),
    )


def simulate_cohort(
    preset: str | None = "small",
    *,
    priors: SimulationPriors | None = None,
    **overrides: Any,
):
    """Simulate a time-resolved case/control single-cell cohort with known truth.

    The cohort mimics an allergen-challenge PBMC time course (Li et al., Genome Medicine 2022):
    patients and controls sampled at every time point, several immune cell types, raw UMI
    counts. Gene names are real human symbols so that priors apply: transcription factors from
    the Lambert 2018 list, ligands and receptors from single-gene LIANA consensus pairs, other
    genes from CollecTRI targets of the chosen TFs.

    **Networks.** Each cell type has a signed regulatory network: CollecTRI edges among the
    chosen genes form a shared core (each prior edge with probability 0.5) plus cell-type-specific
    edges (remaining prior edges with probability 0.25, and novel edges absent from CollecTRI,
    10% of the core, so a prior is informative but incomplete). Dynamics are described in
    :mod:`omicstwin.datasets._model`: relative expression at steady state within a cell type and
    time point, ligand (sender) -> receptor (receiver) -> receiver TF couplings acting with a
    lag of one time point.

    **Disease.** Each endotype has two driver TFs in the first cell type that switch on at
    ``time_points[onset_index]``; they activate a ligand, whose receptor in a second cell type
    activates a TF there one time point later, which activates the next ligand, and so on: a
    cascade that spreads to other cell types over later time points. Endotypes use different
    drivers and cascade paths; patients are assigned endotypes in turn and a strength drawn
    uniformly from ``strength_range``. Both arms share a mild challenge response (two TFs in
    every cell type, peaking at the third time point), so time alone is not disease.

    **Counts.** A cell's mean count is library size x donor gene effect x the gene's scale in its
    cell type x the cell's relative expression; intrinsic per-cell fluctuations of core genes
    propagate through the network (so single cells carry network covariance); counts are
    negative binomial (gene-wise dispersion) with extra logistic dropout of low means.

    **Truth** in ``adata.uns["truth"]`` (all tables):

    - ``genes``: gene, role (tf, ligand, receptor, target), in_prior_tf_list.
    - ``networks``: cell_type, source, target, weight, sign, in_prior (CollecTRI), shared.
    - ``lr_edges``: sender, ligand, receiver, receptor, downstream_tf, kappa, endotype
      ("" for basal signalling), hop.
    - ``endotypes``: endotype, drivers, cascade_cell_types, cascade_ligands, cascade_tfs.
    - ``drivers``: patient_id, endotype, strength, driver_genes, initiating_cell_type,
      onset_time (one row per case patient).
    - ``reversal``: gene, reversal (study mean over patients), reversal_<endotype>, rank,
      planted. Reversal of a gene is the fraction of the disease vector (log2(1 + expected
      count) case minus control, over every cell type, time point and gene other than itself)
      undone by knocking it out in every cell type and time point: ``-<delta, d> / <d, d>``.
    - ``patient_reversal``: patient_id, gene, reversal, rank (genes that affect others).
    - ``degs``: cell_type, time, gene, log_fc (log2 of mean expected counts, case over
      control), direction; a gene is a DEG where ``|log_fc| >= 0.5`` and its expected count is
      at least 0.1 per cell in one arm.

    Parameters
    ----------
    preset
        ``"small"`` (tests: 6 cell types, 5 time points, 4+3 donors, 150 genes, 3,000 cells,
        under 2 s) or ``"demo"`` (6 cell types, 7 time points, 10+6 donors, 2,000 genes,
        30,000 cells); ``None`` starts from :class:`SimulationParams` defaults.
    priors
        Prior knowledge to draw from; default loads it through the data manifests
        (``OMICSTWIN_DATA_PATH``).
    **overrides
        Any :class:`SimulationParams` field, e.g. ``seed=3`` or ``n_cells=200_000``.

    Returns
    -------
    anndata.AnnData
        Raw counts in ``X`` (CSR, float32, integer-valued); obs ``cell_type``, ``time``
        (numeric, unit in ``uns["time_unit"]``), ``condition`` (case/control), ``donor``;
        truth in ``uns["truth"]``, parameters in ``uns["simulation"]``.

    Examples
    --------
    >>> adata = simulate_cohort("small", seed=1)  # doctest: +SKIP
    >>> adata.uns["truth"]["drivers"].head()  # doctest: +SKIP
    """
    params = _params(preset, overrides)
    started = _time.perf_counter()
    s = build_structure(params, priors or SimulationPriors.from_manifests())
    truth = _truth(
        params,
        s.panel,
        s.model,
        s.network_table,
        s.scales,
        s.patients,
        s.inputs_control,
        s.inputs_case,
    )
    adata = _sample_counts(params, s.model, s.scales, s.patients, truth.pop("_states"))
    adata.uns["truth"] = truth
    adata.uns["time_unit"] = params.time_unit
    adata.uns["simulation"] = _jsonable(asdict(params)) | {"preset": preset or "custom"}
    logger.info(
        "simulated %d cells x %d genes in %.1f s",
        adata.n_obs,
        adata.n_vars,
        _time.perf_counter() - started,
    )
    return adata


@dataclass
class CohortStructure:
    """Everything but the cells: gene panel, dynamics, scales, patients and their inputs."""

    panel: Any
    model: TwinModel
    network_table: pd.DataFrame
    scales: np.ndarray
    patients: pd.DataFrame
    inputs_control: np.ndarray
    inputs_case: dict[str, np.ndarray]


def build_structure(params: SimulationParams, priors: SimulationPriors) -> CohortStructure:
    """Draw the cohort's structure (deterministic given ``params.seed``); no cells yet."""
    rng = np.random.default_rng(params.seed)
    panel = _choose_panel(params, priors, rng)
    model, network_table = _build_model(params, priors, panel, rng)
    scales = _gene_scales(params, panel, model, rng)
    patients = _patients(params, panel, rng)
    inputs_control, inputs_case = _inputs(params, panel, patients, model)
    return CohortStructure(
        panel, model, network_table, scales, patients, inputs_control, inputs_case
    )


def preset_params(cls, presets: dict, preset: str | None, overrides: dict[str, Any], what: str):
    """Return preset ``preset`` of the dataclass ``cls`` (None: its defaults) with overrides.

    Shared by both generators; an unknown preset or field is a :class:`ParameterError` that
    lists the valid ones (``what`` names the generator in the message).
    """
    if preset is None:
        base = cls()
    elif preset in presets:
        base = presets[preset]
    else:
        raise ParameterError(
            f"unknown {what}preset '{preset}'; fix: use one of {sorted(presets)} or None"
        )
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ParameterError(
            f"unknown {what}parameter(s) {unknown}; fix: use fields of {cls.__name__}: "
            f"{sorted(fields)}"
        )
    for key in ("cell_types", "time_points", "strength_range"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return replace(base, **overrides)


def _params(preset: str | None, overrides: dict[str, Any]) -> SimulationParams:
    params = preset_params(SimulationParams, PRESETS, preset, overrides, "simulation ")
    problems = []
    if len(params.cell_types) < 3:
        problems.append("cell_types needs at least 3 names (a cascade spans cell types)")
    if len(set(params.cell_types)) != len(params.cell_types):
        problems.append("cell_types must be unique")
    if len(params.time_points) < 3 or list(params.time_points) != sorted(set(params.time_points)):
        problems.append("time_points must be at least 3 strictly increasing values")
    if not 1 <= params.onset_index < len(params.time_points) - 1:
        problems.append("onset_index must leave a baseline before and time after it")
    if params.n_endotypes < 2 or params.n_endotypes > len(ENDOTYPE_NAMES):
        problems.append(f"n_endotypes must be 2..{len(ENDOTYPE_NAMES)}")
    if params.n_case < params.n_endotypes or params.n_control < 2:
        problems.append("need n_case >= n_endotypes and n_control >= 2")
    if params.n_genes < 60:
        problems.append("n_genes must be at least 60")
    groups = (params.n_case + params.n_control) * len(params.time_points) * len(params.cell_types)
    if params.n_cells < groups:
        problems.append(f"n_cells must be at least one per donor x time x cell type ({groups})")
    if problems:
        raise ParameterError("invalid simulation parameters: " + "; ".join(problems))
    return params


# ----------------------------------------------------------------------------- gene panel


@dataclass
class _Panel:
    programs: dict[str, list[str]]  # hub TF -> its strongly regulated target program
    genes: list[str]
    index: dict[str, int]
    role: dict[str, str]
    endotypes: list[dict[str, Any]]
    extra_lr: list[tuple[str, str, str]]  # ligand, receptor, downstream TF
    shared_program: list[str]


def _choose_panel(params: SimulationParams, priors: SimulationPriors, rng) -> _Panel:
    """Pick real gene symbols: cascades first, then TFs, extra ligand-receptor pairs, targets.

    Parameters
    ----------
    params
        Simulation parameters (panel size, cell types, time points, endotypes).
    priors
        TF list, CollecTRI and ligand-receptor pairs the symbols are drawn from.
    rng
        The structure's generator. The steps below run in a fixed order (cascades, TFs, extra
        pairs, hub programs, fill targets) because that order *is* the random stream: moving a
        step would change every later draw and so the whole cohort for a given seed.

    Returns
    -------
    _Panel
        Genes (sorted), their roles, the planted endotypes and the extra ligand-receptor pairs.
    """
    lookups = _panel_lookups(priors)
    picker = _Picker(rng)
    n_hops = _cascade_hops(params)
    endotypes = [
        _plant_endotype(e, n_hops, len(params.cell_types), lookups, picker)
        for e in range(params.n_endotypes)
    ]
    shared_program, tfs = _choose_tfs(params, endotypes, lookups, picker)
    extra_lr = _choose_extra_lr(params, lookups, tfs, picker, rng)
    genes = set(picker.used)
    programs = _hub_programs(params, endotypes, lookups, genes, rng)
    _fill_targets(params, lookups, genes, rng)
    ordered = sorted(genes)
    return _Panel(
        programs=programs,
        genes=ordered,
        index={g: i for i, g in enumerate(ordered)},
        role=_gene_roles(ordered, tfs, endotypes, extra_lr),
        endotypes=endotypes,
        extra_lr=extra_lr,
        shared_program=shared_program,
    )


def _cascade_hops(params: SimulationParams) -> int:
    """Ligand-receptor hops per cascade: 1 to 3, bounded by the cell types and time points.

    Each hop reaches a new cell type one time point later, so a cascade cannot have more hops
    than there are other cell types or time points after the onset.
    """
    n_after_onset = len(params.time_points) - 1 - params.onset_index
    return max(1, min(3, len(params.cell_types) - 1, n_after_onset))


@dataclass(frozen=True)
class _PanelLookups:
    """Prior knowledge indexed for choosing the panel (built once, no random draws).

    Attributes
    ----------
    tf_set
        Lambert 2018 TFs.
    collectri
        CollecTRI edges whose source is a TF, self-loops removed.
    lr
        Ligand-receptor pairs of single genes (no complexes), ligand != receptor.
    regulators_of
        Gene -> sorted TFs that activate it.
    receptors_of
        Ligand -> its sorted receptors.
    ligands
        Sorted ligands that have a receptor and an activating TF (a cascade can pass them).
    targets_of
        TF -> its sorted CollecTRI targets.
    """

    tf_set: set[str]
    collectri: pd.DataFrame
    lr: pd.DataFrame
    regulators_of: dict[str, list[str]]
    receptors_of: dict[str, list[str]]
    ligands: list[str]
    targets_of: dict[str, list[str]]

    def is_hub(self, gene: str) -> bool:
        """Whether ``gene`` regulates enough, but not too many, targets to drive a program."""
        return _MIN_HUB_TARGETS <= len(self.targets_of.get(gene, ())) <= _MAX_HUB_TARGETS


def _panel_lookups(priors: SimulationPriors) -> _PanelLookups:
    """Index the priors by regulator, ligand and target (see :class:`_PanelLookups`)."""
    tf_set = set(priors.tfs)
    col = priors.collectri
    col = col[col["source"].isin(tf_set) & (col["source"] != col["target"])]
    activating = col[col["weight"] > 0]
    regulators_of = activating.groupby("target")["source"].apply(lambda s: sorted(set(s))).to_dict()
    lr = priors.ligand_receptor
    lr = lr[
        ~lr["ligand"].str.contains("_")
        & ~lr["receptor"].str.contains("_")
        & (lr["ligand"] != lr["receptor"])
    ]
    receptors_of = lr.groupby("ligand")["receptor"].apply(lambda s: sorted(set(s))).to_dict()
    return _PanelLookups(
        tf_set=tf_set,
        collectri=col,
        lr=lr,
        regulators_of=regulators_of,
        receptors_of=receptors_of,
        ligands=sorted(set(receptors_of) & set(regulators_of)),
        targets_of=col.groupby("source")["target"].apply(lambda s: sorted(set(s))).to_dict(),
    )


class _Picker:
    """Draw genes without replacement across the whole panel.

    One ``used`` set is shared by every step, so no gene gets two roles. Each successful
    :meth:`pick` consumes exactly one ``rng.integers`` draw (none when nothing is left).
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[str] = set()

    def pick(self, candidates, predicate=lambda _: True) -> str | None:
        """Draw one unused candidate satisfying ``predicate``, or ``None`` if there is none.

        The predicate is evaluated at draw time, so it may look at :attr:`used`.
        """
        pool = [c for c in candidates if c not in self.used and predicate(c)]
        if not pool:
            return None
        choice = pool[int(self.rng.integers(len(pool)))]
        self.used.add(choice)
        return choice


_TOO_SMALL = (
    "the priors are too small to plant a disease cascade (no unused ligand with hub TF "
    "activators left); fix: give SimulationPriors with more TFs, CollecTRI edges and "
    "ligand-receptor pairs, or fewer endotypes, cell types or time points after onset"
)


def _plant_endotype(
    e: int, n_hops: int, n_cell_types: int, lookups: _PanelLookups, picker: _Picker
) -> dict[str, Any]:
    """Choose endotype ``e``'s cascade: its cell-type path, two driver TFs and each hop's genes.

    Parameters
    ----------
    e
        Endotype number (0-based); names come from :data:`ENDOTYPE_NAMES`.
    n_hops
        Ligand-receptor hops of the cascade (one per time point after onset).
    n_cell_types
        Number of cell types; the cascade starts in the first one.
    lookups, picker
        Priors to draw from and the panel-wide draw without replacement.

    Returns
    -------
    dict
        ``name``, ``drivers``, ``path`` (cell type indices), ``ligands``, ``receptors``, ``tfs``.
    """
    # cascade path: first cell type, then a rotation through the others so that endotypes
    # travel through different cell types
    others = list(range(1, n_cell_types))
    shift = (e * n_hops) % len(others)
    path = [0, *(others[shift:] + others[:shift])[:n_hops]]
    regulators_of = lookups.regulators_of
    # the first ligand needs two unused hub activators: they become the drivers
    first_ligand = picker.pick(
        lookups.ligands,
        lambda g: (
            len([r for r in regulators_of[g] if r not in picker.used and lookups.is_hub(r)]) >= 2
        ),
    )
    if first_ligand is None:
        raise ParameterError(_TOO_SMALL)
    drivers = [
        picker.pick(regulators_of[first_ligand], lookups.is_hub),
        picker.pick(regulators_of[first_ligand], lookups.is_hub),
    ]
    ligands, receptors, tfs = _plant_hops(first_ligand, n_hops, lookups, picker)
    if None in drivers or None in receptors or None in tfs:
        raise ParameterError(_TOO_SMALL)
    return {
        "name": ENDOTYPE_NAMES[e],
        "drivers": drivers,
        "path": path,
        "ligands": ligands,
        "receptors": receptors,
        "tfs": tfs,
    }


def _plant_hops(
    first_ligand: str, n_hops: int, lookups: _PanelLookups, picker: _Picker
) -> tuple[list[str], list[str | None], list[str | None]]:
    """Chain ligand -> receptor -> TF -> next ligand for ``n_hops`` hops.

    Returns
    -------
    tuple of list
        Ligands (one per hop), receptors and downstream TFs (``None`` where the priors ran out;
        the caller reports it).
    """
    ligands, receptors, tfs = [first_ligand], [], []
    for hop in range(n_hops):
        # prefer a receptor that is not a TF: a TF receptor would blur the cascade's roles
        receptors.append(
            picker.pick(lookups.receptors_of[ligands[-1]], lambda g: g not in lookups.tf_set)
        )
        if receptors[-1] is None:
            receptors[-1] = picker.pick(lookups.receptors_of[ligands[-1]])
        if hop < n_hops - 1:
            # the hop's TF must activate the next ligand, so choose that ligand first
            next_ligand = picker.pick(
                lookups.ligands,
                lambda g: any(
                    r not in picker.used and lookups.is_hub(r) for r in lookups.regulators_of[g]
                ),
            )
            if next_ligand is None:
                raise ParameterError(_TOO_SMALL)
            tf = picker.pick(lookups.regulators_of[next_ligand], lookups.is_hub)
            ligands.append(next_ligand)
        else:
            # the last hop's TF only needs a target program
            tf = picker.pick(sorted(lookups.targets_of), lookups.is_hub)
        tfs.append(tf)
    return ligands, receptors, tfs


def _choose_tfs(
    params: SimulationParams,
    endotypes: list[dict[str, Any]],
    lookups: _PanelLookups,
    picker: _Picker,
) -> tuple[list[str], set[str]]:
    """Pick the two shared-response TFs, then more TFs until 8% of the panel (at least 12).

    Returns
    -------
    shared_program : list of str
        TFs of the challenge response shared by both arms.
    tfs : set of str
        Every TF of the panel (cascade TFs, drivers, shared program and the added ones).
    """
    regulator_pool = sorted(t for t in lookups.targets_of if len(lookups.targets_of[t]) >= 5)
    shared_program = [picker.pick(regulator_pool), picker.pick(regulator_pool)]
    n_tf_target = max(12, round(0.08 * params.n_genes))
    tfs = {g for e in endotypes for g in e["drivers"] + e["tfs"]} | set(shared_program)
    while len(tfs) < n_tf_target:
        tfs.add(picker.pick(regulator_pool))
    return shared_program, tfs


def _choose_extra_lr(
    params: SimulationParams,
    lookups: _PanelLookups,
    tfs: set[str],
    picker: _Picker,
    rng: np.random.Generator,
) -> list[tuple[str, str, str]]:
    """Basal ligand-receptor pairs outside the cascades, each with a random downstream TF.

    Pairs are visited in one random permutation and kept when both genes are still unused,
    until ``max(3, n_genes // 60)`` are chosen.
    """
    extra_lr: list[tuple[str, str, str]] = []
    lr_pairs = list(lookups.lr.itertuples(index=False))
    order = rng.permutation(len(lr_pairs))
    n_extra = max(3, params.n_genes // 60)
    for i in order:
        if len(extra_lr) >= n_extra:
            break
        ligand, receptor = lr_pairs[i].ligand, lr_pairs[i].receptor
        if ligand in picker.used or receptor in picker.used:
            continue
        picker.used.update((ligand, receptor))
        extra_lr.append((ligand, receptor, sorted(tfs)[int(rng.integers(len(tfs)))]))
    return extra_lr


def _hub_programs(
    params: SimulationParams,
    endotypes: list[dict[str, Any]],
    lookups: _PanelLookups,
    genes: set[str],
    rng: np.random.Generator,
) -> dict[str, list[str]]:
    """Draw each driver's and cascade TF's target program and add it to ``genes`` (in place).

    The programs are what makes the planted TFs' effects visible as DEGs. Each hub's pool
    excludes genes already in the panel, including earlier hubs' programs.
    """
    program_size = max(5, round(_PROGRAM_SIZE * params.n_genes))
    hubs = [g for e in endotypes for g in e["drivers"] + e["tfs"]]
    programs: dict[str, list[str]] = {}
    for g in hubs:
        pool = sorted(set(lookups.targets_of[g]) - genes)
        take = min(program_size, len(pool))
        programs[g] = rng.choice(pool, size=take, replace=False).tolist() if take else []
        genes.update(programs[g])
    return programs


def _fill_targets(
    params: SimulationParams, lookups: _PanelLookups, genes: set[str], rng: np.random.Generator
) -> None:
    """Fill ``genes`` (in place) up to ``params.n_genes`` with CollecTRI targets.

    Targets of the chosen TFs come first, drawn with probability proportional to how many
    chosen TFs regulate them (so the networks are connected); any other CollecTRI target
    tops up the panel if those run out.

    Raises
    ------
    ParameterError
        If the planted genes alone already exceed ``params.n_genes``.
    """
    col = lookups.collectri
    candidate_targets = col[col["source"].isin(genes & lookups.tf_set) & ~col["target"].isin(genes)]
    weights = candidate_targets.groupby("target").size()
    n_fill = params.n_genes - len(genes)
    if n_fill < 0:
        raise ParameterError(
            f"n_genes={params.n_genes} is too small for the planted cascade ({len(genes)} genes)"
        )
    names = weights.index.to_numpy()
    prob = weights.to_numpy(float) / weights.sum()
    take = min(n_fill, len(names))
    genes.update(rng.choice(names, size=take, replace=False, p=prob).tolist())
    if len(genes) < params.n_genes:
        rest = sorted(set(col["target"]) - genes)
        genes.update(rng.choice(rest, size=params.n_genes - len(genes), replace=False).tolist())


def _gene_roles(
    ordered: list[str],
    tfs: set[str],
    endotypes: list[dict[str, Any]],
    extra_lr: list[tuple[str, str, str]],
) -> dict[str, str]:
    """Role of each gene: ``target`` unless it is a TF, ligand or receptor.

    Later assignments win, so a cascade ligand or receptor that is also a TF is a ligand or
    receptor.
    """
    role = {}
    for g in ordered:
        role[g] = "target"
    for g in tfs:
        role[g] = "tf"
    for e in endotypes:
        for g in e["ligands"]:
            role[g] = "ligand"
        for g in e["receptors"]:
            role[g] = "receptor"
    for ligand, receptor, _ in extra_lr:
        role[ligand], role[receptor] = "ligand", "receptor"
    return role


# ----------------------------------------------------------------------------- networks


def _build_model(params, priors, panel: _Panel, rng):
    """Per-cell-type signed networks (shared core + specific edges) and LR couplings.

    Parameters
    ----------
    params
        Simulation parameters (cell types).
    priors
        CollecTRI, the source of the networks' prior edges.
    panel
        The chosen genes, roles and planted cascades.
    rng
        The structure's generator, continued from :func:`_choose_panel`. Draw order: the
        shared core, then each cell type's edges in turn, then the basal LR couplings.

    Returns
    -------
    model : TwinModel
        Networks, couplings and core genes.
    network_table : pandas.DataFrame
        Every network edge with its cell type, weight, sign, ``in_prior`` and ``shared``.
    """
    edges = _prior_edges(priors, panel, rng)
    required = _required_cascade_edges(panel)
    n_g = len(panel.genes)
    networks, frames = [], []
    for c, cell_type in enumerate(params.cell_types):
        s, t, values, shared = _draw_cell_type_edges(edges, n_g, rng)
        strong = {(a, b): weight for a, b, cc, weight in required if cc == c}
        w = _cell_type_network(s, t, values, strong, edges.program_pairs, n_g)
        networks.append(w)
        frames.append(_network_frame(cell_type, w, panel.genes, s, t, shared, edges.pairs))
    network_table = pd.concat(frames, ignore_index=True)
    lr_edges = _cascade_lr_edges(panel) + _basal_lr_edges(params, panel, rng)
    network_table = _make_receptors_constitutive(
        networks, network_table, lr_edges, list(params.cell_types), panel.genes
    )
    core = sorted(
        set(edges.tf_idx.tolist())
        | {e.ligand for e in lr_edges}
        | {e.receptor for e in lr_edges}
        | {e.downstream_tf for e in lr_edges}
    )
    return TwinModel(panel.genes, networks, lr_edges, np.array(core)), network_table


@dataclass(frozen=True)
class _PriorEdges:
    """CollecTRI edges among the panel's genes as index arrays, one row per source-target pair.

    Attributes
    ----------
    src, dst, sign
        Source (a panel TF), target and sign (+1/-1) of each prior edge.
    in_core
        Whether the edge belongs to the core shared by every cell type (drawn once).
    pairs
        The ``(source, target)`` pairs of the prior, to tell novel edges from prior ones.
    program_pairs
        ``(hub, target)`` pairs of the hubs' target programs (stronger, always in the core).
    tf_idx
        Indices of the panel's TFs (sources of novel edges).
    """

    src: np.ndarray
    dst: np.ndarray
    sign: np.ndarray
    in_core: np.ndarray
    pairs: set[tuple[int, int]]
    program_pairs: set[tuple[int, int]]
    tf_idx: np.ndarray


def _prior_edges(priors, panel: _Panel, rng: np.random.Generator) -> _PriorEdges:
    """Index the CollecTRI edges from the panel's TFs and draw the shared core.

    Each prior edge joins the core with probability 0.5; hub program edges always do, so the
    planted TFs move their programs in every cell type.
    """
    idx = panel.index
    tfs = sorted(g for g, r in panel.role.items() if r == "tf")
    col = priors.collectri
    prior = col[
        col["source"].isin(tfs) & col["target"].isin(idx) & (col["source"] != col["target"])
    ]
    prior = prior.drop_duplicates(["source", "target"])
    src = prior["source"].map(idx).to_numpy()
    dst = prior["target"].map(idx).to_numpy()
    program_pairs = {(idx[h], idx[t]) for h, ts in panel.programs.items() for t in ts}
    from_hub = _in_pairs(src, dst, program_pairs)
    return _PriorEdges(
        src=src,
        dst=dst,
        sign=np.sign(prior["weight"].to_numpy(float)),
        in_core=(rng.random(len(prior)) < 0.5) | from_hub,
        pairs=set(zip(src.tolist(), dst.tolist(), strict=True)),
        program_pairs=program_pairs,
        tf_idx=np.array([idx[g] for g in tfs]),
    )


def _in_pairs(rows: np.ndarray, cols: np.ndarray, pairs: set[tuple[int, int]]) -> np.ndarray:
    """Boolean mask: whether each ``(rows[i], cols[i])`` is in ``pairs``."""
    return np.array(
        [(a, b) in pairs for a, b in zip(rows.tolist(), cols.tolist(), strict=True)], bool
    )


def _required_cascade_edges(panel: _Panel) -> list[tuple[int, int, int, float]]:
    """Cascade edges that must exist: ``(source, target, cell type, weight)``.

    Drivers activate the first ligand in the initiating cell type; each hop's TF activates
    the next ligand in the hop's receiving cell type.
    """
    idx = panel.index
    required: list[tuple[int, int, int, float]] = []
    for e in panel.endotypes:
        for d in e["drivers"]:
            required.append((idx[d], idx[e["ligands"][0]], e["path"][0], _DRIVER_EDGE))
        for hop, tf in enumerate(e["tfs"][:-1]):
            required.append((idx[tf], idx[e["ligands"][hop + 1]], e["path"][hop + 1], _HOP_EDGE))
    return required


def _draw_cell_type_edges(edges: _PriorEdges, n_g: int, rng: np.random.Generator):
    """Draw one cell type's edges: the core, specific prior edges, novel edges, magnitudes.

    Non-core prior edges are kept with probability 0.25; novel edges (absent from the prior,
    10% of the core's size before dropping self-loops and prior pairs) make the prior
    incomplete. Program edges get stronger magnitudes.

    Returns
    -------
    s, t : numpy.ndarray
        Source and target indices (may repeat; duplicates are summed later).
    values : numpy.ndarray
        Signed weights.
    shared : numpy.ndarray
        Whether each edge is in the shared core.
    """
    specific = ~edges.in_core & (rng.random(len(edges.src)) < 0.25)
    keep = edges.in_core | specific
    n_novel = max(1, int(edges.in_core.sum()) // 10)
    ns, nt, nsign = _novel_edges(edges, n_novel, n_g, rng)
    s = np.concatenate([edges.src[keep], ns])
    t = np.concatenate([edges.dst[keep], nt])
    sg = np.concatenate([edges.sign[keep], nsign])
    shared = np.concatenate([edges.in_core[keep], np.zeros(len(ns), bool)])
    magnitude = rng.uniform(0.15, 0.5, size=len(s))
    hub_rows = _in_pairs(s, t, edges.program_pairs)
    magnitude[hub_rows] = rng.uniform(0.3, 0.6, size=int(hub_rows.sum()))
    return s, t, sg * magnitude, shared


def _novel_edges(edges: _PriorEdges, n_novel: int, n_g: int, rng: np.random.Generator):
    """Draw ``n_novel`` candidate TF -> gene edges; keep those that are neither loops nor prior.

    Returns
    -------
    tuple of numpy.ndarray
        Sources, targets and signs (75% activating).
    """
    ns = edges.tf_idx[rng.integers(len(edges.tf_idx), size=n_novel)]
    nt = rng.integers(n_g, size=n_novel)
    ok = np.array([a != b and (a, b) not in edges.pairs for a, b in zip(ns, nt, strict=True)], bool)
    ns, nt = ns[ok], nt[ok]
    nsign = np.where(rng.random(len(ns)) < 0.75, 1.0, -1.0)
    return ns, nt, nsign


def _cell_type_network(
    s: np.ndarray,
    t: np.ndarray,
    values: np.ndarray,
    strong: dict[tuple[int, int], float],
    program_pairs: set[tuple[int, int]],
    n_g: int,
) -> sparse.csr_matrix:
    """Assemble one cell type's weight matrix (rows = regulators) with its cascade edges.

    Cascade edges (``strong``) are removed before the input budget is applied and set to
    their full weight afterwards, so they are never scaled down.
    """
    w = sparse.coo_matrix((values, (s, t)), shape=(n_g, n_g)).tocsr()
    w.sum_duplicates()
    w = w.tolil()
    for a, b in strong:
        w[a, b] = 0.0
    w = w.tocsr()
    w.eliminate_zeros()
    w = _apply_input_budget(w, strong, program_pairs, n_g)
    w = w.tolil()
    for (a, b), weight in strong.items():
        w[a, b] = weight
    return w.tocsr()


def _apply_input_budget(
    w: sparse.csr_matrix,
    strong: dict[tuple[int, int], float],
    program_pairs: set[tuple[int, int]],
    n_g: int,
) -> sparse.csr_matrix:
    """Scale each gene's incoming weights into its budget so the network stays a contraction.

    Incoming ``|w|`` per gene is at most 0.7, and at most 0.95 together with its cascade
    edges (at least 0.05 is left). Program edges are rescaled only when they alone exceed
    the budget; the other edges share what remains.
    """
    coo = w.tocoo()
    is_program = _in_pairs(coo.row, coo.col, program_pairs)
    w_hub = sparse.csr_matrix((coo.data * is_program, (coo.row, coo.col)), shape=(n_g, n_g))
    w_other = w - w_hub
    budget = np.full(n_g, 0.7)
    for (_, b), weight in strong.items():
        budget[b] = max(0.05, min(budget[b], 0.95 - weight * sum(bb == b for _, bb in strong)))
    hub_in = np.asarray(abs(w_hub).sum(axis=0)).ravel()
    hub_factor = np.where(hub_in > budget, budget / np.maximum(hub_in, 1e-12), 1.0)
    room = np.maximum(budget - hub_in * hub_factor, 0.0)
    other_in = np.asarray(abs(w_other).sum(axis=0)).ravel()
    other_factor = np.where(other_in > room, room / np.maximum(other_in, 1e-12), 1.0)
    w = (w_hub @ sparse.diags(hub_factor) + w_other @ sparse.diags(other_factor)).tocsr()
    w.eliminate_zeros()
    return w


def _network_frame(
    cell_type: str,
    w: sparse.csr_matrix,
    genes: list[str],
    s: np.ndarray,
    t: np.ndarray,
    shared: np.ndarray,
    prior_pairs: set[tuple[int, int]],
) -> pd.DataFrame:
    """One cell type's edges as a truth table: weight, sign, ``in_prior`` and ``shared``.

    ``shared`` comes from the drawn edges ``s -> t`` (last draw wins for duplicate pairs);
    edges the matrix gained otherwise (cascade edges) are not shared.
    """
    coo = w.tocoo()
    frame = pd.DataFrame(
        {
            "cell_type": cell_type,
            "source": np.array(genes)[coo.row],
            "target": np.array(genes)[coo.col],
            "weight": coo.data,
        }
    )
    pair_shared = dict(zip(zip(s.tolist(), t.tolist(), strict=True), shared.tolist(), strict=True))
    frame["sign"] = np.sign(frame["weight"]).astype(int)
    frame["in_prior"] = _in_pairs(coo.row, coo.col, prior_pairs).tolist()
    frame["shared"] = [
        pair_shared.get((a, b), False)
        for a, b in zip(coo.row.tolist(), coo.col.tolist(), strict=True)
    ]
    return frame


def _cascade_lr_edges(panel: _Panel) -> list[LigandReceptorEdge]:
    """Build the planted cascades' ligand-receptor couplings, one per hop of each endotype."""
    idx = panel.index
    lr_edges = []
    for e in panel.endotypes:
        for hop in range(len(e["receptors"])):
            lr_edges.append(
                LigandReceptorEdge(
                    sender=e["path"][hop],
                    ligand=idx[e["ligands"][hop]],
                    receiver=e["path"][hop + 1],
                    receptor=idx[e["receptors"][hop]],
                    downstream_tf=idx[e["tfs"][hop]],
                    kappa=_CASCADE_KAPPA,
                    endotype=e["name"],
                    hop=hop,
                )
            )
    return lr_edges


def _basal_lr_edges(params, panel: _Panel, rng: np.random.Generator) -> list[LigandReceptorEdge]:
    """Weak (kappa 0.2) couplings for the extra LR pairs, between random ordered cell types."""
    idx = panel.index
    order = _signalling_order(len(params.cell_types), [e["path"] for e in panel.endotypes])
    lr_edges = []
    for ligand, receptor, tf in panel.extra_lr:
        # basal edges only go forward in an order consistent with the cascades: a lagged
        # feedback loop between cell types would make the twin oscillate from one time point
        # to the next, which is not the disease dynamics we plant
        first, second = sorted(rng.choice(len(order), size=2, replace=False).tolist())
        sender, receiver = order[first], order[second]
        lr_edges.append(
            LigandReceptorEdge(
                int(sender), idx[ligand], int(receiver), idx[receptor], idx[tf], 0.2, "", -1
            )
        )
    return lr_edges


def _make_receptors_constitutive(
    networks: list[sparse.csr_matrix],
    network_table: pd.DataFrame,
    lr_edges: list[LigandReceptorEdge],
    cell_types: list[str],
    genes: list[str],
) -> pd.DataFrame:
    """Drop every regulator of each coupling's receptor in its receiver.

    A receptor regulated by its own downstream TF would close a lagged feedback loop through
    the coupling and make the twin oscillate. ``networks`` is updated in place; the table
    without those edges is returned (index reset).
    """
    for e in lr_edges:
        w = networks[e.receiver].tolil()
        w[:, e.receptor] = 0.0
        networks[e.receiver] = w.tocsr()
        networks[e.receiver].eliminate_zeros()
        drop = (network_table["cell_type"] == cell_types[e.receiver]) & (
            network_table["target"] == genes[e.receptor]
        )
        network_table = network_table.loc[~drop]
    return network_table.reset_index(drop=True)


def _signalling_order(n_cell_types: int, paths: list[list[int]]) -> list[int]:
    """Topological order of cell types under the cascade edges (ties by index)."""
    edges = {pair for path in paths for pair in itertools.pairwise(path)}
    indegree = {c: 0 for c in range(n_cell_types)}
    for _, b in edges:
        indegree[b] += 1
    order: list[int] = []
    ready = sorted(c for c, d in indegree.items() if d == 0)
    while ready:
        c = ready.pop(0)
        order.append(c)
        for a, b in sorted(edges):
            if a == c:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready = sorted([*ready, b])
    if len(order) != n_cell_types:  # cascade paths that loop back: keep index order
        return list(range(n_cell_types))
    return order


def _gene_scales(params, panel: _Panel, model: TwinModel, rng) -> np.ndarray:
    """Baseline expected counts per cell (cell types x genes) at median library size."""
    n_c, n_g = len(params.cell_types), len(panel.genes)
    base = rng.lognormal(np.log(0.4), 1.1, size=n_g)
    roles = np.array([panel.role[g] for g in panel.genes])
    base[roles == "tf"] = rng.lognormal(np.log(1.0), 0.5, size=(roles == "tf").sum())
    scales = base[None, :] * rng.lognormal(0.0, 0.35, size=(n_c, n_g))
    # markers: each cell type over-expresses some target genes
    targets = np.flatnonzero(roles == "target")
    for c in range(n_c):
        markers = rng.choice(targets, size=min(len(targets), max(5, n_g // 80)), replace=False)
        scales[c, markers] *= 8.0
    # ligands in their senders, receptors in their receivers, drivers where they act
    for e in model.lr_edges:
        scales[:, e.ligand] = np.minimum(scales[:, e.ligand], 0.3)
        scales[e.sender, e.ligand] = max(scales[e.sender, e.ligand], 2.0)
        scales[e.receiver, e.receptor] = max(scales[e.receiver, e.receptor], 1.5)
        scales[e.receiver, e.downstream_tf] = max(scales[e.receiver, e.downstream_tf], 1.5)
    for e in panel.endotypes:
        for d in e["drivers"]:
            scales[e["path"][0], panel.index[d]] = max(scales[e["path"][0], panel.index[d]], 1.5)
    # cell types differ in size: monocytes have more RNA than lymphocytes
    size = np.array([1.4 if "Mono" in ct or "DC" in ct else 1.0 for ct in params.cell_types])
    target_total = 1800.0 * size * n_g / 2000.0
    scales *= (target_total / scales.sum(axis=1))[:, None]
    return scales


# ----------------------------------------------------------------------------- patients


def _patients(params, panel: _Panel, rng) -> pd.DataFrame:
    n_case, n_ctrl = params.n_case, params.n_control
    width = max(2, len(str(max(n_case, n_ctrl))))
    rows = []
    lo, hi = params.strength_range
    for i in range(n_case):
        e = panel.endotypes[i % len(panel.endotypes)]
        rows.append(
            {
                "patient_id": f"P{i + 1:0{width}d}",
                "condition": "case",
                "endotype": e["name"],
                "strength": float(rng.uniform(lo, hi)),
            }
        )
    for i in range(n_ctrl):
        rows.append(
            {
                "patient_id": f"C{i + 1:0{width}d}",
                "condition": "control",
                "endotype": "",
                "strength": 0.0,
            }
        )
    return pd.DataFrame(rows)


def _inputs(params, panel: _Panel, patients: pd.DataFrame, model: TwinModel):
    """External inputs (T, cell types, genes): control (shared response) and one per patient."""
    n_t, n_c, n_g = len(params.time_points), len(params.cell_types), len(panel.genes)
    shared = np.zeros((n_t, n_c, n_g))
    profile = np.zeros(n_t)
    peak = min(2, n_t - 1)
    for t in range(n_t):
        profile[t] = np.exp(-0.5 * ((t - peak) / 1.0) ** 2) if t > 0 else 0.0
    for g in panel.shared_program:
        shared[:, :, panel.index[g]] = 0.4 * profile[:, None]
    by_name = {e["name"]: e for e in panel.endotypes}
    case_inputs = {}
    for row in patients[patients["condition"] == "case"].itertuples():
        u = shared.copy()
        e = by_name[row.endotype]
        for d in e["drivers"]:
            u[params.onset_index :, e["path"][0], panel.index[d]] += (
                params.driver_input * row.strength
            )
        case_inputs[row.patient_id] = u
    return shared, case_inputs


# ----------------------------------------------------------------------------- truth


def _truth(params, panel, model, network_table, scales, patients, u_control, u_case) -> dict:
    """Tables of what was planted and what it does (``adata.uns["truth"]``).

    Parameters
    ----------
    params, panel, model, network_table, scales, patients
        The cohort's structure (see :class:`CohortStructure`).
    u_control, u_case
        External inputs of the control arm and of each case patient.

    Returns
    -------
    dict
        The truth tables described in :func:`simulate_cohort`, plus ``_states`` (relative
        expression per arm/patient) that :func:`_sample_counts` pops to draw cells.
    """
    genes = np.array(panel.genes)
    cts = list(params.cell_types)
    states, case_mean, patient_reversal = _patient_reversal(model, scales, u_control, u_case)
    return {
        "genes": _gene_table(panel, model),
        "networks": network_table,
        "lr_edges": _lr_table(model, cts, genes),
        "endotypes": _endotype_table(panel, cts),
        "drivers": _driver_table(params, panel, patients),
        "reversal": _reversal_table(panel, patients, patient_reversal),
        "patient_reversal": patient_reversal,
        "degs": _deg_table(params, genes, case_mean, scales[None] * states["control"]),
        "shared_program": np.array(panel.shared_program),
        "_states": states,
    }


def _patient_reversal(model: TwinModel, scales: np.ndarray, u_control, u_case: dict):
    """Simulate control and every case patient, and score each core gene's knockout.

    Returns
    -------
    states : dict
        Relative expression (T, C, G) of ``"control"`` and of each patient id.
    case_mean : numpy.ndarray
        Expected counts (T, C, G) averaged over case patients.
    patient_reversal : pandas.DataFrame
        patient_id, gene, reversal, rank: one row per patient and core gene.
    """
    genes = np.array(model.genes)
    control = model.trajectory(u_control)[0]  # (T, C, G)
    z_control = np.log2(1.0 + scales[None] * control)
    core = model.core
    knockouts = np.zeros((len(core), model.n_genes), bool)
    knockouts[np.arange(len(core)), core] = True
    reversal_rows, states = [], {"control": control}
    case_mean = np.zeros_like(control)
    for pid, u in u_case.items():
        case = model.trajectory(u)[0]
        states[pid] = case
        case_mean += scales[None] * case
        score = _knockout_reversal(model, scales, u, case, z_control, knockouts)
        order = argsort_scores(score, table="truth", column="reversal")
        ranks = np.empty(len(core), int)
        ranks[order] = np.arange(1, len(core) + 1)
        reversal_rows.append(
            pd.DataFrame({"patient_id": pid, "gene": genes[core], "reversal": score, "rank": ranks})
        )
    case_mean /= max(1, len(u_case))
    return states, case_mean, pd.concat(reversal_rows, ignore_index=True)


def _knockout_reversal(
    model: TwinModel,
    scales: np.ndarray,
    u: np.ndarray,
    case: np.ndarray,
    z_control: np.ndarray,
    knockouts: np.ndarray,
) -> np.ndarray:
    """Reversal ``-<delta, d> / <d, d>`` of one patient's disease vector by each knockout.

    ``d`` is log2(1 + expected count) case minus control over every cell type, time point and
    gene; ``delta`` is the change a knockout makes to the case state. Each knocked-out gene's
    own coordinates are left out of both, so a gene is not credited for removing itself.

    Returns
    -------
    numpy.ndarray
        One score per core gene (1 = the disease vector fully undone).
    """
    core = model.core
    z_case = np.log2(1.0 + scales[None] * case)
    d = (z_case - z_control).reshape(-1, model.n_genes)
    perturbed = model.trajectory(u, knockouts)  # (B, T, C, G)
    delta = (np.log2(1.0 + scales[None, None] * perturbed) - z_case[None]).reshape(
        len(core), -1, model.n_genes
    )
    delta[np.arange(len(core)), :, core] = 0.0
    dot = np.einsum("bkg,kg->b", delta, d)
    d_self = np.einsum("kg,kg->g", d, d)
    norm = d_self.sum() - d_self[core]
    return -dot / np.maximum(norm, 1e-12)


def _reversal_table(panel, patients: pd.DataFrame, patient_reversal: pd.DataFrame):
    """Study-level reversal per gene: the mean over patients, overall and per endotype.

    Genes outside the core (no knockout effect) score 0; ``planted`` marks cascade genes;
    rows are sorted by reversal (ties by gene) and ranked from 1.
    """
    genes = np.array(panel.genes)
    endo_of = patients.set_index("patient_id")["endotype"]
    pr = patient_reversal.assign(endotype=patient_reversal["patient_id"].map(endo_of))
    study = pr.groupby("gene", sort=False)["reversal"].mean()
    reversal = pd.DataFrame(
        {"gene": genes, "reversal": study.reindex(genes).fillna(0.0).to_numpy()}
    )
    for e in panel.endotypes:
        per = pr[pr["endotype"] == e["name"]].groupby("gene")["reversal"].mean()
        reversal[f"reversal_{e['name']}"] = per.reindex(genes).fillna(0.0).to_numpy()
    planted = {
        g for e in panel.endotypes for k in ("drivers", "ligands", "receptors", "tfs") for g in e[k]
    }
    reversal["planted"] = reversal["gene"].isin(planted)
    reversal = rank(reversal, "reversal", table="truth", tie_break=["gene"])
    return reversal.reset_index(drop=True)


def _deg_table(params, genes: np.ndarray, expected_case, expected_control) -> pd.DataFrame:
    """List the true DEGs per cell type and time: ``|log2 FC| >= 0.5``, expressed in one arm.

    The fold change is of mean expected counts (case over control, pseudocount 0.01); a gene
    is expressed where its expected count is at least 0.1 per cell.
    """
    times = np.array(params.time_points, float)
    log_fc = np.log2((expected_case + 0.01) / (expected_control + 0.01))
    expressed = np.maximum(expected_case, expected_control) >= 0.1
    hit_t, hit_c, hit_g = np.nonzero((np.abs(log_fc) >= 0.5) & expressed)
    degs = pd.DataFrame(
        {
            "cell_type": np.array(list(params.cell_types))[hit_c],
            "time": times[hit_t],
            "gene": genes[hit_g],
            "log_fc": log_fc[hit_t, hit_c, hit_g],
        }
    )
    degs["direction"] = np.where(degs["log_fc"] > 0, "up", "down")
    return degs


def _gene_table(panel, model: TwinModel) -> pd.DataFrame:
    """Gene, role and whether the gene is in the model's core (influences others)."""
    genes = np.array(panel.genes)
    gene_table = pd.DataFrame({"gene": genes, "role": [panel.role[g] for g in genes]})
    gene_table["is_core"] = np.isin(np.arange(len(genes)), model.core)
    return gene_table


def _lr_table(model: TwinModel, cts: list[str], genes: np.ndarray) -> pd.DataFrame:
    """Every ligand-receptor coupling by name (``endotype`` is ``""`` for basal ones)."""
    return pd.DataFrame(
        [
            {
                "sender": cts[e.sender],
                "ligand": genes[e.ligand],
                "receiver": cts[e.receiver],
                "receptor": genes[e.receptor],
                "downstream_tf": genes[e.downstream_tf],
                "kappa": e.kappa,
                "endotype": e.endotype,
                "hop": e.hop,
            }
            for e in model.lr_edges
        ]
    )


def _endotype_table(panel, cts: list[str]) -> pd.DataFrame:
    """One row per endotype: drivers and the cascade's cell types and genes (``;``-joined)."""
    return pd.DataFrame(
        [
            {
                "endotype": e["name"],
                "drivers": ";".join(e["drivers"]),
                "cascade_cell_types": ";".join(cts[c] for c in e["path"]),
                "cascade_ligands": ";".join(e["ligands"]),
                "cascade_receptors": ";".join(e["receptors"]),
                "cascade_tfs": ";".join(e["tfs"]),
            }
            for e in panel.endotypes
        ]
    )


def _driver_table(params, panel, patients: pd.DataFrame) -> pd.DataFrame:
    """One row per case patient: endotype, strength, driver genes, where and when it starts."""
    cts = list(params.cell_types)
    times = np.array(params.time_points, float)
    by_name = {e["name"]: e for e in panel.endotypes}
    cases = patients[patients["condition"] == "case"]
    return pd.DataFrame(
        {
            "patient_id": cases["patient_id"].to_numpy(),
            "endotype": cases["endotype"].to_numpy(),
            "strength": cases["strength"].to_numpy(),
            "driver_genes": [";".join(by_name[e]["drivers"]) for e in cases["endotype"]],
            "initiating_cell_type": [cts[by_name[e]["path"][0]] for e in cases["endotype"]],
            "onset_time": float(times[params.onset_index]),
        }
    )


# ----------------------------------------------------------------------------- counts


def _sample_counts(params, model: TwinModel, scales, patients: pd.DataFrame, states: dict):
    """Draw cells and negative binomial counts, group by group, each group with its own stream."""
    import anndata as ad

    rng = np.random.default_rng([params.seed, 1])
    n_c, n_t, n_g = len(params.cell_types), len(params.time_points), model.n_genes
    donors = patients["patient_id"].tolist()
    n_d = len(donors)
    base = np.array((_PBMC_PROPORTIONS * 2)[:n_c], float)
    base /= base.sum()
    proportions = rng.dirichlet(base * 60.0, size=n_d)  # donor-specific composition
    donor_gene = rng.lognormal(0.0, params.donor_gene_sd, size=(n_d, n_g))
    donor_lib = rng.lognormal(0.0, 0.1, size=n_d)
    dispersion = 0.05 + rng.lognormal(np.log(0.15), 0.5, size=n_g)
    theta = 1.0 / dispersion
    cells_per_sample = params.n_cells / (n_d * n_t)
    # integer cell counts per (donor, time, cell type) that add up to n_cells exactly
    expected = np.repeat(proportions[:, None, :], n_t, axis=1) * cells_per_sample
    jitter = rng.lognormal(0.0, 0.15, size=expected.shape)
    expected = expected * jitter
    expected *= params.n_cells / expected.sum()
    counts_per_group = _round_preserving_sum(expected, params.n_cells)
    counts_per_group = np.maximum(counts_per_group, 1)
    blocks, obs_parts = [], []
    group_id = 0
    for d, donor in enumerate(donors):
        state = states[donor] if donor in states else states["control"]
        condition = patients.loc[d, "condition"]
        for t in range(n_t):
            for c in range(n_c):
                n = int(counts_per_group[d, t, c])
                group_rng = np.random.default_rng([params.seed, 2, group_id])
                group_id += 1
                y_ctx = state[t, c]
                noise = params.cell_noise * group_rng.standard_normal((n, len(model.core)))
                noise *= y_ctx[model.core][None, :]
                y = model.cell_response(c, y_ctx, noise)
                lib = group_rng.lognormal(0.0, params.library_sd, size=n) * donor_lib[d]
                mu = lib[:, None] * (donor_gene[d] * scales[c])[None, :] * y
                rate = group_rng.gamma(theta[None, :], mu / theta[None, :])
                x = group_rng.poisson(rate)
                if params.dropout_midpoint > 0:
                    p_drop = 1.0 / (1.0 + (np.maximum(mu, 1e-12) / params.dropout_midpoint) ** 1.5)
                    x[group_rng.random(x.shape) < p_drop] = 0
                blocks.append(sparse.csr_matrix(x.astype(np.float32)))
                obs_parts.append((n, params.cell_types[c], params.time_points[t], condition, donor))
    matrix = sparse.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {
            "cell_type": np.repeat([p[1] for p in obs_parts], [p[0] for p in obs_parts]),
            "time": np.repeat([float(p[2]) for p in obs_parts], [p[0] for p in obs_parts]),
            "condition": np.repeat([p[3] for p in obs_parts], [p[0] for p in obs_parts]),
            "donor": np.repeat([p[4] for p in obs_parts], [p[0] for p in obs_parts]),
        }
    )
    width = len(str(len(obs)))
    obs.index = [f"cell{i:0{width}d}" for i in range(len(obs))]
    obs["cell_type"] = pd.Categorical(obs["cell_type"], categories=list(params.cell_types))
    obs["condition"] = pd.Categorical(obs["condition"], categories=["control", "case"])
    obs["donor"] = pd.Categorical(obs["donor"], categories=donors)
    var = pd.DataFrame(index=pd.Index(model.genes, name="gene"))
    return ad.AnnData(X=matrix, obs=obs, var=var)


def _round_preserving_sum(values: np.ndarray, total: int) -> np.ndarray:
    """Round to integers whose sum is ``total`` (largest remainders get the extra units)."""
    flat = values.ravel()
    floor = np.floor(flat).astype(int)
    short = total - floor.sum()
    if short > 0:
        floor[np.argsort(-(flat - floor), kind="stable")[:short]] += 1
    return floor.reshape(values.shape)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return np.asarray(value)
    return value
