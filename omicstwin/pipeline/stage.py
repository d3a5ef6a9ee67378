"""What a stage declares (:class:`Stage`) and what its run function reads (:class:`RunContext`).

A stage declares its name, the stages whose results it reads (``upstream``), the config
parameters its results depend on (``params``, dotted paths into :class:`RunConfig`), the files
it writes (``outputs``) and a run function. The runner (:mod:`omicstwin.pipeline.runner`) derives
the stage's cache key from the declaration alone: its params' values, the upstream stages' keys,
the input file's sha256 (``reads_input``) and the code version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omicstwin.errors import ParameterError
from omicstwin.pipeline.config import RunConfig, SimulatedData

WHOLE_CONFIG = "*"  # a param path meaning the whole config


def _no_progress(_done: int, _total: int) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One declared stage of ``omicstwin run``.

    Attributes
    ----------
    name
        Stage name (cache record ``.cache/<name>.json``, timings, progress bar).
    run
        ``run(context) -> dict | None``: computes and writes the outputs (atomically, through
        :mod:`omicstwin.store.rundir`); a returned dict is kept in the stage's cache record and
        handed to later stages (``context.records[name]``) when the stage is reused.
    upstream
        Stages whose results it reads; their keys enter its key (a stage switched off by its
        ``when`` is left out).
    params
        Dotted paths of the config values its results depend on (``"stages.n_permutations"``,
        ``"priors.tf_targets"``; :data:`WHOLE_CONFIG` for all of it).
    outputs
        Files it writes, relative to the run directory; ``"folder/"`` stands for every file
        of the folder. Recorded with their sha256: a changed or missing output re-runs it.
    reads_input
        Whether the input data file's sha256 enters the key.
    when
        ``when(config)``: whether the stage runs in this study (default: always).
    remove_when_off
        Delete its outputs when ``when`` is false (a result that would be stale).
    needs_run_json
        ``run.json`` is written before it (the report reads it).
    """

    name: str
    run: Callable[[RunContext], dict[str, Any] | None]
    upstream: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    reads_input: bool = False
    when: Callable[[RunConfig], bool] | None = None
    remove_when_off: bool = False
    needs_run_json: bool = False

    def active(self, config: RunConfig) -> bool:
        """Whether the stage runs for this config."""
        return self.when is None or bool(self.when(config))

    def param_values(self, config: RunConfig) -> dict[str, Any]:
        """Return the declared params' values (JSON-ready), by path."""
        return {path: _jsonable(_lookup(config, path)) for path in self.params}

    def output_paths(self, out: Path) -> list[Path]:
        """Return the declared outputs as paths (a folder: its files, sorted)."""
        paths: list[Path] = []
        for name in self.outputs:
            if name.endswith("/"):
                folder = out / name
                paths += sorted(folder.iterdir()) if folder.is_dir() else []
            else:
                paths.append(out / name)
        return paths


def _lookup(config: RunConfig, path: str) -> Any:
    if path == WHOLE_CONFIG:
        return config
    value: Any = config
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


@dataclass
class RunContext:
    """What a stage's run function reads: the config, the run directory and the one cohort.

    The cohort is read, validated and quality-controlled once per run, when the first stage
    that needs the cells runs (a fully reused run never reads the data).

    Attributes
    ----------
    config, out
        The run config and the run directory.
    data_path
        The input cohort file.
    records
        Cache records (extra fields) of the stages run or reused so far, by stage name.
    reused
        Names of the stages reused so far.
    progress
        The running stage's progress callback ``progress(done, total)``.
    twin
        The twin fitted in this run (the screens reuse it instead of reloading it).
    time_unit
        Unit of numeric time: the config's, else the data's ``uns["time_unit"]`` (set when
        the data are read).
    """

    config: RunConfig
    out: Path
    data_path: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    progress: Callable[[int, int], None] = _no_progress
    twin: Any = None
    time_unit: str | None = None
    gene_plan: Any = None  # how the input's gene names became the run's (omicstwin.io.genes)

    @cached_property
    def keys(self) -> dict[str, Any]:
        """Contract keys (column names, arms, layer) for the analysis functions."""
        from omicstwin.io.validate import CohortKeys

        keys = CohortKeys.from_arguments(self.config.model_dump()).as_arguments()
        keys.pop("time_unit")  # resolved from the config or the data (validated)
        return keys

    @cached_property
    def validated(self):
        """The input's cohort, validated at the door (all cells; released after QC)."""
        from omicstwin.io import read_data
        from omicstwin.io.read import h5ad_n_obs
        from omicstwin.pp.cohort import Cohort

        compute = self.config.compute
        backed = compute.backed
        if backed is None:  # large h5ad inputs stay on disk; small ones are read whole
            n_obs = h5ad_n_obs(self.data_path)
            backed = n_obs is not None and n_obs > compute.chunk_cells
        raw = read_data(self.data_path, backed=backed)
        raw = self._harmonised(raw, auto_backed=compute.backed is None)
        self.time_unit = self.config.time_unit or getattr(raw, "uns", {}).get("time_unit")
        cohort = Cohort.from_data(
            raw,
            **self.keys,
            time_unit=self.time_unit,
            min_donors=self.config.stages.min_donors,
            warn="validate" not in self.reused,  # warned when the validate stage ran
        )
        cohort.chunk_cells = compute.chunk_cells
        cohort.context_cells = compute.context_cells
        cohort.seed = self.config.seed
        return cohort

    def _harmonised(self, raw, *, auto_backed: bool = False):
        """Return the input with its genes named as the priors name them (Ensembl ids, ...).

        A backed input whose genes must be summed is read whole when backed was chosen
        automatically (``compute.backed`` None); when the user asked for it, an error.
        """
        from omicstwin.io.genes import apply_plan, gene_plan
        from omicstwin.io.read import is_mudata, rna_modality

        rna = rna_modality(raw)
        plan = gene_plan(list(rna.var_names), species=self.config.species, keep=self.prior_genes)
        self.gene_plan = plan
        if plan.identity:
            return raw
        if getattr(rna, "isbacked", False):  # counts on disk: rename in place, never load them
            if len(plan.genes) != len(plan.columns) and auto_backed:
                from omicstwin._logging import logger
                from omicstwin.io import read_data

                logger.warning(
                    "%d gene columns must be summed into others, which a backed read cannot "
                    "do: reading '%s' into memory",
                    len(plan.columns) - len(plan.genes),
                    self.data_path,
                )
                raw.file.close()  # an h5ad opened backed (h5mu is never read backed)
                return self._harmonised(read_data(self.data_path, backed=False))
            if len(plan.genes) != len(plan.columns):
                raise ParameterError(
                    f"{len(plan.columns) - len(plan.genes)} gene columns of '{self.data_path}' "
                    "must be summed into others (duplicated symbols or Ensembl ids), which a "
                    "backed read cannot do; fix: set compute.backed: false, or sum them in the "
                    "file first with omicstwin.io.harmonise_genes"
                )
            rna.var["gene_id"] = list(rna.var_names)
            rna.var_names = plan.genes[plan.columns]
            return raw
        if is_mudata(raw):  # the run's own object: its RNA modality is replaced
            # no mdata.update(): it refuses renamed genes, and the cohort reads only the RNA
            # modality and the global obs (the cells, unchanged)
            raw.mod["rna"] = apply_plan(rna, plan)
            return raw
        return apply_plan(raw, plan)

    @cached_property
    def prior_genes(self) -> frozenset[str]:
        """Every gene the run's priors name (kept as they are by the gene harmonisation)."""
        from omicstwin.io.manifests import load_gene_list, load_table

        priors = self.config.priors
        genes = set(load_gene_list(priors["tfs"]))
        targets = load_table(priors["tf_targets"])
        genes |= set(targets["source"]) | set(targets["target"])
        lr = load_table(priors["ligand_receptor"])
        for column in ("ligand", "receptor"):
            genes |= set(lr[column].astype(str).str.split("_").explode())
        return frozenset(genes)

    @cached_property
    def cohort(self):
        """The cohort every analysis stage works on: the cells and genes that pass QC."""
        stages, qc = self.config.stages, self.config.qc
        cohort = self.validated.filter(
            min_genes=stages.min_genes,
            min_cells=stages.min_cells,
            **qc.model_dump(),  # scrublet keeps its own random_state (0): QC ignores the seed
        )
        del self.validated  # the unfiltered counts are not needed any more
        return cohort

    @cached_property
    def regulators(self) -> list[str]:
        """Candidate regulators: the cohort's genes that are TFs or receptors (the priors)."""
        from omicstwin.io.manifests import load_gene_list, load_table

        lr = load_table(self.config.priors["ligand_receptor"])
        tfs = set(load_gene_list(self.config.priors["tfs"]))
        receptors = set(lr["receptor"].str.split("_").explode())
        return [g for g in self.cohort.genes if g in tfs or g in receptors]


def data_path(config: RunConfig, out: Path) -> Path:
    """Return the cohort file: a path, a resolved manifest entry, or the simulator's output."""
    from omicstwin.io.manifests import resolve

    data = config.data
    if isinstance(data, SimulatedData):
        return out / "cohort.h5ad"
    if data.startswith("manifest:"):
        return Path(resolve(data.removeprefix("manifest:")))
    return Path(data)
