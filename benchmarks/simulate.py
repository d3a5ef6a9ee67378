"""Time and peak memory of the cohort simulator: the `demo` preset and a 200k-cell cohort.

Each configuration runs in its own process so peak RSS (ru_maxrss) is that run's alone.
Run: `make bench-simulate` or `python benchmarks/simulate.py [--skip-large]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "small": {"preset": "small"},
    "demo": {"preset": "demo"},
    "200k cells": {"preset": "demo", "n_cells": 200_000},
}

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import anndata  # noqa: F401  (import cost reported separately)
from omicstwin.datasets import SimulationPriors, simulate_cohort
SimulationPriors.from_manifests()
t1 = time.perf_counter()
config = json.loads(sys.argv[1])
preset = config.pop("preset")
adata = simulate_cohort(preset, **config)
t2 = time.perf_counter()
print(json.dumps({
    "import_and_priors_s": t1 - t0,
    "simulate_s": t2 - t1,
    "cells": adata.n_obs,
    "genes": adata.n_vars,
    "nnz": int(adata.X.nnz),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def run(name: str, config: dict) -> dict:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-large", action="store_true", help="skip the 200k-cell run")
    args = parser.parse_args()
    rows = []
    for name, config in CONFIGS.items():
        if args.skip_large and name == "200k cells":
            continue
        r = run(name, dict(config))
        rows.append((name, r))
        print(
            f"{name:>11}: {r['cells']:>7} cells x {r['genes']} genes, "
            f"{r['nnz'] / 1e6:6.1f} M nonzeros | simulate {r['simulate_s']:6.1f} s "
            f"(+{r['import_and_priors_s']:.1f} s imports/priors) | "
            f"{r['cells'] / r['simulate_s']:8.0f} cells/s | peak RSS {r['peak_rss_mb']:7.0f} MB",
            flush=True,
        )
    by = dict(rows)
    if "demo" in by and "200k cells" in by:
        d, b = by["demo"], by["200k cells"]
        print(
            f"scaling demo -> 200k cells ({b['cells'] / d['cells']:.1f}x cells): "
            f"time {b['simulate_s'] / d['simulate_s']:.1f}x, peak memory "
            f"{b['peak_rss_mb'] / d['peak_rss_mb']:.1f}x"
        )
    print("targets: small < 2 s, demo < 60 s (simulate time, this machine)")


if __name__ == "__main__":
    main()
