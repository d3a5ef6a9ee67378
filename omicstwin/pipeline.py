"""``omicstwin run``: a study config to a run directory, stage by stage, cached and resumable.

Stages: (simulate) -> validate -> preprocess (QC) -> DE -> networks (per-context GRNs,
intercellular, temporal) -> upstream regulators -> twin -> screens (targets with null twins,
disease genes, drugs, patients) -> enrichment (gseapy) -> validation against known biology (when
the config names a disease) -> report. Each writes its tables of DESIGN.md into the run
directory atomically and records itself in the stage cache (:mod:`omicstwin.store.cache`), so an
unchanged re-run skips it and a killed run resumes. ``run.json`` records the schema version,
package versions, config, seed, input checksums, per-stage timings and failures.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omicstwin._logging import logger
from omicstwin.errors import ParameterError


class Compute(BaseModel):
    """Where the screens run: in process, a local dask cluster, a scheduler, or a profile."""

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(
        None,
        ge=0,
        description="None: a LocalCluster with one worker per core for large screens, in "
        "process for small ones; 0: in process; N: a LocalCluster of N processes.",
    )
    scheduler: str | None = Field(None, description="Address of an existing dask scheduler.")
    profile: str | None = Field(None, description="Cluster profile (pipelines/cluster/NAME).")


class SimulatedData(BaseModel):
    """Data from the bundled simulator (``data: {simulate: demo, seed: 0}``)."""

    model_config = ConfigDict(extra="forbid")

    simulate: str = Field(description="Simulator preset: small, demo or sar_like.")
    seed: int = 0
    n_cells: int | None = Field(None, ge=1)


class Stages(BaseModel):
    """Stage parameters."""

    model_config = ConfigDict(extra="forbid")

    min_genes: int = Field(10, ge=0, description="QC: detected genes a cell needs.")
    min_cells: int = Field(3, ge=0, description="QC: cells a gene must be detected in.")
    min_donors: int = Field(2, ge=1)
    grn_method: str = "ridge"
    grn_top_k: int = Field(10, ge=1)
    network_level: Literal["donors", "cells"] = Field(
        "donors", description="Twin networks fitted on donor variation or on cells."
    )
    n_intercellular: int = Field(50, ge=1)
    n_null: int = Field(20, ge=0, description="Null twins of the target screen.")
    null_size: int = Field(100, ge=1)
    n_steps: int = Field(3, ge=1, description="Propagation steps (CellOracle uses 3).")
    drug_dose: float = Field(0.8, ge=0, le=1)
    screen_drugs: bool = True
    enrichment_prerank: list[str] = Field(
        default_factory=lambda: ["msigdb_hallmark"],
        description="Gene set manifests for prerank GSEA of every context's DE ranking "
        "(Reactome and GO BP cost ~1 s per context each).",
    )
    enrichment_ora: list[str] = Field(
        default_factory=lambda: ["msigdb_hallmark", "reactome_pathways", "go_biological_process"],
        description="Gene set manifests for over-representation of the top targets / genes.",
    )
    enrichment_top_k: int = Field(50, ge=1, description="Top targets / disease genes for ORA.")
    enrichment_permutations: int = Field(1000, ge=10, description="Prerank permutations.")
    validation_ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    validation_random: int = Field(1000, ge=10, description="Random rankings of the baseline.")


class RunConfig(BaseModel):
    """A study: the data, its keys and labels, priors, stage parameters, seed and compute."""

    model_config = ConfigDict(extra="forbid")

    data: str | SimulatedData = Field(
        description="A .h5ad/.h5mu path (relative to the config file), 'manifest:NAME' (a "
        "data_manifests entry resolved through OMICSTWIN_DATA_PATH), or {simulate: PRESET}."
    )
    study: str | None = Field(None, description="Study name (report title, publish id).")
    disease: str | None = Field(
        None,
        pattern=r"^DOID:\d+$",
        description="Disease Ontology id: validate the rankings against known biology.",
    )
    cell_type_key: str = "cell_type"
    time_key: str = "time"
    condition_key: str = "condition"
    donor_key: str = "donor"
    case: str = "case"
    control: str = "control"
    layer: str | None = None
    time_unit: str | None = None
    priors: dict[Literal["tfs", "tf_targets", "ligand_receptor"], str] = Field(
        default_factory=lambda: {
            "tfs": "lambert2018_tfs",
            "tf_targets": "collectri",
            "ligand_receptor": "liana_consensus",
        }
    )
    seed: int = 0
    stages: Stages = Field(default_factory=Stages)
    compute: Compute = Field(default_factory=Compute)


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Read a YAML config (optional) and apply flag overrides (``None`` values are ignored).

    Relative data paths are resolved against the config file's folder.

    Raises
    ------
    ParameterError
        Unreadable YAML or a config that does not validate (each problem named).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ParameterError(f"config '{path}' cannot be read: {exc}") from exc
        data = raw.get("data")
        if isinstance(data, str) and not data.startswith("manifest:"):
            if not Path(data).is_absolute():
                raw["data"] = str((path.parent / data).resolve())
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("workers", "scheduler", "profile"):
            raw.setdefault("compute", {})[key] = value
        else:
            raw[key] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ParameterError(
            f"invalid run config ({problems}); fix: name the data (config 'data:' or --data) "
            "and use the fields of omicstwin.pipeline.RunConfig"
        ) from exc


# Screens below this many perturbation x gene x context updates run in process: starting a
# LocalCluster costs seconds, and on 2 cores its worker processes measured slower than the
# in-process screen for the demo cohort (~5e7 updates).
_IN_PROCESS_WORK = 1e9


def _default_workers(twin) -> int:
    """0 (in process) for small screens, else one LocalCluster worker per core."""
    import os

    n_t, n_c, n_g = twin.shape
    work = len(twin.regulators()) * n_g * n_t * n_c
    return 0 if work < _IN_PROCESS_WORK else max(1, os.cpu_count() or 1)


def run_pipeline(
    config: RunConfig,
    out: str | Path,
    *,
    stage: Callable[[str], contextlib.AbstractContextManager] | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Run every available stage and write the run directory.

    Parameters
    ----------
    config
        The validated config.
    out
        Run directory (created).
    stage
        Context-manager factory wrapping each stage (the CLI shows progress with it).
    use_cache
        Skip stages whose inputs, parameters and code are unchanged since a finished run into
        the same directory (:mod:`omicstwin.store.cache`); a killed run resumes where it stopped.

    Returns
    -------
    dict
        The ``run.json`` content.
    """
    import pandas as pd

    from omicstwin.bench.known_biology import validate_rankings
    from omicstwin.io import read_data, validate_cohort
    from omicstwin.io.manifests import load_gene_list, load_table, sha256_of
    from omicstwin.io.resources import drug_target_table
    from omicstwin.io.validate import CohortKeys
    from omicstwin.parallel import resolve_client
    from omicstwin.pp.qc import filter_cohort
    from omicstwin.report import build_report
    from omicstwin.store.cache import StageCache
    from omicstwin.store.rundir import SCHEMA_VERSION, package_versions, write_json, write_table
    from omicstwin.tl.de import differential_expression
    from omicstwin.tl.enrich import enrichment
    from omicstwin.tl.networks import (
        context_grns,
        intercellular_edges,
        multicellular_network,
        temporal_edges,
    )
    from omicstwin.tl.perturb import drugs_from_table
    from omicstwin.tl.regulators import rank_regulators, upstream_regulators
    from omicstwin.tl.twin import (
        disease_gene_screen,
        fit_twin,
        load_twin,
        patient_screen,
        patient_states,
        save_twin,
        target_screen,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a run killed mid-write leaves its temporary file behind (never a final name); one run
    # writes a run directory at a time, so any left now is stale
    for stale in out.rglob(".*.partial"):
        stale.unlink(missing_ok=True)
    stage = stage or (lambda _name: contextlib.nullcontext())
    if config.disease is not None:  # an unknown id fails now, not after the screens
        from omicstwin.bench.known_biology import resolve_disease

        resolve_disease(config.disease)
    timings: dict[str, float] = {}
    failures: dict[str, int] = {}
    keys = CohortKeys.from_arguments(config.model_dump()).as_arguments()
    keys.pop("time_unit")  # resolved by the validate stage
    st = config.stages

    @contextlib.contextmanager
    def timed(name: str):
        started = time.perf_counter()
        with stage(name) as handle:
            # the CLI's stage context yields a progress callback; others yield nothing
            yield handle if callable(handle) else (lambda _done, _total: None)
        timings[name] = round(time.perf_counter() - started, 3)
        logger.info("stage %s: %.1f s", name, timings[name])

    cache = StageCache(out, enabled=use_cache)
    cached_stages: list[str] = []

    def cached(name: str, key: str) -> dict | None:
        record = cache.hit(name, key)
        if record is not None:
            timings[name] = 0.0
            cached_stages.append(name)
            logger.info("stage %s: unchanged, reused", name)
        return record

    data_path = _data_path(config, out, cache, cached, timed)
    data_sha = sha256_of(data_path)
    loaded: dict[str, Any] = {}

    def raw():  # read only when a stage that needs the cells has to run
        if "raw" not in loaded:
            loaded["raw"] = read_data(data_path)
        return loaded["raw"]

    unit = config.time_unit
    k_validate = cache.key(
        "validate", data=data_sha, keys=keys, unit=unit, min_donors=st.min_donors
    )
    record = cached("validate", k_validate)
    if record is None:
        with timed("validate"):
            unit = unit or getattr(raw(), "uns", {}).get("time_unit")
            summary = validate_cohort(raw(), **keys, time_unit=unit, min_donors=st.min_donors)
            write_table(out, "design", summary.design)
            cohort = {
                "line": summary.one_line(),
                "skipped": len(summary.skipped_groups),
                "time_unit": unit,
            }
            cache.record("validate", k_validate, [out / "design.parquet"], {"cohort": cohort})
    else:
        cohort = record["cohort"]

    qc_params = {"min_genes": st.min_genes, "min_cells": st.min_cells}
    k_pre = cache.key("preprocess", upstream=k_validate, **qc_params)

    def data():  # the cells and genes that pass QC (deterministic, so recomputed on resume)
        if "data" not in loaded:
            loaded["data"], loaded["qc"] = filter_cohort(
                raw(),
                **{k: v for k, v in keys.items() if k.endswith("_key")},
                layer=config.layer,
                **qc_params,
            )
        return loaded["data"]

    if cached("preprocess", k_pre) is None:
        with timed("preprocess"):
            data()
            write_table(out, "qc", loaded["qc"])
            cache.record("preprocess", k_pre, [out / "qc.parquet"])

    k_de = cache.key("de", upstream=k_pre, min_donors=st.min_donors)
    if cached("de", k_de) is None:
        with timed("de"):
            de = differential_expression(data(), **keys, min_donors=st.min_donors, key_added=None)
            write_table(out, "de", de)
            cache.record("de", k_de, [out / "de.parquet"])

    lr_name, tf_name = config.priors["ligand_receptor"], config.priors["tfs"]
    k_net = cache.key(
        "networks",
        upstream=k_pre,
        priors=config.priors,
        seed=config.seed,
        method=st.grn_method,
        top_k=st.grn_top_k,
    )

    def regulators() -> list[str]:
        if "regulators" not in loaded:
            lr = load_table(lr_name)
            tfs = set(load_gene_list(tf_name))
            receptors = set(lr["receptor"].str.split("_").explode())
            genes = list(data().var_names)
            loaded["regulators"] = [g for g in genes if g in tfs or g in receptors]
        return loaded["regulators"]

    if cached("networks", k_net) is None:
        with timed("networks") as advance:
            edges = multicellular_network(
                context_grns(
                    data(),
                    **keys,
                    method=st.grn_method,
                    regulators=regulators(),
                    top_k=st.grn_top_k,
                    seed=config.seed,
                    key_added=None,
                    progress=lambda done, total, _label: advance(done, total),
                ),
                intercellular_edges(data(), load_table(lr_name), **keys, key_added=None),
                temporal_edges(
                    data(), **keys, regulators=regulators(), seed=config.seed, key_added=None
                ),
            )
            write_table(out, "network_layers", edges)
            cache.record("networks", k_net, [out / "network_layers.parquet"])

    k_reg = cache.key("regulators", upstream=k_de, prior=config.priors["tf_targets"])
    if cached("regulators", k_reg) is None:
        with timed("regulators"):
            de = pd.read_parquet(out / "de.parquet")
            ur = upstream_regulators(de, load_table(config.priors["tf_targets"]))
            write_table(out, "regulators", ur)
            write_table(out, "rank_regulators", rank_regulators(ur, scheme="li2022"))
            cache.record(
                "regulators", k_reg, [out / "regulators.parquet", out / "rank_regulators.parquet"]
            )

    k_twin = cache.key(
        "twin",
        upstream=k_net,
        n_intercellular=st.n_intercellular,
        network_level=st.network_level,
        top_k=st.grn_top_k,
    )
    if cached("twin", k_twin) is None:
        with timed("twin"):
            layers = pd.read_parquet(out / "network_layers.parquet")
            twin = fit_twin(
                data(),
                layers,
                **keys,
                n_intercellular=st.n_intercellular,
                network_level=st.network_level,
                regulators=regulators(),
                top_k=st.grn_top_k,
            )
            save_twin(twin, out / "twin")
            edges = layers
            if st.network_level == "donors" and twin.network is not None:
                edges = multicellular_network(layers, twin.network)  # what the twin uses
            write_table(out, "edges", edges)
            kept = pd.read_parquet(out / "qc.parquet").rename(
                columns={"n_cells": "n_cells_before", "n_cells_kept": "n_cells"}
            )
            write_table(out, "patient_states", patient_states(twin, kept))
            outputs = [
                out / "edges.parquet",
                out / "patient_states.parquet",
                *sorted((out / "twin").iterdir()),
            ]
            cache.record("twin", k_twin, outputs)
            loaded["twin"] = twin

    compute = config.compute
    own_cluster = compute.scheduler is None and compute.profile is None
    k_screens = cache.key(
        "screens",
        upstream=k_twin,
        seed=config.seed,
        n_null=st.n_null,
        null_size=st.null_size,
        n_steps=st.n_steps,
        drugs=st.screen_drugs,
        dose=st.drug_dose,
    )
    screens_record = cached("screens", k_screens)
    if screens_record is None:
        twin = loaded.get("twin") or load_twin(out / "twin")
        workers = compute.workers
        if workers is None and own_cluster:
            workers = _default_workers(twin)
        with (
            timed("screens") as advance,
            resolve_client(
                scheduler=compute.scheduler,
                profile=compute.profile,
                n_workers=workers if own_cluster else None,
            ) as client,
        ):
            # targets and drugs share the null twins' settings, the client and the progress bar
            screen = functools.partial(
                target_screen,
                twin,
                n_null=st.n_null,
                null_size=st.null_size,
                seed=config.seed,
                n_steps=st.n_steps,
                client=client,
                progress=advance,
            )
            ranking, per_context = screen()
            failures["target_screen"] = int(ranking.attrs.get("failures", 0))
            names = ["perturbations", "rank_targets", "rank_disease_genes", "patients"]
            write_table(out, "perturbations", per_context)
            write_table(out, "rank_targets", ranking)
            write_table(out, "rank_disease_genes", disease_gene_screen(twin, n_steps=st.n_steps))
            if st.screen_drugs:
                table = drug_target_table()
                table = table[table["gene"].isin(set(twin.genes))]
                drugs = drugs_from_table(table, dose=st.drug_dose)
                if drugs:
                    drug_rank, _ = screen(drugs)
                    names_by_id = table.drop_duplicates("drug_id").set_index("drug_id")["drug_name"]
                    ids = drug_rank["name"].str.removeprefix("drug:")
                    drug_rank.insert(1, "drug_name", ids.map(names_by_id).fillna(ids).to_numpy())
                    write_table(out, "rank_drugs", drug_rank)
                    names.append("rank_drugs")
            write_table(out, "patients", patient_screen(twin, n_steps=st.n_steps))
            cache.record(
                "screens",
                k_screens,
                [out / f"{n}.parquet" for n in names],
                {"failures": failures},
            )
    else:
        failures.update(screens_record.get("failures", {}))

    k_enrich = cache.key(
        "enrichment",
        upstream=[k_de, k_screens],
        prerank=st.enrichment_prerank,
        ora=st.enrichment_ora,
        top_k=st.enrichment_top_k,
        permutations=st.enrichment_permutations,
        seed=config.seed,
    )
    if cached("enrichment", k_enrich) is None:
        with timed("enrichment"):
            table = enrichment(
                pd.read_parquet(out / "de.parquet"),
                rank_targets=pd.read_parquet(out / "rank_targets.parquet"),
                rank_disease_genes=pd.read_parquet(out / "rank_disease_genes.parquet"),
                prerank_collections=st.enrichment_prerank,
                ora_collections=st.enrichment_ora,
                k=st.enrichment_top_k,
                permutations=st.enrichment_permutations,
                seed=config.seed,
            )
            write_table(out, "enrichment", table)
            cache.record("enrichment", k_enrich, [out / "enrichment.parquet"])

    stage_keys = [k_de, k_reg, k_screens, k_enrich]
    if config.disease is not None:
        k_valid = cache.key(
            "validation",
            upstream=k_screens,
            disease=config.disease,
            ks=st.validation_ks,
            n_random=st.validation_random,
            seed=config.seed,
        )
        stage_keys.append(k_valid)
        if cached("validation", k_valid) is None:
            with timed("validation"):
                rankings = {
                    name: pd.read_parquet(out / f"{name}.parquet")
                    for name in ("rank_disease_genes", "rank_targets", "rank_drugs")
                    if (out / f"{name}.parquet").is_file()
                }
                table = validate_rankings(
                    disease=config.disease,
                    **rankings,
                    ks=tuple(st.validation_ks),
                    n_random=st.validation_random,
                    seed=config.seed,
                )
                write_table(out, "validation", table)
                cache.record("validation", k_valid, [out / "validation.parquet"])
    elif (out / "validation.parquet").is_file():
        (out / "validation.parquet").unlink()  # a disease removed from the config

    run = {
        "schema_version": SCHEMA_VERSION,
        "versions": package_versions(),
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "inputs": {str(data_path): data_sha},
        "cohort": cohort["line"],
        "time_unit": cohort.get("time_unit"),
        "skipped_groups": cohort["skipped"],
        "cached_stages": cached_stages,
        "timings_s": timings,
        "failures": failures,
        "tables": sorted(p.stem for p in out.glob("*.parquet")),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(out / "run.json", run)
    # the report reads run.json; it is rebuilt only when a result or the config changed
    k_report = cache.key("report", upstream=stage_keys, config=run["config"])
    if cached("report", k_report) is None:
        with timed("report"):
            build_report(out)
            cache.record("report", k_report, [out / "report.html"])
    run["timings_s"], run["cached_stages"] = timings, cached_stages  # the report's too
    write_json(out / "run.json", run)
    top = pd.read_parquet(out / "rank_targets.parquet").head(10)
    run["top_targets"] = top["name"].str.removeprefix("KO:").tolist()
    run["report"] = str(out / "report.html")
    return run


def _data_path(config: RunConfig, out: Path, cache, cached, timed) -> Path:
    """Return the cohort file: a path, a resolved manifest entry, or the simulator's output."""
    from omicstwin.io.manifests import resolve

    data = config.data
    if isinstance(data, SimulatedData):
        path = out / "cohort.h5ad"
        key = cache.key("simulate", **data.model_dump())
        if cached("simulate", key) is None:
            from omicstwin.datasets import simulate_cohort
            from omicstwin.store.rundir import atomic_path

            with timed("simulate"):
                extra = {"n_cells": data.n_cells} if data.n_cells is not None else {}
                adata = simulate_cohort(data.simulate, seed=data.seed, **extra)
                partial = atomic_path(path)
                adata.write_h5ad(partial, compression="lzf")
                partial.replace(path)
                cache.record("simulate", key, [path])
        return path
    if data.startswith("manifest:"):
        return Path(resolve(data.removeprefix("manifest:")))
    return Path(data)
