"""BEELINE GRN benchmark: ``python benchmarks/beeline.py [--scale] [--grnboost2 N] [--cli-timing]``.

Prints, in this order:

1. our re-scoring of BEELINE's shipped rankedEdges on HSC_2000_0 (must give GRNBOOST2 0.4166,
   GENIE3 0.4619, PIDC 0.4639), which checks the metric before anything is compared;
2. the same table as ``omicstwin bench beeline``: per model, our median AUPRC ratio and early
   precision ratio next to the published GRNBoost2 and best method, CPU seconds, and the
   shuffled-expression control;
3. optionally (``--grnboost2 N``) arboreto's GRNBoost2 regressions run in this process on the
   first N replicates of every model, next to ours on the same replicates;
4. optionally (``--cli-timing``) CPU seconds of the whole ``omicstwin grn`` process (start-up,
   imports, inference, writing) on replicate 0 of every model;
5. optionally (``--scale``) 5 synthetic contexts of 2,000 genes x 3,000 cells with 200
   candidate regulators, timed for our default method and the ridge baseline.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMICSTWIN_DATA_PATH", str(REPO.parent / "shared" / "data"))

from omicstwin.bench import beeline as bench  # noqa: E402
from omicstwin.datasets import beeline  # noqa: E402
from omicstwin.tl.grn import DEFAULT_METHOD, infer_grn  # noqa: E402


def main_table(models: list[str], replicates: int, method: str, seed: int) -> pd.DataFrame:
    print(bench.format_reproduction(bench.reproduce_published("HSC", 0)))
    print()
    results = bench.run_beeline_benchmark(models, replicates=replicates, method=method, seed=seed)
    print(bench.format_benchmark_table(bench.summarise_benchmark(results), method))
    return results


def grnboost2_same_run(models: list[str], replicates: int, ours: pd.DataFrame) -> None:
    print()
    print(
        f"GRNBoost2 (arboreto regressions, in-process) vs {DEFAULT_METHOD}, same run, "
        f"first {replicates} replicate(s): median AUPRC ratio / EPR / CPU s per dataset"
    )
    try:
        peer = bench.run_beeline_benchmark(
            models, replicates=replicates, method="grnboost2", controls=False
        )
    except ImportError as exc:
        print(f"  skipped: {exc}")
        return
    mine = ours[(ours["variant"] == "observed") & ours["dataset"].isin(peer["dataset"])]
    print(
        f"  {'model':<8} {'ours':>6} {'GRNB2':>6} | {'EPR':>5} {'GRNB2':>6} | "
        f"{'CPU ours':>8} {'GRNB2':>7}"
    )
    for model, group in peer.groupby("model", sort=False):
        m = mine[mine["model"] == model]
        print(
            f"  {model:<8} {m['auprc_ratio'].median():>6.2f} {group['auprc_ratio'].median():>6.2f}"
            f" | {m['epr'].median():>5.2f} {group['epr'].median():>6.2f} | "
            f"{m['cpu_s'].median():>8.3f} {group['cpu_s'].median():>7.2f}"
        )


def cli_timing(models: list[str]) -> None:
    """CPU seconds (user + sys) of the whole ``omicstwin grn`` process per dataset."""
    from omicstwin.io.manifests import resolve

    exe = Path(sys.executable).with_name("omicstwin")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "omicstwin.cli"]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            res, folder = beeline.model_set(model)
            base = f"inputs/{folder}/{model}/{beeline.dataset_name(model, 0)}"
            expr = resolve(res, f"{base}/ExpressionData.csv")
            ptime = resolve(res, f"{base}/PseudoTime.csv")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(
                [
                    *command,
                    "grn",
                    "--expression",
                    str(expr),
                    "--pseudotime",
                    str(ptime),
                    "--out",
                    f"{tmp}/rankedEdges.csv",
                ],
                check=True,
                capture_output=True,
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            times.append(cpu)
            print(f"  {model:<8} {cpu:.2f} s CPU")
    print(
        f"  median {np.median(times):.2f} s CPU per dataset (target <= 1.2), max {max(times):.2f}"
    )


def synthetic_context(
    n_cells: int = 3000, n_genes: int = 2000, n_regulators: int = 200, seed: int = 0
) -> tuple[np.ndarray, list[str], list[str], np.ndarray, set[tuple[str, str]]]:
    """A planted lagged network: regulators are smooth functions of pseudotime, every other gene
    follows 3 random regulators a little later, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 1, n_cells))
    freqs = rng.uniform(0.5, 3, (n_regulators, 2))
    phases = rng.uniform(0, 2 * np.pi, (n_regulators, 2))

    def regs_at(time_: np.ndarray) -> np.ndarray:
        waves = np.sin(2 * np.pi * freqs[None, :, :] * time_[:, None, None] + phases[None])
        return waves.sum(axis=2)

    tf = regs_at(t) + 0.3 * rng.standard_normal((n_cells, n_regulators))
    lagged = regs_at(t - 0.03)
    n_targets = n_genes - n_regulators
    parents = np.stack([rng.choice(n_regulators, 3, replace=False) for _ in range(n_targets)])
    signs = rng.choice([-1.0, 1.0], (n_targets, 3))
    targets = np.einsum("cts,ts->ct", lagged[:, parents], signs)
    targets += 0.5 * rng.standard_normal(targets.shape)
    genes = [f"g{i}" for i in range(n_genes)]
    regulators = genes[:n_regulators]
    truth = {(genes[p], genes[n_regulators + j]) for j in range(n_targets) for p in parents[j]}
    return np.hstack([tf, targets]), genes, regulators, t, truth


def scale(n_contexts: int = 5) -> None:
    print()
    print(
        f"Scale: {n_contexts} contexts x (2,000 genes x 3,000 cells, 200 candidate regulators); "
        "published: GRNBoost2 ~137 s for ONE context, CellOracle ~565 s for 5"
    )
    contexts = [synthetic_context(seed=s) for s in range(n_contexts)]
    for method in (DEFAULT_METHOD, "ridge"):
        wall = time.perf_counter()
        cpu = time.process_time()
        hits = []
        for x, genes, regs, t, truth in contexts:
            edges = infer_grn(x, genes, method=method, regulators=regs, pseudotime=t)
            top = edges.head(len(truth))
            hits.append(
                np.mean(
                    [(a, b) in truth for a, b in zip(top["source"], top["target"], strict=True)]
                )
            )
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        density = len(contexts[0][4]) / (200 * 1999)
        print(
            f"  {method:<13} {wall:6.2f} s wall total, {cpu:6.2f} s CPU "
            f"(target <= 10 s wall); early precision of the planted edges "
            f"{np.mean(hits):.2f} (random {density:.4f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=[*beeline.CURATED_MODELS, *beeline.SYNTHETIC_MODELS]
    )
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--method", default=DEFAULT_METHOD)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--grnboost2",
        type=int,
        default=0,
        metavar="N",
        help="also run arboreto's GRNBoost2 on the first N replicates",
    )
    parser.add_argument("--cli-timing", action="store_true")
    parser.add_argument("--scale", action="store_true")
    args = parser.parse_args()
    ours = main_table(args.models, args.replicates, args.method, args.seed)
    if args.grnboost2:
        grnboost2_same_run(args.models, args.grnboost2, ours)
    if args.cli_timing:
        print()
        print("CPU time of the whole `omicstwin grn` process (replicate 0 of each model):")
        cli_timing(args.models)
    if args.scale:
        scale()


if __name__ == "__main__":
    main()
