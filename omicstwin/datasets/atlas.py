"""A real-shaped atlas cohort: 20,000 genes, any number of cells, written to h5ad in chunks.

The ``atlas`` preset (``omicstwin simulate --preset atlas``) has the shape of a real 10x PBMC
time course rather than a tidy network model: real human gene symbols (HGNC, with the 13
``MT-`` genes and the ``RPL``/``RPS`` ribosomal genes that quality control reads), a log-normal
spread of gene means with a long tail of barely expressed genes, log-normal library sizes
around ~2,200 UMIs per cell, cell-type programmes, a shared time response, donor effects on
genes and on composition (Dirichlet per donor), and a disease planted on a few driver TFs and
their CollecTRI targets in case donors.

**Cells.** A cell of group (donor, time, cell type) draws its UMIs from the group's gene
probabilities split into three modules: mitochondrial genes, its cell type's programme, and
the rest. Each cell scales the first two modules by its own log-normal factor (so the MT
fraction and programme strength vary from cell to cell and programme genes co-vary), draws the
UMI count of each module (multinomial), then draws each UMI's gene by ``searchsorted`` on the
module's cumulative probabilities. No dense cells x genes array is ever made: a block of cells
becomes CSR rows straight from the sorted (cell, gene) keys.

**Determinism.** Cells are generated in blocks of :data:`RNG_BLOCK` cells, block ``b`` from
``SeedSequence(seed).spawn`` child ``b``; written chunks are whole blocks, so the file is the
same whatever the chunk size (and the in-memory :func:`simulate_atlas` equals the file).

**Truth** (``uns["truth"]``, the shape :func:`~omicstwin.datasets.simulate.simulate_cohort`
uses where it applies): ``genes`` (gene, role, is_driver), ``drivers`` (one row per case
patient: endotype, strength, driver_genes, initiating_cell_type, onset_time), ``endotypes``,
``networks`` (the planted driver -> target edges per cell type, all in CollecTRI), ``lr_edges``
(empty: nothing is planted between cell types) and ``degs`` (cell_type, time, gene, log_fc,
direction; ``|log2 FC| >= 0.5`` of expected counts, case over control, and an expected count
of at least 0.1 per cell in one arm).
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin.datasets.simulate import PBMC_CELL_TYPES, _deg_table, preset_params
from omicstwin.errors import ParameterError

_HEAD_MASS = 0.7  # share of the non-module UMIs counted gene by gene (the dense head)
RNG_BLOCK = 1024  # cells per random stream: fixes the output whatever the write chunk size
_BASE_PROPORTIONS = (0.18, 0.30, 0.15, 0.12, 0.10, 0.05, 0.03, 0.03, 0.02, 0.02)
_FILL_PREFIX = "SIMNC"  # names of the few genes beyond the real symbols available (non-coding)
_DRIVER_TARGETS = (30, 400)  # CollecTRI out-degree of a driver TF (a hub, not a mega-hub)


@dataclass(frozen=True)
class AtlasParams:
    """Parameters of the atlas cohort (:func:`write_atlas`, :func:`simulate_atlas`).

    Attributes
    ----------
    n_genes, n_cells
        Matrix size; cells are spread over donors x time points x cell types.
    cell_types, time_points, time_unit
        Design (10 PBMC cell types x 7 time points by default).
    n_case, n_control
        Donors per arm (every donor sampled at every time point).
    mean_umis, library_sd
        Mean UMIs per cell and the SD of log library size.
    gene_log_sd
        SD of the genes' log mean expression (the long tail of low-expressed genes).
    ribosomal_share, mt_share
        Expected fraction of a cell's UMIs on ribosomal and on mitochondrial genes.
    mt_cell_sd, programme_cell_sd
        SD of the per-cell log factor on the MT module and on the cell type's programme.
    programme_fraction, programme_log_fc
        Fraction of genes in each cell type's programme and their mean log fold (natural log).
    donor_gene_sd, composition_concentration
        Per-donor gene log effects; Dirichlet concentration of each donor's composition
        (smaller: donors differ more).
    n_endotypes, onset_index, driver_log2_fc, target_log2_fc, strength_range
        Disease: endotypes of two driver TFs each, switched on in case donors from
        ``time_points[onset_index]``; driver and target log2 folds at strength 1; per-patient
        strength uniform in ``strength_range``.
    disease
        False plants nothing (a calibration cohort of the same design).
    seed
        Same seed, identical cohort (whatever the chunk size).
    """

    n_genes: int = 20_000
    n_cells: int = 100_000
    cell_types: tuple[str, ...] = PBMC_CELL_TYPES
    time_points: tuple[float, ...] = (0, 6, 12, 24, 48, 72, 168)
    time_unit: str = "h"
    n_case: int = 10
    n_control: int = 10
    mean_umis: float = 2200.0
    library_sd: float = 0.45
    gene_log_sd: float = 2.0
    ribosomal_share: float = 0.2
    mt_share: float = 0.04
    mt_cell_sd: float = 0.5
    programme_cell_sd: float = 0.4
    programme_fraction: float = 0.015
    programme_log_fc: float = 2.0
    donor_gene_sd: float = 0.15
    composition_concentration: float = 30.0
    n_endotypes: int = 2
    onset_index: int = 1
    driver_log2_fc: float = 2.0
    target_log2_fc: float = 1.0
    strength_range: tuple[float, float] = (0.6, 1.4)
    disease: bool = True
    seed: int = 0


PRESETS: dict[str, AtlasParams] = {"atlas": AtlasParams()}


@dataclass
class AtlasDesign:
    """Everything but the cells: genes, group layout, group log means and truth."""

    params: AtlasParams
    genes: np.ndarray
    obs: pd.DataFrame  # one row per cell, ordered donor-major, then time, then cell type
    group_of_cell: np.ndarray  # group index of every cell
    group_keys: pd.DataFrame  # donor, patient index, time index, cell type index per group
    base_log: np.ndarray  # genes: log mean of the base profile
    programme_log: np.ndarray  # cell types x genes
    time_log: np.ndarray  # time points x genes (both arms)
    donor_log: np.ndarray  # donors x genes (float32)
    disease_log: dict[str, np.ndarray]  # case donor -> time x cell type x genes log effect
    mt_genes: np.ndarray
    programmes: list[np.ndarray]  # per cell type: gene indices of its programme
    truth: dict


def atlas_params(preset: str | None = "atlas", **overrides: Any) -> AtlasParams:
    """Return the preset's parameters with keyword overrides (e.g. ``n_cells=200_000``)."""
    # the simulator's preset + overrides rule (unknown names fail listing the valid ones)
    params = preset_params(AtlasParams, PRESETS, preset or "atlas", overrides, "atlas ")
    n_groups = (params.n_case + params.n_control) * len(params.time_points) * len(params.cell_types)
    if params.n_cells < n_groups:
        raise ParameterError(
            f"n_cells={params.n_cells} is fewer than the {n_groups} donor x time x cell type "
            "groups; fix: raise n_cells or shrink the design"
        )
    if params.n_genes < 100:
        raise ParameterError(f"n_genes={params.n_genes} is below 100; fix: use n_genes >= 100")
    if not 0 <= params.onset_index < len(params.time_points):
        raise ParameterError(
            f"onset_index={params.onset_index} is outside the {len(params.time_points)} time "
            "points; fix: pick an index of time_points"
        )
    return params


# ----------------------------------------------------------------------------- design


def build_design(params: AtlasParams) -> AtlasDesign:
    """Draw genes, drivers, the cell layout and every group's log mean (no cells yet)."""
    from omicstwin.io.manifests import load_gene_list, load_table

    rng = np.random.default_rng([params.seed, 100])
    collectri = load_table("collectri")
    symbols = load_table("hgnc_gene_ids")["gene"].dropna().unique()
    lr = load_table("liana_consensus")
    tfs = set(load_gene_list("lambert2018_tfs"))
    drivers, targets = _choose_drivers(params, collectri, tfs, set(symbols), rng)
    genes, roles = _choose_genes(params, symbols, collectri, lr, tfs, drivers, targets, rng)
    index = {g: i for i, g in enumerate(genes)}
    n_g, n_c, n_t = len(genes), len(params.cell_types), len(params.time_points)

    role = np.array([roles[g] for g in genes])
    mt = np.flatnonzero(role == "mitochondrial")
    ribo = np.flatnonzero(role == "ribosomal")
    base = rng.normal(0.0, params.gene_log_sd, size=n_g)
    base = _set_share(base, ribo, params.ribosomal_share, rng)
    base = _set_share(base, mt, params.mt_share, rng)

    ordinary = np.flatnonzero(~np.isin(role, ["mitochondrial", "ribosomal"]))
    n_prog = max(3, round(params.programme_fraction * n_g))
    programmes = [np.sort(rng.choice(ordinary, n_prog, replace=False)) for _ in range(n_c)]
    programme_log = np.zeros((n_c, n_g))
    for c, prog in enumerate(programmes):
        programme_log[c, prog] = rng.normal(params.programme_log_fc, 0.5, size=len(prog))
    response = rng.choice(ordinary, max(3, n_prog), replace=False)
    profile = np.array([np.exp(-0.5 * (t - 2) ** 2) if t > 0 else 0.0 for t in range(n_t)])
    time_log = np.zeros((n_t, n_g))
    time_log[:, response] = profile[:, None] * rng.normal(0.0, 0.8, size=len(response))

    patients = _patients(params, rng)
    n_d = len(patients)
    donor_log = rng.normal(0.0, params.donor_gene_sd, size=(n_d, n_g)).astype(np.float32)
    endotypes = _endotypes(params, drivers, rng)
    network = _driver_network(params, endotypes, targets, collectri)
    disease_log = _disease_effects(params, patients, endotypes, network, index)
    obs, group_of_cell, group_keys = _layout(params, patients, rng)
    design = AtlasDesign(
        params=params,
        genes=genes,
        obs=obs,
        group_of_cell=group_of_cell,
        group_keys=group_keys,
        base_log=base,
        programme_log=programme_log,
        time_log=time_log,
        donor_log=donor_log,
        disease_log=disease_log,
        mt_genes=mt,
        programmes=programmes,
        truth={},
    )
    design.truth = _truth(design, patients, endotypes, network, role, drivers)
    return design


def _choose_drivers(params, collectri, tfs, symbols, rng):
    """Two hub TFs per endotype (CollecTRI out-degree in range) and their targets (signed)."""
    edges = collectri[collectri["source"].isin(tfs) & collectri["target"].isin(symbols)]
    edges = edges[edges["source"].isin(symbols) & (edges["source"] != edges["target"])]
    degree = edges.groupby("source").size()
    lo, hi = _DRIVER_TARGETS
    hubs = sorted(degree[(degree >= lo) & (degree <= hi)].index)
    n_drivers = 2 * params.n_endotypes
    if len(hubs) < n_drivers:
        raise ParameterError(
            f"only {len(hubs)} TFs have {lo}-{hi} CollecTRI targets; fix: use fewer endotypes"
        )
    drivers = [str(g) for g in rng.choice(hubs, n_drivers, replace=False)]
    # small gene panels keep a few targets per driver so the signal fits in the panel
    cap = max(5, int(0.01 * params.n_genes))
    targets = {}
    for d in drivers:
        mine = edges[edges["source"] == d].drop_duplicates("target")
        if len(mine) > cap:
            mine = mine.iloc[np.sort(rng.choice(len(mine), cap, replace=False))]
        targets[d] = dict(zip(mine["target"], np.sign(mine["weight"]).astype(int), strict=True))
    return drivers, targets


def _choose_genes(params, symbols, collectri, lr, tfs, drivers, targets, rng):
    """Gene symbols and roles: MT and ribosomal genes, drivers and targets, then the rest."""
    symbols = set(map(str, symbols))
    lr_genes = set(lr["ligand"].str.split("_").explode()) | set(
        lr["receptor"].str.split("_").explode()
    )
    mt = sorted(g for g in symbols if g.startswith("MT-"))
    ribo = sorted(g for g in symbols if g[:3] in ("RPL", "RPS") and g[3:4].isdigit())
    if params.n_genes < 2000:  # small test panels keep a few ribosomal genes, not 90
        ribo = ribo[: max(5, params.n_genes // 50)]
    required = list(dict.fromkeys(mt + ribo + drivers + [t for d in drivers for t in targets[d]]))
    universe = sorted(symbols | lr_genes | set(collectri["source"]) | set(collectri["target"]))
    required_set = set(required)
    rest = [g for g in universe if g not in required_set]
    n_rest = params.n_genes - len(required)
    if n_rest < 0:
        raise ParameterError(
            f"n_genes={params.n_genes} cannot hold the {len(required)} MT, ribosomal, driver "
            "and target genes; fix: raise n_genes"
        )
    if n_rest <= len(rest):
        chosen = list(rng.choice(rest, n_rest, replace=False)) if n_rest else []
    else:  # more genes than real symbols: the tail gets clearly synthetic non-coding names
        chosen = rest + [f"{_FILL_PREFIX}{i:05d}" for i in range(1, n_rest - len(rest) + 1)]
    genes = np.array(sorted(required + [str(g) for g in chosen]), dtype=object)
    ligands = set(lr["ligand"].str.split("_").explode())
    receptors = set(lr["receptor"].str.split("_").explode())
    collectri_targets = set(collectri["target"])
    roles = {}
    for g in genes:
        if g in mt:
            roles[g] = "mitochondrial"
        elif g in ribo:
            roles[g] = "ribosomal"
        elif g in tfs:
            roles[g] = "tf"
        elif g in ligands:
            roles[g] = "ligand"
        elif g in receptors:
            roles[g] = "receptor"
        else:
            roles[g] = "target" if g in collectri_targets else "other"
    return genes, roles


def _set_share(base: np.ndarray, members: np.ndarray, share: float, rng) -> np.ndarray:
    """Shift the members' log means so they hold ``share`` of the expected UMIs."""
    if len(members) == 0 or share <= 0:
        return base
    out = base.copy()
    out[members] = rng.normal(0.0, 0.5, size=len(members))
    others = np.setdiff1d(np.arange(len(base)), members)
    rest_total = np.exp(out[others]).sum()
    wanted = share / (1.0 - share) * rest_total
    out[members] += np.log(wanted / np.exp(out[members]).sum())
    return out


def _patients(params: AtlasParams, rng) -> pd.DataFrame:
    width = max(2, len(str(max(params.n_case, params.n_control))))
    lo, hi = params.strength_range if params.disease else (0.0, 0.0)
    rows = [
        {
            "patient_id": f"P{i + 1:0{width}d}",
            "condition": "case",
            "endotype": "ABCDEFGH"[i % params.n_endotypes],
            "strength": float(rng.uniform(lo, hi)),
        }
        for i in range(params.n_case)
    ]
    rows += [
        {"patient_id": f"C{i + 1:0{width}d}", "condition": "control", "endotype": ""}
        | {"strength": 0.0}
        for i in range(params.n_control)
    ]
    return pd.DataFrame(rows)


def _endotypes(params: AtlasParams, drivers: list[str], rng) -> list[dict]:
    """Each endotype: two drivers and a path of up to three cell types (one per time step)."""
    n_c = len(params.cell_types)
    out = []
    for e in range(params.n_endotypes):
        path = [int(c) for c in rng.choice(n_c, min(3, n_c), replace=False)]
        out.append({"name": "ABCDEFGH"[e], "drivers": drivers[2 * e : 2 * e + 2], "path": path})
    return out


def _driver_network(params, endotypes, targets, collectri) -> pd.DataFrame:
    rows = []
    for e in endotypes:
        for hop, c in enumerate(e["path"]):
            for d in e["drivers"]:
                for t, sign in targets[d].items():
                    rows.append(
                        {
                            "cell_type": params.cell_types[c],
                            "source": d,
                            "target": t,
                            "weight": float(sign * params.target_log2_fc),
                            "sign": int(sign),
                            "in_prior": True,
                            "shared": False,
                            "endotype": e["name"],
                            "hop": hop,
                        }
                    )
    columns = ["cell_type", "source", "target", "weight", "sign", "in_prior", "shared"]
    frame = pd.DataFrame(rows, columns=[*columns, "endotype", "hop"])
    return frame.drop_duplicates(["cell_type", "source", "target"]).reset_index(drop=True)


def _disease_effects(params, patients, endotypes, network, index) -> dict[str, np.ndarray]:
    """Per case donor: natural-log effects (time x cell type x genes), zero before onset + hop."""
    n_t, n_c, n_g = len(params.time_points), len(params.cell_types), len(index)
    by_name = {e["name"]: e for e in endotypes}
    out = {}
    ln2 = np.log(2.0)
    for row in patients[patients["condition"] == "case"].itertuples():
        effect = np.zeros((n_t, n_c, n_g), np.float32)
        if row.strength > 0:
            e = by_name[row.endotype]
            mine = network[network["endotype"] == e["name"]]
            for hop, c in enumerate(e["path"]):
                start = params.onset_index + hop
                if start >= n_t:
                    continue
                edges = mine[mine["hop"] == hop]
                tg = np.array([index[t] for t in edges["target"]], int)
                np.add.at(effect[start:, c], (slice(None), tg), edges["weight"].to_numpy() * ln2)
                for d in e["drivers"]:
                    effect[start:, c, index[d]] += params.driver_log2_fc * ln2
            effect *= row.strength
        out[row.patient_id] = effect
    return out


def _layout(params: AtlasParams, patients: pd.DataFrame, rng):
    """Cells per donor x time x cell type (Dirichlet composition per donor), and the obs."""
    n_d, n_t, n_c = len(patients), len(params.time_points), len(params.cell_types)
    base = np.array((_BASE_PROPORTIONS * 4)[:n_c], float)
    base /= base.sum()
    proportions = rng.dirichlet(base * params.composition_concentration, size=n_d)
    expected = np.repeat(proportions[:, None, :], n_t, axis=1)
    expected = expected * rng.lognormal(0.0, 0.15, size=expected.shape)
    expected *= params.n_cells / expected.sum()
    counts = np.maximum(_round_preserving_sum(expected, params.n_cells), 1)
    excess = int(counts.sum()) - params.n_cells  # the floor of one cell per group
    while excess > 0:  # take the extra cells back from the largest groups
        flat = counts.ravel()
        largest = np.argsort(-flat, kind="stable")[:excess]
        flat[largest] -= 1
        excess = int(counts.sum()) - params.n_cells
    d_idx, t_idx, c_idx = np.meshgrid(np.arange(n_d), np.arange(n_t), np.arange(n_c), indexing="ij")
    keys = pd.DataFrame({"donor": d_idx.ravel(), "time": t_idx.ravel(), "cell_type": c_idx.ravel()})
    sizes = counts.ravel()
    group_of_cell = np.repeat(np.arange(len(keys)), sizes)
    donors = patients["patient_id"].to_numpy()
    conditions = patients["condition"].to_numpy()
    times = np.array(params.time_points, float)
    d_cell = keys["donor"].to_numpy()[group_of_cell]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(
                keys["cell_type"].to_numpy()[group_of_cell], categories=list(params.cell_types)
            ),
            "time": times[keys["time"].to_numpy()[group_of_cell]],
            "condition": pd.Categorical(conditions[d_cell], categories=["control", "case"]),
            "donor": pd.Categorical.from_codes(d_cell, categories=list(donors)),
        }
    )
    width = len(str(params.n_cells))
    obs.index = pd.Index([f"cell{i:0{width}d}" for i in range(len(obs))])
    return obs, group_of_cell, keys


def _round_preserving_sum(values: np.ndarray, total: int) -> np.ndarray:
    flat = values.ravel()
    floor = np.floor(flat).astype(np.int64)
    short = total - int(floor.sum())
    if short > 0:
        floor[np.argsort(-(flat - floor), kind="stable")[:short]] += 1
    return floor.reshape(values.shape)


def _group_log_mean(design: AtlasDesign, group: int) -> np.ndarray:
    keys = design.group_keys.iloc[group]
    d, t, c = int(keys["donor"]), int(keys["time"]), int(keys["cell_type"])
    log_mean = design.base_log + design.programme_log[c] + design.time_log[t]
    log_mean = log_mean + design.donor_log[d]
    donor = design.obs["donor"].cat.categories[d]
    if donor in design.disease_log:
        log_mean = log_mean + design.disease_log[donor][t, c]
    return log_mean


def _expected_profiles(design: AtlasDesign) -> tuple[np.ndarray, np.ndarray]:
    """Return expected counts per cell (time x cell type x genes): case mean, control."""
    p = design.params
    n_t, n_c = len(p.time_points), len(p.cell_types)
    control = np.empty((n_t, n_c, len(design.genes)))
    case = np.zeros_like(control)
    cases = list(design.disease_log)
    for t in range(n_t):
        for c in range(n_c):
            log_mean = design.base_log + design.programme_log[c] + design.time_log[t]
            control[t, c] = _to_counts(log_mean, p.mean_umis)
            for donor in cases:
                case[t, c] += _to_counts(log_mean + design.disease_log[donor][t, c], p.mean_umis)
    case /= max(len(cases), 1)
    return case, control


def _to_counts(log_mean: np.ndarray, umis: float) -> np.ndarray:
    w = np.exp(log_mean - log_mean.max())
    return umis * w / w.sum()


def _truth(design: AtlasDesign, patients, endotypes, network, role, drivers) -> dict:
    p = design.params
    cts = list(p.cell_types)
    cases = patients[patients["condition"] == "case"]
    by_name = {e["name"]: e for e in endotypes}
    drivers_table = pd.DataFrame(
        {
            "patient_id": cases["patient_id"].to_numpy(),
            "endotype": cases["endotype"].to_numpy(),
            "strength": cases["strength"].to_numpy(),
            "driver_genes": [";".join(by_name[e]["drivers"]) for e in cases["endotype"]],
            "initiating_cell_type": [cts[by_name[e]["path"][0]] for e in cases["endotype"]],
            "onset_time": float(p.time_points[p.onset_index]),
        }
    )
    endotype_table = pd.DataFrame(
        [
            {
                "endotype": e["name"],
                "drivers": ";".join(e["drivers"]),
                "cascade_cell_types": ";".join(cts[c] for c in e["path"]),
                "cascade_ligands": "",
                "cascade_receptors": "",
                "cascade_tfs": "",
            }
            for e in endotypes
        ]
    )
    genes = pd.DataFrame(
        {
            "gene": design.genes.astype(str),
            "role": role,
            "is_driver": np.isin(design.genes, drivers),
        }
    )
    lr_edges = pd.DataFrame(
        {
            c: pd.Series(dtype=d)
            for c, d in {
                "sender": object,
                "ligand": object,
                "receiver": object,
                "receptor": object,
                "downstream_tf": object,
                "kappa": float,
                "endotype": object,
                "hop": int,
            }.items()
        }
    )
    case, control = _expected_profiles(design)
    return {
        "genes": genes,
        "drivers": drivers_table if p.disease else drivers_table.iloc[:0],
        "endotypes": endotype_table,
        "networks": network if p.disease else network.iloc[:0],
        "lr_edges": lr_edges,
        "degs": _deg_table(p, np.asarray(design.genes, dtype=str), case, control),
    }


# ----------------------------------------------------------------------------- cells


class _GroupSampler:
    """One group's gene probabilities, split into a dense head and a sampled tail.

    The head (MT genes, the cell type's programme and the most expressed other genes, together
    about 75% of the UMIs) gets Poisson counts per cell and gene; the long tail gets a Poisson
    number of UMIs per cell whose genes are drawn by ``searchsorted`` on its cumulative
    probabilities, so the cost follows the UMIs, not the 20,000 genes.
    """

    def __init__(self, design: AtlasDesign, group: int, orders: dict):
        c = int(design.group_keys["cell_type"].iat[group])
        log_mean = _group_log_mean(design, group)
        weights = np.exp(log_mean - log_mean.max())
        weights /= weights.sum()
        mt = design.mt_genes
        if c not in orders:  # the cell type's other genes, most expressed first (no donor)
            prog = np.setdiff1d(design.programmes[c], mt)
            other = np.ones(len(weights), bool)
            other[mt] = False
            other[prog] = False
            other = np.flatnonzero(other)
            typical = design.base_log + design.programme_log[c]
            orders[c] = (prog, other[np.argsort(-typical[other], kind="stable")])
        prog, order = orders[c]
        cumulative = np.cumsum(weights[order]) / max(weights[order].sum(), 1e-300)
        n_top = int(np.clip(np.searchsorted(cumulative, _HEAD_MASS) + 1, 1, len(order)))
        top = order[:n_top]
        in_tail = np.zeros(len(weights), bool)
        in_tail[order[n_top:]] = True
        tail = np.flatnonzero(in_tail)  # ascending gene index (no sort)
        self.head = np.concatenate([mt, prog, top])
        # module of each head gene: 0 MT, 1 programme, 2 other (per-cell factors act on 0, 1)
        self.head_module = np.repeat([0, 1, 2], [len(mt), len(prog), len(top)])
        self.head_p = weights[self.head]
        self.tail = tail
        self.tail_share = float(weights[tail].sum())
        cdf = np.cumsum(weights[tail]) / max(self.tail_share, 1e-300)
        if len(cdf):
            cdf[-1] = 1.0
        self.tail_cdf = cdf


def _block_rows(design: AtlasDesign, block: int, cache: dict) -> sparse.csr_matrix:
    """CSR rows (float32 counts) of the cells of one RNG block."""
    p = design.params
    start = block * RNG_BLOCK
    stop = min(start + RNG_BLOCK, p.n_cells)
    rng = np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(block,)))
    n, n_genes = stop - start, len(design.genes)
    groups = design.group_of_cell[start:stop]
    if "donor_lib" not in cache:  # one draw per cohort, shared by every block
        donor_rng = np.random.default_rng([p.seed, 101])
        cache["donor_lib"] = donor_rng.lognormal(0.0, 0.1, len(design.donor_log))
        cache["samplers"] = {}
        cache["orders"] = {}
    donor_lib, samplers = cache["donor_lib"], cache["samplers"]
    donor_of_group = design.group_keys["donor"].to_numpy()
    mu = np.log(p.mean_umis) - p.library_sd**2 / 2
    library = rng.lognormal(mu, p.library_sd, n) * donor_lib[donor_of_group[groups]]
    factors = np.ones((n, 3))
    factors[:, 0] = rng.lognormal(-(p.mt_cell_sd**2) / 2, p.mt_cell_sd, n)
    factors[:, 1] = rng.lognormal(-(p.programme_cell_sd**2) / 2, p.programme_cell_sd, n)
    rows, cols, vals = [], [], []
    for group in np.unique(groups):
        cells = np.flatnonzero(groups == group)
        sampler = samplers.get(group)
        if sampler is None:
            if len(samplers) > 64:  # groups are contiguous: older ones are not met again
                samplers.clear()
            sampler = samplers[group] = _GroupSampler(design, int(group), cache["orders"])
        # the cell's factors rescale its modules; dividing by the new total keeps its library
        scaled = factors[cells][:, sampler.head_module] * sampler.head_p[None, :]
        total = scaled.sum(axis=1) + sampler.tail_share
        scale = library[cells] / total
        head = rng.poisson(scaled * scale[:, None])
        r, k = np.nonzero(head)
        rows.append(cells[r])
        cols.append(sampler.head[k])
        vals.append(head[r, k])
        n_tail = rng.poisson(scale * sampler.tail_share)
        if n_tail.sum() and len(sampler.tail):
            cell_of_draw = np.repeat(cells.astype(np.int64), n_tail)
            picks = np.searchsorted(sampler.tail_cdf, _sorted_uniforms(n_tail, rng), "right")
            gene = sampler.tail[np.minimum(picks, len(sampler.tail) - 1)]
            # each cell's draws are sorted, so the keys are too: run lengths are the counts
            keys = cell_of_draw * n_genes + gene
            edges = np.flatnonzero(np.diff(keys)) + 1
            unique = keys[np.concatenate(([0], edges))]
            r, g = np.divmod(unique, n_genes)
            rows.append(r)
            cols.append(g)
            vals.append(np.diff(np.concatenate(([0], edges, [len(keys)]))))
    matrix = sparse.csr_matrix(
        (
            np.concatenate(vals).astype(np.float32),
            (np.concatenate(rows), np.concatenate(cols).astype(np.int32)),
        ),
        shape=(n, n_genes),
    )
    matrix.sort_indices()
    return matrix


def _sorted_uniforms(sizes: np.ndarray, rng) -> np.ndarray:
    """Uniforms on [0, 1), sorted within each consecutive segment of the given sizes.

    Normalised cumulative sums of exponential spacings (size + 1 per segment) are the order
    statistics of uniforms: sorted draws without sorting, so ``searchsorted`` returns genes in
    order and no (cell, gene) sort is needed.
    """
    spacings = rng.standard_exponential(int(sizes.sum()) + len(sizes))
    ends = np.cumsum(sizes + 1)
    total = np.cumsum(spacings)
    segment_total = np.diff(np.concatenate(([0.0], total[ends - 1])))
    before = np.concatenate(([0.0], total[ends - 1][:-1]))
    keep = np.ones(len(spacings), bool)
    keep[ends - 1] = False  # the last spacing of each segment only closes it
    segment = np.repeat(np.arange(len(sizes)), sizes)
    return (total[keep] - before[segment]) / segment_total[segment]


def iter_atlas_chunks(design: AtlasDesign, chunk_cells: int = 8 * RNG_BLOCK):
    """Yield CSR chunks of consecutive cells (whole RNG blocks, so any chunk size agrees)."""
    if chunk_cells < 1:
        raise ParameterError(f"chunk_cells must be >= 1, got {chunk_cells}")
    per_chunk = max(1, chunk_cells // RNG_BLOCK)
    n_blocks = -(-design.params.n_cells // RNG_BLOCK)
    cache: dict = {}
    for first in range(0, n_blocks, per_chunk):
        blocks = range(first, min(first + per_chunk, n_blocks))
        yield sparse.vstack([_block_rows(design, b, cache) for b in blocks], format="csr")


def _uns(design: AtlasDesign, preset: str) -> dict:
    p = design.params
    simulation = {
        k: (np.asarray(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()
    } | {"preset": preset, "rng_block": RNG_BLOCK}
    return {
        "truth": design.truth,
        "time_unit": p.time_unit,
        "simulation": simulation,
        "generator": "atlas",
    }


def simulate_atlas(preset: str | None = "atlas", **overrides: Any):
    """Simulate an atlas cohort in memory (small sizes; tests); see :func:`write_atlas`.

    Returns
    -------
    anndata.AnnData
        The same cells, genes and truth :func:`write_atlas` writes for these parameters.
    """
    import anndata as ad

    design = build_design(atlas_params(preset, **overrides))
    matrix = sparse.vstack(list(iter_atlas_chunks(design)), format="csr")
    var = pd.DataFrame(index=pd.Index(design.genes.astype(str), name="gene"))
    return ad.AnnData(X=matrix, obs=design.obs, var=var, uns=_uns(design, preset or "atlas"))


def write_atlas(
    path: str | Path,
    preset: str | None = "atlas",
    *,
    chunk_cells: int = 8 * RNG_BLOCK,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate an atlas cohort straight to an h5ad file, chunk by chunk.

    Memory is bounded by the chunk (and obs, one row per cell): counts are appended to
    resizable HDF5 datasets in anndata's CSR layout (``indptr`` int64, so more than 2**31
    non-zeros fit) and obs, var and uns are written with :func:`anndata.io.write_elem`. The file
    is written under a temporary name and renamed when complete.

    Parameters
    ----------
    path
        Output ``.h5ad``.
    preset
        ``"atlas"`` (20,000 genes, 100,000 cells, 10 cell types x 7 times x 10+10 donors).
    chunk_cells
        Cells per written chunk (rounded down to whole :data:`RNG_BLOCK` blocks); does not
        change the output.
    **overrides
        :class:`AtlasParams` fields, e.g. ``n_cells=1_000_000``, ``seed=3``.

    Returns
    -------
    dict
        ``n_cells``, ``n_genes``, ``nnz``, ``seconds``.
    """
    import h5py
    from anndata.io import write_elem

    started = _time.perf_counter()
    design = build_design(atlas_params(preset, **overrides))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    n_genes = len(design.genes)
    nnz = 0
    with h5py.File(partial, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        group = f.create_group("X")
        group.attrs["encoding-type"] = "csr_matrix"
        group.attrs["encoding-version"] = "0.1.0"
        group.attrs["shape"] = (design.params.n_cells, n_genes)
        data = group.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=(1 << 18,))
        indices = group.create_dataset(
            "indices", (0,), np.int32, maxshape=(None,), chunks=(1 << 18,)
        )
        indptr = [np.zeros(1, np.int64)]
        for chunk in iter_atlas_chunks(design, chunk_cells):
            for dataset, values in ((data, chunk.data), (indices, chunk.indices)):
                dataset.resize((nnz + chunk.nnz,))
                dataset[nnz:] = values
            indptr.append(chunk.indptr[1:].astype(np.int64) + nnz)
            nnz += chunk.nnz
        group.create_dataset("indptr", data=np.concatenate(indptr))
        write_elem(f, "obs", design.obs)
        write_elem(f, "var", pd.DataFrame(index=pd.Index(design.genes.astype(str), name="gene")))
        write_elem(f, "uns", _uns(design, preset or "atlas"))
        for name in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(f, name, {})
    partial.replace(path)
    seconds = _time.perf_counter() - started
    logger.info(
        "wrote atlas %s: %d cells x %d genes in %.1f s",
        path,
        design.params.n_cells,
        n_genes,
        seconds,
    )
    return {"n_cells": design.params.n_cells, "n_genes": n_genes, "nnz": nnz, "seconds": seconds}
