"""The run config: a study's data, keys, priors, stage parameters, seed and compute (pydantic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    memory_per_worker: float = Field(
        1.0,
        gt=0,
        description="GB one screen task may hold: the batch of perturbations shrinks to fit "
        "(results are identical for any batch size).",
    )
    backed: bool | None = Field(
        None,
        description="Read an h5ad input backed (counts on disk, read in chunks of chunk_cells; "
        "memory bounded by the chunk, not the cohort). None: when it has more than "
        "chunk_cells cells.",
    )
    chunk_cells: int = Field(
        50_000, ge=1000, description="Cells per chunk when a backed input is read in a pass."
    )
    context_cells: int | None = Field(
        10_000,
        ge=100,
        description="At most this many cells per context for the per-cell methods (per-context "
        "GRNs, cell-level networks, patient cells); above it a subsample seeded by the run's "
        "seed. None: no cap.",
    )


class SimulatedData(BaseModel):
    """Data from the bundled simulator (``data: {simulate: demo, seed: 0}``)."""

    model_config = ConfigDict(extra="forbid")

    simulate: str = Field(
        description="Simulator preset: small, demo, sar_like, or atlas (written in chunks)."
    )
    seed: int = 0
    n_cells: int | None = Field(None, ge=1)
    generator: Literal["cohort", "independent"] = Field(
        "cohort", description="cohort (networks from the priors) or independent (not)."
    )
    disease: bool = Field(True, description="False: the same design with no disease.")


class Stages(BaseModel):
    """Stage parameters."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _removed_options(cls, values: Any) -> Any:
        removed = sorted({"n_null", "null_size"} & set(values or {}))
        if removed:
            raise ValueError(
                f"{' and '.join(removed)} {'was' if len(removed) == 1 else 'were'} removed: the "
                "screens' null is a donor-label permutation test now; fix: delete "
                f"{'it' if len(removed) == 1 else 'them'} and set n_permutations (default 1999)"
            )
        return values

    min_genes: int = Field(10, ge=0, description="QC: detected genes a cell needs.")
    min_cells: int = Field(3, ge=0, description="QC: cells a gene must be detected in.")
    min_donors: int = Field(2, ge=1)
    grn_method: str = "ridge"
    grn_top_k: int = Field(10, ge=1)
    max_network_genes: int | None = Field(
        5000,
        ge=1,
        description="Cap on the targets of the regulatory layers. A cohort with at most this "
        "many genes keeps every gene; a larger one keeps the genes DE in any context (q < "
        "0.05) then the most variable pseudobulk genes, up to the cap, plus the expressed "
        "regulators (omicstwin.tl.networks.network_genes). null: every gene.",
    )
    context_grns: bool | None = Field(
        None,
        description="Per cell type x time x condition GRNs (the intracellular layer of "
        "network_layers). None: inferred unless the twin does not use them "
        "(network_level donors) and the cohort has more than max_network_genes genes, where "
        "their table alone holds contexts x genes x grn_top_k rows.",
    )
    network_level: Literal["donors", "cells"] = Field(
        "donors", description="Twin networks fitted on donor variation or on cells."
    )
    n_intercellular: int = Field(50, ge=1)
    intercellular_model: Literal["programme", "receptor"] = Field(
        "receptor",
        description="Twin signalling: 'programme' (ligand x receptor -> the ligand's target "
        "programme in the receiver, gain regressed over donors; needs the ligand_targets prior) "
        "or 'receptor' (the previous model: ligand change added to the receptor, kappa 1).",
    )
    lr_selection: Literal["evidence", "weight"] = Field(
        "weight",
        description="The twin keeps the n_intercellular intercellular edges per time point with "
        "the smallest permutation p (ties by weight), or the strongest (the previous rule).",
    )
    lr_max_p: float | None = Field(
        None, gt=0, le=1, description="Also drop intercellular edges with permutation p above."
    )
    n_permutations: int = Field(
        1999,
        ge=0,
        description="Donor-label relabellings of the screens' permutation null (all distinct "
        "ones when there are fewer; smallest p = 1 / (n + 1)).",
    )
    n_bootstrap: int = Field(
        200, ge=0, description="Bootstrap resamples of a donor's cells for patient intervals."
    )
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


class QC(BaseModel):
    """Cell quality control beyond ``stages.min_genes`` / ``stages.min_cells`` (omicstwin.pp.qc)."""

    model_config = ConfigDict(extra="forbid")

    max_pct_mito: float | None = Field(
        20.0,
        ge=0,
        le=100,
        description="Highest % of a cell's counts on MT- genes (None: no cut). Whole-"
        "transcriptome PBMC data commonly use 5-20; the demo's cells are all below 3.",
    )
    max_pct_ribo: float | None = Field(
        None, ge=0, le=100, description="Highest % on RPS/RPL genes (None: no cut)."
    )
    doublets: bool = Field(
        False,
        description="Score doublets per donor x time with scanpy's scrublet and remove the "
        "called ones. Off by default: the bundled simulator makes singlets only, so on it "
        "every call is a false positive; turn it on for droplet data.",
    )
    doublet_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Scrublet score above which a cell is a doublet (None: scrublet's "
        "automatic threshold, which needs scikit-image: pip install 'omicstwin[qc]').",
    )


#: the priors a config names when it leaves them out. The upstream-regulator stage uses
#: CollecTRI (TFs only) by default: its DEG rule is calibrated for it (benchmarks/deg_rule.py;
#: the typed combined prior is opt-in with ``regulators: regulator_prior``, see
#: ``pipelines/README.md`` for its calibration).
DEFAULT_PRIORS: dict[str, str] = {
    "tfs": "lambert2018_tfs",
    "tf_targets": "collectri",
    "ligand_receptor": "liana_consensus",
    "regulators": "collectri",
    "regulator_source": "omnipath",
}


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
    species: Literal["auto", "human", "mouse"] = Field(
        "auto",
        description="Species of the genes: auto detects it from the names (Ensembl prefixes, "
        "symbol capitalisation); the priors are human, so mouse data stop with the fix.",
    )
    priors: dict[
        Literal["tfs", "tf_targets", "ligand_receptor", "regulators", "regulator_source"], str
    ] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORS),
        description="Manifest names of the TF list, the TF -> target prior and the ligand-"
        "receptor pairs; 'regulators': the prior of the upstream-regulator stage (default: "
        "tf_targets, i.e. collectri, TFs only, for which the DEG rule is calibrated; "
        "'regulator_prior': the typed combined prior of TFs, ligands, receptors and kinases, "
        "built from 'regulator_source': omnipath (default; academic use), nichenet_v1 or "
        "permissive; or a csv with source, target, weight[, regulator_type]). Keys left out "
        "take their defaults.",
    )
    seed: int = 0
    stages: Stages = Field(default_factory=Stages)
    qc: QC = Field(default_factory=QC)
    compute: Compute = Field(default_factory=Compute)

    @model_validator(mode="after")
    def _complete_priors(self) -> RunConfig:
        # keys a config leaves out take their defaults (older configs name only three); the
        # regulators stage then keeps using the config's TF -> target prior, as it did
        given = self.priors
        self.priors = {
            **DEFAULT_PRIORS,
            "regulators": given.get("tf_targets", DEFAULT_PRIORS["regulators"]),
            **given,
        }
        from omicstwin.io.priors import SOURCES

        if self.priors["regulator_source"] not in SOURCES:
            raise ValueError(
                f"priors.regulator_source '{self.priors['regulator_source']}' is unknown; fix: "
                f"one of {sorted(SOURCES)}"
            )
        return self


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
