"""Ligand -> target prior build: ``python benchmarks/prior_build.py [--source S] [--slow N]``.

Prints, for one source's real inputs (default ``omnipath``):

1. CPU and wall seconds and peak memory of the vectorised build of every ligand's programme
   (:func:`omicstwin.tl.signalling.ligand_target_prior`), and the size of the result;
2. the baseline in the same run: a per-ligand reference on the same lifted graph (an explicit
   networkx DiGraph, ``nx.pagerank`` per ligand, Python loops over the regulons), on a seeded
   random subsample of ``N`` ligands, extrapolated linearly to all ligands (said so in the
   output), with the agreement of the two on that subsample, and the ratio (``--slow 0`` skips
   it: NicheNet's lifted graph, ~4 million edges, does not fit networkx in a few GB);
3. a sanity check: for IFNG, TNF, IL4, IL1B and TGFB1, the rank of textbook targets in the
   ligand's own programme (all targets kept, so ranks are not cut at 250) next to their median
   rank across all ligands' programmes (a hub target ranks high for every ligand).

Wall times on a shared machine are noisy; CPU seconds are the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMICSTWIN_DATA_PATH", str(REPO.parent / "shared" / "data"))

from omicstwin.io import priors as store  # noqa: E402
from omicstwin.tl import signalling as sig  # noqa: E402

CANONICAL = {
    "IFNG": ["IRF1", "STAT1", "CXCL10", "CXCL9", "GBP1", "CIITA", "IDO1"],
    "TNF": ["NFKBIA", "TNFAIP3", "CXCL8", "ICAM1", "NFKB1", "BIRC3"],
    "IL4": ["SOCS1", "CISH", "CCL17", "FCER2", "GATA3"],
    "IL1B": ["IL6", "CXCL8", "NFKBIA", "PTGS2", "CCL2"],
    "TGFB1": ["SERPINE1", "SMAD7", "SKIL", "CCN2", "COL1A1", "TGFBI"],
}


def _timed(func, *args, **kwargs):
    cpu, wall = time.process_time(), time.perf_counter()
    value = func(*args, **kwargs)
    return value, time.process_time() - cpu, time.perf_counter() - wall


def slow_reference(ligands, lr, signalling, tf_targets, *, params) -> pd.DataFrame:
    """Per ligand: networkx PageRank on the explicit lifted graph, loops over the regulons."""
    edges = sig._signed_edges(signalling)
    lifted = nx.DiGraph()
    nodes = sorted(set(edges["source"]) | set(edges["target"]))
    lifted.add_nodes_from((g, c) for g in nodes for c in "+-")
    flip = {"+": "-", "-": "+"}
    for a, b, sign in edges.itertuples(index=False):
        for c in "+-":
            lifted.add_edge((a, c), (b, c if sign > 0 else flip[c]))
    regulons = sig._regulons(tf_targets, sig.COLLECTRI_COMPLEXES)
    seed_sets = sig._seed_sets_from_pairs(lr, "ligand")
    rows = []
    for ligand in ligands:
        seeds = {(g, "+"): w for g, w in seed_sets[ligand].items() if (g, "+") in lifted}
        rank = nx.pagerank(lifted, alpha=params["damping"], personalization=seeds, tol=1e-12)
        total = {g: rank[(g, "+")] + rank[(g, "-")] for g in nodes}
        cut = np.quantile(list(total.values()), params["signal_quantile"])
        up, down = {}, {}
        for tf, target, weight in regulons.itertuples(index=False):
            if tf in total and total[tf] >= cut:
                same, other = (rank[(tf, "+")], rank[(tf, "-")])[:: 1 if weight > 0 else -1]
                up[target] = up.get(target, 0.0) + abs(weight) * same
                down[target] = down.get(target, 0.0) + abs(weight) * other
        scored = sorted(
            ((t, up[t] + down[t], 1 if up[t] >= down[t] else -1) for t in up if t != ligand),
            key=lambda row: (-row[1], row[0]),
        )
        scored = [row for row in scored if row[1] > 0][: params["max_targets"]]
        rows += [(ligand, *row) for row in scored]
    return pd.DataFrame(rows, columns=["ligand", "target", "weight", "sign"])


def sanity(lr, signalling, tf_targets, params) -> None:
    full = sig.ligand_target_prior(lr, signalling, tf_targets, **{**params, "max_targets": None})
    full["rank"] = full.groupby("ligand").cumcount() + 1
    n_targets = full.groupby("ligand").size()
    median_rank = full.groupby("target")["rank"].median()
    print("\nsanity: rank of textbook targets in the ligand's programme (all targets kept)")
    print("        [median rank of that target over all ligands' programmes]")
    for ligand, targets in CANONICAL.items():
        own = full[full["ligand"] == ligand].set_index("target")
        if own.empty:
            print(f"  {ligand:6s} no programme (no receptor in the graph)")
            continue
        cells = []
        for target in targets:
            if target in own.index:
                sign = "+" if own.loc[target, "sign"] > 0 else "-"
                cells.append(
                    f"{target} {own.loc[target, 'rank']}{sign} [{median_rank[target]:.0f}]"
                )
            else:
                cells.append(f"{target} absent")
        top = sum(1 for t in targets if t in own.index and own.loc[t, "rank"] <= 250)
        print(
            f"  {ligand:6s} of {n_targets[ligand]:5d} targets; {top}/{len(targets)} in the top "
            "250: " + ", ".join(cells)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="omnipath", choices=sorted(store.SOURCES))
    parser.add_argument(
        "--slow", type=int, default=20, help="ligands in the slow reference (0: skip it)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lr = store.load_lr_pairs(args.source)
    signalling = store.load_signalling(args.source)
    tf_targets = store.load_tf_targets(args.source)
    params = {
        "damping": sig.DEFAULT_DAMPING,
        "signal_quantile": sig.DEFAULT_SIGNAL_QUANTILE,
        "max_targets": sig.DEFAULT_MAX_TARGETS,
    }
    print(
        f"source {args.source}: {len(lr)} ligand-receptor pairs, {len(signalling)} signalling "
        f"edges, {len(tf_targets)} TF -> target edges; parameters {params}"
    )
    fast, cpu, wall = _timed(sig.ligand_target_prior, lr, signalling, tf_targets, **params)
    ligands = sorted(fast["ligand"].unique())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    megabytes = fast.memory_usage(deep=True).sum() / 2**20
    print(
        f"vectorised: {len(ligands)} ligands in {cpu:.2f} s CPU ({wall:.2f} s wall), peak RSS "
        f"{peak:.0f} MB; result {len(fast):,} rows ({megabytes:.1f} MB in memory), "
        f"{fast['target'].nunique():,} distinct targets"
    )
    if args.slow > 0:
        reference(args, ligands, fast, cpu, lr, signalling, tf_targets, params)
    sanity(lr, signalling, tf_targets, params)


def reference(args, ligands, fast, cpu, lr, signalling, tf_targets, params) -> None:
    """Time the per-ligand networkx reference on a subsample and compare it with ``fast``."""
    rng = np.random.default_rng(args.seed)
    sample = sorted(rng.choice(ligands, size=min(args.slow, len(ligands)), replace=False))
    slow, slow_cpu, slow_wall = _timed(
        slow_reference, sample, lr, signalling, tf_targets, params=params
    )
    per_ligand = slow_cpu / len(sample)
    extrapolated = per_ligand * len(ligands)
    mine = fast[fast["ligand"].isin(sample)].reset_index(drop=True)
    same_order = mine[["ligand", "target"]].equals(slow[["ligand", "target"]])
    # the two solvers stop at different tolerances: order near-ties by weight at 6 digits
    rounded = [
        frame.assign(w=frame["weight"].map(lambda w: float(f"{w:.6g}")))
        .sort_values(["ligand", "w", "target"], ascending=[True, False, True])[["ligand", "target"]]
        .reset_index(drop=True)
        for frame in (mine, slow)
    ]
    same_order_6 = rounded[0].equals(rounded[1])
    both = mine.merge(slow, on=["ligand", "target"], how="outer", suffixes=("", "_slow"))
    shared = both.dropna(subset=["weight", "weight_slow"])
    worst = np.max(np.abs(shared["weight"] - shared["weight_slow"]) / shared["weight_slow"])
    print(
        f"per-ligand networkx reference: {len(sample)} random ligands (seed {args.seed}) in "
        f"{slow_cpu:.2f} s CPU ({slow_wall:.2f} s wall), {per_ligand:.3f} s per ligand; "
        f"EXTRAPOLATED linearly to {len(ligands)} ligands: {extrapolated:.1f} s CPU"
    )
    same_signs = (shared["sign"] == shared["sign_slow"]).mean()
    print(
        f"agreement on the subsample: {len(shared)} of {len(both)} (ligand, target) rows in "
        f"both, same order {same_order} (with weights at 6 significant digits "
        f"{same_order_6}), same signs {same_signs:.1%}, max relative weight "
        f"difference {worst:.1e}"
    )
    print(f"ratio (extrapolated reference / vectorised, CPU): {extrapolated / cpu:.1f}x")


if __name__ == "__main__":
    main()
