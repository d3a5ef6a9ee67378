"""Perturbation engine: speed against a one-at-a-time loop, screen budget, accuracy vs truth.

1. Speed: all 2,000 single-gene knockouts on a 2,000-gene network at once (sparse products)
   vs CellOracle's approach (one perturbation at a time, dense coefficient matrix), same math:
   results must agree to 1e-9.
2. Budget: a full single-gene screen of a 2,000-gene twin with 6 cell types x 7 time points and
   100 null replicates (target <= 120 s on 2 cores).
3. Accuracy on the simulated demo cohort (fit the twin from the data, screen knockouts):
   precision at 10 of the planted genes (drivers and cascade members), planted drivers' ranks,
   and per patient whether the best-ranked planted driver is one of the patient's own endotype,
   beside baselines: ranking by largest |log2 FC| in DE, by out-degree in the twin, and random.

Run: `python benchmarks/perturb.py [--skip-accuracy] [--cohort FILE.h5ad]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import sparse


def synthetic_network(n_genes=2000, n_regulators=300, per_target=10, seed=0):
    rng = np.random.default_rng(seed)
    regs = rng.choice(n_genes, n_regulators, replace=False)
    rows = np.concatenate([rng.choice(regs, per_target, replace=False) for _ in range(n_genes)])
    cols = np.repeat(np.arange(n_genes), per_target)
    keep = rows != cols
    data = rng.normal(0, 0.15, size=keep.sum())
    return sparse.csr_matrix((data, (rows[keep], cols[keep])), shape=(n_genes, n_genes))


def speed() -> None:
    from omicstwin.tl.perturb import clamp_matrix, propagate, single_gene_perturbations

    n = 2000
    w = synthetic_network(n)
    z0 = np.random.default_rng(1).uniform(0, 3, n)
    genes = [f"g{i}" for i in range(n)]
    perts = single_gene_perturbations(genes)
    mask, shift = clamp_matrix(perts, genes, z0)
    started = time.perf_counter()
    fast = propagate(z0, w, mask, shift, n_steps=3)
    t_fast = time.perf_counter() - started
    dense = w.toarray()  # CellOracle keeps a dense coefficient matrix per cluster
    started = time.perf_counter()
    slow = np.zeros_like(fast)
    for i in range(n):
        delta = shift[i].copy()
        for _ in range(3):
            delta = delta @ dense
            delta[mask[i]] = shift[i][mask[i]]
            delta = np.maximum(delta, -z0)
        slow[i] = delta
    t_slow = time.perf_counter() - started
    diff = float(np.max(np.abs(fast - slow)))
    print(
        f"[speed] 2,000 single-gene knockouts, 2,000-gene network, 3 steps: vectorised "
        f"{t_fast:.2f} s vs one-at-a-time loop {t_slow:.2f} s -> {t_slow / t_fast:.0f}x; "
        f"max |difference| {diff:.1e} ({'ok' if diff <= 1e-9 else 'MISMATCH'})"
    )
    print(
        "[speed] for scale: CellOracle 0.20 spends ~18 s per knockout on 2,000 genes x 3,000 cells "
        "(1.1-1.7 s of it propagation), ~30 min for 100 TFs"
    )


def synthetic_twin(n_genes=2000, n_types=6, n_times=7, seed=0):
    from omicstwin.tl.twin import Twin

    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    control = rng.uniform(0, 3, size=(n_times, n_types, n_genes))
    case = control + rng.normal(0, 0.3, size=control.shape) * (rng.random(n_genes) < 0.1)
    case = np.maximum(case, 0)
    nets = [
        [synthetic_network(n_genes, seed=seed + t * n_types + c) for c in range(n_types)]
        for t in range(n_times)
    ]
    temporal = [
        [
            synthetic_network(n_genes, per_target=3, seed=99 + t * n_types + c) * 0.3
            if t < n_times - 1
            else None
            for c in range(n_types)
        ]
        for t in range(n_times)
    ]
    inter = pd.DataFrame(
        {
            "time_index": rng.integers(n_times, size=50),
            "sender": rng.integers(n_types, size=50),
            "ligand": rng.integers(n_genes, size=50),
            "receiver": rng.integers(n_types, size=50),
            "receptor": rng.integers(n_genes, size=50),
            "kappa": 1.0,
        }
    )
    return Twin(
        genes,
        [f"ct{c}" for c in range(n_types)],
        list(range(n_times)),
        {"case": case, "control": control},
        {},
        nets,
        temporal,
        inter,
    )


def budget(scaling: bool) -> None:
    from omicstwin.parallel import resolve_client
    from omicstwin.tl.perturb import single_gene_perturbations
    from omicstwin.tl.twin import target_screen

    twin = synthetic_twin()
    perts = single_gene_perturbations(twin.genes)
    started, cpu = time.perf_counter(), time.process_time()
    ranking, per_context = target_screen(twin, perts, seed=0)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"[budget] full screen: {len(perts)} knockouts x 6 cell types x 7 time points + 100 null "
        f"twins (100 perturbations each, pooled): {wall:.1f} s wall, {cpu:.1f} s CPU in process "
        f"(target <= 120 s on 2 cores); {len(per_context)} per-context rows"
    )
    if not scaling:
        return
    times = {}
    for workers in (1, 2):
        with resolve_client(n_workers=workers) as client:
            started = time.perf_counter()
            remote, _ = target_screen(twin, perts, seed=0, client=client)
            times[workers] = time.perf_counter() - started
        same = remote.equals(ranking)
        print(
            f"[scaling] {workers} worker process(es): {times[workers]:.1f} s wall; ranking "
            f"identical to in-process: {same}"
        )
    print(
        f"[scaling] 1 -> 2 workers: {times[1] / times[2]:.2f}x (2 cores shared with the "
        "scheduler and this client)"
    )


def accuracy(cohort: str | None) -> None:
    import anndata as ad

    from omicstwin.datasets import simulate_cohort
    from omicstwin.io import load_gene_list, load_table
    from omicstwin.tl.de import differential_expression
    from omicstwin.tl.networks import (
        context_grns,
        intercellular_edges,
        multicellular_network,
        temporal_edges,
    )
    from omicstwin.tl.patients import patient_screen
    from omicstwin.tl.twin import fit_twin, genes_from_ids, target_screen

    adata = ad.read_h5ad(cohort) if cohort else simulate_cohort("demo")
    truth = adata.uns["truth"]
    lr = load_table("liana_consensus")
    tfs = set(load_gene_list("lambert2018_tfs"))
    receptors = set(lr["receptor"].str.split("_").explode())
    regulators = [g for g in adata.var_names if g in tfs or g in receptors]
    started = time.perf_counter()
    edges = multicellular_network(
        context_grns(adata, regulators=regulators, key_added=None),
        intercellular_edges(adata, lr, key_added=None),
        temporal_edges(adata, regulators=regulators, key_added=None),
    )
    twin = fit_twin(adata, edges, regulators=regulators, top_k=10)
    fitted = time.perf_counter() - started
    started = time.perf_counter()
    ranking, _ = target_screen(twin, seed=0)
    screened = time.perf_counter() - started
    ranking["gene"] = genes_from_ids(ranking["name"])
    endotypes = truth["endotypes"]
    planted = set()
    for col in ("drivers", "cascade_ligands", "cascade_receptors", "cascade_tfs"):
        planted |= set(";".join(endotypes[col]).split(";"))
    drivers = set(";".join(endotypes["drivers"]).split(";"))
    candidates = ranking["gene"].tolist()

    de = differential_expression(adata, key_added=None)
    by_lfc = (
        de[de["gene"].isin(candidates)]
        .assign(a=lambda f: f["log_fc"].abs())
        .groupby("gene")["a"]
        .max()
        .sort_values(ascending=False)
        .index.tolist()
    )
    degree = np.zeros(len(twin.genes))
    for row in twin.intracellular:
        for w in row:
            if w is not None:
                degree += np.asarray((w != 0).sum(axis=1)).ravel()
    by_degree = [
        twin.genes[i]
        for i in np.argsort(-degree, kind="stable")
        if twin.genes[i] in set(candidates)
    ]
    random_p10 = len(planted & set(candidates)) / len(candidates)

    def p_at_10(order):
        return np.mean([g in planted for g in order[:10]])

    def driver_ranks(order):
        position = {g: i + 1 for i, g in enumerate(order)}
        return {d: position.get(d) for d in sorted(drivers)}

    print(
        f"[accuracy] twin fitted in {fitted:.0f} s, {len(candidates)} knockouts screened with 20 "
        f"null twins in {screened:.0f} s"
    )
    for name, order in (
        ("twin reversal", candidates),
        ("|log2 FC| (DE)", by_lfc),
        ("out-degree", by_degree),
    ):
        print(
            f"[accuracy] {name:>15}: precision@10 planted {p_at_10(order):.1f}; drivers' ranks "
            f"{driver_ranks(order)}"
        )
    print(f"[accuracy]          random: precision@10 planted {random_p10:.2f} (expected)")
    print(f"[accuracy] top 10 by reversal: {', '.join(candidates[:10])} (target precision >= 0.8)")

    patients = patient_screen(twin)
    own = dict(zip(truth["drivers"]["patient_id"], truth["drivers"]["endotype"], strict=True))
    endo_drivers = {r.endotype: set(r.drivers.split(";")) for r in endotypes.itertuples()}
    endo_planted = {
        r.endotype: set(
            ";".join([r.drivers, r.cascade_ligands, r.cascade_receptors, r.cascade_tfs]).split(";")
        )
        for r in endotypes.itertuples()
    }
    lead_driver = lead_top = 0
    for patient, table in patients.groupby("patient_id"):
        order = table.sort_values("rank")["target"].tolist()
        best_driver = next((g for g in order if g in drivers), None)
        lead_driver += best_driver in endo_drivers[own[patient]]
        lead_top += order[0] in endo_planted[own[patient]]
    n = patients["patient_id"].nunique()
    print(
        f"[accuracy] per patient: best-ranked planted driver is the patient's own endotype's in "
        f"{lead_driver}/{n}; top target is a planted gene of the own endotype in {lead_top}/{n} "
        f"(target >= 80%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--cohort", help="h5ad of the demo cohort (default: simulate it)")
    args = parser.parse_args()
    speed()
    budget(not args.skip_scaling)
    if not args.skip_accuracy:
        accuracy(args.cohort)


if __name__ == "__main__":
    main()
