"""The cohort of one run: validated once, counts held once, reductions computed once.

Every stage of a run works on one :class:`Cohort`: the input is validated at the door
(:func:`omicstwin.io.validate_cohort`), quality control keeps cells and genes (:meth:`filter`),
and the raw counts are then held once, as CSR in the input's own dtype (never a float64 or dense
copy of the whole matrix). What several stages read is computed lazily and once per cohort:

- :attr:`Cohort.pseudobulk`: summed counts per donor x cell type x time (DE, temporal edges);
- :attr:`Cohort.log_summaries`: mean and detected fraction of ``log1p(CP10k)`` per cell type x
  time x arm and per donor (intercellular edges, the twin's states and so patient states);
- :meth:`Cohort.log_normalised`: ``log1p(CP10k)`` of some cells (per-context GRNs), computed
  block by block; normalisation is row-wise, so a block holds exactly the values of the whole
  normalised matrix, which is never built.

The analysis functions (:mod:`omicstwin.tl`) take an AnnData/MuData or a Cohort; given an
AnnData they build the cohort themselves (:func:`as_cohort`).

**Backed cohorts.** Given an h5ad opened with ``backed="r"`` the counts stay on disk
(:attr:`Cohort.source`) and are read in chunks of :attr:`Cohort.chunk_cells` rows: quality
control is one chunked pass (detected genes per cell, then cells per gene among the kept cells),
and the pseudobulk sums and the log summaries are computed together in one more chunked pass;
per-cell methods read only their context's rows (:meth:`Cohort.log_normalised`). Memory is
bounded by the chunk, the per-context cap :attr:`Cohort.context_cells` and the number of groups
(samples x genes), not by the number of cells. Pseudobulk sums are exact in any order, so
identical to the in-memory cohort's; the log summaries add chunks in another order and agree to
the last bits (about 1e-15 relative).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin.errors import InsufficientReplicationWarning, MissingKeyError, ParameterError
from omicstwin.io.validate import (
    CohortKeys,
    CohortSummary,
    cohort_obs,
    counts_matrix,
    is_backed_sparse,
)

CONTRACT_COLUMNS = ("cell_type", "time", "condition", "donor")
DEFAULT_CHUNK_CELLS = 50_000  # rows per chunk of a backed cohort (the run's compute.chunk_cells)


@dataclass
class LogSummaries:
    """Per-group summaries of ``log1p(CP10k)`` over the cells of the two arms.

    Attributes
    ----------
    arms
        One row per cell type x time x condition (sorted): ``cell_type, time, condition``.
    arm_mean, arm_fraction
        arms x genes: mean expression and fraction of cells with a non-zero count.
    donors
        One row per cell type x time x donor (sorted): ``cell_type, time, donor, condition``.
    donor_mean
        donors x genes mean expression.
    """

    arms: pd.DataFrame
    arm_mean: np.ndarray
    arm_fraction: np.ndarray
    donors: pd.DataFrame
    donor_mean: np.ndarray


@dataclass(eq=False)
class Cohort:
    """One validated cohort: raw counts, per-cell contract columns and shared reductions.

    Build it with :meth:`from_data` (and :meth:`filter` for quality control); the attributes
    are read-only by convention.

    Attributes
    ----------
    counts
        Raw counts, cells x genes, CSR in the input's dtype (the input's own matrix when it
        is CSR and nothing was filtered).
    obs
        Per cell (index: cell names): ``cell_type``, ``condition``, ``donor`` (str) and
        ``time`` (float: numeric time, or the position of an ordered categorical level).
    genes
        Gene names.
    keys
        Column names, arm labels, counts layer and time unit of the input.
    summary
        The validation at the door (of the input as given), or None when not validated.
    qc
        ``qc.parquet`` rows when :meth:`filter` made this cohort, else None.
    time_numeric
        Whether time is numeric (else ``time`` holds level positions).
    time_level_labels
        Label of each level position (ordered categorical time only).
    uns
        Where analysis functions store results under ``key_added`` when given a Cohort.
    missing_labels
        Cells without a cell type, condition or donor label, per column (pseudobulk refuses
        them).
    source
        Backed cohorts (``counts`` is None): the file's on-disk CSR counts.
    source_rows, source_genes
        Backed cohorts: the file row of each cell and the file column of each gene (None: all
        columns).
    chunk_cells
        Rows per chunk when a backed cohort is read in a pass.
    context_cells, seed
        Cap on the cells :meth:`log_normalised` returns for one context (None: no cap); above
        it a subsample drawn with ``seed`` (see :meth:`capped`).
    cell_qc
        Per-cell QC metrics of the cells before filtering (``n_counts``, ``n_genes``), set by
        :meth:`filter` on a backed cohort: the hook where more per-cell metrics computed in
        the same pass (mitochondrial fraction, doublet score) belong.
    gene_plan
        Backed cohorts whose gene names needed harmonising (:class:`omicstwin.io.genes.
        GenePlan`): every block read from the file is summed into the run's genes.
    """

    counts: sparse.csr_matrix | None
    obs: pd.DataFrame
    genes: pd.Index
    keys: CohortKeys
    summary: CohortSummary | None = None
    qc: pd.DataFrame | None = None
    time_numeric: bool = True
    time_level_labels: list[str] = field(default_factory=list)
    uns: dict = field(default_factory=dict)
    missing_labels: dict[str, int] = field(default_factory=dict)
    source: Any = None
    source_rows: np.ndarray | None = None
    source_genes: np.ndarray | None = None
    chunk_cells: int = DEFAULT_CHUNK_CELLS
    context_cells: int | None = None
    seed: int = 0
    cell_qc: pd.DataFrame | None = None
    gene_plan: Any = None

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        cell_type_key: str = "cell_type",
        time_key: str = "time",
        condition_key: str = "condition",
        donor_key: str = "donor",
        case: str = "case",
        control: str = "control",
        layer: str | None = None,
        time_unit: str | None = None,
        validate: bool = True,
        min_donors: int = 2,
        warn: bool = True,
    ) -> Cohort:
        """Build the cohort of an AnnData, or of the RNA modality of a MuData.

        Parameters
        ----------
        data
            AnnData or MuData with raw counts.
        cell_type_key, time_key, condition_key, donor_key, case, control, layer, time_unit
            The data contract (see :func:`omicstwin.io.validate_cohort`).
        validate
            Validate at the door (the contract's errors); ``False`` only reads the columns.
        min_donors
            Donors per arm below which the validation lists a group as skipped.
        warn
            Let the validation warn about under-replicated groups.

        Raises
        ------
        MissingKeyError, CountsError, ConditionError, TimeOrderError, EmptyDataError
            From the validation (:func:`omicstwin.io.validate_cohort`).
        """
        from omicstwin.io.read import rna_modality
        from omicstwin.io.validate import validate_cohort
        from omicstwin.pp.pseudobulk import schema_time

        keys = CohortKeys(
            cell_type_key, time_key, condition_key, donor_key, case, control, layer, time_unit
        )
        summary = None
        if validate:
            with warnings.catch_warnings():
                if not warn:
                    warnings.simplefilter("ignore", InsufficientReplicationWarning)
                summary = validate_cohort(data, **keys.as_arguments(), min_donors=min_donors)
        obs = cohort_obs(data, keys)
        missing = {c: int(obs[c].isna().sum()) for c in ("cell_type", "condition", "donor")}
        time, labels, axis = schema_time(obs["time"], key=time_key, unit=time_unit)
        obs = pd.DataFrame(
            {
                "cell_type": obs["cell_type"].astype(str),
                "time": time,
                "condition": obs["condition"].astype(str),
                "donor": obs["donor"].astype(str),
            },
            index=obs.index,
        )
        counts = counts_matrix(data, layer)
        source = source_rows = None
        if type(counts).__name__ == "_CSRDataset":  # backed: the counts stay on disk
            source, counts, source_rows = counts, None, np.arange(counts.shape[0])
        elif is_backed_sparse(counts):  # on-disk CSC cannot be read by rows: read it whole
            counts = sparse.csr_matrix(counts.to_memory())
        elif not sparse.isspmatrix_csr(counts):
            counts = sparse.csr_matrix(counts)
        return cls(
            counts=counts,
            source=source,
            source_rows=source_rows,
            obs=obs,
            genes=pd.Index(rna_modality(data).var_names),
            keys=keys,
            summary=summary,
            time_numeric=bool(axis.numeric),
            time_level_labels=[] if axis.numeric else labels,
            missing_labels=missing,
        )

    # ------------------------------------------------------------------------------ views

    @property
    def n_cells(self) -> int:
        """Cells held."""
        return len(self.obs)

    @property
    def backed(self) -> bool:
        """Whether the counts stay on disk (read in chunks)."""
        return self.counts is None

    def rows(self, positions: np.ndarray | None = None) -> sparse.csr_matrix:
        """Raw counts of some cells (all when None), CSR in the input's dtype.

        A backed cohort reads only those rows from the file (in file order, then put back in
        the order asked for).
        """
        if self.counts is not None:
            return self.counts if positions is None else self.counts[positions]
        if positions is None:
            positions = np.arange(self.n_cells)
        file_rows = self.source_rows[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(file_rows, kind="stable")
        parts = [
            self._file_rows(file_rows[order[i : i + self.chunk_cells]])
            for i in range(0, len(order), self.chunk_cells)
        ]
        block = sparse.vstack(parts, format="csr") if parts else self._empty_rows()
        if not np.all(order[:-1] < order[1:]):
            block = block[np.argsort(order, kind="stable")]
        return block

    def _empty_rows(self) -> sparse.csr_matrix:
        return sparse.csr_matrix((0, len(self.genes)), dtype=self.source.dtype)

    def _file_rows(self, sorted_rows: np.ndarray) -> sparse.csr_matrix:
        """Read sorted file rows: one slice when they are dense in it, else by index."""
        if len(sorted_rows) == 0:
            return self._empty_rows()
        first, last = int(sorted_rows[0]), int(sorted_rows[-1]) + 1
        if last - first <= 2 * len(sorted_rows):  # mostly contiguous: one read, then select
            block = sparse.csr_matrix(self.source[first:last])[sorted_rows - first]
        else:
            block = sparse.csr_matrix(self.source[sorted_rows])
        if self.gene_plan is not None:  # Ensembl ids / duplicates: summed into the run's genes
            block = self.gene_plan.apply(block)
        if self.source_genes is not None:
            block = block[:, self.source_genes]
        return block

    def iter_chunks(self):
        """Yield ``(start, stop, counts)`` over all cells in order, ``chunk_cells`` at a time."""
        for start in range(0, self.n_cells, self.chunk_cells):
            stop = min(start + self.chunk_cells, self.n_cells)
            yield start, stop, self.rows(np.arange(start, stop))

    def capped(self, positions: np.ndarray) -> np.ndarray:
        """At most :attr:`context_cells` of these cell positions (all when under the cap).

        Above the cap, a uniform subsample without replacement, in the original order, drawn
        from a stream seeded by (``seed``, number of cells, first position): the same context
        gives the same cells in every run and stage.
        """
        positions = np.asarray(positions)
        cap = self.context_cells
        if cap is None or len(positions) <= cap:
            return positions
        rng = np.random.default_rng([self.seed, len(positions), int(positions[0])])
        return positions[np.sort(rng.choice(len(positions), cap, replace=False))]

    @cached_property
    def time_levels(self) -> list[float]:
        """Sorted time values of all cells."""
        return sorted(self.obs["time"].unique().tolist())

    @cached_property
    def in_arms(self) -> np.ndarray:
        """Boolean per cell: condition is the case or the control label."""
        return self.obs["condition"].isin([self.keys.case, self.keys.control]).to_numpy()

    @cached_property
    def cell_types(self) -> list[str]:
        """Sorted cell types of the two arms' cells."""
        return sorted(self.obs.loc[self.in_arms, "cell_type"].unique().tolist())

    def donors(self, arm: str) -> list[str]:
        """Sorted donors of an arm (the case or the control label)."""
        return sorted(self.obs.loc[self.obs["condition"] == arm, "donor"].unique().tolist())

    # ------------------------------------------------------------------------------ QC

    def filter(self, *, min_genes: int = 10, min_cells: int = 3, **qc_options: Any) -> Cohort:
        """Quality control: the cohort of the cells and genes that pass, with its QC table.

        Parameters
        ----------
        min_genes, min_cells
            See :func:`omicstwin.pp.qc.qc_masks`.
        qc_options
            Mitochondrial / ribosomal cuts and doublets (:func:`omicstwin.pp.qc.quality_control`).

        Returns
        -------
        Cohort
            ``qc`` holds the ``qc.parquet`` rows (see :func:`omicstwin.pp.qc.qc_table`); the
            counts are this cohort's matrix when every cell and gene passes, else a subset.

        Raises
        ------
        ParameterError
            No cell or no gene passes.
        """
        from omicstwin.pp.qc import chunked_quality_control, quality_control

        cell_qc = None
        if self.backed:  # one pass over the file's chunks; doublet samples read by rows
            keep_cells, keep_genes, qc, cell_qc = chunked_quality_control(
                self.iter_chunks(),
                self.rows,
                self.obs,
                self.genes,
                min_genes=min_genes,
                min_cells=min_cells,
                **qc_options,
            )
            cell_qc.index = self.obs.index
        else:
            keep_cells, keep_genes, qc = quality_control(
                self.counts,
                self.obs,
                self.genes,
                min_genes=min_genes,
                min_cells=min_cells,
                **qc_options,
            )
        counts = self.counts
        if counts is not None and not keep_cells.all():
            counts = counts[keep_cells]
        if counts is not None and not keep_genes.all():
            counts = counts[:, keep_genes]
        source_genes = self.source_genes
        if self.backed and not keep_genes.all():
            columns = np.flatnonzero(keep_genes)
            source_genes = columns if source_genes is None else source_genes[columns]
        obs = self.obs.loc[keep_cells].copy()
        labels = self.time_level_labels
        if not self.time_numeric:  # level positions among the levels still present
            present, obs["time"] = np.unique(obs["time"].to_numpy(), return_inverse=True)
            obs["time"] = obs["time"].astype(np.float64)
            labels = [labels[int(p)] for p in present]
        return Cohort(
            counts=counts,
            obs=obs,
            genes=self.genes[keep_genes],
            keys=self.keys,
            summary=self.summary,
            qc=qc,
            time_numeric=self.time_numeric,
            time_level_labels=labels,
            missing_labels=self.missing_labels,
            source=self.source,
            source_rows=None if self.source_rows is None else self.source_rows[keep_cells],
            source_genes=source_genes,
            chunk_cells=self.chunk_cells,
            context_cells=self.context_cells,
            seed=self.seed,
            cell_qc=cell_qc,
            gene_plan=self.gene_plan,
        )

    # ------------------------------------------------------------------------------ shared pieces

    def log_normalised(self, rows: np.ndarray | None = None) -> sparse.csr_matrix:
        """``log1p(CP10k)`` of some cells (all when ``rows`` is None), float64 CSR.

        Row-wise, so any block holds exactly the values the whole normalised matrix would. Given
        ``rows`` (one context's cells), at most :attr:`context_cells` of them (:meth:`capped`):
        per-cell methods read a bounded number of cells whatever the cohort's size.
        """
        from omicstwin.pp.normalise import log_normalise

        return log_normalise(self.rows(None if rows is None else self.capped(rows)))

    @cached_property
    def pseudobulk(self):
        """Summed counts per donor x cell type x time of every cell (AnnData).

        As :func:`omicstwin.pp.pseudobulk.pseudobulk` with ``min_cells=1``: consumers filter
        on ``obs["n_cells"]``.

        Raises
        ------
        MissingKeyError
            A cell type, condition or donor label is missing.
        """
        from omicstwin.pp.pseudobulk import summed_counts, summed_samples

        self._check_labels()
        if self.backed:
            table, sums = self._streamed["pseudobulk"]
            return summed_samples(table, sums, self.genes)
        return summed_counts(self.obs, self.counts, self.genes)

    def _check_labels(self) -> None:
        names = {
            "cell_type": self.keys.cell_type,
            "condition": self.keys.condition,
            "donor": self.keys.donor,
        }
        for column, key in names.items():
            n_missing = self.missing_labels.get(column, 0)
            if n_missing:
                raise MissingKeyError(
                    f"obs column '{key}' has {n_missing} missing values; fix: label those cells "
                    "or drop them before pseudobulking"
                )

    @cached_property
    def log_summaries(self) -> LogSummaries:
        """Mean and detected fraction of ``log1p(CP10k)`` per cell type x time x arm and donor.

        In memory: one cell type x time block at a time; every group lies in one block, and its
        cells are summed in the same order as over the whole matrix (bit-identical results).
        Backed: in the chunked pass, summed through an indicator product in another order
        (equal to about 1e-15, not bit for bit).
        """
        from omicstwin.pp.normalise import group_summaries, log_normalise

        if self.backed:
            return self._streamed["log_summaries"]
        positions = np.flatnonzero(self.in_arms)
        obs = self.obs.iloc[positions].reset_index(drop=True)
        parts: list[tuple] = []
        for rows in obs.groupby(["cell_type", "time"], sort=True).indices.values():
            block = log_normalise(self.counts[positions[rows]])
            groups = obs.iloc[rows].reset_index(drop=True)
            arms = group_summaries(block, groups[["cell_type", "time", "condition"]])
            donors = group_summaries(block, groups[["cell_type", "time", "donor", "condition"]])
            parts.append((arms[0], arms[1], arms[2], donors[0], donors[1]))
        if not parts:
            raise ParameterError("no cell is in the case or the control arm")
        arm_keys, arm_mean, arm_fraction, donor_keys, donor_mean = zip(*parts, strict=True)
        return LogSummaries(
            arms=pd.concat(arm_keys, ignore_index=True),
            arm_mean=np.vstack(arm_mean),
            arm_fraction=np.vstack(arm_fraction),
            donors=pd.concat(donor_keys, ignore_index=True),
            donor_mean=np.vstack(donor_mean),
        )

    @cached_property
    def _streamed(self) -> dict[str, Any]:
        """Pseudobulk sums and log summaries of a backed cohort, in one chunked pass.

        Per chunk: the counts summed into the pseudobulk samples, and ``log1p(CP10k)`` of the
        chunk's cells of the two arms summed (and its non-zeros counted) into the arm and donor
        groups, as a groups x cells indicator times the chunk. Memory: one chunk plus the
        groups x genes sums.
        """
        from omicstwin.pp.normalise import _group_codes, log_normalise
        from omicstwin.pp.pseudobulk import sample_groups

        self._check_labels()
        sample_of_cell, samples = sample_groups(self.obs)
        in_arms = self.in_arms
        if not in_arms.any():
            raise ParameterError("no cell is in the case or the control arm")
        arm_obs = self.obs.loc[in_arms].reset_index(drop=True)
        arm_code, arm_keys = _group_codes(arm_obs[["cell_type", "time", "condition"]])
        donor_code, donor_keys = _group_codes(arm_obs[["cell_type", "time", "donor", "condition"]])
        arm_index = np.full(self.n_cells, -1, np.int64)
        arm_index[in_arms] = np.arange(len(arm_obs))
        n_g = len(self.genes)
        sums = np.zeros((len(samples), n_g))
        arm_sum, arm_nonzero = np.zeros((len(arm_keys), n_g)), np.zeros((len(arm_keys), n_g))
        donor_sum = np.zeros((len(donor_keys), n_g))
        for start, stop, chunk in self.iter_chunks():
            counts = sparse.csr_matrix(chunk, dtype=np.float64)
            sums += (_indicator(sample_of_cell[start:stop], len(samples)) @ counts).toarray()
            local = np.flatnonzero(arm_index[start:stop] >= 0)
            if not len(local):
                continue
            positions = arm_index[start:stop][local]
            normalised = log_normalise(counts[local])
            arms = _indicator(arm_code[positions], len(arm_keys))
            arm_sum += (arms @ normalised).toarray()
            arm_nonzero += (arms @ (normalised != 0)).toarray()
            donor_sum += (_indicator(donor_code[positions], len(donor_keys)) @ normalised).toarray()
        arm_n = np.bincount(arm_code, minlength=len(arm_keys)).astype(np.float64)
        donor_n = np.bincount(donor_code, minlength=len(donor_keys)).astype(np.float64)
        summaries = LogSummaries(
            arms=arm_keys,
            arm_mean=arm_sum / arm_n[:, None],
            arm_fraction=arm_nonzero / arm_n[:, None],
            donors=donor_keys,
            donor_mean=donor_sum / donor_n[:, None],
        )
        return {"pseudobulk": (samples, sums), "log_summaries": summaries}


def _indicator(codes: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    """Return the groups x cells 0/1 matrix of each cell's group."""
    return sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes))
    )


def as_cohort(data: Any, keys: dict[str, Any], *, validate: bool = False, **options) -> Cohort:
    """Return ``data`` when it is a Cohort, else the cohort of an AnnData/MuData.

    Parameters
    ----------
    data
        Cohort, AnnData or MuData.
    keys
        ``cell_type_key, time_key, condition_key, donor_key, case, control, layer, time_unit``
        (an analysis function's own; ignored for a Cohort, which carries its keys).
    validate, options
        Passed to :meth:`Cohort.from_data`.
    """
    if isinstance(data, Cohort):
        return data
    names = CohortKeys.from_arguments(keys).as_arguments()
    return Cohort.from_data(data, **names, validate=validate, **options)
