"""Which DEG signature feeds upstream-regulator analysis: calibration first, then power (issue 11).

The signature of :func:`omicstwin.tl.regulators.upstream_regulators` (which genes of a cell type
x time context count as DEGs) is chosen on **no-disease cohorts** (the same design with no
driver input: every DEG and every regulator call is false), not on planted-driver ranks:

1. on no-disease cohorts (own simulator with ``driver_input=0``; independent generator with
   ``disease=False``; seeds 0-9 each), per candidate rule: DEG rows per context, regulator
   calls (overlap q < 0.05) and the fraction of contexts with any regulator call (under the
   complete null BH keeps this at <= 5% when the test is valid);
2. on disease cohorts (same seeds and generators), power: the fraction of planted regulators
   (driver and cascade TFs that are CollecTRI sources) called in at least one context, and
   the regulators called;
3. the rule: among the rules whose no-disease fraction of contexts with a call is at most
   :data:`MAX_FALSE_CONTEXTS` (pooled over both generators), the one with the highest power;
   it replaces the current default (:data:`DEFAULT_RULE`) only if its paired power gain over
   the default (per disease cohort, 95% t-interval) excludes zero (as for any default: changed
   on evidence, not on noise).

Candidate rules (:data:`RULES`): nominal p < 0.05 & |log2 FC| >= 0.25 (the former default),
p < 0.01 & |log2 FC| >= 0.25, q < 0.05 & |log2 FC| >= 0.25, q < 0.1 (any fold change), and the
top 30 genes by p per context (|log2 FC| >= 0.25; 10% of the 300-gene panel).

Cohort: the design of ``benchmarks/twin_accuracy.py`` (6 cell types x 5 time points, 6 case +
4 control donors, 300 genes, 6,000 cells), DE by the pipeline's own stages (QC, donor
pseudobulk NB GLM).

``--size demo`` repeats it on the demo design (2,000 genes, 30,000 cells, 7 time points, 10 + 6
donors; independent generator: its ``medium`` preset).

Run: ``python benchmarks/deg_rule.py [--seeds 10] [--generator cohort|independent|all]
[--jobs 2] [--size benchmark|demo] [--report CSV]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

COHORT_SIZE = {"n_genes": 300, "n_cells": 6000, "n_case": 6, "n_control": 4}
Q_CALL = 0.05
MAX_FALSE_CONTEXTS = 0.05
TOP_N = 30
DEFAULT_RULE = "p<0.05 & |lfc|>=0.25"  # the default before this benchmark
# name -> keywords of upstream_regulators (deg_column, deg_alpha, lfc_threshold) or ("top", N)
RULES: dict[str, dict] = {
    "p<0.05 & |lfc|>=0.25": {"deg_column": "p_value", "deg_alpha": 0.05, "lfc_threshold": 0.25},
    "p<0.01 & |lfc|>=0.25": {"deg_column": "p_value", "deg_alpha": 0.01, "lfc_threshold": 0.25},
    "q<0.05 & |lfc|>=0.25": {"deg_column": "q_value", "deg_alpha": 0.05, "lfc_threshold": 0.25},
    "q<0.1": {"deg_column": "q_value", "deg_alpha": 0.1, "lfc_threshold": 0.0},
    f"top {TOP_N} by p & |lfc|>=0.25": {"top": TOP_N, "lfc_threshold": 0.25},
}


def simulate(generator: str, seed: int, disease: bool, size: str = "benchmark"):
    """One cohort of :data:`COHORT_SIZE` (``size="demo"``: the demo / medium preset)."""
    shape = COHORT_SIZE if size == "benchmark" else {}
    if generator == "cohort":
        from omicstwin.datasets import simulate_cohort

        extra = {} if disease else {"driver_input": 0.0}
        preset = "small" if size == "benchmark" else "demo"
        return simulate_cohort(preset, seed=seed, **shape, **extra)
    from omicstwin.datasets.independent import simulate_independent

    preset = "small" if size == "benchmark" else "medium"
    return simulate_independent(preset, seed=seed, disease=disease, **shape)


def de_table(adata) -> pd.DataFrame:
    """The pipeline's DE stage on ``adata`` (validate -> QC -> DE), in a temporary run dir."""
    from omicstwin.pipeline import STAGES, RunConfig
    from omicstwin.pipeline.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.h5ad"
        adata.write_h5ad(path)
        config = RunConfig.model_validate({"data": str(path), "compute": {"workers": 0}})
        runner = Runner(config, Path(tmp))
        for stage in STAGES:
            if stage.name in ("validate", "preprocess", "de"):
                runner.run_stage(stage)
        return pd.read_parquet(Path(tmp) / "de.parquet")


def apply_rule(de: pd.DataFrame, prior: pd.DataFrame, rule: dict) -> tuple[int, pd.DataFrame]:
    """DEG rows and the upstream-regulator table of one rule."""
    from omicstwin.tl.regulators import degs_of, upstream_regulators

    if "top" not in rule:
        return int(degs_of(de, **rule).sum()), upstream_regulators(de, prior, **rule)
    tested = de[de["p_value"].notna() & (de["log_fc"].abs() >= rule["lfc_threshold"])]
    top = (
        tested.sort_values("p_value", kind="stable")
        .groupby(["cell_type", "time"])
        .head(rule["top"])
    )
    marked = de.assign(p_value=np.where(de.index.isin(top.index), 0.0, 1.0))
    table = upstream_regulators(marked, prior, deg_column="p_value", deg_alpha=0.5)
    return len(top), table


def planted_regulators(truth: dict, prior: pd.DataFrame) -> set[str]:
    """Driver and cascade TFs of every endotype that are sources in the prior."""
    endotypes = truth["endotypes"]
    genes = set()
    for column in ("drivers", "cascade_tfs"):
        if column in endotypes:
            genes |= {g for v in endotypes[column] for g in str(v).split(";") if g}
    return genes & set(prior["source"])


def one_cohort(generator: str, seed: int, disease: bool, size: str = "benchmark") -> list[dict]:
    """Every rule's figures on one cohort."""
    from omicstwin.io.manifests import load_table

    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    prior = load_table("collectri")
    adata = simulate(generator, seed, disease, size)
    planted = planted_regulators(adata.uns["truth"], prior) if disease else set()
    de = de_table(adata)
    n_contexts = de.groupby(["cell_type", "time"], observed=True).ngroups
    rows = []
    for name, rule in RULES.items():
        n_deg, table = apply_rule(de, prior, rule)
        calls = table[table["q_value"] < Q_CALL]
        called = set(calls["regulator"])
        rows.append(
            {
                "generator": generator,
                "disease": disease,
                "seed": seed,
                "rule": name,
                "n_contexts": n_contexts,
                "degs_per_context": n_deg / max(n_contexts, 1),
                "calls": len(calls),
                "tests": len(table),
                "contexts_with_call": calls.groupby(["cell_type", "time"]).ngroups
                / max(n_contexts, 1),
                "regulators_called": len(called),
                "planted": len(planted),
                "planted_called": len(called & planted),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    return rows


def report(results: pd.DataFrame) -> str:
    """Print the calibration and power tables and return the chosen rule."""
    pd.set_option("display.width", 160)
    null = results[~results["disease"]]
    calib = null.groupby(["rule", "generator"], sort=False).agg(
        degs_per_context=("degs_per_context", "mean"),
        calls_per_cohort=("calls", "mean"),
        false_contexts=("contexts_with_call", "mean"),
        cohorts_with_call=("calls", lambda c: float((c > 0).mean())),
    )
    print("\nno-disease cohorts (every call is false):")
    print(calib.round(3).to_string())
    sick = results[results["disease"]]
    power = sick.groupby(["rule", "generator"], sort=False).agg(
        degs_per_context=("degs_per_context", "mean"),
        regulators_called=("regulators_called", "mean"),
        planted=("planted", "mean"),
        planted_called=("planted_called", "mean"),
    )
    power["power"] = power["planted_called"] / power["planted"].replace(0, np.nan)
    print("\ndisease cohorts (power: planted driver/cascade TFs called in >= 1 context):")
    print(power.round(3).to_string())
    pooled_false = null.groupby("rule", sort=False)["contexts_with_call"].mean()
    false_calls = null.groupby("rule", sort=False)["calls"].mean()
    pooled_power = sick.groupby("rule", sort=False)["planted_called"].sum() / sick.groupby(
        "rule", sort=False
    )["planted"].sum().replace(0, np.nan)
    summary = pd.DataFrame(
        {
            "false_contexts": pooled_false,
            "false_calls_per_cohort": false_calls,
            "power": pooled_power,
        }
    )
    paired = sick.pivot_table(
        index=["generator", "seed"], columns="rule", values="planted_called", aggfunc="sum"
    )
    gain = paired.sub(paired[DEFAULT_RULE], axis=0)
    summary["power_gain_vs_default"] = (
        gain.mean() / sick.groupby(["generator", "seed"])["planted"].first().mean()
    )
    half = stats.t.ppf(0.975, len(gain) - 1) * gain.std(ddof=1) / np.sqrt(len(gain))
    summary["gain_ci_low"] = (gain.mean() - half) / sick["planted"].mean()
    summary["gain_ci_high"] = (gain.mean() + half) / sick["planted"].mean()
    print("\npooled over generators (power gain: paired over disease cohorts, 95% t-interval):")
    print(summary.round(3).to_string())
    eligible = summary[summary["false_contexts"] <= MAX_FALSE_CONTEXTS]
    if eligible.empty:
        chosen = summary["false_contexts"].idxmin()
        print(f"no rule keeps false contexts <= {MAX_FALSE_CONTEXTS}; best calibrated: {chosen}")
        return chosen
    best = eligible["power"].idxmax()
    chosen = best if summary.loc[best, "gain_ci_low"] > 0 else DEFAULT_RULE
    if DEFAULT_RULE not in eligible.index:
        chosen = best
    print(
        f"most powerful calibrated rule: {best}; chosen: {chosen} (false contexts "
        f"{summary.loc[chosen, 'false_contexts']:.3f} <= {MAX_FALSE_CONTEXTS}, power "
        f"{summary.loc[chosen, 'power']:.3f}; the default changes only for a power gain whose "
        "interval excludes zero)"
    )
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--generator", default="all", choices=["cohort", "independent", "all"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="deg_rule_output.csv")
    parser.add_argument(
        "--size", default="benchmark", choices=["benchmark", "demo"], help="demo: 2,000 genes"
    )
    parser.add_argument("--report", help="only print the tables of a CSV of an earlier run")
    args = parser.parse_args()
    if args.report:
        report(pd.read_csv(args.report))
        return
    generators = ["cohort", "independent"] if args.generator == "all" else [args.generator]
    jobs = [
        (g, seed, disease, args.size)
        for disease in (False, True)
        for g in generators
        for seed in range(args.seeds)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = [row for part in pool.map(one_cohort, *zip(*jobs, strict=True)) for row in part]
    results = pd.DataFrame(rows)
    results.to_csv(args.out, index=False)
    print(f"{len(jobs)} cohorts in {time.perf_counter() - started:.0f} s; rows in {args.out}")
    report(results)


if __name__ == "__main__":
    main()
