"""The stages of ``omicstwin run``, declared in order (:data:`STAGES`).

(simulate) -> validate -> preprocess (QC) -> DE -> networks (per-context GRNs, intercellular,
temporal) -> upstream regulators -> twin -> screens (targets with a label permutation null,
disease genes, drugs, patients) -> enrichment (gseapy) -> validation against known biology
(when the config names a disease) -> report. Each run function reads the run's one cohort
(:attr:`RunContext.cohort`) or earlier stages' tables and writes its tables of DESIGN.md; adding
a stage is adding a run function and its :class:`Stage` declaration to :data:`STAGES`.
"""

from __future__ import annotations

import functools
from typing import Any

from omicstwin.pipeline.config import SimulatedData
from omicstwin.pipeline.stage import WHOLE_CONFIG, RunContext, Stage
from omicstwin.store.rundir import write_table

# Screens below this many perturbation x gene x context updates run in process: starting a
# LocalCluster costs seconds, and on 2 cores its worker processes measured slower than the
# in-process screen for the demo cohort (~5e7 updates).
_IN_PROCESS_WORK = 1e9


def _default_workers(twin) -> int:
    """0 (in process) for small screens or without dask, else one LocalCluster worker per core."""
    import os

    from omicstwin._optional import available

    if not available("distributed"):  # the core install: no dask extra
        return 0
    n_t, n_c, n_g = twin.shape
    work = len(twin.regulators()) * n_g * n_t * n_c
    return 0 if work < _IN_PROCESS_WORK else max(1, os.cpu_count() or 1)


def _read(ctx: RunContext, name: str):
    import pandas as pd

    return pd.read_parquet(ctx.out / f"{name}.parquet")


def simulate(ctx: RunContext) -> None:
    """Write the simulated cohort (``cohort.h5ad``) the config asks for."""
    from omicstwin.datasets import generate
    from omicstwin.store.rundir import atomic_path

    data = ctx.config.data
    extra = {"n_cells": data.n_cells} if data.n_cells is not None else {}
    if data.simulate == "atlas":  # streamed to the file, never whole in memory
        from omicstwin.datasets.atlas import write_atlas

        write_atlas(ctx.data_path, disease=data.disease, seed=data.seed, **extra)
        return
    adata = generate(
        data.simulate, generator=data.generator, disease=data.disease, seed=data.seed, **extra
    )
    partial = atomic_path(ctx.data_path)
    adata.write_h5ad(partial, compression="lzf")
    partial.replace(ctx.data_path)


def validate(ctx: RunContext) -> dict[str, Any]:
    """Validate the input at the door; write the design table."""
    summary = ctx.validated.summary
    write_table(ctx.out, "design", summary.design)
    write_table(ctx.out, "gene_ids", ctx.gene_plan.table)
    cohort = {
        "line": summary.one_line(),
        "skipped": len(summary.skipped_groups),
        "time_unit": ctx.time_unit,
        "genes": ctx.gene_plan.one_line(),
    }
    return {"cohort": cohort}


def preprocess(ctx: RunContext) -> None:
    """Quality control of cells (genes, mitochondrial / ribosomal share, doublets) and genes."""
    write_table(ctx.out, "qc", ctx.cohort.qc)


def de(ctx: RunContext) -> None:
    """Differential expression per cell type x time (donor pseudobulk NB GLM)."""
    from omicstwin.tl.de import differential_expression

    table = differential_expression(
        ctx.cohort, min_donors=ctx.config.stages.min_donors, key_added=None
    )
    write_table(ctx.out, "de", table)


def _network_genes(ctx: RunContext):
    """Return the genes of the regulatory layers (``stages.max_network_genes``)."""
    from omicstwin.tl.networks import network_genes

    cap = ctx.config.stages.max_network_genes
    small = cap is None or len(ctx.cohort.genes) <= cap  # every gene: no DE table needed
    return network_genes(
        ctx.cohort,
        de=None if small else _read(ctx, "de"),
        regulators=ctx.regulators,
        max_genes=cap,
    )


def networks(ctx: RunContext) -> dict[str, Any]:
    """Infer the network layers: per-context GRNs, intercellular and temporal edges."""
    from omicstwin.io.manifests import load_table
    from omicstwin.tl.networks import (
        context_grns,
        intercellular_edges,
        multicellular_network,
        temporal_edges,
    )

    config, stages = ctx.config, ctx.config.stages
    rule = _network_genes(ctx)
    # None when the rule keeps every gene: the fits then run exactly as without a rule
    genes = None if len(rule.genes) == len(ctx.cohort.genes) else rule.genes
    with_grns = stages.context_grns
    if with_grns is None:  # auto: skipped only at scale and when the twin does not use them
        with_grns = genes is None or stages.network_level == "cells"
    grns = None
    if with_grns:
        grns = context_grns(
            ctx.cohort,
            method=stages.grn_method,
            regulators=rule.regulators,
            top_k=stages.grn_top_k,
            seed=config.seed,
            key_added=None,
            progress=lambda done, total, _label: ctx.progress(done, total),
            genes=genes,
        )
    edges = multicellular_network(
        *([] if grns is None else [grns]),
        intercellular_edges(
            ctx.cohort,
            load_table(config.priors["ligand_receptor"]),
            seed=config.seed,
            key_added=None,
        ),
        temporal_edges(
            ctx.cohort, regulators=rule.regulators, seed=config.seed, key_added=None, genes=genes
        ),
    )
    write_table(ctx.out, "network_layers", edges)
    return {"network_genes": {**rule.params(), "context_grns": bool(with_grns)}}


def regulators(ctx: RunContext) -> None:
    """Upstream regulators of the DE genes and their ranking.

    The prior is ``priors.regulators``: ``collectri`` (TFs only; the default, for which the DEG
    rule is calibrated) or a built typed prior such as ``regulator_prior`` (TFs, ligands,
    receptors, kinases) from ``priors.regulator_source``.
    """
    from omicstwin.tl.regulators import load_regulator_prior, rank_regulators, upstream_regulators

    priors = ctx.config.priors
    prior = load_regulator_prior(priors["regulators"], source=priors["regulator_source"])
    ur = upstream_regulators(_read(ctx, "de"), prior)
    write_table(ctx.out, "regulators", ur)
    write_table(ctx.out, "rank_regulators", rank_regulators(ur, scheme="li2022"))
    _write_mnm(ctx, ur)


def _write_mnm(ctx: RunContext, ur) -> None:
    """Write the multicellular network model (Li 2022) of the run's DE and its centrality.

    Centrality covers every cell type of the cohort (the design table), so a cell type with no
    MNM edge is listed with centrality 0 instead of missing.
    """
    from omicstwin.schemas import conform
    from omicstwin.tl.regulators import cell_type_centrality, multicellular_network_model

    mnm = conform(multicellular_network_model(_read(ctx, "de"), ur), "mnm")
    cell_types = sorted(_read(ctx, "design")["cell_type"].dropna().astype(str).unique())
    write_table(ctx.out, "mnm", mnm)
    centrality = cell_type_centrality(mnm, cell_types=cell_types)
    write_table(ctx.out, "centrality", conform(centrality, "centrality"))


def twin(ctx: RunContext) -> None:
    """Fit the twin; write it, the edges it propagates through and the patients' states."""
    from omicstwin.schemas import conform
    from omicstwin.store.rundir import write_table_extending
    from omicstwin.tl.patients import patient_states
    from omicstwin.tl.twin import fit_twin, save_twin

    stages = ctx.config.stages
    layers = _read(ctx, "network_layers")
    rule = _network_genes(ctx)
    fitted = fit_twin(
        ctx.cohort,
        layers,
        n_intercellular=stages.n_intercellular,
        network_level=stages.network_level,
        regulators=rule.regulators,
        top_k=stages.grn_top_k,
        network_genes=None if len(rule.genes) == len(ctx.cohort.genes) else rule.genes,
        ligand_targets=_ligand_targets() if stages.intercellular_model == "programme" else None,
        intercellular_model=stages.intercellular_model,
        lr_selection=stages.lr_selection,
        lr_max_p=stages.lr_max_p,
    )
    save_twin(fitted, ctx.out / "twin")
    del layers  # edges are written from the file, not from a second copy of the big table
    network = None
    if stages.network_level == "donors" and fitted.network is not None:
        network = conform(fitted.network, "edges")  # what the twin uses
    write_table_extending(ctx.out, "edges", ctx.out / "network_layers.parquet", network)
    kept = _read(ctx, "qc").rename(columns={"n_cells": "n_cells_before", "n_cells_kept": "n_cells"})
    states = patient_states(
        fitted,
        kept,
        data=ctx.cohort,
        n_bootstrap=stages.n_bootstrap,
        seed=ctx.config.seed,
    )
    write_table(ctx.out, "patient_states", states)
    ctx.twin = fitted


def _ligand_targets():
    """Load the ligand -> target prior; None with a warning when it is unavailable.

    The twin then warns again and falls back to its receptor model (:func:`omicstwin.tl.twin.
    fit_twin`).
    """
    from omicstwin._logging import logger
    from omicstwin.errors import OmicstwinError

    try:
        from omicstwin.tl.priors import load_prior

        return load_prior("ligand_targets")
    except (ImportError, OmicstwinError) as error:
        logger.warning("ligand_targets prior unavailable (%s)", error)
        return None


def screens(ctx: RunContext) -> dict[str, Any]:
    """Target, disease-gene, drug and patient screens on the twin (dask when large)."""
    from omicstwin.parallel import resolve_client
    from omicstwin.tl.patients import patient_screen
    from omicstwin.tl.twin import disease_gene_screen, load_twin, target_screen

    stages, compute = ctx.config.stages, ctx.config.compute
    fitted = ctx.twin or load_twin(ctx.out / "twin")
    own_cluster = compute.scheduler is None and compute.profile is None
    workers = compute.workers
    if workers is None and own_cluster:
        workers = _default_workers(fitted)
    client_options = {"n_workers": workers if own_cluster else None}
    with resolve_client(
        scheduler=compute.scheduler, profile=compute.profile, **client_options
    ) as client:
        # targets and drugs share the permutation null's settings, the client and progress bar
        screen = functools.partial(
            target_screen,
            fitted,
            n_permutations=stages.n_permutations,
            seed=ctx.config.seed,
            n_steps=stages.n_steps,
            client=client,
            progress=ctx.progress,
            memory_per_worker=compute.memory_per_worker,
        )
        ranking, per_context = screen()
        failures = {"target_screen": int(ranking.attrs.get("failures", 0))}
        write_table(ctx.out, "perturbations", per_context)
        write_table(ctx.out, "rank_targets", ranking)
        calibration = [_calibration("targets", ranking)]
        genes = disease_gene_screen(
            fitted, n_steps=stages.n_steps, memory_per_worker=compute.memory_per_worker
        )
        write_table(ctx.out, "rank_disease_genes", genes)
        if stages.screen_drugs:
            drug_rank = _drug_screen(ctx, fitted, screen)
            if drug_rank is not None:
                calibration.append(_calibration("drugs", drug_rank))
        patients = patient_screen(
            fitted,
            n_steps=stages.n_steps,
            client=client,
            memory_per_worker=compute.memory_per_worker,
        )
        write_table(ctx.out, "patients", patients)
        calibration.append(_patient_calibration(fitted, patients))
    import pandas as pd

    write_table(ctx.out, "null_calibration", pd.concat(calibration, ignore_index=True))
    return {"failures": failures, "null": ranking.attrs.get("null", {})}


def _calibration(screen: str, ranking):
    """Return the p-value histogram of one study-level screen (``null_calibration`` rows)."""
    from omicstwin.tl.nulls import calibration_table

    null = ranking.attrs.get("null", {})
    return calibration_table(
        screen,
        ranking["p_value"].to_numpy(float),
        n_permutations=int(null.get("n_permutations", 0)),
        method=str(null.get("method", "none")),
    )


def _patient_calibration(fitted, patients):
    """Return the per-patient target p-values' histogram (null: the control donors)."""
    from omicstwin.tl.nulls import calibration_table

    n_controls = sum(arm == fitted.params.get("control") for arm in fitted.donors.values())
    return calibration_table(
        "patients",
        patients["p_value"].to_numpy(float),
        n_permutations=int(n_controls),
        method="control_donors",
    )


def _drug_screen(ctx: RunContext, fitted, screen):
    """Rank the drugs whose targets are among the twin's genes (``rank_drugs``), if any."""
    from omicstwin.io.resources import drug_target_table
    from omicstwin.tl.perturb import drugs_from_table

    table = drug_target_table()
    table = table[table["gene"].isin(set(fitted.genes))]
    drugs = drugs_from_table(table, dose=ctx.config.stages.drug_dose)
    if not drugs:
        return None
    drug_rank, _ = screen(drugs)
    names_by_id = table.drop_duplicates("drug_id").set_index("drug_id")["drug_name"]
    ids = drug_rank["name"].str.removeprefix("drug:")
    drug_rank.insert(1, "drug_name", ids.map(names_by_id).fillna(ids).to_numpy())
    write_table(ctx.out, "rank_drugs", drug_rank)
    return drug_rank


def enrichment(ctx: RunContext) -> None:
    """Prerank GSEA of the DE rankings and ORA of the top targets and disease genes."""
    from omicstwin.tl.enrich import enrichment as enrich

    stages = ctx.config.stages
    ora = bool(stages.enrichment_ora)  # an empty list of collections skips that analysis
    table = enrich(
        _read(ctx, "de") if stages.enrichment_prerank else None,
        rank_targets=_read(ctx, "rank_targets") if ora else None,
        rank_disease_genes=_read(ctx, "rank_disease_genes") if ora else None,
        prerank_collections=stages.enrichment_prerank,
        ora_collections=stages.enrichment_ora,
        k=stages.enrichment_top_k,
        permutations=stages.enrichment_permutations,
        seed=ctx.config.seed,
    )
    write_table(ctx.out, "enrichment", table)


def validation(ctx: RunContext) -> None:
    """Precision of the rankings against the known biology of the config's disease."""
    from omicstwin.bench.known_biology import validate_rankings

    stages = ctx.config.stages
    rankings = {
        name: _read(ctx, name)
        for name in ("rank_disease_genes", "rank_targets", "rank_drugs")
        if (ctx.out / f"{name}.parquet").is_file()
    }
    table = validate_rankings(
        disease=ctx.config.disease,
        **rankings,
        ks=tuple(stages.validation_ks),
        n_random=stages.validation_random,
        seed=ctx.config.seed,
    )
    write_table(ctx.out, "validation", table)


def report(ctx: RunContext) -> None:
    """Write the self-contained HTML report of the run directory."""
    from omicstwin.report import build_report

    build_report(ctx.out)


STAGES: tuple[Stage, ...] = (
    Stage(
        "simulate",
        simulate,
        params=("data",),
        outputs=("cohort.h5ad",),
        when=lambda config: isinstance(config.data, SimulatedData),
    ),
    Stage(
        "validate",
        validate,
        params=(
            *("cell_type_key", "time_key", "condition_key", "donor_key", "case", "control"),
            *("layer", "time_unit", "stages.min_donors", "species", "priors"),
        ),
        outputs=("design.parquet", "gene_ids.parquet"),
        reads_input=True,
    ),
    Stage(
        "preprocess",
        preprocess,
        upstream=("validate",),
        params=("stages.min_genes", "stages.min_cells", "qc", "compute.context_cells"),
        outputs=("qc.parquet",),
    ),
    Stage(
        "de", de, upstream=("preprocess",), params=("stages.min_donors",), outputs=("de.parquet",)
    ),
    Stage(
        "networks",
        networks,
        upstream=("preprocess", "de"),  # DE genes are network targets (max_network_genes)
        params=(
            *("priors", "seed", "stages.grn_method", "stages.grn_top_k"),
            *("stages.max_network_genes", "stages.context_grns", "stages.network_level"),
        ),
        outputs=("network_layers.parquet",),
    ),
    Stage(
        "regulators",
        regulators,
        upstream=("de",),
        params=("priors.regulators", "priors.regulator_source"),
        outputs=(
            *("regulators.parquet", "rank_regulators.parquet"),
            *("mnm.parquet", "centrality.parquet"),
        ),
    ),
    Stage(
        "twin",
        twin,
        upstream=("networks",),
        params=(
            *("stages.n_intercellular", "stages.network_level", "stages.grn_top_k"),
            *("stages.n_bootstrap", "seed", "stages.max_network_genes"),
            *("stages.intercellular_model", "stages.lr_selection", "stages.lr_max_p"),
        ),
        outputs=("edges.parquet", "patient_states.parquet", "twin/"),
    ),
    Stage(
        "screens",
        screens,
        upstream=("twin",),
        params=(
            *("seed", "stages.n_permutations", "stages.n_steps"),
            *("stages.screen_drugs", "stages.drug_dose"),
        ),
        outputs=(
            *("perturbations.parquet", "rank_targets.parquet", "rank_disease_genes.parquet"),
            *("patients.parquet", "rank_drugs.parquet", "null_calibration.parquet"),
        ),
    ),
    Stage(
        "enrichment",
        enrichment,
        upstream=("de", "screens"),
        params=(
            *("stages.enrichment_prerank", "stages.enrichment_ora", "stages.enrichment_top_k"),
            *("stages.enrichment_permutations", "seed"),
        ),
        outputs=("enrichment.parquet",),
    ),
    Stage(
        "validation",
        validation,
        upstream=("screens",),
        params=("disease", "stages.validation_ks", "stages.validation_random", "seed"),
        outputs=("validation.parquet",),
        when=lambda config: config.disease is not None,
        remove_when_off=True,  # a disease removed from the config
    ),
    Stage(
        "report",
        report,
        # rebuilt only when a result or the config changed
        upstream=("de", "regulators", "screens", "enrichment", "validation"),
        params=(WHOLE_CONFIG,),
        outputs=("report.html",),
        needs_run_json=True,
    ),
)
