"""A second cohort generator whose networks do not come from the inference priors.

:func:`omicstwin.datasets.simulate_cohort` draws its regulatory networks from CollecTRI and its
ligand-receptor pairs from LIANA, the very files the twin uses as priors; it shares the twin's
linear model family, caps hubs and forbids intercellular feedback. A benchmark on it grades its
own homework. :func:`simulate_independent` writes the same output contract (so ``omicstwin run``,
DE, the twin and the benchmark code run on it unchanged) from a different process:

- **Networks**: real gene symbols (Lambert TFs, LIANA ligands and receptors, CollecTRI targets,
  Hallmark interferon genes, sex-chromosome genes), but edges from a scale-free process: TF
  out-degrees follow Zipf-weighted preferential attachment (heavy tail, no hub cap); only a
  controllable fraction (``prior_fraction``) of the edges is taken from CollecTRI, the rest are
  novel; each cell type rewires a fraction of the edges. Ligand-receptor pairs are LIANA pairs
  for a fraction ``lr_prior_fraction``, novel pairs of ligand/receptor symbols otherwise.
- **Kinetics**: Hill-type activation and repression (:mod:`._independent_model`), or linear.
- **Feedback**: a cascade's last cell type signals back to its first, and basal couplings go in
  any direction.
- **Donor covariates**: interferon-high donors, sex, two batches, and cell-type composition
  shifts between arms.
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin.datasets._independent_build import (
    FEMALE_GENES,
    MALE_GENES,
    IndependentStructure,
    build_independent,
)
from omicstwin.datasets.simulate import (
    _PBMC_PROPORTIONS,
    ENDOTYPE_NAMES,
    PBMC_CELL_TYPES,
    SimulationPriors,
    _deg_table,
    _jsonable,
    _round_preserving_sum,
    preset_params,
)
from omicstwin.errors import ParameterError

_KNOCKOUT_BATCH = 64


@dataclass(frozen=True)
class IndependentParams:
    """Parameters of :func:`simulate_independent` (presets fill them; keywords override).

    Attributes
    ----------
    n_genes, n_cells, cell_types, time_points, time_unit, n_case, n_control, n_endotypes,
    onset_index, driver_input, strength_range, seed
        As in :class:`omicstwin.datasets.SimulationParams`.
    prior_fraction
        Fraction of the network edges (TF -> target) taken from CollecTRI; the rest are novel.
    lr_prior_fraction
        Fraction of the ligand-receptor couplings that are LIANA pairs; the rest are novel.
    hill
        Hill kinetics (``True``) or the linear model (``False``).
    feedback
        Intercellular feedback: a cascade's last cell type signals back to its first, and basal
        couplings may go in any direction (``False``: forward only, no feedback coupling).
    disease
        ``False`` gives a no-disease cohort with the same design (no driver input).
    regulators_per_gene
        Mean number of regulators per gene (edges = this x n_genes).
    tf_fraction
        Fraction of the panel that are TFs (at least 12).
    hub_exponent
        Zipf exponent of the TFs' out-degree weights (larger: heavier hubs).
    rewire
        Fraction of each cell type's edges moved to a new target (same source).
    activation_fraction
        Fraction of novel edges that activate (prior edges keep CollecTRI's sign).
    ifn_fraction, ifn_log2fc
        Fraction of donors (both arms) with high interferon signature, and its mean log2 effect.
    sex_genes
        Add XIST/TSIX and Y-chromosome genes, expressed by donor sex (balanced across arms).
    batch_sd, batch_confounded
        SD of the gene-wise log effect of batch 2; put case donors in batch 2 (confounded).
    composition_shift
        Log-scale shift of case donors' proportions: the initiating cell type up, the last
        cascade cell type of the first endotype down (0: no shift).
    cell_noise, donor_gene_sd, library_sd
        Per-cell core fluctuation SD (log scale), per-donor gene effect SD, library size SD.
    """

    n_genes: int = 200
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
    prior_fraction: float = 0.5
    lr_prior_fraction: float = 0.5
    hill: bool = True
    feedback: bool = True
    disease: bool = True
    regulators_per_gene: float = 2.0
    tf_fraction: float = 0.1
    hub_exponent: float = 1.0
    rewire: float = 0.15
    activation_fraction: float = 0.7
    ifn_fraction: float = 0.3
    ifn_log2fc: float = 1.5
    sex_genes: bool = True
    batch_sd: float = 0.25
    batch_confounded: bool = False
    composition_shift: float = 0.5
    cell_noise: float = 0.2
    donor_gene_sd: float = 0.1
    library_sd: float = 0.3
    seed: int = 0


PRESETS: dict[str, IndependentParams] = {
    "small": IndependentParams(),
    "medium": IndependentParams(
        n_genes=2000,
        n_cells=30000,
        time_points=(0, 6, 12, 24, 48, 72, 168),
        n_case=10,
        n_control=6,
    ),
}


def simulate_independent(
    preset: str | None = "small",
    *,
    priors: SimulationPriors | None = None,
    **overrides: Any,
):
    """Simulate a case/control time course whose networks are not drawn from the priors.

    Same output contract as :func:`omicstwin.datasets.simulate_cohort`; see the module
    docstring for why it exists. Deterministic given ``seed``.

    **Gene panel.** Real symbols: TFs from the Lambert list that have CollecTRI targets
    (``tf_fraction`` of the panel); ligands and receptors from LIANA single-gene pairs; Hallmark
    interferon-alpha genes (3% of the panel); sex genes (XIST, TSIX, RPS4Y1, DDX3Y, KDM5D, UTY,
    EIF1AY); the rest CollecTRI targets of the chosen TFs (so prior edges can exist).

    **Networks.** ``regulators_per_gene x n_genes`` TF -> gene edges. TF ``i`` gets a weight
    ``rank^-hub_exponent`` (random ranks): out-degrees are heavy tailed (max >= 5x median) with
    no cap. ``round(prior_fraction x edges)`` edges are CollecTRI pairs among the panel, drawn
    with probability proportional to the source's weight (CollecTRI sign); the rest are novel
    pairs (source by weight, target uniform, not CollecTRI, sign activating with probability
    ``activation_fraction``). Each cell type moves a fraction ``rewire`` of the edges to new
    targets of the same class (prior/novel), so the realised prior fraction stays at the knob.
    Edge weights are uniform in [0.3, 1], Hill ``K`` log-normal around 1.5 (the baseline is 1),
    ``n`` uniform in [1, 4]; incoming weights of genes that act on others are scaled into a
    contraction budget (unique steady state), those of the other genes so that regulation makes
    60-95% of their baseline. Sex and interferon genes are not regulated (donor covariates).

    **Kinetics.** :mod:`omicstwin.datasets._independent_model`: steady state of Hill kinetics
    per cell type and time point (``hill=False``: linear), couplings lagged one time point.

    **Disease.** Each endotype has two hub driver TFs (among the top third by out-degree) in the
    first cell type, switched on at ``time_points[onset_index]`` with input ``driver_input`` x
    the patient's strength (uniform in ``strength_range``). They activate a ligand whose
    receptor in the next cell type of the endotype's path activates a TF there one time point
    later, which activates the next ligand, and so on (1-3 hops). With ``feedback`` the last hop
    TF activates a further ligand whose receptor in the *first* cell type activates the first
    driver (a lagged positive loop). Both arms share a challenge response (two TFs in every cell
    type, peaking at the third time point). ``disease=False``: no driver input, the endotypes,
    drivers and DEG tables are empty, reversal is zero everywhere.

    **Donor covariates** (on the counts, not part of the disease truth): interferon-high donors
    (``ifn_fraction``, at least one per arm; interferon genes up by ~``ifn_log2fc`` log2 in
    every cell type), sex (alternating within each arm; female: XIST/TSIX, male: Y genes),
    batch (two batches alternating within each arm unless ``batch_confounded``; gene-wise
    log-normal factor of SD ``batch_sd``), composition (case donors' proportions shifted by
    ``composition_shift``). Counts are negative binomial (gene-wise dispersion) around library
    size x donor gene effect x covariates x the cell type's scale x per-cell expression.

    **Truth** in ``adata.uns["truth"]``; names shared with ``simulate_cohort`` mean the same:

    - ``genes``: gene, role (tf, ligand, receptor, target, isg, sex), in_prior_tf_list,
      is_core, out_degree (base graph).
    - ``networks``: cell_type, source, target, weight (signed), sign, hill_k, hill_n,
      in_prior (CollecTRI), shared (in the base graph, not rewired).
    - ``lr_edges``: sender, ligand, receiver, receptor, downstream_tf, kappa, endotype ("" for
      basal), hop (cascade hop; the feedback coupling has hop = number of hops; -1 basal),
      in_prior (LIANA pair).
    - ``endotypes``: endotype, drivers, cascade_cell_types, cascade_ligands,
      cascade_receptors, cascade_tfs (``;``-joined), feedback_ligand, feedback_receptor.
    - ``drivers``: patient_id, endotype, strength, driver_genes, initiating_cell_type,
      onset_time (one row per case patient; empty without disease).
    - ``reversal``: gene, reversal, reversal_<endotype>, rank, planted: the fraction of the
      disease vector (log2(1 + expected count) case minus control, over every cell type, time
      point and gene other than itself) undone by knocking the gene out in every cell type and
      time point, ``-<delta, d> / <d, d>``, from re-solving the *nonlinear* model with the gene
      clamped at 0; computed for every core gene (genes that act on others); other genes
      cannot change anything but themselves and score exactly 0. ``planted``: drivers, cascade
      ligands, receptors and TFs, and the feedback ligand and receptor.
    - ``patient_reversal``: patient_id, gene, reversal, rank (core genes).
    - ``degs``: cell_type, time, gene, log_fc, direction (``|log_fc| >= 0.5`` of mean
      expected counts case over control, expressed >= 0.1 in one arm).
    - ``donors``: donor, condition, endotype, strength, sex, batch, ifn_high.
    - ``covariate_genes``: gene, module (interferon, female, male, batch), log2 effect.
    - ``composition``: condition, cell_type, proportion (expected).
    - ``shared_program``: the challenge-response TFs.

    Parameters
    ----------
    preset
        ``"small"`` (6 cell types, 5 time points, 4+3 donors, 200 genes, 3,000 cells) or
        ``"medium"`` (7 time points, 10+6 donors, 2,000 genes, 30,000 cells); ``None`` starts
        from :class:`IndependentParams` defaults.
    priors
        Gene lists and prior networks (default: the data manifests).
    **overrides
        Any :class:`IndependentParams` field, e.g. ``prior_fraction=0.3, hill=False``.

    Returns
    -------
    anndata.AnnData
        Raw counts in ``X`` (CSR, float32, integers); obs ``cell_type``, ``time``,
        ``condition``, ``donor``, ``sex``, ``batch``; ``uns["truth"]``, ``uns["simulation"]``
        (parameters, realised prior fractions), ``uns["generator"] = "independent"``.
    """
    params = _params(preset, overrides)
    started = _time.perf_counter()
    priors = priors or SimulationPriors.from_manifests()
    s = build_independent(params, priors)
    truth, states = _truth(params, s)
    adata = _sample_counts(params, s, states)
    truth["covariate_genes"], truth["composition"] = adata.uns.pop("_covariates")
    adata.uns["truth"] = truth
    adata.uns["time_unit"] = params.time_unit
    adata.uns["generator"] = "independent"
    adata.uns["simulation"] = _jsonable(asdict(params)) | {
        "preset": preset or "custom",
        "generator": "independent",
        "prior_fraction_realised": s.prior_fraction_realised,
        "lr_prior_fraction_realised": s.lr_prior_fraction_realised,
        "reversal_genes": "core (every gene that acts on others; the rest score 0)",
    }
    logger.info(
        "independent generator: %d cells x %d genes in %.1f s",
        adata.n_obs,
        adata.n_vars,
        _time.perf_counter() - started,
    )
    return adata


def _params(preset: str | None, overrides: dict[str, Any]) -> IndependentParams:
    p = preset_params(IndependentParams, PRESETS, preset, overrides, "")
    problems = []
    if len(p.cell_types) < 3 or len(set(p.cell_types)) != len(p.cell_types):
        problems.append("cell_types needs at least 3 unique names")
    if len(p.time_points) < 3 or list(p.time_points) != sorted(set(p.time_points)):
        problems.append("time_points must be at least 3 strictly increasing values")
    if not 1 <= p.onset_index < len(p.time_points) - 1:
        problems.append("onset_index must leave a baseline before and time after it")
    if not 2 <= p.n_endotypes <= len(ENDOTYPE_NAMES):
        problems.append(f"n_endotypes must be 2..{len(ENDOTYPE_NAMES)}")
    if p.n_case < p.n_endotypes or p.n_control < 2:
        problems.append("need n_case >= n_endotypes and n_control >= 2")
    if p.n_genes < 80:
        problems.append("n_genes must be at least 80")
    for name in ("prior_fraction", "lr_prior_fraction", "rewire", "activation_fraction"):
        if not 0.0 <= getattr(p, name) <= 1.0:
            problems.append(f"{name} must be in [0, 1]")
    if not 0.0 <= p.ifn_fraction < 1.0:
        problems.append("ifn_fraction must be in [0, 1)")
    groups = (p.n_case + p.n_control) * len(p.time_points) * len(p.cell_types)
    if p.n_cells < groups:
        problems.append(f"n_cells must be at least one per donor x time x cell type ({groups})")
    if problems:
        raise ParameterError("invalid parameters: " + "; ".join(problems))
    return p


# ----------------------------------------------------------------------------- truth


def _truth(params, s: IndependentStructure) -> tuple[dict, dict]:
    """Truth tables (see :func:`simulate_independent`) and the states per arm/patient."""
    model, genes = s.model, np.array(s.genes)
    cts = list(params.cell_types)
    control = model.trajectory(s.inputs_control)[0]
    states = {"control": control}
    rows, case_mean = [], np.zeros_like(control)
    for pid, u in s.inputs_case.items():
        case = model.trajectory(u)[0] if params.disease else control
        states[pid] = case
        case_mean += s.scales[None] * case
        score = (
            knockout_reversal(model, s.scales, u, case, control)
            if params.disease
            else np.zeros(len(model.core))
        )
        rows.append(_ranked(pid, genes[model.core], score))
    case_mean /= max(1, len(s.inputs_case))
    patient_reversal = pd.concat(rows, ignore_index=True)
    endotypes = s.endotypes if params.disease else []
    truth = {
        "genes": _gene_table(s),
        "networks": s.network_table,
        "lr_edges": _lr_table(model, cts, genes),
        "endotypes": _endotype_table(endotypes, cts),
        "drivers": _driver_table(params, endotypes, s.patients),
        "reversal": _reversal_table(genes, endotypes, s.patients, patient_reversal),
        "patient_reversal": patient_reversal,
        "degs": _deg_table(params, genes, case_mean, s.scales[None] * control),
        "donors": s.patients.rename(columns={"patient_id": "donor"}),
        "shared_program": np.array(s.shared_program),
    }
    return truth, states


def _ranked(pid: str, genes: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    order = np.argsort(-score, kind="stable")
    ranks = np.empty(len(score), int)
    ranks[order] = np.arange(1, len(score) + 1)
    return pd.DataFrame({"patient_id": pid, "gene": genes, "reversal": score, "rank": ranks})


def knockout_reversal(model, scales, u, case, control, genes=None) -> np.ndarray:
    """Reversal ``-<delta, d> / <d, d>`` of one patient's disease vector by each knockout.

    ``d`` is log2(1 + expected count) case minus control over every cell type, time point and
    gene; ``delta`` the change a knockout makes to the case state, from re-solving the
    non-linear model with the gene clamped at 0 (all knockouts in one batch). Each gene's own
    coordinates are left out of both.

    Parameters
    ----------
    model
        The :class:`~omicstwin.datasets._independent_model.HillModel`.
    scales
        Expected counts per unit expression (cell types x genes).
    u, case, control
        The patient's input and steady states of the patient and of the control arm.
    genes
        Gene indices to knock out (default: the model's core).

    Returns
    -------
    numpy.ndarray
        One score per gene (1 = the disease vector fully undone).
    """
    genes = model.core if genes is None else np.asarray(genes)
    z_case = np.log2(1.0 + scales[None] * case)
    d = (z_case - np.log2(1.0 + scales[None] * control)).reshape(-1, model.n_genes)
    dot = np.zeros(len(genes))
    for start in range(0, len(genes), _KNOCKOUT_BATCH):  # bounded memory
        chunk = genes[start : start + _KNOCKOUT_BATCH]
        knockouts = np.zeros((len(chunk), model.n_genes), bool)
        knockouts[np.arange(len(chunk)), chunk] = True
        perturbed = model.trajectory(u, knockouts, warm=case)
        delta = (np.log2(1.0 + scales[None, None] * perturbed) - z_case[None]).reshape(
            len(chunk), -1, model.n_genes
        )
        delta[np.arange(len(chunk)), :, chunk] = 0.0
        dot[start : start + len(chunk)] = np.einsum("bkg,kg->b", delta, d)
    d_self = np.einsum("kg,kg->g", d, d)
    norm = d_self.sum() - d_self[genes]
    return np.where(norm > 1e-12, -dot / np.maximum(norm, 1e-12), 0.0)


def _planted(endotypes) -> set[str]:
    out = set()
    for e in endotypes:
        out.update(e["drivers"] + e["ligands"] + e["receptors"] + e["tfs"])
        if e["feedback"] is not None:
            out.update(e["feedback"][:2])
    return out


def _reversal_table(genes, endotypes, patients, patient_reversal) -> pd.DataFrame:
    """Study-level reversal per gene (mean over patients, overall and per endotype)."""
    endo_of = patients.set_index("patient_id")["endotype"]
    pr = patient_reversal.assign(endotype=patient_reversal["patient_id"].map(endo_of))
    study = pr.groupby("gene", sort=False)["reversal"].mean()
    table = pd.DataFrame({"gene": genes, "reversal": study.reindex(genes).fillna(0.0).to_numpy()})
    for e in endotypes:
        per = pr[pr["endotype"] == e["name"]].groupby("gene")["reversal"].mean()
        table[f"reversal_{e['name']}"] = per.reindex(genes).fillna(0.0).to_numpy()
    table["planted"] = table["gene"].isin(_planted(endotypes))
    table = table.sort_values(["reversal", "gene"], ascending=[False, True], kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    return table.reset_index(drop=True)


def _gene_table(s: IndependentStructure) -> pd.DataFrame:
    genes = np.array(s.genes)
    table = pd.DataFrame({"gene": genes, "role": [s.role[g] for g in genes]})
    table["in_prior_tf_list"] = table["role"].eq("tf")
    table["is_core"] = np.isin(np.arange(len(genes)), s.model.core)
    table["out_degree"] = s.out_degree
    return table


def _lr_table(model, cts: list[str], genes: np.ndarray) -> pd.DataFrame:
    columns = [
        "sender", "ligand", "receiver", "receptor", "downstream_tf", "kappa", "endotype", "hop",
        "in_prior",
    ]  # fmt: skip
    return pd.DataFrame(
        [
            {
                "sender": cts[c.sender],
                "ligand": genes[c.ligand],
                "receiver": cts[c.receiver],
                "receptor": genes[c.receptor],
                "downstream_tf": genes[c.downstream_tf],
                "kappa": c.kappa,
                "endotype": c.endotype,
                "hop": c.hop,
                "in_prior": c.in_prior,
            }
            for c in model.couplings
        ],
        columns=columns,
    )


def _endotype_table(endotypes, cts: list[str]) -> pd.DataFrame:
    columns = [
        "endotype", "drivers", "cascade_cell_types", "cascade_ligands", "cascade_receptors",
        "cascade_tfs", "feedback_ligand", "feedback_receptor",
    ]  # fmt: skip
    return pd.DataFrame(
        [
            {
                "endotype": e["name"],
                "drivers": ";".join(e["drivers"]),
                "cascade_cell_types": ";".join(cts[c] for c in e["path"]),
                "cascade_ligands": ";".join(e["ligands"]),
                "cascade_receptors": ";".join(e["receptors"]),
                "cascade_tfs": ";".join(e["tfs"]),
                "feedback_ligand": e["feedback"][0] if e["feedback"] else "",
                "feedback_receptor": e["feedback"][1] if e["feedback"] else "",
            }
            for e in endotypes
        ],
        columns=columns,
    )


def _driver_table(params, endotypes, patients: pd.DataFrame) -> pd.DataFrame:
    cts = list(params.cell_types)
    by_name = {e["name"]: e for e in endotypes}
    cases = patients[(patients["condition"] == "case") & (patients["endotype"] != "")]
    return pd.DataFrame(
        {
            "patient_id": cases["patient_id"].to_numpy(),
            "endotype": cases["endotype"].to_numpy(),
            "strength": cases["strength"].to_numpy(float),
            "driver_genes": [";".join(by_name[e]["drivers"]) for e in cases["endotype"]],
            "initiating_cell_type": [cts[by_name[e]["path"][0]] for e in cases["endotype"]],
            "onset_time": np.full(len(cases), float(params.time_points[params.onset_index])),
        }
    )


# ----------------------------------------------------------------------------- counts


def _covariates(params, s: IndependentStructure, rng) -> tuple[np.ndarray, pd.DataFrame]:
    """Per-donor multiplicative gene factors (donors x genes) and the covariate gene table."""
    index = {g: i for i, g in enumerate(s.genes)}
    n_d, n_g = len(s.patients), len(s.genes)
    factor = rng.lognormal(0.0, params.donor_gene_sd, size=(n_d, n_g))
    rows = []
    isg = np.array([index[g] for g in s.isg], int)
    isg_lfc = params.ifn_log2fc * rng.lognormal(0.0, 0.3, size=len(isg))
    rows += [
        {"gene": g, "module": "interferon", "log2_effect": v}
        for g, v in zip(s.isg, isg_lfc, strict=True)
    ]
    batch_lfc = rng.normal(0.0, params.batch_sd, size=n_g) / np.log(2)
    for d, donor in enumerate(s.patients.itertuples()):
        if donor.ifn_high:
            factor[d, isg] *= 2.0**isg_lfc
        if donor.batch == "batch2":
            factor[d] *= 2.0**batch_lfc
        for g in FEMALE_GENES if donor.sex == "M" else MALE_GENES:
            if g in index:
                factor[d, index[g]] *= 0.01
    rows += [{"gene": g, "module": "female", "log2_effect": np.log2(100)} for g in FEMALE_GENES]
    rows += [{"gene": g, "module": "male", "log2_effect": np.log2(100)} for g in MALE_GENES]
    rows += [
        {"gene": g, "module": "batch", "log2_effect": v}
        for g, v in zip(s.genes, batch_lfc, strict=True)
    ]
    table = pd.DataFrame(rows)
    return factor, table[table["gene"].isin(index)].reset_index(drop=True)


def _composition(params, s: IndependentStructure) -> pd.DataFrame:
    """Tabulate expected cell-type proportions per arm (case shifted by ``composition_shift``)."""
    n_c = len(params.cell_types)
    base = np.array((_PBMC_PROPORTIONS * 2)[:n_c], float)
    base /= base.sum()
    case = base.copy()
    path = s.endotypes[0]["path"]
    case[path[0]] *= np.exp(params.composition_shift)
    case[path[-1]] *= np.exp(-params.composition_shift)
    case /= case.sum()
    return pd.DataFrame(
        {
            "condition": ["control"] * n_c + ["case"] * n_c,
            "cell_type": list(params.cell_types) * 2,
            "proportion": np.concatenate([base, case]),
        }
    )


def _sample_counts(params, s: IndependentStructure, states: dict):
    """Draw cells and negative binomial counts, group by group, each group with its own stream."""
    import anndata as ad

    rng = np.random.default_rng([params.seed, 12])
    model = s.model
    n_c, n_t, n_g = len(params.cell_types), len(params.time_points), model.n_genes
    patients = s.patients
    donors = patients["patient_id"].tolist()
    n_d = len(donors)
    factor, covariate_table = _covariates(params, s, rng)
    composition = _composition(params, s)
    by_arm = {
        arm: block["proportion"].to_numpy() for arm, block in composition.groupby("condition")
    }
    proportions = np.array([rng.dirichlet(by_arm[a] * 60.0) for a in patients["condition"]])
    donor_lib = rng.lognormal(0.0, 0.1, size=n_d)
    theta = 1.0 / (0.05 + rng.lognormal(np.log(0.15), 0.5, size=n_g))
    expected = np.repeat(proportions[:, None, :], n_t, axis=1) * params.n_cells / (n_d * n_t)
    expected *= rng.lognormal(0.0, 0.15, size=expected.shape)
    expected *= params.n_cells / expected.sum()
    counts_per_group = np.maximum(_round_preserving_sum(expected, params.n_cells), 1)
    blocks, obs_parts, group_id = [], [], 0
    for d, donor in enumerate(patients.itertuples()):
        state = states.get(donor.patient_id, states["control"])
        for t in range(n_t):
            for c in range(n_c):
                n = int(counts_per_group[d, t, c])
                g_rng = np.random.default_rng([params.seed, 13, group_id])
                group_id += 1
                noise = g_rng.lognormal(0.0, params.cell_noise, size=(n, len(model.core)))
                x = model.cell_states(c, state[t, c], noise)
                lib = g_rng.lognormal(0.0, params.library_sd, size=n) * donor_lib[d]
                mu = lib[:, None] * (factor[d] * s.scales[c])[None, :] * x
                counts = g_rng.poisson(g_rng.gamma(theta[None, :], mu / theta[None, :]))
                blocks.append(sparse.csr_matrix(counts.astype(np.float32)))
                obs_parts.append((n, params.cell_types[c], float(params.time_points[t]), donor))
    sizes = [p[0] for p in obs_parts]
    meta = patients.set_index("patient_id")
    donor_col = np.repeat([p[3].patient_id for p in obs_parts], sizes)
    obs = pd.DataFrame(
        {
            "cell_type": np.repeat([p[1] for p in obs_parts], sizes),
            "time": np.repeat([p[2] for p in obs_parts], sizes),
            "condition": meta.loc[donor_col, "condition"].to_numpy(),
            "donor": donor_col,
            "sex": meta.loc[donor_col, "sex"].to_numpy(),
            "batch": meta.loc[donor_col, "batch"].to_numpy(),
        }
    )
    width = len(str(len(obs)))
    obs.index = [f"cell{i:0{width}d}" for i in range(len(obs))]
    obs["cell_type"] = pd.Categorical(obs["cell_type"], categories=list(params.cell_types))
    obs["condition"] = pd.Categorical(obs["condition"], categories=["control", "case"])
    obs["donor"] = pd.Categorical(obs["donor"], categories=donors)
    for key in ("sex", "batch"):
        obs[key] = pd.Categorical(obs[key])
    var = pd.DataFrame(index=pd.Index(model.genes, name="gene"))
    adata = ad.AnnData(X=sparse.vstack(blocks, format="csr"), obs=obs, var=var)
    adata.uns["_covariates"] = (covariate_table, composition)
    return adata
