"""The data contract: one validation at the door, with errors that name the problem and the fix.

:func:`validate_cohort` checks an AnnData/MuData object against the contract of DESIGN.md
(raw counts, obs keys for cell type, time, condition and donor, a case and a control arm, an
orderable time) and returns a :class:`CohortSummary`. It never modifies the data.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin.errors import (
    ConditionError,
    CountsError,
    DuplicateNamesError,
    EmptyDataError,
    InsufficientReplicationWarning,
    MissingKeyError,
    ParameterError,
    TimeOrderError,
)
from omicstwin.io.read import OPTIONAL_MODALITIES, is_mudata, rna_modality

# Rows per chunk when scanning a dense matrix, so validation never copies a whole large matrix.
_DENSE_CHUNK_ROWS = 4096
# Rows per block when a backed (on-disk) sparse matrix is scanned: ~20k cells x ~1-2k non-zeros
# stay within a few hundred MB whatever the file's size.
SPARSE_CHUNK_ROWS = 20_000


def is_backed_sparse(matrix: Any) -> bool:
    """Whether ``matrix`` is anndata's on-disk sparse dataset (a backed file's ``X``)."""
    return type(matrix).__name__ in ("_CSRDataset", "_CSCDataset")


_TIME_LABEL = re.compile(r"^\s*([-+]?\d*\.?\d+)\s*([A-Za-z]*)\s*$")
_TIME_LABEL_UNIT_FIRST = re.compile(r"^\s*([A-Za-z]+)\s*([-+]?\d*\.?\d+)\s*$")


@dataclass(frozen=True)
class CohortKeys:
    """Where the contract's fields live in the data.

    Parameters
    ----------
    cell_type, time, condition, donor
        obs column names.
    case, control
        Labels of the two arms in the condition column.
    layer
        Layer holding raw counts; ``None`` means ``X``.
    time_unit
        Unit of a numeric time column (e.g. ``"h"``); parsed from labels such as ``"6h"``
        when the column holds strings.
    """

    cell_type: str = "cell_type"
    time: str = "time"
    condition: str = "condition"
    donor: str = "donor"
    case: str = "case"
    control: str = "control"
    layer: str | None = None
    time_unit: str | None = None

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> CohortKeys:
        """Build from a wrapper's keyword arguments (``cell_type_key=...``, ``case=...``).

        Wrappers pass ``locals()``; names they do not have keep their defaults.
        """
        names = {
            "cell_type": "cell_type_key",
            "time": "time_key",
            "condition": "condition_key",
            "donor": "donor_key",
        }
        given = {name: arguments[arg] for name, arg in names.items() if arg in arguments}
        for name in ("case", "control", "layer", "time_unit"):
            if name in arguments:
                given[name] = arguments[name]
        return cls(**given)

    def as_arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of :func:`validate_cohort` and the analysis wrappers."""
        return {
            "cell_type_key": self.cell_type,
            "time_key": self.time,
            "condition_key": self.condition,
            "donor_key": self.donor,
            "case": self.case,
            "control": self.control,
            "layer": self.layer,
            "time_unit": self.time_unit,
        }


@dataclass
class TimeAxis:
    """An ordered time axis.

    Attributes
    ----------
    values
        Per-cell time, numeric (float) when the time is numeric, else the label.
    levels
        Distinct time points in order.
    unit
        Unit of numeric time, or ``None``.
    numeric
        Whether ``levels`` are numbers.
    """

    values: pd.Series
    levels: list[Any]
    unit: str | None
    numeric: bool

    def label(self, level: Any) -> str:
        """Return a printable label for one time point (e.g. ``'24 h'``)."""
        if self.numeric:
            text = f"{level:g}"
            return f"{text} {self.unit}" if self.unit else text
        return str(level)


@dataclass
class CohortSummary:
    """What validation found: sizes, arms, time axis and the groups that will be skipped.

    Attributes
    ----------
    n_cells, n_genes
        Size of the RNA matrix (all cells, including any outside the two arms).
    n_cells_case, n_cells_control, n_cells_other
        Cells per arm; ``n_cells_other`` carry another condition label and are ignored.
    cell_types
        Sorted cell-type labels.
    time
        The ordered time axis.
    donors_case, donors_control
        Donor ids per arm.
    skipped_groups
        Cell type x time groups with fewer than ``min_donors`` donors in an arm (columns
        ``cell_type, time, n_donors_case, n_donors_control, reason``).
    design
        Cells per donor x time x cell type (tidy, with ``condition``).
    modalities
        ``{name: (n_obs, n_vars)}`` for MuData input, else ``{"rna": shape}``.
    counts_source
        ``"X"`` or ``"layers['<name>']"``.
    """

    n_cells: int
    n_genes: int
    n_cells_case: int
    n_cells_control: int
    n_cells_other: int
    cell_types: list[str]
    time: TimeAxis
    donors_case: list[str]
    donors_control: list[str]
    skipped_groups: pd.DataFrame
    design: pd.DataFrame
    modalities: dict[str, tuple[int, int]] = field(default_factory=dict)
    counts_source: str = "X"

    def one_line(self) -> str:
        """Return the one-line summary the CLI prints."""
        levels = self.time.levels
        span = f"{self.time.label(levels[0])} .. {self.time.label(levels[-1])}"
        mods = "" if set(self.modalities) <= {"rna"} else f"; modalities {sorted(self.modalities)}"
        return (
            f"ok: {self.n_cells} cells x {self.n_genes} genes; {len(self.cell_types)} cell types; "
            f"{len(levels)} time points ({span}); donors: {len(self.donors_case)} case, "
            f"{len(self.donors_control)} control; {len(self.skipped_groups)} of "
            f"{len(self.cell_types) * len(levels)} cell type x time groups skipped "
            f"(< 2 donors per arm){mods}"
        )


def cohort_obs(data: Any, keys: CohortKeys) -> pd.DataFrame:
    """Return the RNA cells' obs with the four contract columns, looking in MuData's global obs too.

    Parameters
    ----------
    data
        AnnData or MuData.
    keys
        Column names.

    Raises
    ------
    MissingKeyError
        A key column is in neither place; the message lists the columns present.
    """
    rna = rna_modality(data)
    obs = rna.obs
    global_obs = data.obs if is_mudata(data) else None
    columns: dict[str, pd.Series] = {}
    roles = {
        "cell type": ("cell_type", keys.cell_type, "--cell-type-key"),
        "time": ("time", keys.time, "--time-key"),
        "condition": ("condition", keys.condition, "--condition-key"),
        "donor": ("donor", keys.donor, "--donor-key"),
    }
    for role, (name, key, flag) in roles.items():
        if key in obs.columns:
            columns[name] = obs[key]
        elif global_obs is not None and key in global_obs.columns:
            columns[name] = global_obs.loc[rna.obs_names, key]
        else:
            present = list(obs.columns)
            if global_obs is not None:
                present += [c for c in global_obs.columns if c not in present]
            raise MissingKeyError(
                f"obs column '{key}' ({role} key) not found; columns present: {present or 'none'}; "
                f"fix: pass {flag} with the column that holds the {role} "
                f"(Python: {name}_key=...)"
            )
    return pd.DataFrame(columns, index=rna.obs_names)


def resolve_time(values: pd.Series, *, key: str, unit: str | None = None) -> TimeAxis:
    """Order a time column: numeric (with unit), ordered categorical, or labels like ``'6h'``.

    Parameters
    ----------
    values
        The per-cell time column.
    key
        Column name, for messages.
    unit
        Unit of numeric time; overrides a unit parsed from labels.

    Raises
    ------
    TimeOrderError
        Missing values, or labels that cannot be ordered.
    """
    n_missing = int(values.isna().sum())
    if n_missing:
        raise TimeOrderError(
            f"time column '{key}' has {n_missing} missing values; fix: fill them or drop those "
            "cells before validation"
        )
    if isinstance(values.dtype, pd.CategoricalDtype) and values.cat.ordered:
        levels = [c for c in values.cat.categories if c in set(values.unique())]
        return TimeAxis(values=values, levels=levels, unit=unit, numeric=False)
    if pd.api.types.is_bool_dtype(values.dtype):
        raise TimeOrderError(
            f"time column '{key}' is boolean, which is not a time; fix: use numeric time "
            "(e.g. hours) or an ordered categorical"
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        numeric = values.astype(float)
        if not np.all(np.isfinite(numeric.to_numpy())):
            raise TimeOrderError(
                f"time column '{key}' holds infinite values; fix: replace them with real times"
            )
        return TimeAxis(numeric, sorted(numeric.unique().tolist()), unit, numeric=True)
    labels = pd.Series(values.astype(str).unique())
    parsed = _parse_time_labels(labels.tolist())
    if parsed is None:
        shown = sorted(labels.tolist())[:8]
        raise TimeOrderError(
            f"time column '{key}' has labels {shown} that cannot be ordered; fix: make it numeric "
            f"(e.g. hours) or an ordered categorical: obs['{key}'] = pd.Categorical(obs['{key}'], "
            "categories=[...in order...], ordered=True)"
        )
    mapping, parsed_unit = parsed
    numeric = values.astype(str).map(mapping).astype(float)
    return TimeAxis(numeric, sorted(set(mapping.values())), unit or parsed_unit, numeric=True)


def _parse_time_labels(labels: list[str]) -> tuple[dict[str, float], str | None] | None:
    """Parse labels like '6h', '12 h', 'day 3' into numbers with one shared unit, or None."""
    mapping: dict[str, float] = {}
    units: set[str] = set()
    for label in labels:
        match = _TIME_LABEL.match(label)
        if match:
            number, unit = match.group(1), match.group(2)
        else:
            match = _TIME_LABEL_UNIT_FIRST.match(label)
            if not match:
                return None
            unit, number = match.group(1), match.group(2)
        mapping[label] = float(number)
        units.add(unit.lower())
    if len(units) > 1:
        return None  # '6h' and '2d' mixed: refuse to guess a conversion
    unit = units.pop() if units else None
    return mapping, unit or None


def counts_matrix(data: Any, layer: str | None = None):
    """Return the raw-count matrix of the RNA modality (``X`` or ``layers[layer]``).

    Raises
    ------
    MissingKeyError
        The layer does not exist.
    """
    rna = rna_modality(data)
    if layer is None:
        return rna.X
    if layer not in rna.layers:
        present = list(rna.layers.keys())
        raise MissingKeyError(
            f"layer '{layer}' not found; layers present: {present or 'none'}; fix: pass one of "
            "them as the counts layer, or omit the layer to use X"
        )
    return rna.layers[layer]


def _first_bad_value(matrix) -> tuple[str, int, int, float] | None:
    """Find the first negative, non-finite or non-integer entry: (problem, row, column, value)."""
    if matrix is None:
        return None
    if sparse.issparse(matrix):
        csr = sparse.csr_matrix(matrix)
        return _scan_block(csr.data, lambda i: _sparse_position(csr, i))
    if is_backed_sparse(matrix):  # a backed file's counts: scanned chunk by chunk, never whole
        for start in range(0, matrix.shape[0], SPARSE_CHUNK_ROWS):
            block = sparse.csr_matrix(matrix[start : start + SPARSE_CHUNK_ROWS])
            found = _scan_block(block.data, lambda i, b=block: _sparse_position(b, i))
            if found:
                problem, row, col, value = found
                return problem, start + row, col, value
        return None
    if hasattr(matrix, "shape") and not isinstance(matrix, np.ndarray):
        matrix = np.asarray(matrix)  # e.g. h5py datasets of backed objects
    for start in range(0, matrix.shape[0], _DENSE_CHUNK_ROWS):
        block = np.asarray(matrix[start : start + _DENSE_CHUNK_ROWS])
        found = _scan_block(
            block.ravel(),
            lambda i, start=start, width=block.shape[1]: (start + i // width, i % width),
        )
        if found:
            return found
    return None


def _sparse_position(csr: sparse.csr_matrix, index: int) -> tuple[int, int]:
    row = int(np.searchsorted(csr.indptr, index, side="right") - 1)
    return row, int(csr.indices[index])


def _scan_block(values: np.ndarray, locate) -> tuple[str, int, int, float] | None:
    if values.size == 0:
        return None
    integer_dtype = np.issubdtype(values.dtype, np.integer)
    checks = [("negative", values < 0)]
    if not integer_dtype:
        finite = np.isfinite(values)
        checks.insert(0, ("NaN or infinite", ~finite))
        checks.append(("non-integer", finite & (values != np.round(values))))
    for problem, mask in checks:
        hits = np.flatnonzero(mask)
        if hits.size:
            row, col = locate(int(hits[0]))
            return problem, row, col, float(values[hits[0]])
    return None


def check_raw_counts(data: Any, layer: str | None = None) -> str:
    """Check that the chosen matrix holds raw counts; return where they were found.

    Raises
    ------
    CountsError
        Negative, NaN/inf or non-integer values; the message suggests a layer that does hold
        counts when there is one.
    EmptyDataError
        No cells or no genes.
    """
    rna = rna_modality(data)
    if rna.n_obs == 0 or rna.n_vars == 0:
        raise EmptyDataError(
            f"the RNA matrix is empty ({rna.n_obs} cells x {rna.n_vars} genes); fix: check that "
            "the file was written after loading the counts, and that no filter removed everything"
        )
    matrix = counts_matrix(data, layer)
    where = "X" if layer is None else f"layers['{layer}']"
    if matrix is None:
        raise EmptyDataError(f"{where} is empty (None); fix: store the raw counts there")
    bad = _first_bad_value(matrix)
    if bad is None:
        return where
    problem, row, col, value = bad
    candidates = [
        name
        for name in rna.layers.keys()
        if name != layer and _first_bad_value(_head(rna.layers[name])) is None
    ]
    if layer is not None and _first_bad_value(_head(rna.X)) is None:
        candidates.insert(0, "X")
    if candidates:
        pick = candidates[0]
        hint = (
            "use X (omit the layer option)"
            if pick == "X"
            else f"use the layer '{pick}', which holds integer counts (--layer {pick}; "
            f"Python: layer='{pick}')"
        )
    else:
        hint = (
            "store the unnormalised integer UMI/read counts in X or a layer (e.g. "
            "adata.layers['counts'] = raw) and pass that layer"
        )
    return_value = f"{value:g}"
    raise CountsError(
        f"{where} must hold raw counts but has {problem} values (e.g. {return_value} at cell "
        f"'{rna.obs_names[row]}', gene '{rna.var_names[col]}'); fix: {hint}"
    )


def _head(matrix, n_rows: int = 2000):
    """First rows of a matrix: enough to tell counts from normalised values when suggesting."""
    return matrix[:n_rows] if matrix is not None else None


def _check_unique(index: pd.Index, what: str, fix: str) -> None:
    if index.is_unique:
        return
    dups = index[index.duplicated()].unique()
    raise DuplicateNamesError(
        f"{len(dups)} {what} names occur more than once (e.g. {list(dups[:5])}); fix: {fix}"
    )


def validate_cohort(
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
    min_donors: int = 2,
) -> CohortSummary:
    """Validate a cohort against the data contract and summarise it.

    Parameters
    ----------
    data
        AnnData, or MuData with an ``rna`` modality (``atac``/``prot`` optional).
    cell_type_key, time_key, condition_key, donor_key
        obs columns (RNA obs first, then MuData's global obs).
    case, control
        Labels of the arms in the condition column.
    layer
        Layer with raw counts; ``None`` for ``X``.
    time_unit
        Unit of numeric time, e.g. ``"h"``.
    min_donors
        Donors needed per arm in a cell type x time group; groups below it are skipped with an
        :class:`~omicstwin.errors.InsufficientReplicationWarning` and listed, never fatal.

    Returns
    -------
    CohortSummary
        Sizes, arms, time axis, skipped groups and the design table.

    Raises
    ------
    DataFileError, ModalityError, MissingKeyError, CountsError, DuplicateNamesError,
    ConditionError, TimeOrderError, EmptyDataError
        See :mod:`omicstwin.errors`; each message names the problem and the fix.
    """
    if min_donors < 1:
        raise ParameterError(f"min_donors must be >= 1, got {min_donors}; fix: pass 2 or more")
    keys = CohortKeys(
        cell_type_key, time_key, condition_key, donor_key, case, control, layer, time_unit
    )
    rna = rna_modality(data)
    _check_matrix(rna)
    obs = cohort_obs(data, keys)
    counts_source = check_raw_counts(data, layer)

    conditions = obs["condition"].astype(str)
    _check_arms(conditions, keys)
    in_arms = conditions.isin([case, control])
    arm_obs = _arm_obs(obs, conditions, in_arms, keys)
    time = resolve_time(obs["time"], key=time_key, unit=time_unit)
    arm_obs["time"] = time.values[in_arms.to_numpy()]
    time.levels = [t for t in time.levels if t in set(arm_obs["time"].unique())]

    design = (
        arm_obs.groupby(["condition", "donor", "time", "cell_type"], observed=True)
        .size()
        .rename("n_cells")
        .reset_index()
    )
    skipped = _underreplicated_groups(arm_obs, time.levels, case, control, min_donors)
    if len(skipped):
        shown = ", ".join(
            f"{r.cell_type}@{time.label(r.time)}" for r in skipped.head(5).itertuples()
        )
        message = (
            f"{len(skipped)} cell type x time group(s) have fewer than {min_donors} donors per arm "
            f"and will be skipped (e.g. {shown}); they are listed in the summary's skipped_groups"
        )
        warnings.warn(message, InsufficientReplicationWarning, stacklevel=2)

    donors = arm_obs.drop_duplicates("donor")
    return CohortSummary(
        n_cells=int(rna.n_obs),
        n_genes=int(rna.n_vars),
        n_cells_case=int((arm_obs["condition"] == case).sum()),
        n_cells_control=int((arm_obs["condition"] == control).sum()),
        n_cells_other=int((~in_arms).sum()),
        cell_types=sorted(arm_obs["cell_type"].unique().tolist()),
        time=time,
        donors_case=sorted(donors.loc[donors["condition"] == case, "donor"].tolist()),
        donors_control=sorted(donors.loc[donors["condition"] == control, "donor"].tolist()),
        skipped_groups=skipped,
        design=design,
        modalities=_modalities(data, rna),
        counts_source=counts_source,
    )


def _check_matrix(rna) -> None:
    """Raise when the RNA matrix is empty or names a gene or a cell twice.

    Parameters
    ----------
    rna
        The RNA AnnData.

    Raises
    ------
    EmptyDataError
        No cell or no gene.
    DuplicateNamesError
        A gene or cell name occurs more than once.
    """
    if rna.n_obs == 0 or rna.n_vars == 0:
        raise EmptyDataError(
            f"the RNA matrix is empty ({rna.n_obs} cells x {rna.n_vars} genes); fix: check that "
            "the file was written after loading the counts, and that no filter removed everything"
        )
    _check_unique(rna.var_names, "gene", "adata.var_names_make_unique(), or sum duplicated genes")
    _check_unique(rna.obs_names, "cell", "adata.obs_names_make_unique() before saving")


def _check_arms(conditions: pd.Series, keys: CohortKeys) -> None:
    """Raise unless the case and control labels are two labels of the condition column.

    Parameters
    ----------
    conditions
        The condition of every cell, as strings.
    keys
        The data contract (labels and the condition column's name).

    Raises
    ------
    ConditionError
        The labels are equal, or one of them is absent.
    """
    case, control = keys.case, keys.control
    present = sorted(conditions.unique().tolist())
    missing = [label for label in (case, control) if label not in present]
    if case == control:
        raise ConditionError(
            f"case and control labels are both '{case}'; fix: pass two different labels from "
            f"{present}"
        )
    if missing:
        only_one = " (only one condition is present)" if len(present) == 1 else ""
        raise ConditionError(
            f"condition label(s) {missing} not found in obs column '{keys.condition}'"
            f"{only_one}; labels present: {present}; fix: pass --case and --control with labels "
            "from that list (Python: case=..., control=...)"
        )


def _arm_obs(
    obs: pd.DataFrame, conditions: pd.Series, in_arms: pd.Series, keys: CohortKeys
) -> pd.DataFrame:
    """Select the cells of the two arms, with string cell types and donors, checked for gaps.

    Parameters
    ----------
    obs
        The cohort's obs columns (:func:`cohort_obs`).
    conditions
        The condition of every cell, as strings.
    in_arms
        Whether each cell is in the case or the control arm.
    keys
        The data contract.

    Returns
    -------
    pandas.DataFrame
        The arms' rows of ``obs`` (without ``time``, set by the caller once resolved).

    Raises
    ------
    MissingKeyError
        A cell of an arm lacks its cell type or donor.
    ConditionError
        A donor has cells in both arms.
    """
    arm_obs = obs.loc[in_arms.to_numpy()].copy()
    arm_obs["condition"] = conditions[in_arms.to_numpy()]
    for column in ("cell_type", "donor"):
        n_missing = int(arm_obs[column].isna().sum())
        if n_missing:
            key = keys.cell_type if column == "cell_type" else keys.donor
            raise MissingKeyError(
                f"obs column '{key}' has {n_missing} missing values among case/control cells; "
                "fix: label those cells or drop them"
            )
    arm_obs["donor"] = arm_obs["donor"].astype(str)
    arm_obs["cell_type"] = arm_obs["cell_type"].astype(str)
    both = arm_obs.groupby("donor", observed=True)["condition"].nunique()
    both = both[both > 1]
    if len(both):
        raise ConditionError(
            f"donor(s) {list(both.index[:5])} appear in both '{keys.case}' and '{keys.control}'; "
            "omicstwin treats the condition as a donor-level attribute (patients vs controls); "
            "fix: give each donor one arm, or use distinct donor ids per arm if samples are "
            "independent"
        )
    return arm_obs


def _modalities(data: Any, rna) -> dict[str, tuple[int, ...]]:
    """Shape of every modality; those omicstwin does not use are logged as ignored.

    Parameters
    ----------
    data
        The AnnData or MuData validated.
    rna
        Its RNA AnnData.

    Returns
    -------
    dict
        Modality name -> shape.
    """
    modalities = (
        {name: tuple(mod.shape) for name, mod in data.mod.items()}
        if is_mudata(data)
        else {"rna": tuple(rna.shape)}
    )
    unknown = [m for m in modalities if m not in ("rna", *OPTIONAL_MODALITIES)]
    if unknown:
        logger.info("modalities %s are not used by omicstwin and are ignored", unknown)
    return modalities


def _underreplicated_groups(
    arm_obs: pd.DataFrame, levels: list[Any], case: str, control: str, min_donors: int
) -> pd.DataFrame:
    """List cell type x time groups (all combinations) below ``min_donors`` donors in an arm."""
    n_donors = (
        arm_obs.groupby(["cell_type", "time", "condition"], observed=True)["donor"]
        .nunique()
        .unstack("condition", fill_value=0)
    )
    full = pd.MultiIndex.from_product(
        [sorted(arm_obs["cell_type"].unique()), levels], names=["cell_type", "time"]
    )
    n_donors = n_donors.reindex(full, fill_value=0)
    table = pd.DataFrame(
        {
            "n_donors_case": n_donors.get(case, pd.Series(0, index=full)).astype(int),
            "n_donors_control": n_donors.get(control, pd.Series(0, index=full)).astype(int),
        }
    ).reset_index()
    low = (table["n_donors_case"] < min_donors) | (table["n_donors_control"] < min_donors)
    table = table.loc[low].reset_index(drop=True)
    table["reason"] = [
        f"{r.n_donors_case} case / {r.n_donors_control} control donors (< {min_donors} per arm)"
        for r in table.itertuples()
    ]
    return table
