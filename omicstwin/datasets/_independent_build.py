"""Structure of an independent cohort: gene panel, scale-free networks, cascades, donors.

Private helpers of :func:`omicstwin.datasets.independent.simulate_independent`; every draw comes
from one generator seeded by ``params.seed``, in a fixed order (panel, graph, cell types,
cascades, couplings, scales, donors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from omicstwin.datasets._independent_model import (
    _BUDGET,
    LR_K,
    LR_N,
    Coupling,
    EdgeSet,
    HillModel,
    hill,
    max_slope,
)
from omicstwin.datasets.simulate import ENDOTYPE_NAMES, _signalling_order
from omicstwin.errors import ParameterError

FEMALE_GENES = ("XIST", "TSIX")
MALE_GENES = ("RPS4Y1", "DDX3Y", "KDM5D", "UTY", "EIF1AY")
_CASCADE_WEIGHT = 1.2  # driver / hop TF -> ligand
_CASCADE_K, _CASCADE_N = 1.5, 3.0  # steep above the baseline (x = 1)
_CASCADE_KAPPA = 3.0
_BASAL_KAPPA = 0.3


@dataclass
class IndependentStructure:
    """Everything but the cells (see :func:`build_independent`)."""

    genes: list[str]
    role: dict[str, str]
    model: HillModel
    network_table: pd.DataFrame
    out_degree: np.ndarray
    endotypes: list[dict[str, Any]]
    shared_program: list[str]
    isg: list[str]
    scales: np.ndarray
    patients: pd.DataFrame
    inputs_control: np.ndarray
    inputs_case: dict[str, np.ndarray]
    prior_fraction_realised: float
    lr_prior_fraction_realised: float


def build_independent(params, priors) -> IndependentStructure:
    """Draw the cohort's structure (deterministic given ``params.seed``); no cells yet."""
    rng = np.random.default_rng([params.seed, 11])
    panel = _choose_panel(params, priors, rng)
    genes = panel["genes"]
    index = {g: i for i, g in enumerate(genes)}
    graph = _base_graph(params, panel, index, priors, rng)
    endotypes, shared = _plant_cascades(params, panel, graph, rng)
    couplings = _couplings(params, panel, index, endotypes, rng)
    edge_sets, table = _cell_type_networks(params, genes, index, graph, endotypes, couplings, rng)
    model = HillModel(genes, edge_sets, couplings, linear=not params.hill)
    scales = _gene_scales(params, panel, index, model, endotypes, rng)
    patients = _patients(params, rng)
    u_control, u_case = _inputs(params, index, endotypes, shared, patients)
    lr_prior = np.mean([c.in_prior for c in couplings]) if couplings else 0.0
    return IndependentStructure(
        genes=genes,
        role=panel["role"],
        model=model,
        network_table=table,
        out_degree=graph["out_degree"],
        endotypes=endotypes,
        shared_program=shared,
        isg=panel["isg"],
        scales=scales,
        patients=patients,
        inputs_control=u_control,
        inputs_case=u_case,
        prior_fraction_realised=float(table["in_prior"].mean()),
        lr_prior_fraction_realised=float(lr_prior),
    )


# ----------------------------------------------------------------------------- panel


def n_hops(params) -> int:
    """Ligand-receptor hops per cascade (1-3), bounded by cell types and time after onset."""
    after = len(params.time_points) - 1 - params.onset_index
    return max(1, min(3, len(params.cell_types) - 1, after))


def _choose_panel(params, priors, rng) -> dict[str, Any]:
    """Real symbols: sex genes, interferon genes, LR pairs, TFs, then CollecTRI targets."""
    from omicstwin.io.manifests import load_gene_sets

    tf_set = set(priors.tfs)
    col = priors.collectri
    col = col[col["source"].isin(tf_set) & (col["source"] != col["target"])]
    lr = priors.ligand_receptor
    lr = lr[
        ~lr["ligand"].str.contains("_")
        & ~lr["receptor"].str.contains("_")
        & (lr["ligand"] != lr["receptor"])
        & ~lr["ligand"].isin(tf_set)
        & ~lr["receptor"].isin(tf_set)
    ]
    used: set[str] = set()
    sex = list(FEMALE_GENES + MALE_GENES) if params.sex_genes else []
    used.update(sex)
    lr_genes = set(lr["ligand"]) | set(lr["receptor"])
    hallmark = load_gene_sets("msigdb_hallmark")["HALLMARK_INTERFERON_ALPHA_RESPONSE"]
    isg_pool = sorted(set(hallmark) - tf_set - lr_genes - used)
    n_isg = min(len(isg_pool), max(6, round(0.03 * params.n_genes)))
    isg = sorted(rng.choice(isg_pool, size=n_isg, replace=False).tolist())
    used.update(isg)
    n_pairs = params.n_endotypes * (n_hops(params) + int(params.feedback))
    n_pairs += max(3, params.n_genes // 60)
    pairs = _choose_lr_pairs(n_pairs, params.lr_prior_fraction, lr, used, rng)
    targets_of = col.groupby("source")["target"].apply(lambda s: sorted(set(s)))
    # TFs with many CollecTRI targets, so that prior_fraction up to 1 can be met
    pool = sorted(t for t, ts in targets_of.items() if len(ts) >= 40 and t not in used)
    n_tf = max(12, round(params.tf_fraction * params.n_genes))
    tfs = sorted(rng.choice(pool, size=n_tf, replace=False).tolist())
    used.update(tfs)
    _fill_targets(params, col, tfs, used, rng)
    if len(used) != params.n_genes:
        raise ParameterError(
            f"n_genes={params.n_genes} is too small for the fixed genes ({len(used)}); "
            "fix: raise n_genes"
        )
    genes = sorted(used)
    role = dict.fromkeys(genes, "target")
    role.update(dict.fromkeys(tfs, "tf"))
    role.update(dict.fromkeys(isg, "isg"))
    role.update(dict.fromkeys(sex, "sex"))
    for ligand, receptor, _ in pairs:
        role[ligand], role[receptor] = "ligand", "receptor"
    return {"genes": genes, "role": role, "tfs": tfs, "pairs": pairs, "isg": isg, "sex": sex}


def _choose_lr_pairs(n_pairs, fraction, lr: pd.DataFrame, used: set[str], rng):
    """Draw ``n_pairs`` (ligand, receptor, in_prior), ``round(fraction * n_pairs)`` from LIANA.

    The others are novel pairs of a LIANA ligand and a LIANA receptor that LIANA does not pair.
    """
    is_prior = np.zeros(n_pairs, bool)
    is_prior[rng.permutation(n_pairs)[: round(fraction * n_pairs)]] = True
    known = list(zip(lr["ligand"], lr["receptor"], strict=True))
    known_set = set(known)
    ligands = sorted(set(lr["ligand"]) - set(lr["receptor"]))
    receptors = sorted(set(lr["receptor"]) - set(lr["ligand"]))
    order = iter(rng.permutation(len(known)).tolist())
    out = []
    for prior in is_prior:
        if prior:
            for i in order:
                ligand, receptor = known[i]
                if ligand not in used and receptor not in used:
                    break
            else:
                raise ParameterError("not enough unused LIANA pairs; fix: lower n_genes")
        else:
            for _ in range(10_000):
                ligand = ligands[int(rng.integers(len(ligands)))]
                receptor = receptors[int(rng.integers(len(receptors)))]
                if (
                    ligand not in used
                    and receptor not in used
                    and (ligand, receptor) not in known_set
                ):
                    break
            else:
                raise ParameterError("could not draw a novel ligand-receptor pair")
        used.update((ligand, receptor))
        out.append((ligand, receptor, bool(prior)))
    return out


def _fill_targets(params, col: pd.DataFrame, tfs: list[str], used: set[str], rng) -> None:
    """Fill ``used`` (in place) up to ``n_genes`` with CollecTRI targets of the panel TFs.

    Targets are weighted by the square of how many panel TFs regulate them (so the panel holds
    enough CollecTRI edges for any ``prior_fraction``); any CollecTRI target tops up.
    """
    n_fill = params.n_genes - len(used)
    if n_fill <= 0:
        return
    cand = col[col["source"].isin(tfs) & ~col["target"].isin(used)]
    weights = cand.groupby("target").size()
    take = min(n_fill, len(weights))
    prob = weights.to_numpy(float) ** 2
    prob /= prob.sum()
    used.update(rng.choice(weights.index.to_numpy(), size=take, replace=False, p=prob).tolist())
    if len(used) < params.n_genes:
        rest = sorted(set(col["target"]) - used)
        used.update(rng.choice(rest, size=params.n_genes - len(used), replace=False).tolist())


# ----------------------------------------------------------------------------- graph


def _base_graph(params, panel, index, priors, rng) -> dict[str, Any]:
    """Scale-free TF -> gene graph with ``round(prior_fraction * n_edges)`` CollecTRI edges.

    Returns
    -------
    dict
        ``src``, ``dst``, ``sign``, ``in_prior`` (edge arrays), ``prior_pairs`` (every
        CollecTRI pair among the panel: source, target, sign), ``tf_weight`` (per gene, 0 for
        non-TFs), ``allowed`` (genes that may be targets), ``out_degree`` (per gene).
    """
    n_g = len(panel["genes"])
    n_edges = round(params.regulators_per_gene * n_g)
    tf_idx = np.array([index[t] for t in panel["tfs"]])
    tf_weight = np.zeros(n_g)
    ranks = rng.permutation(len(tf_idx)) + 1.0
    tf_weight[tf_idx] = ranks**-params.hub_exponent
    allowed = np.ones(n_g, bool)
    allowed[[index[g] for g in panel["isg"] + panel["sex"]]] = False
    col = priors.collectri
    col = col[
        col["source"].isin(panel["tfs"])
        & col["target"].isin(index)
        & (col["source"] != col["target"])
    ].drop_duplicates(["source", "target"])
    ps, pt = col["source"].map(index).to_numpy(), col["target"].map(index).to_numpy()
    keep = allowed[pt]
    ps, pt = ps[keep], pt[keep]
    psign = np.where(col["weight"].to_numpy(float)[keep] < 0, -1.0, 1.0)
    n_prior = min(round(params.prior_fraction * n_edges), len(ps))
    chosen = _weighted_sample(tf_weight[ps], n_prior, rng)
    novel_s, novel_t = _novel_edges(
        n_edges - n_prior, tf_idx, tf_weight, allowed, set(zip(ps, pt, strict=True)), set(), rng
    )
    novel_sign = np.where(rng.random(len(novel_s)) < params.activation_fraction, 1.0, -1.0)
    src = np.concatenate([ps[chosen], novel_s])
    dst = np.concatenate([pt[chosen], novel_t])
    return {
        "src": src,
        "dst": dst,
        "sign": np.concatenate([psign[chosen], novel_sign]),
        "in_prior": np.concatenate([np.ones(len(chosen), bool), np.zeros(len(novel_s), bool)]),
        "prior_pairs": (ps, pt, psign),
        "tf_idx": tf_idx,
        "tf_weight": tf_weight,
        "allowed": allowed,
        "out_degree": np.bincount(src, minlength=n_g),
        "lr_genes": np.array([index[g] for p in panel["pairs"] for g in p[:2]], int),
    }


def _weighted_sample(weight: np.ndarray, size: int, rng) -> np.ndarray:
    """Return indices of ``size`` items drawn without replacement with probability ~ ``weight``."""
    if size <= 0 or weight.sum() <= 0:
        return np.zeros(0, int)
    # Efraimidis-Spirakis keys: the top ``size`` of u^(1/w) is a weighted draw w/o replacement
    keys = np.log(rng.random(len(weight))) / np.maximum(weight, 1e-300)
    return np.sort(np.argsort(-keys, kind="stable")[:size])


def _novel_edges(n, tf_idx, tf_weight, allowed, prior_pairs, taken, rng):
    """Draw ``n`` distinct novel edges: source ~ hub weight, target uniform among allowed.

    Self-loops, CollecTRI pairs and pairs in ``taken`` are excluded.
    """
    if n <= 0:
        return np.zeros(0, int), np.zeros(0, int)
    targets = np.flatnonzero(allowed)
    p = tf_weight[tf_idx] / tf_weight[tf_idx].sum()
    src, dst, seen = [], [], set(taken)
    for _ in range(20):
        s = tf_idx[rng.choice(len(tf_idx), size=3 * n, p=p)]
        t = targets[rng.integers(len(targets), size=3 * n)]
        for a, b in zip(s.tolist(), t.tolist(), strict=True):
            if a != b and (a, b) not in prior_pairs and (a, b) not in seen:
                seen.add((a, b))
                src.append(a)
                dst.append(b)
                if len(src) == n:
                    return np.array(src), np.array(dst)
    return np.array(src, int), np.array(dst, int)


# ----------------------------------------------------------------------------- cascades


def _plant_cascades(params, panel, graph, rng):
    """Endotypes: path, two hub drivers, ligands/receptors/TFs per hop, feedback pair.

    Returns
    -------
    endotypes : list of dict
        ``name``, ``drivers``, ``path``, ``ligands``, ``receptors``, ``tfs``, ``lr_in_prior``,
        ``feedback`` (``(ligand, receptor, in_prior)`` or ``None``).
    shared_program : list of str
        Two TFs of the challenge response shared by both arms.
    """
    hops = n_hops(params)
    tfs = panel["tfs"]
    genes = panel["genes"]
    degree = {g: int(graph["out_degree"][genes.index(g)]) for g in tfs}
    by_degree = sorted(tfs, key=lambda g: (-degree[g], g))
    hubs = by_degree[: max(2 * params.n_endotypes, len(tfs) // 3)]
    free = [str(g) for g in rng.permutation(hubs)]
    all_drivers = [free[2 * e : 2 * e + 2] for e in range(params.n_endotypes)]
    used = {g for pair in all_drivers for g in pair}
    pairs = iter(panel["pairs"])
    others = list(range(1, len(params.cell_types)))
    endotypes = []
    for e in range(params.n_endotypes):
        shift = (e * hops) % len(others)
        path = [0, *(others[shift:] + others[:shift])[:hops]]
        drivers = all_drivers[e]
        hop_pairs = [next(pairs) for _ in range(hops)]
        pool = [g for g in by_degree[: max(len(tfs) // 2, 4)] if g not in used]
        if len(pool) < hops:
            pool = [g for g in tfs if g not in used]
        hop_tfs = [str(g) for g in rng.choice(pool, size=hops, replace=False)]
        used.update(hop_tfs)
        endotypes.append(
            {
                "name": ENDOTYPE_NAMES[e],
                "drivers": drivers,
                "path": path,
                "ligands": [p[0] for p in hop_pairs],
                "receptors": [p[1] for p in hop_pairs],
                "lr_in_prior": [p[2] for p in hop_pairs],
                "tfs": hop_tfs,
                "feedback": next(pairs) if params.feedback else None,
            }
        )
    rest = [g for g in tfs if g not in used]
    shared = [str(g) for g in rng.choice(rest, size=2, replace=False)]
    return endotypes, shared


def _cascade_edges(endotypes, index) -> list[tuple[int, int, int]]:
    """(source, target, cell type) of the planted TF -> ligand edges."""
    out = []
    for e in endotypes:
        for d in e["drivers"]:
            out.append((index[d], index[e["ligands"][0]], e["path"][0]))
        for hop, tf in enumerate(e["tfs"][:-1]):
            out.append((index[tf], index[e["ligands"][hop + 1]], e["path"][hop + 1]))
        if e["feedback"] is not None:
            out.append((index[e["tfs"][-1]], index[e["feedback"][0]], e["path"][-1]))
    return out


def _couplings(params, panel, index, endotypes, rng) -> list[Coupling]:
    """Cascade couplings (strong), feedback couplings, and weak basal couplings."""
    out = []
    for e in endotypes:
        path = e["path"]
        for hop in range(len(e["ligands"])):
            out.append(
                Coupling(
                    path[hop],
                    index[e["ligands"][hop]],
                    path[hop + 1],
                    index[e["receptors"][hop]],
                    index[e["tfs"][hop]],
                    _CASCADE_KAPPA,
                    e["name"],
                    hop,
                    e["lr_in_prior"][hop],
                )
            )
        if e["feedback"] is not None:
            ligand, receptor, in_prior = e["feedback"]
            out.append(
                Coupling(
                    path[-1],
                    index[ligand],
                    path[0],
                    index[receptor],
                    index[e["drivers"][0]],
                    _CASCADE_KAPPA / 2,
                    e["name"],
                    len(e["ligands"]),
                    in_prior,
                )
            )
    n_used = sum(len(e["ligands"]) + (e["feedback"] is not None) for e in endotypes)
    order = _signalling_order(len(params.cell_types), [e["path"] for e in endotypes])
    for ligand, receptor, in_prior in panel["pairs"][n_used:]:
        first, second = rng.choice(len(order), size=2, replace=False).tolist()
        if not params.feedback:
            first, second = sorted((first, second))
        tf = panel["tfs"][int(rng.integers(len(panel["tfs"])))]
        out.append(
            Coupling(
                int(order[first]),
                index[ligand],
                int(order[second]),
                index[receptor],
                index[tf],
                _BASAL_KAPPA,
                "",
                -1,
                in_prior,
            )
        )
    return out


# ----------------------------------------------------------------------------- cell types


def _cell_type_networks(params, genes, index, graph, endotypes, couplings, rng):
    """Per-cell-type edge sets (rewired base graph + cascade edges, budgeted) and their table."""
    n_e = len(graph["src"])
    weight = rng.uniform(0.3, 1.0, size=n_e)
    k = rng.lognormal(np.log(1.5), 0.35, size=n_e)  # above the baseline: room to activate
    n = rng.uniform(1.0, 4.0, size=n_e)
    cascade = _cascade_edges(endotypes, index)
    ps, pt, _ = graph["prior_pairs"]
    prior_code = set((ps * len(genes) + pt).tolist())
    is_core = np.zeros(len(genes), bool)
    is_core[graph["tf_idx"]] = True
    for e in endotypes:
        is_core[[index[g] for g in e["ligands"] + e["receptors"]]] = True
        if e["feedback"] is not None:
            is_core[[index[g] for g in e["feedback"][:2]]] = True
    is_core[graph["lr_genes"]] = True
    regulated = rng.uniform(0.6, 0.95, size=len(genes))
    edge_sets, frames = [], []
    for c, cell_type in enumerate(params.cell_types):
        src, dst, sign = graph["src"].copy(), graph["dst"].copy(), graph["sign"].copy()
        shared = np.ones(n_e, bool)
        moved = np.flatnonzero(rng.random(n_e) < params.rewire)
        src, dst, sign, shared = _rewire(moved, src, dst, sign, shared, graph, len(genes), rng)
        w = weight * rng.lognormal(0.0, 0.2, size=n_e)
        kc, nc = k.copy(), n.copy()
        # cascade edges replace any existing edge of the same pair
        planted = [(s, t) for s, t, cc in cascade if cc == c]
        code = src * len(genes) + dst
        drop = np.isin(code, [s * len(genes) + t for s, t in planted])
        keep = ~drop
        src, dst, sign, shared, w, kc, nc = (a[keep] for a in (src, dst, sign, shared, w, kc, nc))
        reserved = _reserved(params, couplings, planted, len(genes), c)
        w = _budget(
            dst, w, kc, nc, sign, planted, reserved, is_core, regulated, linear=not params.hill
        )
        m = len(planted)
        src = np.concatenate([src, [s for s, _ in planted]]).astype(int)
        dst = np.concatenate([dst, [t for _, t in planted]]).astype(int)
        sign = np.concatenate([sign, np.ones(m)])
        shared = np.concatenate([shared, np.zeros(m, bool)])
        w = np.concatenate([w, np.full(m, _CASCADE_WEIGHT)])
        kc = np.concatenate([kc, np.full(m, _CASCADE_K)])
        nc = np.concatenate([nc, np.full(m, _CASCADE_N)])
        edge_sets.append(EdgeSet(src, dst, w, kc, nc, sign))
        names = np.array(genes)
        frames.append(
            pd.DataFrame(
                {
                    "cell_type": cell_type,
                    "source": names[src],
                    "target": names[dst],
                    "weight": sign * w,
                    "sign": sign.astype(int),
                    "hill_k": kc,
                    "hill_n": nc,
                    "in_prior": np.isin(src * len(genes) + dst, list(prior_code)),
                    "shared": shared,
                }
            )
        )
    return edge_sets, pd.concat(frames, ignore_index=True)


def _rewire(moved, src, dst, sign, shared, graph, n_g, rng):
    """Move edges ``moved`` to new pairs of the same class (prior or novel).

    Prior edges become unused CollecTRI pairs (by hub weight); novel edges get a new novel
    target of the same source (kept where the draw collides).
    """
    ps, pt, psign = graph["prior_pairs"]
    taken = set(zip(src.tolist(), dst.tolist(), strict=True))
    prior_moved = moved[graph["in_prior"][moved]]
    free = np.array([(a, b) not in taken for a, b in zip(ps.tolist(), pt.tolist(), strict=True)])
    free_idx = np.flatnonzero(free)
    pick = free_idx[_weighted_sample(graph["tf_weight"][ps[free_idx]], len(prior_moved), rng)]
    pick = rng.permutation(pick)
    for i, j in zip(prior_moved[: len(pick)], pick, strict=False):
        src[i], dst[i], sign[i], shared[i] = ps[j], pt[j], psign[j], False
    targets = np.flatnonzero(graph["allowed"])
    prior_pairs = set(zip(ps.tolist(), pt.tolist(), strict=True))
    for i in moved[~graph["in_prior"][moved]]:
        b = int(targets[rng.integers(len(targets))])
        a = int(src[i])
        if a != b and (a, b) not in prior_pairs and (a, b) not in taken:
            taken.add((a, b))
            dst[i], shared[i] = b, False
    return src, dst, sign, shared


def _reserved(params, couplings, planted, n_g, c) -> np.ndarray:
    """Baseline input (all genes at 1) from planted edges and couplings into cell type ``c``."""
    linear = not params.hill
    out = np.zeros(n_g)
    h_planted = float(hill(np.array(1.0), _CASCADE_K, _CASCADE_N, linear=linear))
    for _, t in planted:
        out[t] += _CASCADE_WEIGHT * h_planted
    h_lr = float(hill(np.array(1.0), LR_K, LR_N, linear=linear))
    for cp in couplings:
        if cp.receiver == c:
            out[cp.downstream_tf] += cp.kappa * h_lr
    return out


def _budget(dst, w, k, n, sign, planted, reserved, is_core, regulated, *, linear):
    """Scale each gene's incoming weights.

    Core genes (they act on others, so they can close loops): ``sum w * max slope <= _BUDGET``,
    a contraction, so the steady state is unique; planted cascade edges are exempt and use part
    of their target's budget (a fifth is left). Every gene: the regulated share of its baseline
    (``sum w * h(1)``, or ``1 - h(1)`` for repression) is at most 0.95 together with the
    planted edges and couplings (``reserved``), so ``x = 1`` is the baseline; for the other genes
    (leaves) it is set to ``regulated`` (drawn per gene), so regulation dominates their level.
    """
    n_g = len(is_core)
    slope = w * max_slope(k, n, linear=linear)
    load = np.bincount(dst, weights=slope, minlength=n_g)
    room = np.full(n_g, _BUDGET)
    cascade_slope = _CASCADE_WEIGHT * float(
        max_slope(np.array(_CASCADE_K), np.array(_CASCADE_N), linear=linear)
    )
    for _, t in planted:
        room[t] = max(room[t] - cascade_slope, 0.2 * _BUDGET)
    factor = np.where(is_core & (load > room), room / np.maximum(load, 1e-12), 1.0)
    h1 = hill(np.ones(1), k, n, linear=linear)
    at_one = np.bincount(
        dst, weights=w * factor[dst] * np.where(sign > 0, h1, 1.0 - h1), minlength=n_g
    )
    share = np.where(is_core, np.minimum(at_one, np.maximum(0.95 - reserved, 0.0)), regulated)
    factor = factor * np.where(at_one > 0, share / np.maximum(at_one, 1e-12), 1.0)
    return w * factor[dst]


# ----------------------------------------------------------------------------- scales, donors


def _gene_scales(params, panel, index, model: HillModel, endotypes, rng) -> np.ndarray:
    """Baseline expected counts per cell (cell types x genes) at median library size."""
    n_c, n_g = len(params.cell_types), len(panel["genes"])
    roles = np.array([panel["role"][g] for g in panel["genes"]])
    base = rng.lognormal(np.log(0.4), 1.1, size=n_g)
    base[roles == "tf"] = rng.lognormal(0.0, 0.5, size=(roles == "tf").sum())
    base[roles == "isg"] = rng.lognormal(np.log(0.8), 0.5, size=(roles == "isg").sum())
    scales = base[None, :] * rng.lognormal(0.0, 0.35, size=(n_c, n_g))
    targets = np.flatnonzero(roles == "target")
    for c in range(n_c):
        markers = rng.choice(targets, size=min(len(targets), max(5, n_g // 80)), replace=False)
        scales[c, markers] *= 8.0
    for cp in model.couplings:
        scales[:, cp.ligand] = np.minimum(scales[:, cp.ligand], 0.3)
        scales[cp.sender, cp.ligand] = max(scales[cp.sender, cp.ligand], 2.0)
        scales[cp.receiver, cp.receptor] = max(scales[cp.receiver, cp.receptor], 1.5)
        scales[cp.receiver, cp.downstream_tf] = max(scales[cp.receiver, cp.downstream_tf], 1.5)
    for e in endotypes:
        for d in e["drivers"]:
            scales[e["path"][0], index[d]] = max(scales[e["path"][0], index[d]], 1.5)
    for g, level in zip(panel["sex"], (3.0, 0.4, 2.5, 0.8, 0.6, 0.5, 0.7), strict=False):
        scales[:, index[g]] = level
    size = np.array([1.4 if "Mono" in ct or "DC" in ct else 1.0 for ct in params.cell_types])
    target_total = 1800.0 * size * n_g / 2000.0
    scales *= (target_total / scales.sum(axis=1))[:, None]
    return scales


def _patients(params, rng) -> pd.DataFrame:
    """Donors with endotype, strength, sex, batch and interferon status (balanced by arm)."""
    width = max(2, len(str(max(params.n_case, params.n_control))))
    lo, hi = params.strength_range
    rows = []
    for arm, n, prefix in (("case", params.n_case, "P"), ("control", params.n_control, "C")):
        sex_offset, batch_offset = int(rng.integers(2)), int(rng.integers(2))
        n_ifn = 0 if params.ifn_fraction == 0 else max(1, round(params.ifn_fraction * n))
        ifn = set(rng.choice(n, size=n_ifn, replace=False).tolist())
        for i in range(n):
            case = arm == "case"
            if params.batch_confounded:
                batch = "batch2" if case else "batch1"
            else:
                batch = f"batch{(i + batch_offset) % 2 + 1}"
            rows.append(
                {
                    "patient_id": f"{prefix}{i + 1:0{width}d}",
                    "condition": arm,
                    "endotype": ENDOTYPE_NAMES[i % params.n_endotypes]
                    if case and params.disease
                    else "",
                    "strength": float(rng.uniform(lo, hi)) if case and params.disease else 0.0,
                    "sex": "F" if (i + sex_offset) % 2 == 0 else "M",
                    "batch": batch,
                    "ifn_high": i in ifn,
                }
            )
    return pd.DataFrame(rows)


def _inputs(params, index, endotypes, shared, patients):
    """External inputs (T, C, G): control (shared challenge) and one per case patient."""
    n_t, n_c, n_g = len(params.time_points), len(params.cell_types), len(index)
    u = np.zeros((n_t, n_c, n_g))
    peak = min(2, n_t - 1)
    profile = np.array([np.exp(-0.5 * (t - peak) ** 2) if t > 0 else 0.0 for t in range(n_t)])
    for g in shared:
        u[:, :, index[g]] = 0.4 * profile[:, None]
    by_name = {e["name"]: e for e in endotypes}
    cases = {}
    for row in patients[patients["condition"] == "case"].itertuples():
        uc = u.copy()
        if row.endotype:
            e = by_name[row.endotype]
            for d in e["drivers"]:
                uc[params.onset_index :, e["path"][0], index[d]] += (
                    params.driver_input * row.strength
                )
        cases[row.patient_id] = uc
    return u, cases
