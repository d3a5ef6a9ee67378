"""The study pipeline on the demo config: per-stage time, peak memory, re-run and resume.

Runs ``omicstwin run pipelines/demo.yaml`` as a child process (what ``make demo`` runs, minus
the truth summary) and prints:

- per-stage wall time and the total, and the child's peak resident memory;
- an unchanged re-run into the same directory: its time as a fraction of the first run
  (the baseline the stage cache is measured against);
- with ``--kill``, a run killed with SIGKILL at random moments, resumed, and compared table by
  table with the uninterrupted run.

Usage: ``python benchmarks/pipeline.py [--config pipelines/demo.yaml] [--out DIR] [--kill N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def run(config: Path, out: Path) -> tuple[float, dict]:
    """Run the pipeline in a child process; return its wall time and run.json."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "omicstwin.cli", "run", str(config), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started, json.loads((out / "run.json").read_text())


def tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "pipelines" / "demo.yaml")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--kill", type=int, default=0, help="SIGKILLs before resuming (0: skip)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="omicstwin-bench-")) / "run"
    shutil.rmtree(out, ignore_errors=True)

    first_s, first = run(args.config, out)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(f"config {args.config} -> {out}")
    print(f"cohort: {first['cohort']}")
    print("stage            seconds")
    for name, seconds in first["timings_s"].items():
        print(f"  {name:<14} {seconds:7.1f}")
    print(f"  {'total (wall)':<14} {first_s:7.1f}   peak memory {peak_gb:.2f} GB")

    again_s, again = run(args.config, out)
    print(
        f"unchanged re-run: {again_s:.1f} s = {again_s / first_s:.1%} of the first run "
        f"(stages reused: {len(again['cached_stages'])} of {len(again['timings_s'])})"
    )

    if args.kill:
        killed = out.parent / "killed"
        shutil.rmtree(killed, ignore_errors=True)
        command = [sys.executable, "-m", "omicstwin.cli", "run", str(args.config), "--out"]
        rng = random.Random(0)
        for _ in range(args.kill):
            delay = rng.uniform(1.0, first_s * 0.9)
            process = subprocess.Popen([*command, str(killed)], stdout=subprocess.DEVNULL)
            time.sleep(delay)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
            print(f"  killed after {delay:.1f} s")
        resumed_s, _ = run(args.config, killed)
        reference, resumed = tables(out), tables(killed)
        same = reference.keys() == resumed.keys() and all(
            reference[n].equals(resumed[n]) for n in reference
        )
        print(
            f"resume after {args.kill} kill -9: finished in {resumed_s:.1f} s; tables identical "
            f"to the uninterrupted run: {same} ({len(reference)} tables)"
        )


if __name__ == "__main__":
    main()
