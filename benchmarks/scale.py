"""Scale benchmark: ``python benchmarks/scale.py [--sizes 100000,300000,1000000] [--workers 1,2]``.

For each size (cells x 20,000 genes, the ``atlas`` simulator preset) it

1. generates the cohort once into a cache folder (``--cache``, reused by size, genes and seed),
   in a child process: wall time, CPU time and peak RSS of the generation;
2. runs the pipeline (``pipelines/atlas.yaml``, the same :func:`run_pipeline` as ``omicstwin
   run``) in a child process per worker count (``compute.workers``), with the stages timed by
   the run record (``run.json`` ``timings_s``) and each stage's peak memory sampled every 0.2 s
   over the child and its worker processes (RSS of the process tree);
3. prints per stage: wall s, CPU s and peak GB at each size, and the scaling exponents between
   consecutive sizes (log-log slopes of wall time, CPU time and peak memory);
4. prints the baseline measured in the same script: the smallest size read whole into memory
   (``compute.backed: false``, the pipeline before streaming) next to the backed run.

``--until de`` stops after a stage (e.g. the validate + preprocess + DE part). Wall times are
noisy on a shared machine: CPU seconds and peak memory are the steadier figures. A stage's CPU
seconds are the main process's only (dask workers' CPU is in the whole-run figure, from the
child's rusage).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMICSTWIN_DATA_PATH", str(REPO.parent / "shared" / "data"))
CONFIG = REPO / "pipelines" / "atlas.yaml"
GB = 1024**3


# ----------------------------------------------------------------------------- child: one run


class _TreeSampler:
    """Peak RSS of this process and its children (dask workers), sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a worker that just exited
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def reset(self) -> int:
        """Return the peak so far and start a new one."""
        peak, self.peak = max(self.peak, self._rss()), 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child(config_path: Path, out: Path, until: str | None) -> None:
    """Run the pipeline's stages (up to ``until``), writing ``stage_metrics.json``."""
    import contextlib

    from omicstwin.pipeline.config import load_config
    from omicstwin.pipeline.runner import Runner, check_extras
    from omicstwin.pipeline.stages import STAGES

    config = load_config(config_path, {})
    check_extras(config)
    sampler = _TreeSampler()
    metrics: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def measured(name: str):
        sampler.reset()
        cpu = time.process_time()
        yield None
        metrics[name] = {
            "cpu_s": round(time.process_time() - cpu, 2),
            "peak_gb": round(sampler.reset() / GB, 3),
        }

    runner = Runner(config, out, stage=measured, use_cache=False)
    for stage in STAGES:
        runner.run_stage(stage)
        if stage.name == until:
            break
    sampler.stop()
    for name, seconds in runner.timings.items():
        metrics.setdefault(name, {})["wall_s"] = seconds
    (out / "stage_metrics.json").write_text(json.dumps(metrics, indent=1))


# ----------------------------------------------------------------------------- parent


def _timed_child(command: list[str], log: Path) -> dict[str, float]:
    """Run a child process; return its wall s, CPU s (user + sys) and peak RSS (GB)."""
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=_env()
        )
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"child failed ({process.returncode}); see {log}")
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_gb": round(usage.ru_maxrss * 1024 / GB, 3),  # ru_maxrss is in KiB on Linux
    }


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cohort_file(cache: Path, n_cells: int, n_genes: int, seed: int) -> tuple[Path, dict | None]:
    """The atlas cohort of this size (generated in a child once, then reused)."""
    path = cache / f"atlas_{n_cells}x{n_genes}_seed{seed}.h5ad"
    if path.exists():
        return path, None
    cache.mkdir(parents=True, exist_ok=True)
    make = f"write_atlas({str(path)!r}, n_cells={n_cells}, n_genes={n_genes}, seed={seed})"
    command = [sys.executable, "-c", f"from omicstwin.datasets.atlas import write_atlas; {make}"]
    return path, _timed_child(command, cache / f"{path.stem}.log")


def run_once(
    data: Path, out: Path, workers: int, backed: bool, until: str | None, chunk: int | None
) -> dict:
    """Run the atlas config on ``data`` in a child; return per-stage metrics and the total."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(CONFIG.read_text())
    config["data"] = str(data)
    config["compute"] |= {"workers": workers, "backed": backed}
    if chunk is not None:
        config["compute"]["chunk_cells"] = chunk
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, __file__, "--child", str(config_path), str(out)]
    command += ["--until", until] if until else []
    total = _timed_child(command, out / "child.log")
    stages = json.loads((out / "stage_metrics.json").read_text())
    return {"stages": stages, "total": total}


def _slope(sizes: list[int], values: list[float]) -> str:
    pairs = [(s, v) for s, v in zip(sizes, values, strict=True) if v and v > 0]
    if len(pairs) < 2:
        return "-"
    return " ".join(
        f"{np.log(b[1] / a[1]) / np.log(b[0] / a[0]):.2f}" for a, b in itertools.pairwise(pairs)
    )


def print_table(results: dict, sizes: list[int], workers: int) -> None:
    runs = [results[(n, workers)] for n in sizes]
    names = list(runs[0]["stages"])
    head = "  ".join(f"{n // 1000:>5}k wall/cpu/GB" for n in sizes)
    print(f"\nworkers={workers}  stage  {head}  exponents: wall, CPU, peak memory")
    for name in names:
        cells = []
        for run in runs:
            m = run["stages"].get(name, {})
            cells.append(
                f"{m.get('wall_s', float('nan')):7.1f}/{m.get('cpu_s', float('nan')):6.1f}/"
                f"{m.get('peak_gb', float('nan')):5.2f}"
            )
        wall = [r["stages"].get(name, {}).get("wall_s", 0.0) for r in runs]
        cpu = [r["stages"].get(name, {}).get("cpu_s", 0.0) for r in runs]
        peak = [r["stages"].get(name, {}).get("peak_gb", 0.0) for r in runs]
        print(
            f"  {name:<11} "
            + "  ".join(cells)
            + f"  {_slope(sizes, wall):>8}  {_slope(sizes, cpu):>8}  {_slope(sizes, peak):>8}"
        )
    totals = [r["total"] for r in runs]
    cells = [f"{t['wall_s']:7.1f}/{t['cpu_s']:6.1f}/{t['peak_gb']:5.2f}" for t in totals]
    print(
        f"  {'whole run':<11} "
        + "  ".join(cells)
        + f"  {_slope(sizes, [t['wall_s'] for t in totals]):>8}"
        + f"  {_slope(sizes, [t['cpu_s'] for t in totals]):>8}"
        + f"  {_slope(sizes, [t['peak_gb'] for t in totals]):>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="cells, comma-separated")
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2", help="compute.workers values to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until", default=None, help="stop after this stage (e.g. de)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "omicstwin-scale")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: in cache)")
    parser.add_argument(
        "--chunk-cells", type=int, default=None, help="compute.chunk_cells (default: the config's)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.until)
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    workers = [int(w) for w in args.workers.split(",")]
    out = args.out or args.cache / "runs"
    results: dict = {}
    for n in sizes:
        data, made = cohort_file(args.cache, n, args.genes, args.seed)
        if made:
            print(
                f"atlas {n} cells x {args.genes} genes: generated in {made['wall_s']} s wall, "
                f"{made['cpu_s']} s CPU, peak {made['peak_gb']:.2f} GB "
                f"({made['cpu_s'] / n * 1e5:.1f} CPU s per 100k cells)",
                flush=True,
            )
        for w in workers:
            results[(n, w)] = run_once(
                data, out / f"{n}_w{w}", w, True, args.until, args.chunk_cells
            )
            total = results[(n, w)]["total"]
            print(f"run {n} cells, workers={w}: {total}", flush=True)
    for w in workers:
        print_table(results, sizes, w)
    if not args.no_baseline:
        n, w = sizes[0], workers[0]
        data, _ = cohort_file(args.cache, n, args.genes, args.seed)
        base = run_once(data, out / f"{n}_w{w}_memory", w, False, args.until, args.chunk_cells)
        backed = results[(n, w)]
        print(f"\nbaseline at {n} cells, workers={w}: counts read whole (backed: false) vs backed")
        print(f"  {'stage':<11} {'in memory wall/cpu/GB':>24} {'backed wall/cpu/GB':>22}")
        for name, m in base["stages"].items():
            b = backed["stages"].get(name, {})
            print(
                f"  {name:<11} {m['wall_s']:10.1f}/{m['cpu_s']:6.1f}/{m['peak_gb']:5.2f}"
                f" {b.get('wall_s', float('nan')):10.1f}/{b.get('cpu_s', float('nan')):6.1f}/"
                f"{b.get('peak_gb', float('nan')):5.2f}"
            )
        t, u = base["total"], backed["total"]
        print(
            f"  whole run   {t['wall_s']:10.1f}/{t['cpu_s']:6.1f}/{t['peak_gb']:5.2f}"
            f" {u['wall_s']:10.1f}/{u['cpu_s']:6.1f}/{u['peak_gb']:5.2f}"
        )


if __name__ == "__main__":
    main()
