"""``omicstwin run``: the stages that exist, from a validated config to a run directory.

Stages: validate -> DE -> networks (per-context GRNs, intercellular, temporal) -> upstream
regulators -> twin -> screens (targets with null twins, disease genes, drugs, patients). Each
writes its tables of DESIGN.md into the run directory atomically; ``run.json`` records the
schema version, package versions, config, seed, input checksum, per-stage timings and failures.
Caching/resume, enrichment, validation against known biology and the report join later
(pipeline issue).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
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


class Stages(BaseModel):
    """Stage parameters."""

    model_config = ConfigDict(extra="forbid")

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


class RunConfig(BaseModel):
    """A study: the data, its keys and labels, priors, stage parameters, seed and compute."""

    model_config = ConfigDict(extra="forbid")

    data: str
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
        if "data" in raw and not Path(raw["data"]).is_absolute():
            raw["data"] = str((path.parent / raw["data"]).resolve())
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

    from omicstwin.io import read_data, validate_cohort
    from omicstwin.io.manifests import load_gene_list, load_table, sha256_of
    from omicstwin.io.resources import drug_target_table
    from omicstwin.parallel import resolve_client
    from omicstwin.store.rundir import SCHEMA_VERSION, package_versions, write_json, write_table
    from omicstwin.tl.de import differential_expression
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
        patient_screen,
        save_twin,
        target_screen,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = stage or (lambda _name: contextlib.nullcontext())
    timings: dict[str, float] = {}
    failures: dict[str, int] = {}
    keys = {
        "cell_type_key": config.cell_type_key,
        "time_key": config.time_key,
        "condition_key": config.condition_key,
        "donor_key": config.donor_key,
        "case": config.case,
        "control": config.control,
        "layer": config.layer,
    }
    st = config.stages

    def timed(name: str):
        @contextlib.contextmanager
        def wrapper():
            started = time.perf_counter()
            with stage(name):
                yield
            timings[name] = round(time.perf_counter() - started, 3)
            logger.info("stage %s: %.1f s", name, timings[name])

        return wrapper()

    from omicstwin.store.cache import StageCache
    from omicstwin.tl.twin import load_twin

    cache = StageCache(out, enabled=use_cache)
    data_sha = sha256_of(config.data)
    loaded: dict[str, Any] = {}

    def data():  # read only when a stage that needs the cells has to run
        if "data" not in loaded:
            loaded["data"] = read_data(config.data)
        return loaded["data"]

    def cached(name: str, key: str) -> dict | None:
        record = cache.hit(name, key)
        if record is not None:
            timings[name] = 0.0
            cached_stages.append(name)
            logger.info("stage %s: unchanged, reused", name)
        return record

    cached_stages: list[str] = []
    unit = config.time_unit
    k_validate = cache.key(
        "validate", data=data_sha, keys=keys, unit=unit, min_donors=st.min_donors
    )
    record = cached("validate", k_validate)
    if record is None:
        with timed("validate"):
            unit = unit or getattr(data(), "uns", {}).get("time_unit")
            summary = validate_cohort(data(), **keys, time_unit=unit, min_donors=st.min_donors)
            write_table(out, "design", summary.design)
            cohort = {"line": summary.one_line(), "skipped": len(summary.skipped_groups)}
            cache.record("validate", k_validate, [out / "design.parquet"], {"cohort": cohort})
    else:
        cohort = record["cohort"]

    k_de = cache.key("de", upstream=k_validate, min_donors=st.min_donors)
    if cached("de", k_de) is None:
        with timed("de"):
            de = differential_expression(data(), **keys, min_donors=st.min_donors, key_added=None)
            write_table(out, "de", de)
            cache.record("de", k_de, [out / "de.parquet"])

    lr_name, tf_name = config.priors["ligand_receptor"], config.priors["tfs"]
    k_net = cache.key(
        "networks",
        upstream=k_validate,
        priors=config.priors,
        seed=config.seed,
        method=st.grn_method,
        top_k=st.grn_top_k,
    )

    def regulators() -> list[str]:
        from omicstwin.io import rna_modality

        if "regulators" not in loaded:
            lr = load_table(lr_name)
            tfs = set(load_gene_list(tf_name))
            receptors = set(lr["receptor"].str.split("_").explode())
            genes = list(rna_modality(data()).var_names)
            loaded["regulators"] = [g for g in genes if g in tfs or g in receptors]
        return loaded["regulators"]

    if cached("networks", k_net) is None:
        with timed("networks"):
            edges = multicellular_network(
                context_grns(
                    data(),
                    **keys,
                    method=st.grn_method,
                    regulators=regulators(),
                    top_k=st.grn_top_k,
                    seed=config.seed,
                    key_added=None,
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
            outputs = [out / "edges.parquet", *sorted((out / "twin").iterdir())]
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
    if cached("screens", k_screens) is None:
        twin = loaded.get("twin") or load_twin(out / "twin")
        workers = compute.workers
        if workers is None and own_cluster:
            workers = _default_workers(twin)
        with (
            timed("screens"),
            resolve_client(
                scheduler=compute.scheduler,
                profile=compute.profile,
                n_workers=workers if own_cluster else None,
            ) as client,
        ):
            ranking, per_context = target_screen(
                twin,
                n_null=st.n_null,
                null_size=st.null_size,
                seed=config.seed,
                n_steps=st.n_steps,
                client=client,
            )
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
                    drug_rank, _ = target_screen(
                        twin,
                        drugs,
                        n_null=st.n_null,
                        null_size=st.null_size,
                        seed=config.seed,
                        n_steps=st.n_steps,
                        client=client,
                    )
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
    run = {
        "schema_version": SCHEMA_VERSION,
        "versions": package_versions(),
        "config": config.model_dump(),
        "seed": config.seed,
        "inputs": {config.data: data_sha},
        "cohort": cohort["line"],
        "skipped_groups": cohort["skipped"],
        "cached_stages": cached_stages,
        "timings_s": timings,
        "failures": failures,
        "tables": sorted(p.stem for p in out.glob("*.parquet")),
    }
    write_json(out / "run.json", run)
    top = pd.read_parquet(out / "rank_targets.parquet").head(10)
    run["top_targets"] = top["name"].str.removeprefix("KO:").tolist()
    return run
