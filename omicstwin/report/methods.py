"""Methods prose and provenance, generated from ``run.json`` (the config and what was run).

The text describes what each stage of :mod:`omicstwin.pipeline` does with the parameters this
run used; it is written from the config alone, so it cannot drift from what was run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omicstwin.report._format import describe_data, join_words, time_unit_of


def _get(mapping: dict[str, Any], key: str, default: Any = None) -> Any:
    value = (mapping or {}).get(key, default)
    return default if value is None else value


def _listed(items: Any, what: str) -> str:
    """Return ``"; collections: a and b"``, or ``""`` when not configured."""
    if not items:
        return ""
    return f"; {what}: {join_words([str(i) for i in items])}"


def _param(value: Any, what: str) -> str:
    """Return ``"; 1,000 permutations"``, or ``""`` when not configured."""
    return "" if value is None else f"; {value:,} {what}"


def methods_paragraphs(run: dict[str, Any], *, tables: set[str]) -> list[tuple[str, str]]:
    """``(stage, paragraph)`` pairs describing the run's methods.

    Parameters
    ----------
    run
        ``run.json`` content.
    tables
        Names of the tables present in the run directory (stages that did not run are skipped).

    Returns
    -------
    list of tuple of str
        Data and design first, then each stage that left a table, then computation.
    """
    ctx = _RunContext.of(run, tables)
    out = [("Data and design", _data_paragraph(ctx))]
    for stage, needs, paragraph in _STAGE_PARAGRAPHS:
        if needs & tables:
            out.append((stage, paragraph(ctx)))
    out.append(("Computation", _computation_paragraph(ctx)))
    return out


@dataclass(frozen=True)
class _RunContext:
    """The parts of ``run.json`` the paragraphs read (missing sections are empty dicts).

    Attributes
    ----------
    run
        ``run.json`` content.
    config
        The run's config; ``stages``, ``priors`` and ``compute`` are its sub-sections.
    tables
        Names of the tables present in the run directory.
    """

    run: dict[str, Any]
    config: dict[str, Any]
    stages: dict[str, Any]
    priors: dict[str, Any]
    compute: dict[str, Any]
    tables: set[str]

    @classmethod
    def of(cls, run: dict[str, Any], tables: set[str]) -> _RunContext:
        """Split ``run`` into its config sections."""
        config = run.get("config") or {}
        return cls(
            run=run,
            config=config,
            stages=config.get("stages") or {},
            priors=config.get("priors") or {},
            compute=config.get("compute") or {},
            tables=tables,
        )


def _data_paragraph(ctx: _RunContext) -> str:
    """Input file, design keys, the replicate minimum and quality control."""
    config, st = ctx.config, ctx.stages
    case, control = _get(config, "case", "case"), _get(config, "control", "control")
    unit = time_unit_of(ctx.run)
    described = describe_data(ctx.run)
    # a simulated cohort (data given as a mapping) is named by its preset and by its file
    source = (
        f"{described['label']} ({described['file']})"
        if isinstance(config.get("data"), dict)
        else described["label"]
    )
    return (
        f"Raw counts were read from {source if config.get('data') else 'the input file'}"
        + (f" (layer '{config['layer']}')" if config.get("layer") else "")
        + f". Cells were grouped by cell type ('{_get(config, 'cell_type_key', '?')}'), "
        f"time ('{_get(config, 'time_key', '?')}'"
        + (f", in {unit}" if unit else "")
        + f"), condition ('{_get(config, 'condition_key', '?')}': case '{case}' versus "
        f"control '{control}') and donor ('{_get(config, 'donor_key', '?')}'). The cohort "
        "was validated once at the start; cell type x time contexts with fewer than "
        f"{_get(st, 'min_donors', 2)} donors per arm were skipped."
        + (
            f" Quality control kept cells with at least {st['min_genes']} detected genes and "
            f"genes detected in at least {st.get('min_cells', '?')} cells."
            if "min_genes" in st
            else ""
        )
    )


def _de_paragraph(ctx: _RunContext) -> str:
    """Pseudobulk negative binomial GLM and its multiple-testing correction."""
    return (
        "Donor pseudobulk negative binomial GLM per cell type x time point: cells were "
        "summed per donor, the model ~ condition with a log library-size offset was fitted "
        "with Cox-Reid dispersions shrunk towards the mean-dispersion trend (edgeR-style "
        "empirical Bayes), and genes were tested by a likelihood-ratio test; q-values are "
        "Benjamini-Hochberg within each context (min_donors="
        f"{_get(ctx.stages, 'min_donors', 2)}). Genes with q < 0.05 count as differentially "
        "expressed (DEGs)."
    )


def _network_paragraph(ctx: _RunContext) -> str:
    """Intracellular GRNs, intercellular ligand-receptor edges and temporal edges."""
    st, priors = ctx.stages, ctx.priors
    return (
        f"Intracellular gene regulatory networks per cell type x time point x condition "
        f"were inferred with the '{_get(st, 'grn_method', '?')}' method, keeping the top "
        f"{_get(st, 'grn_top_k', '?')} regulators per target; candidate regulators were "
        f"transcription factors ({priors.get('tfs', '?')}) and receptors "
        f"({priors.get('ligand_receptor', '?')}). Intercellular ligand (sender) -> "
        f"receptor (receiver) edges came from {priors.get('ligand_receptor', '?')}, "
        "scored by the ligand's disease change in the sender times the fraction of "
        "receiver cells expressing the receptor. Temporal edges link a regulator at one "
        "time point to a target at the next within a cell type, from donor-level "
        "pseudobulk trajectories."
    )


def _regulators_paragraph(ctx: _RunContext) -> str:
    """Upstream regulator analysis (overlap test, activation z-score, ranking)."""
    return (
        "For each context, each regulator's prior targets "
        f"({ctx.priors.get('tf_targets', '?')}) were compared with the context's DEGs: a "
        "one-sided Fisher exact test of the overlap within the genes tested and an activation "
        "z-score from the sign agreement of the targets' fold changes, corrected for the bias "
        "of the DEG list (share up) and of the regulator's prior edges (share activating) "
        "(Kraemer et al. 2014; activated z >= 2, inhibited z <= -2). Regulators were "
        "ranked as in Li et al. 2022 by the number of cell type x time contexts in which "
        "they are predicted (overlap q < 0.05), ties broken by the summed -log10 overlap p."
    )


def _mnm_paragraph(ctx: _RunContext) -> str:
    """Describe the multicellular network model and the cell-type centrality."""
    return (
        "A multicellular network model (MNM; Li et al. 2022) links a sender cell type to a "
        "receiver at a time point when an upstream regulator predicted for the receiver's DEGs "
        "(overlap q < 0.05) is itself an up-regulated DEG of the sender (self-loops excluded); "
        "an edge carries the number of such regulators. Cell types were ranked by eigenvector "
        "centrality of the MNM (as in scDrugPrio), with edges summed over time points and "
        "treated as undirected, scaled to a maximum of 1; cell types without an edge have 0."
    )


def _twin_paragraph(ctx: _RunContext) -> str:
    """States and elasticity networks the digital twin holds."""
    st = ctx.stages
    variation = (
        "donor-to-donor" if _get(st, "network_level", "donors") == "donors" else "cell-to-cell"
    )
    return (
        "The twin holds the mean log1p(CP10k) state of every cell type x time point for "
        "each arm and each donor, and elasticity networks: per context, ridge "
        "regressions of each target on its network regulators, fitted on "
        + variation
        + " variation, with the "
        f"{_get(st, 'n_intercellular', '?')} strongest intercellular edges per time "
        "point and temporal elasticities from donor states at consecutive time points."
    )


def _screens_paragraph(ctx: _RunContext) -> str:
    """In-silico knockouts, reversal rank score, label null, disease genes, patients, drugs."""
    st = ctx.stages
    # drugs are described only when the drug screen was asked for and left its table
    drugs = (
        f" Drugs (sets of targets from the drug-target table, at dose "
        f"{_get(st, 'drug_dose', '?')}) were screened the same way."
        if st.get("screen_drugs", True) and "rank_drugs" in ctx.tables
        else ""
    )
    return (
        "Every gene with an outgoing network edge was knocked out in silico in a "
        "label-free reference state (per cell type and time the mean of all donors' states); "
        f"the change was propagated {_get(st, 'n_steps', '?')} steps through each context's "
        "network (fitted on donor variation without the arm labels, as in CellOracle), passed "
        "between cell types along the intercellular edges and carried forward in time along "
        "the temporal edges. The reversal score -<delta, d>/<d, d> measures how much of the "
        "disease vector d (case donors' mean minus control donors' mean) the knockout undoes; "
        "it is a rank score (its order is the estimate, its size is not a calibrated share of "
        "the disease); off-target is the change orthogonal to it. p-values are donor-label "
        "permutation tests per target: the arm labels were permuted among the donors "
        f"({_get(st, 'n_permutations', '?')} relabellings, or all distinct ones when fewer), "
        "the disease vector recomputed and each target rescored, with Benjamini-Hochberg "
        "q-values (their histogram is in null_calibration.parquet). Disease genes were ranked "
        "by induction: how far moving the gene to its case level in the control state "
        "recreates the disease vector. Each case donor's own disease vector (against the "
        "control mean) was scored to rank that patient's targets, with p-values against the "
        "control donors' own vectors; each donor's disease position is held out (axis, gene "
        "filter and means fitted without the donor), with a bootstrap interval over its "
        "cells. "
        "targets." + drugs
    )


def _enrichment_paragraph(ctx: _RunContext) -> str:
    """Preranked GSEA and over-representation, with the collections configured."""
    st = ctx.stages
    return (
        "Gene set enrichment: preranked GSEA of each context's genes ranked by their "
        "differential expression (normalised enrichment score, NES"
        + _listed(st.get("enrichment_prerank"), "collections")
        + _param(st.get("enrichment_permutations"), "permutations")
        + ") and over-representation of the top "
        + str(_get(st, "enrichment_top_k", "")).strip()
        + " targets and disease genes (log2 odds ratio, hypergeometric p"
        + _listed(st.get("enrichment_ora"), "collections")
        + "); q-values are Benjamini-Hochberg within analysis x collection x context."
    )


def _validation_paragraph(ctx: _RunContext) -> str:
    """Precision at k against the disease's known genes and a random-ranking baseline."""
    config, st = ctx.config, ctx.stages
    return (
        "Rankings were compared with what is known about the disease"
        + (f" ({config['disease']})" if config.get("disease") else "")
        + ": precision at k"
        + (
            f" (k = {', '.join(str(k) for k in st['validation_ks'])})"
            if st.get("validation_ks")
            else ""
        )
        + ", the known items among the top k, next to the precision expected of a "
        "random ranking and its 95th percentile"
        + _param(st.get("validation_random"), "random rankings")
        + ", with a one-sided hypergeometric p-value."
    )


def _computation_paragraph(ctx: _RunContext) -> str:
    """Seed, where the screens ran and the software versions."""
    versions = ctx.run.get("versions") or {}
    shown = [
        f"{k} {versions[k]}" for k in ("omicstwin", "python", "numpy", "scanpy") if k in versions
    ]
    return (
        f"Random seed {ctx.run.get('seed', ctx.config.get('seed', '?'))}; screens ran "
        f"{_where_screens_ran(ctx.compute)}"
        + (f"; software: {join_words(shown)}" if shown else "")
        + ". Results are identical for any worker count given the seed."
    )


def _where_screens_ran(compute: dict[str, Any]) -> str:
    """Describe the compute backend: scheduler, cluster profile, worker count, or automatic."""
    workers = compute.get("workers")
    if compute.get("scheduler"):
        return f"the dask scheduler at {compute['scheduler']}"
    if compute.get("profile"):
        return f"cluster profile '{compute['profile']}'"
    if workers == 0:
        return "in process"
    if workers:
        return f"a local dask cluster of {workers} workers"
    return "in process or on a local dask cluster, chosen by screen size"


# Stage paragraphs after "Data and design", in report order: (stage, tables any of which
# shows the stage ran, paragraph builder).
_STAGE_PARAGRAPHS: tuple[tuple[str, set[str], Callable[[_RunContext], str]], ...] = (
    ("Differential expression", {"de"}, _de_paragraph),
    ("Multicellular network", {"edges", "network_layers"}, _network_paragraph),
    ("Upstream regulators", {"regulators"}, _regulators_paragraph),
    ("Multicellular network model", {"mnm", "centrality"}, _mnm_paragraph),
    ("Digital twin", {"edges"}, _twin_paragraph),
    ("Perturbation screens", {"perturbations", "rank_targets"}, _screens_paragraph),
    ("Enrichment", {"enrichment"}, _enrichment_paragraph),
    ("Validation", {"validation"}, _validation_paragraph),
)


def flatten_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten a config: ``{"a": {"b": 1}}`` -> ``[("a.b", "1")]`` (for the methods table)."""
    rows: list[tuple[str, str]] = []
    for key in sorted(config):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += flatten_config(value, prefix=f"{name}.")
        else:
            rows.append((name, "–" if value is None else str(value)))
    return rows
