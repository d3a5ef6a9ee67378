"""The declared schema (column -> dtype) of every result table, in one place.

The direction and meaning of every score column are declared beside it, in
:mod:`omicstwin.scores`.

Time is float64: numeric time in its unit, or, for an ordered categorical time, the level's
position (0, 1, ...). :func:`conform` checks and casts a table before it is written or returned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omicstwin.errors import OmicstwinError

SCHEMAS: dict[str, dict[str, str]] = {
    "de": {
        "cell_type": "string",
        "time": "float64",
        "gene": "string",
        "log_fc": "float64",  # log2 fold change, case over control
        "p_value": "float64",
        "q_value": "float64",  # Benjamini-Hochberg within the cell type x time context
        "mean_case": "float64",  # mean normalised expression (CPM) in the case arm
        "mean_control": "float64",
        "n_donors_case": "int64",
        "n_donors_control": "int64",
    },
    "de_timecourse": {
        "cell_type": "string",
        "gene": "string",
        "statistic": "float64",  # likelihood-ratio statistic of the condition x time terms
        "df": "int64",
        "p_value": "float64",
        "q_value": "float64",
    },
    "edges": {
        "layer": "string",  # intracellular / intercellular / temporal
        # case / control label for per-condition GRNs; "donors" for the twin's networks fitted on
        # donor variation (time_from/time_to NaN: used at every time point); else "all"
        "condition": "string",
        "source_cell_type": "string",
        "target_cell_type": "string",
        "time_from": "float64",
        "time_to": "float64",
        "source": "string",
        "target": "string",
        "weight": "float64",
        "stability": "float64",  # fraction of bootstrap fits that keep the edge (1 if n/a)
        # intercellular edges: donor-label permutation p and BH q (NaN for the other layers)
        "p_value": "float64",
        "q_value": "float64",
    },
    "regulators": {
        "cell_type": "string",
        "time": "float64",
        "regulator": "string",
        "regulator_type": "string",  # tf / ligand / receptor / kinase / other (from the prior)
        "activation_z": "float64",  # Kraemer 2014 z, corrected for DEG-list and prior sign bias
        "p_value": "float64",  # one-sided Fisher p, prior targets vs DEGs within the universe
        "q_value": "float64",  # Benjamini-Hochberg within the cell type x time context
        "predicted": "bool",  # the call: q < 0.05 (default rule) or p < 0.05 & |z| >= 2 (li2022)
        "direction": "string",  # activated / inhibited / undetermined (activation_z vs +-2)
        "n_targets": "int64",  # prior targets among the DEGs
        "n_prior_targets": "int64",  # prior targets in the universe
        "n_degs": "int64",  # DEGs of the context in the universe
        "n_universe": "int64",  # genes in the context's universe
        "activation_z_uncorrected": "float64",  # the same z without the bias term (u = 0)
    },
    "perturbations": {
        "perturbation_id": "string",
        "kind": "string",
        "genes": "string",  # ";"-joined
        "dose": "float64",
        "cell_type": "string",
        "time": "float64",
        "reversal_score": "float64",  # higher is better (directions: omicstwin.scores)
        "off_target": "float64",  # lower is better
        "p_value": "float64",  # study-level donor-label permutation p of the perturbation
        "q_value": "float64",
    },
    "rank": {  # rank_disease_genes / rank_targets / rank_drugs
        "name": "string",
        "rank": "int64",
        "score": "float64",  # reversal (targets, drugs) or induction (disease genes)
        "off_target": "float64",
        "p_value": "float64",
        "q_value": "float64",
        "best_cell_type": "string",
        "best_time": "float64",
    },
    "patients": {
        "patient_id": "string",
        "cell_type": "string",  # the target's best context for this patient
        "time": "float64",
        "target": "string",
        "reversal_score": "float64",  # a rank score (omicstwin.scores)
        "rank": "int64",
        "p_value": "float64",  # vs the control donors' own vectors (omicstwin.tl.patients)
        "q_value": "float64",  # BH within the patient
    },
    "qc": {
        "condition": "string",
        "donor": "string",
        "time": "float64",
        "cell_type": "string",
        "n_cells": "int64",
        "n_cells_kept": "int64",  # cells passing quality control
        "median_genes": "float64",  # detected genes per cell before filtering
        # cells failing each filter (omicstwin.pp.qc; a cell failing two counts in both)
        "n_low_genes": "int64",  # fewer detected genes than stages.min_genes
        "n_high_mito": "int64",  # mitochondrial share above qc.max_pct_mito
        "n_high_ribo": "int64",  # ribosomal share above qc.max_pct_ribo
        "n_doublets": "int64",  # called doublets (scrublet; 0 when not scored)
        "median_counts": "float64",  # counts per cell before filtering
        "median_pct_mito": "float64",  # % of a cell's counts on MT- genes, before filtering
        "median_pct_ribo": "float64",  # % on RPS/RPL genes
        "doublet_rate": "float64",  # called doublets / scored cells (NaN: not scored)
    },
    "gene_map": {  # gene_ids.parquet: how each input column became a gene (omicstwin.io.genes)
        "input_name": "string",  # the input's var name
        "gene_id": "string",  # the name without version or make_unique suffix
        "gene": "string",  # the run's gene (HGNC symbol, or the id when unmapped)
        "mapping": "string",  # symbol / ensembl / alias / prior_name / unmapped_id / unmapped
        "suffix_removed": "int64",  # 1: a make_unique suffix (-1, .1) was undone
        "n_merged": "int64",  # input columns summed into this gene (1: none)
    },
    "patient_states": {
        "patient_id": "string",
        "arm": "string",  # case / control label
        "cell_type": "string",
        "time": "float64",
        "n_cells": "int64",
        # projection on the disease axis fitted without the donor (leave-one-donor-out):
        # 0 control mean, 1 case mean at the cell type's peak
        "disease_score": "float64",
        "disease_score_low": "float64",  # bootstrap interval over the donor's cells (90%)
        "disease_score_high": "float64",
    },
    "null_calibration": {  # the screens' p-value histograms (omicstwin.tl.nulls)
        "screen": "string",  # targets / drugs / patients
        "method": "string",  # label_permutation / control_donors / none
        "bin_low": "float64",
        "bin_high": "float64",
        "n_tests": "int64",  # p-values in the histogram
        "n_observed": "int64",  # p-values in the bin
        "n_expected": "float64",  # under a uniform null
        "n_permutations": "int64",  # relabellings (smallest p = 1 / (n + 1))
        "share_below_005": "float64",  # share of p < 0.05 (about 0.05 with no disease)
    },
    "enrichment": {
        "analysis": "string",  # prerank (GSEA of a context's ranked genes) / ora (top targets)
        "collection": "string",  # gene set manifest name (msigdb_hallmark, reactome_pathways, ...)
        "ranking": "string",  # what was tested: de (prerank) / rank_targets / rank_disease_genes
        "cell_type": "string",  # context of a prerank; "all" for the study-level ORA
        "time": "float64",  # NaN for the study-level ORA
        "term": "string",
        "score": "float64",  # NES (prerank) or log2 odds ratio (ora); higher is more enriched
        "p_value": "float64",
        "q_value": "float64",  # BH within analysis x collection x context
        "set_size": "int64",  # genes of the set in the tested universe
        "n_overlap": "int64",  # leading-edge genes (prerank) or hits among the top (ora)
        "genes": "string",  # ";"-joined leading-edge genes or hits
    },
    "validation": {
        "disease_id": "string",  # Disease Ontology id, e.g. DOID:4481
        "disease_name": "string",
        "ranking": "string",  # rank_disease_genes / rank_targets / rank_drugs
        "reference": "string",  # what counts as a hit (known disease genes, indicated drugs, ...)
        "k": "int64",
        "n_ranked": "int64",  # size of the ranking (the universe)
        "n_known": "int64",  # known items in the universe
        "hits": "int64",  # known items in the top k
        "precision": "float64",  # hits / k
        "random_precision": "float64",  # expected precision at k of a random ranking
        "random_p95": "float64",  # 95th percentile of precision at k over random rankings
        "p_value": "float64",  # one-sided hypergeometric P(X >= hits)
    },
    "mnm": {  # the multicellular network model of Li et al. 2022 (omicstwin.tl.regulators)
        "time": "float64",
        "source_cell_type": "string",  # sender: the regulator is up-regulated there
        "target_cell_type": "string",  # receiver: the regulator is predicted for its DEGs
        "n_regulators": "int64",
        "regulators": "string",  # ";"-joined
    },
    "centrality": {  # cell types by eigenvector centrality of the MNM (scDrugPrio)
        "cell_type": "string",
        "centrality": "float64",
        "rank": "int64",
    },
}


class SchemaError(OmicstwinError, ValueError):
    """A result table does not have the declared columns."""


# Declared columns that a table may lack; conform fills them with NaN.
OPTIONAL: dict[str, tuple[str, ...]] = {"edges": ("p_value", "q_value")}


def conform(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Return ``frame`` with exactly the declared columns, in order, cast to their dtypes.

    Raises
    ------
    SchemaError
        A declared column is missing.
    """
    schema = SCHEMAS[name]
    optional = [c for c in OPTIONAL.get(name, ()) if c not in frame.columns]
    if optional:  # columns only some producers fill: NaN for the others
        frame = frame.assign(**dict.fromkeys(optional, np.nan))
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"table '{name}' lacks columns {missing}; columns present: {list(frame.columns)}"
        )
    return frame.loc[:, list(schema)].astype(schema).reset_index(drop=True)
