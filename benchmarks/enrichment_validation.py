"""Enrichment stage time on a demo-sized DE table, and validation of a run's rankings.

Usage::

    python benchmarks/enrichment_validation.py [RUN_DIR] [--simulate] [--disease DOID:4481]

1. *Speed.* A demo-sized DE table (6 cell types x 5 time points x 2,000 real gene symbols from
   the Hallmark and Reactome GMTs, with a few planted Hallmark sets per context; ``--simulate``
   uses ``simulate_cohort("demo")`` + ``differential_expression`` instead, ~1 min more) goes
   through :func:`omicstwin.tl.enrich.enrichment` with its defaults (prerank: Hallmark,
   multilevel p-values, 1,000 permutations; ORA of the run's rankings: all collections). Peers
   measured in the same run: one context with the other prerank choices (Reactome, GO BP, the
   classic permutation test), extrapolated to the whole table.
2. *Validation.* The run's rankings (default ``/tmp/fixture/run_small``) against known biology
   of a disease (default allergic rhinitis), next to the random baseline columns. The run comes
   from a simulated cohort whose disease is not allergic rhinitis, so precision should sit at
   the random level; as a sanity peer the same precision at k is computed against the
   simulator's own truth (planted reversal targets, ``uns["truth"]`` of the run's input), where
   the rankings should do well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMICSTWIN_DATA_PATH", str(REPO.parent / "shared" / "data"))

from omicstwin.bench.known_biology import precision_at_k, validate_rankings  # noqa: E402
from omicstwin.io.manifests import load_gene_sets  # noqa: E402
from omicstwin.tl.enrich import (  # noqa: E402
    context_ranking,
    enrichment,
    gsea_prerank,
    ranked_items,
)

CELL_TYPES = ["B", "CD4 T", "CD8 T", "NK", "CD14 Mono", "CD16 Mono"]
TIMES = [0.0, 6.0, 12.0, 24.0, 48.0]


def fabricated_de(seed: int = 0, n_genes: int = 2000) -> pd.DataFrame:
    """Demo-sized DE table from real symbols, three planted Hallmark sets per context."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    hallmark = load_gene_sets("msigdb_hallmark")
    pool = sorted(
        {g for s in hallmark.values() for g in s}
        | {g for s in load_gene_sets("reactome_pathways").values() for g in s}
    )
    genes = np.array(sorted(rng.choice(pool, n_genes, replace=False)))
    index = {g: i for i, g in enumerate(genes)}
    terms = sorted(hallmark)
    frames = []
    for cell_type in CELL_TYPES:
        for t in TIMES:
            z = rng.normal(size=n_genes)
            for term in rng.choice(terms, 3, replace=False):
                members = [index[g] for g in hallmark[term] if g in index]
                chosen = rng.choice(members, int(0.6 * len(members)), replace=False)
                z[chosen] += rng.choice([-1.0, 1.0]) * 2.0
            frames.append(
                pd.DataFrame(
                    {
                        "cell_type": cell_type,
                        "time": t,
                        "gene": genes,
                        "log_fc": 0.4 * z,
                        "p_value": 2 * stats.norm.sf(np.abs(z)),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def simulated_de() -> pd.DataFrame:
    from omicstwin.datasets import simulate_cohort
    from omicstwin.tl.de import differential_expression

    return differential_expression(simulate_cohort("demo"))


def read_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def speed(de: pd.DataFrame, rankings: dict[str, pd.DataFrame | None]) -> None:
    n_contexts = de.groupby(["cell_type", "time"]).ngroups
    n_genes = de.groupby(["cell_type", "time"]).size().median()
    print(f"DE table: {len(de):,} rows, {n_contexts} contexts x {n_genes:.0f} genes")
    start = time.perf_counter()
    table = enrichment(
        de, rankings.get("rank_targets"), rankings.get("rank_disease_genes"), threads=2
    )
    total = time.perf_counter() - start
    counts = table.groupby(["analysis", "ranking"]).size().to_dict()
    print(f"enrichment() with defaults: {total:.2f} s wall ({os.cpu_count()} cores); rows {counts}")
    significant = table[(table["analysis"] == "prerank") & (table["q_value"] < 0.05)]
    print(f"  prerank sets at q < 0.05: {len(significant)}")

    # Peers: one context with the other choices, extrapolated to the whole table.
    context = de[(de["cell_type"] == de["cell_type"].iloc[0]) & (de["time"] == de["time"].iloc[0])]
    ranking = context_ranking(context)
    print("per-context cost of the prerank choices (extrapolated to the table):")
    peers = [
        ("msigdb_hallmark", "multilevel"),
        ("msigdb_hallmark", "permutation"),
        ("reactome_pathways", "multilevel"),
        ("go_biological_process", "multilevel"),
    ]
    base = None
    for collection, method in peers:
        sets = load_gene_sets(collection)
        start = time.perf_counter()
        result = gsea_prerank(ranking, sets, method=method, threads=2)
        seconds = time.perf_counter() - start
        base = base or seconds
        print(
            f"  {collection:<22} {method:<11} {len(result):>4} sets  {seconds:6.2f} s/context  "
            f"~{seconds * n_contexts:6.1f} s/table  ({seconds / base:4.1f}x default)"
        )


def truth_targets(run_dir: Path) -> list[str] | None:
    """Planted reversal targets from the run input's ``uns["truth"]``, if it is readable."""
    try:
        config = json.loads((run_dir / "run.json").read_text())["config"]
        import anndata as ad

        truth = ad.read_h5ad(config["data"], backed="r").uns["truth"]["reversal"]
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return truth.loc[truth["planted"].astype(bool), "gene"].astype(str).tolist()


def validation(run_dir: Path, disease: str, rankings: dict[str, pd.DataFrame | None]) -> None:
    given = {k: v for k, v in rankings.items() if v is not None}
    if not given:
        print(f"no rank_*.parquet in {run_dir}; skipping validation")
        return
    start = time.perf_counter()
    table = validate_rankings(disease=disease, **given)
    seconds = time.perf_counter() - start
    name = table["disease_name"].iloc[0]
    print(f"\nvalidation of {run_dir} against {disease} ({name}), {seconds:.2f} s:")
    table["lift"] = table["precision"] / table["random_precision"]
    columns = [
        "ranking",
        "reference",
        "k",
        "n_ranked",
        "n_known",
        "hits",
        "precision",
        "random_precision",
        "random_p95",
        "lift",
        "p_value",
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[columns].round(4).to_string(index=False))
    above = int((table["precision"] > table["random_p95"]).sum())
    print(
        f"rows above random_p95: {above} of {len(table)} (a ranking unrelated to the disease: ~5%)"
    )

    planted = truth_targets(run_dir)
    if planted is None or rankings.get("rank_targets") is None:
        print("sanity peer skipped: the run's input cohort (with uns['truth']) is not readable")
        return
    items = ranked_items(rankings["rank_targets"], "genes")
    peer = precision_at_k(items, planted, (10, 20, 50), n_random=1000, seed=0)
    peer["lift"] = peer["precision"] / peer["random_precision"]
    print(f"\nsanity peer: rank_targets vs the simulator's {len(planted)} planted reversal targets")
    print(peer.round(4).to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="/tmp/fixture/run_small")
    parser.add_argument("--simulate", action="store_true", help="simulate the demo cohort")
    parser.add_argument("--disease", default="DOID:4481")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    rankings = {
        name: read_table(run_dir, name)
        for name in ("rank_disease_genes", "rank_targets", "rank_drugs")
    }
    de = simulated_de() if args.simulate else fabricated_de()
    speed(de, rankings)
    validation(run_dir, args.disease, rankings)


if __name__ == "__main__":
    main(sys.argv[1:])
