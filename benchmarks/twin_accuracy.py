"""Twin target ranking against planted truth, over held-out seeds, beside baselines (issue 11).

For each generator setting and seed: simulate a cohort, run the pipeline's analysis stages in
process (validate -> QC -> DE -> networks -> twin -> screens; no regulators (recomputed from
the DE table with the current DEG rule), enrichment, validation or report), then score the
twin's ``rank_targets`` and every baseline of :mod:`omicstwin.bench.baselines` on the same run's
tables:

- top-20 recall of the planted genes (drivers, cascade ligands, receptors and TFs, and the
  independent generator's feedback ligand and receptor: ``uns["truth"]["endotypes"]``);
- Spearman correlation with the true reversal (``uns["truth"]["reversal"]``) over the genes the
  twin screens (a method's unranked genes share its last rank).

Frozen before the held-out seeds (:data:`FROZEN`): the cohort size, the pipeline's run-config
defaults (only drug screening off, in process), k = 20 and the baselines' definitions. The
one choice the benchmark makes, which baseline the combined-evidence ranking ("twin + X": mean
of the twin's and X's ranks) adds to the twin, is made on :data:`TUNING_SEEDS` only (best
tuning recall per setting) and then reported on :data:`HELD_OUT_SEEDS`. The production default
(the twin's own ranking) is unchanged by this script.

A seed whose cohort the generator cannot build (its priors too small for the cascade) is
skipped and named. Intervals: 95% t-intervals over seeds; the paired difference twin - best
baseline (best by held-out mean, the conservative comparison for the twin) per seed, with its
t-interval.

Per-seed results are cached as CSV files under ``--out`` (``SETTING/seed_N.csv``, beside the
run's DE, edges, target ranking and truth tables in ``SETTING/run_N``), so a killed run resumes
and ``--rescore`` rescores without rerunning; ``--quick`` runs 3 held-out seeds and 1 tuning
seed of the own simulator.

Last run (20 held-out seeds per setting, 99 runs incl. tuning, ~21 min on 2 shared cores;
cohort tuning seed 103 skipped: the simulator cannot plant its cascade). Top-20 recall, mean
[95% CI]; paired twin - best baseline:

    setting            twin                 best baseline                 twin - best
    cohort (own sim)   0.364 [0.332, 0.395] ULM 0.375 [0.353, 0.397]      -0.011 [-0.039, 0.016]
    independent p=0.5  0.252 [0.221, 0.283] out-degree 0.138 [0.114, 0.163] +0.113 [0.078, 0.149]
    independent p=1.0  0.229 [0.197, 0.261] ULM 0.158 [0.134, 0.182]      +0.071 [0.031, 0.111]
    independent p=0.3  0.219 [0.201, 0.238] out-degree 0.148 [0.124, 0.172] +0.071 [0.045, 0.097]

The twin beats every baseline on the independent generator (the target, prior fraction 0.5,
included) and ties ULM TF activity on the own simulator. It loses on Spearman with the true
reversal to ULM on every independent setting (e.g. p=0.5: 0.060 vs 0.169, paired -0.109
[-0.161, -0.057]): beyond its top genes the twin's order follows the truth weakly. Combined
evidence (rank average) wins on tuning seeds only for the own simulator (twin + DE contexts)
and p=1.0 (twin + ULM), with no held-out gain over the twin (+0.025 [-0.011, 0.061], +0.017
[-0.023, 0.058]); twin + ULM raises Spearman everywhere but lowers recall at p=0.5 and 0.3.

Run: ``python benchmarks/twin_accuracy.py [--generator cohort|independent|all]
[--prior-fractions 0.5,1.0,0.3] [--seeds 20] [--jobs 2] [--out twin_accuracy_output] [--rescore]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per worker process (2 shared cores)

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

TUNING_SEEDS = (100, 101, 102, 103, 104)
HELD_OUT_SEEDS = tuple(range(20))
TOP_K = 20
# cohort size: 6 cell types x 5 time points, 6 case + 4 control donors, 300 genes, 6,000 cells
# (~12 s per seed and setting on one core); both generators get the same design
COHORT_SIZE = {"n_genes": 300, "n_cells": 6000, "n_case": 6, "n_control": 4}
# the run config: the pipeline's defaults, drug screen off (not scored), in process
RUN_CONFIG = {"stages": {"screen_drugs": False}, "compute": {"workers": 0}}
FROZEN = {"cohort_size": COHORT_SIZE, "run_config": RUN_CONFIG, "top_k": TOP_K}
ANALYSIS_STAGES = ("validate", "preprocess", "de", "networks", "twin", "screens")
BASELINES = ("de_log_fc", "de_contexts", "tf_activity_ulm", "li2022_count", "out_degree", "random")
PLANTED_COLUMNS = (
    "drivers",
    "cascade_ligands",
    "cascade_receptors",
    "cascade_tfs",
    "feedback_ligand",
    "feedback_receptor",
)


def settings(generator: str, prior_fractions: list[float]) -> dict[str, tuple[str, dict]]:
    """Setting name -> (generator, its keywords)."""
    out: dict[str, tuple[str, dict]] = {}
    if generator in ("cohort", "all"):
        out["cohort"] = ("cohort", {})
    if generator in ("independent", "all"):
        for fraction in prior_fractions:
            out[f"independent_p{round(fraction * 100):03d}"] = (
                "independent",
                {"prior_fraction": fraction},
            )
    return out


def simulate(generator: str, seed: int, **kwargs):
    """Simulate one cohort of :data:`COHORT_SIZE` with either generator."""
    if generator == "cohort":
        from omicstwin.datasets import simulate_cohort

        return simulate_cohort("small", seed=seed, **COHORT_SIZE, **kwargs)
    from omicstwin.datasets.independent import simulate_independent  # lands with issue 11

    return simulate_independent("small", seed=seed, **COHORT_SIZE, **kwargs)


def run_analysis(data: Path, out: Path, seed: int) -> None:
    """Run the pipeline's analysis stages on ``data`` into ``out`` (the runner, its cache)."""
    from omicstwin.pipeline import STAGES, RunConfig
    from omicstwin.pipeline.runner import Runner

    config = RunConfig.model_validate({"data": str(data), "seed": seed, **RUN_CONFIG})
    runner = Runner(config, out)
    for stage in STAGES:
        if stage.name in ANALYSIS_STAGES:
            runner.run_stage(stage)


def planted_genes(truth: dict) -> set[str]:
    """Planted genes of every endotype (drivers, cascade and feedback genes)."""
    endotypes = truth["endotypes"]
    genes: set[str] = set()
    for column in PLANTED_COLUMNS:
        if column in endotypes:
            genes |= {g for value in endotypes[column] for g in str(value).split(";") if g}
    return genes


def method_rankings(out: Path, seed: int) -> dict[str, pd.DataFrame]:
    """The twin's ranking, every baseline and every twin + baseline rank average."""
    from omicstwin.bench import baselines as bl
    from omicstwin.io.manifests import load_table
    from omicstwin.tl.regulators import upstream_regulators

    collectri = load_table("collectri")
    read = lambda name: pd.read_parquet(out / f"{name}.parquet")  # noqa: E731
    de, targets = read("de"), read("rank_targets")
    twin = pd.DataFrame({"gene": targets["genes"].astype(str), "rank": targets["rank"]})
    twin["score"] = -twin["rank"].astype(float)
    rankings = {
        "twin": twin,
        "de_log_fc": bl.de_log_fc(de),
        "de_contexts": bl.de_contexts(de),
        "tf_activity_ulm": bl.tf_activity_ulm(de, collectri),
        "li2022_count": bl.li2022_count(upstream_regulators(de, collectri)),
        "out_degree": bl.out_degree(read("edges")),
        "random": bl.random_ranking(sorted(de["gene"].unique()), seed=seed),
    }
    for name in BASELINES[:-1]:
        rankings[f"twin+{name}"] = bl.rank_average({"twin": twin, name: rankings[name]})
    return rankings


def spearman_with_truth(ranking: pd.DataFrame, reversal: pd.Series, genes: list[str]) -> float:
    """Spearman of -rank with the true reversal over ``genes`` (unranked genes: last)."""
    ranks = pd.Series(ranking["rank"].to_numpy(float), index=ranking["gene"].to_numpy())
    ranks = ranks[~ranks.index.duplicated()].reindex(genes).fillna(len(ranking) + 1)
    truth = reversal.reindex(genes).fillna(0.0)
    if truth.nunique() < 2 or ranks.nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(-ranks.to_numpy(), truth.to_numpy()).statistic)


KEPT = ("de.parquet", "edges.parquet", "rank_targets.parquet", "truth.parquet", "planted.txt")


def run_seed(generator: str, kwargs: dict, seed: int, run: Path) -> None:
    """Simulate and run one seed into ``run``, keeping only the tables the scoring reads."""
    if all((run / name).is_file() for name in KEPT):
        return
    run.mkdir(parents=True, exist_ok=True)
    adata = simulate(generator, seed, **kwargs)
    truth = adata.uns["truth"]
    adata.write_h5ad(run / "input.h5ad")
    del adata
    run_analysis(run / "input.h5ad", run, seed)
    truth["reversal"][["gene", "reversal"]].to_parquet(run / "truth.parquet")
    (run / "planted.txt").write_text("\n".join(sorted(planted_genes(truth))))
    for path in run.iterdir():  # the kept tables are the cache; the rest is large
        if path.name not in KEPT:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def one_seed(setting: str, generator: str, kwargs: dict, seed: int, root: Path) -> Path:
    """Simulate, run and score one seed; write and return ``SETTING/seed_N.csv``.

    Scoring reads the kept tables, so ``--rescore`` (e.g. after a change of the DEG rule, which
    the DE-context and Li 2022 baselines use) reuses the runs.
    """
    from omicstwin.bench.baselines import recall_at

    warnings.filterwarnings("ignore")
    target = root / setting / f"seed_{seed}.csv"
    if target.is_file():
        return target
    started = time.perf_counter()
    run = root / setting / f"run_{seed}"
    run_seed(generator, kwargs, seed, run)
    rankings = method_rankings(run, seed)
    planted = set((run / "planted.txt").read_text().split())
    reversal = pd.read_parquet(run / "truth.parquet").set_index("gene")["reversal"]
    screened = rankings["twin"]["gene"].tolist()
    rows = [
        {
            "setting": setting,
            "seed": seed,
            "method": name,
            "recall": recall_at(ranking, planted, k=TOP_K),
            "spearman": spearman_with_truth(ranking, reversal, screened),
            "n_planted": len(planted),
            "n_planted_screened": len(planted & set(screened)),
            "n_ranked": len(ranking),
            "seconds": round(time.perf_counter() - started, 1),
        }
        for name, ranking in rankings.items()
    ]
    pd.DataFrame(rows).to_csv(target.with_suffix(".partial"), index=False)
    target.with_suffix(".partial").replace(target)
    return target


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def summarise(results: pd.DataFrame, setting: str, tuning: pd.DataFrame) -> None:
    """Print one setting's table, the paired difference and the combined-evidence choice."""
    held = results[results["setting"] == setting]
    n = held["seed"].nunique()
    wide = held.pivot(index="seed", columns="method", values="recall")
    rho = held.pivot(index="seed", columns="method", values="spearman")
    first = held[held["method"] == "twin"]
    print(
        f"\n== {setting}: {n} held-out seeds; planted genes per cohort "
        f"{first['n_planted'].mean():.1f} (in the twin's screen: "
        f"{first['n_planted_screened'].mean():.1f}); {first['seconds'].mean():.0f} s per seed"
    )
    singles = ["twin", *BASELINES]
    print(f"{'method':<24}{'recall@20':>10}{'95% CI':>18}{'spearman':>10}{'95% CI':>18}")
    for method in [*singles, *[c for c in wide.columns if c.startswith("twin+")]]:
        m, lo, hi = interval(wide[method])
        r, rlo, rhi = interval(rho[method])
        print(
            f"{method:<24}{m:>10.3f}   [{lo:6.3f}, {hi:6.3f}]{r:>10.3f}   [{rlo:6.3f}, {rhi:6.3f}]"
        )
    best = wide[list(BASELINES)].mean().idxmax()
    m, lo, hi = interval(wide["twin"] - wide[best])
    verdict = "twin wins" if lo > 0 else ("twin loses" if hi < 0 else "no difference shown")
    print(f"paired twin - best baseline ({best}): {m:+.3f} [{lo:+.3f}, {hi:+.3f}] -> {verdict}")
    best_rho = rho[list(BASELINES)].mean().idxmax()
    m, lo, hi = interval(rho["twin"] - rho[best_rho])
    verdict = "twin wins" if lo > 0 else ("twin loses" if hi < 0 else "no difference shown")
    print(f"paired Spearman twin - {best_rho}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] -> {verdict}")
    tune = tuning[tuning["setting"] == setting]
    if tune.empty:
        return
    tune_wide = tune.pivot(index="seed", columns="method", values="recall")
    combos = [c for c in tune_wide.columns if c.startswith("twin+")]
    chosen = tune_wide[combos].mean().idxmax()
    tm, twin_tuning = tune_wide[chosen].mean(), tune_wide["twin"].mean()
    print(
        f"combined evidence on {len(tune_wide)} tuning seeds: best {chosen} (tuning recall "
        f"{tm:.3f} vs twin {twin_tuning:.3f}, best baseline "
        f"{tune_wide[list(BASELINES)].mean().max():.3f})"
    )
    if tm <= twin_tuning:
        print("  no combination beats the twin on the tuning seeds: the twin alone stays")
        return
    for other in ("twin", best):
        m, lo, hi = interval(wide[chosen] - wide[other])
        print(f"  held-out paired {chosen} - {other}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    m, lo, _ = interval(wide[chosen] - wide["twin"])
    print(
        f"  -> {chosen} wins on the tuning seeds; held-out evidence that it beats the twin: "
        f"{'yes' if lo > 0 else 'no'} (production default unchanged by this script)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generator", default="all", choices=["cohort", "independent", "all"])
    parser.add_argument("--prior-fractions", default="0.5,1.0,0.3")
    parser.add_argument("--seeds", type=int, default=len(HELD_OUT_SEEDS), help="held-out seeds")
    parser.add_argument("--tuning-seeds", type=int, default=len(TUNING_SEEDS))
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", default="twin_accuracy_output")
    parser.add_argument("--rescore", action="store_true", help="rescore the kept runs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 + 1 seeds, own sim")
    args = parser.parse_args()
    from omicstwin.errors import ParameterError

    if args.quick:
        args.generator, args.seeds, args.tuning_seeds = "cohort", 3, 1
    fractions = [float(f) for f in args.prior_fractions.split(",") if f]
    chosen = settings(args.generator, fractions)
    held_out = list(range(args.seeds))  # HELD_OUT_SEEDS extended when more are asked for
    tuning = list(TUNING_SEEDS[: args.tuning_seeds])
    assert not set(held_out) & set(tuning), "tuning and held-out seeds overlap"
    root = Path(args.out)
    print(f"frozen: {FROZEN}; tuning seeds {tuning}; held-out seeds {held_out[0]}-{held_out[-1]}")
    jobs = [
        (setting, gen, kw, seed)
        for setting, (gen, kw) in chosen.items()
        for seed in [*tuning, *held_out]
    ]
    if args.rescore:
        for setting, _, _, seed in jobs:
            (root / setting / f"seed_{seed}.csv").unlink(missing_ok=True)
    started = time.perf_counter()
    paths = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one_seed, *job, root): job for job in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            setting, _, _, seed = futures[future]
            try:
                paths.append(future.result())
            except ParameterError as exc:  # e.g. the simulator cannot plant a cascade
                print(f"  [{done}/{len(jobs)}] {setting} seed {seed} skipped: {exc}", flush=True)
                continue
            print(f"  [{done}/{len(jobs)}] {setting} seed {seed}", flush=True)
    results = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    is_tuning = results["seed"].isin(tuning)
    print(f"\nwall time {time.perf_counter() - started:.0f} s for {len(jobs)} runs")
    for setting in chosen:
        summarise(results[~is_tuning], setting, results[is_tuning])


if __name__ == "__main__":
    main()
