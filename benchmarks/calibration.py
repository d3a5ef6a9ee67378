"""Calibration of the twin's screens: no-disease cohorts must come out null, disease ones not.

For each seed, simulate a cohort, build the twin as the pipeline does (intercellular and
temporal edges from the networks stage, donor-level networks on the TF/receptor candidates),
then print per seed and on average:

- ``p<0.05``: share of screened targets at p < 0.05 (about 0.05 when there is no disease);
- ``q<0.05``: targets called at q < 0.05 (about 0 when there is no disease);
- ``power``: share of the planted genes (truth ``planted``) among the screened ones at q < 0.05
  (disease cohorts only);
- ``auc``: cases-vs-controls AUC of each donor's mean disease score (``patient_states``;
  about 0.5 with no disease, near 1 with disease);
- ``patient p<0.05``: share of per-patient target p-values below 0.05.

Runs on this checkout's API and on the pre-issue-11 one (``n_null``/``null_size`` pooled null),
so the same script measures before and after::

    python benchmarks/calibration.py --preset small --seeds 0-9            # no disease
    python benchmarks/calibration.py --preset small --seeds 0-9 --disease
    python benchmarks/calibration.py --generator independent --seeds 0-9   # second generator

Measured 2026-11-24 (simulate_cohort; before = main's pooled randomised-network null and
in-sample patient scores, after = the donor-label permutation null, 1999 relabellings):

| cohorts | p<0.05 before / after | q<0.05 calls per cohort | patient AUC | power (after) |
|---|---|---|---|---|
| small 4+3, no disease, seeds 0-9 | 0.385 / 0.033 (exact level 1/35) | 20.4 / 0 | 1.00 / 0.51 | - |
| small 6+6, no disease, seeds 0-9 (after: 0-19) | 0.324 / 0.072 | 16.4 / 0.15 | 1.00 / 0.46 | - |
| demo 10+6, no disease, seeds 1-2 (after only) | 0.054 | 0 | 0.44 | - |
| small 4+3, disease, seeds 0-9 | 0.401 / 0.027 | 22.4 / 0 | 1.00 / 0.62 | 0.00 |
| small 6+6, disease, seeds 0-9 | 0.381 / 0.134 | 19.4 / 2.5 | 1.00 / 0.79 | 0.04 |
| demo 10+6, disease, seed 0 (after only) | 0.123 | 0 (best q 0.08) | 1.00 | 0.00 |

Per-cohort shares vary widely (0-24% on 6+6 no-disease seeds): the tests of one cohort share
one disease vector and correlated perturbation effects, so the share is uniform only on average.
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np
import pandas as pd


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def simulate(generator: str, preset: str, seed: int, disease: bool, **overrides):
    """A cohort from the chosen generator, with or without disease."""
    if generator == "independent":
        from omicstwin.datasets.independent import simulate_independent  # lands separately

        return simulate_independent(preset, seed=seed, disease=disease, **overrides)
    from omicstwin.datasets import simulate_cohort

    if not disease:
        overrides["strength_range"] = (0.0, 0.0)
    return simulate_cohort(preset, seed=seed, **overrides)


def fit_like_pipeline(adata, seed: int):
    """The twin as ``omicstwin run`` fits it (default priors and stage settings)."""
    from omicstwin.io.manifests import load_gene_list, load_table
    from omicstwin.pp.cohort import as_cohort
    from omicstwin.schemas import conform
    from omicstwin.tl.de import differential_expression
    from omicstwin.tl.networks import intercellular_edges, temporal_edges
    from omicstwin.tl.twin import fit_twin

    cohort = as_cohort(adata, {})
    lr = load_table("liana_consensus")
    tfs = set(load_gene_list("lambert2018_tfs"))
    receptors = set(lr["receptor"].str.split("_").explode())
    regulators = [g for g in cohort.genes if g in tfs or g in receptors]
    de = differential_expression(cohort, min_donors=2, key_added=None)
    edges = pd.concat(
        [
            conform(intercellular_edges(cohort, lr, de=de, key_added=None), "edges"),
            conform(
                temporal_edges(cohort, regulators=regulators, seed=seed, key_added=None), "edges"
            ),
        ],
        ignore_index=True,
    )
    return cohort, fit_twin(cohort, edges, regulators=regulators, key_added=None)


def auc(cases: np.ndarray, controls: np.ndarray) -> float:
    """Mann-Whitney AUC: P(case score > control score), ties count half."""
    cases, controls = np.asarray(cases, float), np.asarray(controls, float)
    if not cases.size or not controls.size:
        return float("nan")
    greater = (cases[:, None] > controls[None, :]).mean()
    ties = (cases[:, None] == controls[None, :]).mean()
    return float(greater + 0.5 * ties)


def measure(adata, seed: int, n_permutations: int) -> dict[str, float]:
    """One cohort's figures (see the module docstring)."""
    from omicstwin.tl import patients as patients_module
    from omicstwin.tl import twin as twin_module

    cohort, fitted = fit_like_pipeline(adata, seed)
    screen = twin_module.target_screen
    new_api = "n_permutations" in inspect.signature(screen).parameters
    options = {"n_permutations": n_permutations} if new_api else {"n_null": 10, "null_size": 100}
    ranking, _ = screen(fitted, seed=seed, **options)
    states_options = {"data": cohort} if new_api else {}
    states = patients_module.patient_states(fitted, **states_options)
    per_donor = states.groupby("patient_id")["disease_score"].mean()
    arm = states.groupby("patient_id")["arm"].first()
    truth = adata.uns.get("truth", {}).get("reversal")
    screened = ranking.assign(gene=ranking["name"].str.removeprefix("KO:"))
    power = np.nan
    spearman = np.nan
    if truth is not None:
        planted = set(truth.loc[truth["planted"].astype(bool), "gene"])
        hits = screened[screened["gene"].isin(planted)]
        power = float((hits["q_value"] < 0.05).mean()) if len(hits) else np.nan
        joined = screened.merge(truth[["gene", "reversal"]], on="gene", how="left")
        spearman = float(
            joined["score"].rank().corr(joined["reversal"].fillna(0.0).rank(), method="pearson")
        )
    out = {
        "p<0.05": float((ranking["p_value"] < 0.05).mean()),
        "q<0.05": float((ranking["q_value"] < 0.05).sum()),
        "n_targets": float(len(ranking)),
        "power": power,
        "spearman": spearman,
        "auc": auc(per_donor[arm == "case"].to_numpy(), per_donor[arm == "control"].to_numpy()),
    }
    if new_api:
        patients = patients_module.patient_screen(fitted)
        out["patient p<0.05"] = float((patients["p_value"] < 0.05).mean())
    return out


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=("cohort", "independent"), default="cohort")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--disease", action="store_true", help="planted disease (power)")
    parser.add_argument("--n-case", type=int, default=None)
    parser.add_argument("--n-control", type=int, default=None)
    parser.add_argument("--n-permutations", type=int, default=1999)
    args = parser.parse_args(argv)
    overrides = {}
    if args.n_case is not None:
        overrides["n_case"] = args.n_case
    if args.n_control is not None:
        overrides["n_control"] = args.n_control
    rows = []
    for seed in _seeds(args.seeds):
        start = time.perf_counter()
        adata = simulate(args.generator, args.preset, seed, args.disease, **overrides)
        row = {"seed": seed, **measure(adata, seed, args.n_permutations)}
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(" ".join(f"{k}={v:.3g}" for k, v in row.items()))
    table = pd.DataFrame(rows)
    label = f"{args.generator}/{args.preset} {'disease' if args.disease else 'no disease'}"
    print(f"\nmean over {len(table)} seeds ({label}):")
    print(table.drop(columns="seed").mean().to_string(float_format=lambda v: f"{v:.3f}"))
    return table


if __name__ == "__main__":
    main()
