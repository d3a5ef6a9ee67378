"""The twin's network model against the simulator's truth, each beside a shuffled control.

On the `demo` cohort (30k cells x 2,000 genes, 6 cell types x 7 time points):
1. DE per cell type x time (time);
2. upstream regulators (CollecTRI prior), Li 2022 ranking: ranks of the planted drivers
   (target: in the top 3), vs the same pipeline after permuting case/control across donors;
3. intercellular layer: recall of the planted ligand-receptor edges among the top 20 edges of
   each time point at which their ligand is up (target >= 0.8), vs shuffled labels;
4. per-context GRNs (default method, Lambert TFs as candidates): per-cell-type AUPRC ratio
   against the planted network over candidate pairs (TF x gene), vs expression shuffled within
   each gene (destroys co-expression, keeps marginals).

Run: `python benchmarks/twin_networks.py [--cohort FILE.h5ad] [--skip-grn]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def shuffle_labels(adata, seed: int = 0):
    """Permute the condition of donors (donor-level labels stay consistent)."""
    out = adata.copy()
    arm = out.obs.groupby("donor", observed=True)["condition"].first().astype(str)
    permuted = dict(
        zip(arm.index, np.random.default_rng(seed).permutation(arm.to_numpy()), strict=True)
    )
    out.obs["condition"] = out.obs["donor"].astype(str).map(permuted).to_numpy()
    return out


def driver_ranks(adata, de, collectri):
    from omicstwin.tl.regulators import rank_regulators, upstream_regulators

    ranking = rank_regulators(upstream_regulators(de, collectri), scheme="li2022")
    rank = dict(zip(ranking["regulator"], ranking["rank"], strict=True))
    out = {}
    for row in adata.uns["truth"]["endotypes"].itertuples():
        out[row.endotype] = {d: rank.get(d) for d in row.drivers.split(";")}
    return out, ranking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", help="h5ad of the demo cohort (default: simulate it)")
    parser.add_argument("--skip-grn", action="store_true")
    args = parser.parse_args()
    import anndata as ad

    from omicstwin.bench.truth import network_auprc_ratio, planted_lr_recall
    from omicstwin.datasets import SimulationPriors, simulate_cohort
    from omicstwin.io import load_gene_list, load_table
    from omicstwin.tl.de import differential_expression
    from omicstwin.tl.networks import context_grns, intercellular_edges

    adata = ad.read_h5ad(args.cohort) if args.cohort else simulate_cohort("demo")
    priors = SimulationPriors.from_manifests()
    lr = load_table("liana_consensus")
    shuffled = shuffle_labels(adata)
    print(f"cohort: {adata.n_obs} cells x {adata.n_vars} genes")

    results = {}
    for name, data in (("ours", adata), ("shuffled labels", shuffled)):
        started = time.process_time()
        de = differential_expression(data, key_added=None)
        de_cpu = time.process_time() - started
        ranks, ranking = driver_ranks(adata, de, priors.collectri)
        edges = intercellular_edges(data, lr, key_added=None)
        results[name] = (de, ranks, planted_lr_recall(adata, edges), ranking)
        n_deg = int(((de["q_value"] < 0.05) & (de["log_fc"].abs() >= 0.5)).sum())
        print(f"[{name}] DE: {de_cpu:.1f} s CPU, {n_deg} DEG rows at q < 0.05 and |log2 FC| >= 0.5")
    for name, (_, ranks, recall, ranking) in results.items():
        flat = [r for endo in ranks.values() for r in endo.values()]
        text = "; ".join(
            f"{e}: " + ", ".join(f"{g} #{r}" for g, r in d.items()) for e, d in ranks.items()
        )
        top3 = sum(r is not None and r <= 3 for r in flat)
        print(f"[{name}] planted driver ranks (Li 2022): {text}; {top3}/{len(flat)} in top 3")
        print(f"[{name}]   top 5: {', '.join(ranking.head(5)['regulator'])}")
        print(
            f"[{name}] planted LR edges in the top 20 per time point: recall {recall[0]:.2f} "
            f"({recall[1]}/{recall[2]}; target >= 0.8)"
        )

    if args.skip_grn:
        return
    tfs = [g for g in load_gene_list("lambert2018_tfs") if g in set(adata.var_names)]
    rng = np.random.default_rng(0)
    scrambled = adata.copy()
    x = scrambled.X.toarray()
    for j in range(x.shape[1]):
        x[:, j] = x[rng.permutation(x.shape[0]), j]
    scrambled.X = x
    for name, data in (("ours", adata), ("shuffled expression", scrambled)):
        started, cpu = time.perf_counter(), time.process_time()
        edges = context_grns(data, regulators=tfs, top_k=20)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        scores = network_auprc_ratio(adata, edges, tfs)
        text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(scores.items()))
        print(
            f"[{name}] per-context GRNs: {edges['source_cell_type'].nunique()} cell types, "
            f"{len(edges)} edges, {wall:.1f} s wall / {cpu:.1f} s CPU; AUPRC ratio per cell "
            f"type vs truth: {text}; median {np.median(list(scores.values())):.2f}"
        )
    pd.set_option("display.width", 150)


if __name__ == "__main__":
    main()
