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
from omicstwin.io.validate import CohortKeys, CohortSummary, cohort_obs, counts_matrix

CONTRACT_COLUMNS = ("cell_type", "time", "condition", "donor")


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
    """

    counts: sparse.csr_matrix
    obs: pd.DataFrame
    genes: pd.Index
    keys: CohortKeys
    summary: CohortSummary | None = None
    qc: pd.DataFrame | None = None
    time_numeric: bool = True
    time_level_labels: list[str] = field(default_factory=list)
    uns: dict = field(default_factory=dict)
    missing_labels: dict[str, int] = field(default_factory=dict)

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
        return cls(
            counts=counts if sparse.isspmatrix_csr(counts) else sparse.csr_matrix(counts),
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
        return int(self.counts.shape[0])

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
        from omicstwin.pp.qc import quality_control

        keep_cells, keep_genes, qc = quality_control(
            self.counts,
            self.obs,
            self.genes,
            min_genes=min_genes,
            min_cells=min_cells,
            **qc_options,
        )
        counts = self.counts
        if not keep_cells.all():
            counts = counts[keep_cells]
        if not keep_genes.all():
            counts = counts[:, keep_genes]
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
        )

    # ------------------------------------------------------------------------------ shared pieces

    def log_normalised(self, rows: np.ndarray | None = None) -> sparse.csr_matrix:
        """``log1p(CP10k)`` of some cells (all when ``rows`` is None), float64 CSR.

        Row-wise, so any block holds exactly the values the whole normalised matrix would.
        """
        from omicstwin.pp.normalise import log_normalise

        return log_normalise(self.counts if rows is None else self.counts[rows])

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
        from omicstwin.pp.pseudobulk import summed_counts

        self._check_labels()
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

        Computed one cell type x time block at a time: every group lies in one block, and its
        cells are summed in the same order as over the whole matrix (bit-identical results).
        """
        from omicstwin.pp.normalise import group_summaries

        positions = np.flatnonzero(self.in_arms)
        obs = self.obs.iloc[positions].reset_index(drop=True)
        parts: list[tuple] = []
        for rows in obs.groupby(["cell_type", "time"], sort=True).indices.values():
            block = self.log_normalised(positions[rows])
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
