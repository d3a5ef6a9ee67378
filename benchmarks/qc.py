"""Cost of the real-file steps on the demo cohort: gene id harmonisation and QC (issue 13).

On the demo cohort (30,000 cells x 2,000 genes), CPU seconds (``time.process_time``, robust to
other processes sharing the cores) and wall seconds of:

1. the baseline QC of the previous release: ``qc_masks`` (scanpy's filter_cells/filter_genes)
   and the old 7-column group table;
2. the QC now run by the preprocess stage: ``quality_control`` with the default config
   (per-cell metrics, mitochondrial cut at 20%, doublets off) and the extended group table;
   it must keep exactly the cells and genes the baseline keeps;
3. the gene id plan of the demo's names with the run's priors as ``keep`` (loading the HGNC
   and prior tables included): it must be the identity (no renaming: demo results unchanged);
4. the same plan for the demo's genes renamed to versioned Ensembl ids: it must give back the
   demo's names in order;
5. scrublet per donor x time (``qc.doublets: true``), for information: the simulator makes no
   doublets, so every call is a false positive.

``--identity DIR`` also runs ``pipelines/demo.yaml`` twice end to end, on the demo written as
a symbol file and as a versioned-Ensembl-id file (under DIR), and compares every table.

Run: ``python benchmarks/qc.py [--no-doublets] [--identity DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def timed(label: str, function, *args, **kwargs):
    cpu, wall = time.process_time(), time.perf_counter()
    result = function(*args, **kwargs)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{label:<58} cpu {cpu:7.2f} s   wall {wall:7.2f} s")
    return result


def baseline_qc(cohort):
    """The previous release's preprocess: qc_masks and the old table."""
    from omicstwin.pp.qc import qc_masks

    keep_cells, keep_genes, genes_per_cell = qc_masks(cohort.counts, min_genes=10, min_cells=3)
    frame = cohort.obs[["condition", "donor", "time", "cell_type"]].copy()
    frame["kept"], frame["genes"] = keep_cells, genes_per_cell
    table = (
        frame.groupby(["condition", "donor", "time", "cell_type"], observed=True)
        .agg(n_cells=("kept", "size"), n_cells_kept=("kept", "sum"), median=("genes", "median"))
        .reset_index()
    )
    return keep_cells, keep_genes, table


def prior_genes() -> frozenset[str]:
    from omicstwin.pipeline import RunConfig
    from omicstwin.pipeline.stage import RunContext

    context = RunContext(RunConfig(data="x.h5ad"), out=None, data_path=None)
    return context.prior_genes


def ensembl_names(genes) -> list[str]:
    from omicstwin.io.manifests import load_table

    ids = load_table("hgnc_gene_ids").dropna(subset=["gene", "ensembl_gene_id"])
    ids = ids.drop_duplicates(["gene", "ensembl_gene_id"])
    ids = ids[~ids["ensembl_gene_id"].duplicated(keep=False) & ~ids["gene"].duplicated(keep=False)]
    id_of = dict(zip(ids["gene"], ids["ensembl_gene_id"], strict=True))
    return [f"{id_of[g]}.{3 + i % 5}" if g in id_of else g for i, g in enumerate(genes)]


def demo_identity(adata, root: Path) -> None:
    """Run the demo config on a symbol file and an Ensembl-id file; compare every table."""
    from omicstwin.pipeline import load_config, run_pipeline

    root.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "symbols.h5ad")
    renamed = adata.copy()
    renamed.var_names = ensembl_names(list(adata.var_names))
    renamed.write_h5ad(root / "ensembl.h5ad")
    del renamed
    demo = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
    for name in ("symbols", "ensembl"):
        config = load_config(demo, {"data": str(root / f"{name}.h5ad")})
        run = timed(f"6. demo pipeline on the {name} file", run_pipeline, config, root / name)
        print(f"   genes: {run['genes']}")
    differ = []
    tables = sorted((root / "symbols").glob("*.parquet"))
    for path in tables:
        if path.stem != "gene_ids":
            other = pd.read_parquet(root / "ensembl" / path.name)
            if not pd.read_parquet(path).equals(other):
                differ.append(path.stem)
    print(f"   tables identical (exactly): {len(tables) - 1 - len(differ)} of {len(tables) - 1}")
    print(f"   differing: {differ or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-doublets", action="store_true")
    parser.add_argument("--identity", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    import scanpy  # noqa: F401  (imported before the timings: both QCs use it)

    from omicstwin.datasets import generate
    from omicstwin.io.genes import gene_plan
    from omicstwin.pp.cohort import Cohort
    from omicstwin.pp.qc import quality_control

    adata = timed("simulate the demo cohort", generate, "demo", seed=0)
    cohort = Cohort.from_data(adata, validate=False)
    print(f"cohort: {cohort.n_cells} cells x {len(cohort.genes)} genes")
    base_cells, base_genes, base_table = timed(
        "1. baseline QC (qc_masks + old table)", baseline_qc, cohort
    )
    keep_cells, keep_genes, table = timed(
        "2. quality_control, default config (doublets off)",
        quality_control,
        cohort.counts,
        cohort.obs,
        cohort.genes,
    )
    same = np.array_equal(keep_cells, base_cells) and np.array_equal(keep_genes, base_genes)
    old = table[["n_cells", "n_cells_kept", "median_genes"]].to_numpy()
    same_table = np.array_equal(old, base_table[["n_cells", "n_cells_kept", "median"]].to_numpy())
    print(f"   same cells and genes kept: {same}; old table columns identical: {same_table}")
    print(
        "   median % MT- counts per group: "
        f"{table['median_pct_mito'].median():.3f}, max of group medians "
        f"{table['median_pct_mito'].max():.3f}; cells above 20%: {int(table['n_high_mito'].sum())}"
    )
    keep = timed("   priors' gene names (keep set)", prior_genes)
    names = list(cohort.genes)
    plan = timed("3. gene plan of the demo's symbols", gene_plan, names, keep=keep)
    print(f"   identity: {plan.identity}; {plan.one_line()}")
    renamed = ensembl_names(names)
    n_ids = sum(n.startswith("ENSG") for n in renamed)
    plan = timed("4. gene plan of the demo's genes as Ensembl ids", gene_plan, renamed, keep=keep)
    print(
        f"   {n_ids} of {len(names)} names were Ensembl ids; back to the demo's names in "
        f"order: {plan.genes.tolist() == names}; {plan.one_line()}"
    )
    if not args.no_doublets:
        _, _, doublets = timed(
            "5. quality_control with scrublet per donor x time",
            quality_control,
            cohort.counts,
            cohort.obs,
            cohort.genes,
            doublets=True,
        )
        scored = doublets["n_cells"].sum()
        print(
            f"   called doublets: {int(doublets['n_doublets'].sum())} of {scored} cells "
            f"(all false positives: the simulator makes singlets only); "
            f"samples: {cohort.obs.groupby(['donor', 'time']).ngroups}"
        )
    if args.identity is not None:
        demo_identity(adata, args.identity)


if __name__ == "__main__":
    main()
