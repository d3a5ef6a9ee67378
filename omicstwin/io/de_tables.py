"""Read differential-expression tables exported by other tools into the ``de`` schema.

:func:`read_de_table` reads what people export: Seurat ``FindMarkers`` / ``FindAllMarkers``
(``p_val``, ``avg_log2FC``, or ``avg_logFC`` = natural log in Seurat < 4, ``p_val_adj``,
``cluster``), monocle-style tables (``gene_short_name`` / ``symbol``, a log fold change whose
base the column name states, q-values only, often DEG rows only), DESeq2 / pydeseq2
(``log2FoldChange``, ``pvalue``, ``padj``), edgeR (``logFC`` = log2, ``PValue``, ``FDR``) and
scanpy (``sc.get.rank_genes_groups_df``: ``names``, ``logfoldchanges``, ``pvals``,
``pvals_adj``, ``group``), from csv / tsv (xlsx with openpyxl) or a DataFrame. It returns
``cell_type, time, gene, log_fc (log2), p_value, q_value``; the table's time unit, format, source
and the number of capped infinite fold changes are in ``frame.attrs``.

What it does with the awkward parts, explicitly:

- fold-change base: given (``fc_base``: ``log2``, ``log10``, ``ln``), else the format's (Seurat,
  DESeq2, edgeR, scanpy) or the column name's (``log10``, ``log2``, ``ln``); ambiguous -> error;
- +/-Inf fold changes keep their sign and get the largest finite ``|log2 FC|`` of the table
  (a warning says how many); rows without a fold change are dropped as untested (warned);
- p-values missing (q only, as monocle): ``p_value`` is NaN, regulator analysis then calls DEGs
  by q and counts as tested the genes with a q-value; q missing: BH within each context;
- time: a number, or a label with a unit (``"3D"``, ``"day 3"``, ``"d7"``, ``"6h"``): the number
  is kept and the unit goes to ``attrs["time_unit"]``; an unparseable label is an error raised
  while reading, before any computation.

Every bad table raises one line naming the file, column or value and the fix.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from omicstwin._stats import benjamini_hochberg
from omicstwin.errors import (
    DataFileError,
    DuplicateNamesError,
    EmptyDataError,
    MissingKeyError,
    OmicstwinWarning,
    OptionalDependencyError,
    ParameterError,
    TimeOrderError,
)

__all__ = [
    "DE_COLUMNS",
    "FORMATS",
    "parse_table_spec",
    "parse_time",
    "read_de_table",
    "read_gene_list",
]

DE_COLUMNS = ("cell_type", "time", "gene", "log_fc", "p_value", "q_value")
FC_BASES = {"log2": 1.0, "log10": math.log2(10.0), "ln": 1.0 / math.log(2.0)}
_BASE_ALIASES = {"2": "log2", "10": "log10", "e": "ln", "log": "ln", "natural": "ln"}


@dataclass(frozen=True)
class Format:
    """Column names of one export format (first present wins) and its fold-change base."""

    signature: tuple[str, ...]  # all present -> this format (auto-detection)
    gene: tuple[str, ...]
    log_fc: tuple[tuple[str, str | None], ...]  # (column, base; None = from the name)
    p_value: tuple[str, ...]
    q_value: tuple[str, ...]
    cell_type: tuple[str, ...] = ()


FORMATS: dict[str, Format] = {
    "omicstwin": Format(
        ("gene", "log_fc"),
        ("gene",),
        (("log_fc", "log2"),),
        ("p_value",),
        ("q_value",),
        ("cell_type",),
    ),
    "seurat": Format(
        ("p_val",),
        ("gene",),
        (("avg_log2FC", "log2"), ("avg_logFC", "ln")),  # Seurat < 4: natural log
        ("p_val",),
        ("p_val_adj",),
        ("cluster",),
    ),
    "deseq2": Format(
        ("log2FoldChange",),
        ("gene", "gene_id", "symbol"),
        (("log2FoldChange", "log2"),),
        ("pvalue",),
        ("padj",),
    ),
    "edger": Format(
        ("logFC", "FDR"),
        ("gene", "genes", "symbol", "Symbol"),
        (("logFC", "log2"),),
        ("PValue",),
        ("FDR",),
    ),
    "scanpy": Format(
        ("names", "logfoldchanges"),
        ("names",),
        (("logfoldchanges", "log2"),),
        ("pvals",),
        ("pvals_adj",),
        ("group",),
    ),
    "monocle": Format(
        ("gene_short_name",),
        ("gene_short_name", "symbol", "gene"),
        (),
        ("p_value", "pval", "p-value", "pvalue", "P.Value", "marker_test_p_value"),
        ("q_value", "qval", "q-value", "qvalue", "padj", "FDR", "adj.P.Val", "marker_test_q_value"),
        ("cell_group", "cell_type", "cluster"),
    ),
}
# monocle-style tables from papers often name the gene ``symbol``: detected when no other fits
_MONOCLE_GENE = ("gene_short_name", "symbol")
_FC_NAME = re.compile(r"(fold|fc|lfc)", re.IGNORECASE)

_UNITS = {
    "h": "hour", "hr": "hour", "hrs": "hour", "hour": "hour", "hours": "hour",
    "d": "day", "day": "day", "days": "day",
    "w": "week", "wk": "week", "week": "week", "weeks": "week",
    "min": "minute", "mins": "minute", "minute": "minute", "minutes": "minute",
    "mo": "month", "month": "month", "months": "month",
}  # fmt: skip
_TIME = re.compile(
    r"^\s*(?:(?P<pre>[a-z]+)[\s_\-]*)?(?P<num>[+-]?\d+(?:\.\d+)?)\s*(?P<post>[a-z]+)?\s*$",
    re.IGNORECASE,
)


def parse_time(value: object, *, source: str = "the DE table") -> tuple[float, str]:
    """Parse a time point: a number, or a label such as ``"3D"``, ``"day 3"``, ``"d7"``, ``"6h"``.

    Returns
    -------
    tuple of (float, str)
        The number and the unit (``""`` for a bare number; else hour, day, week, minute, month).

    Raises
    ------
    TimeOrderError
        The label has no number or an unknown unit.
    """
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        if not np.isfinite(value):
            raise TimeOrderError(f"{source}: time {value!r} is not finite; fix: give a number")
        return float(value), ""
    match = _TIME.match(str(value))
    units = [match.group("pre"), match.group("post")] if match else []
    units = [u.lower() for u in units if u]
    if match is None or len(units) > 1 or any(u not in _UNITS for u in units):
        raise TimeOrderError(
            f"{source}: cannot read time '{value}' as a number with a unit; fix: label times as "
            "a number with an optional unit (e.g. 3, '3D', 'day 3', 'd7', '6h')"
        )
    return float(match.group("num")), _UNITS[units[0]] if units else ""


def read_de_table(
    path_or_frame: str | Path | pd.DataFrame,
    *,
    format: str = "auto",
    gene: str | None = None,
    log_fc: str | None = None,
    p_value: str | None = None,
    q_value: str | None = None,
    fc_base: str | None = None,
    cell_type: str | None = None,
    time: float | str | None = None,
    cell_type_column: str | None = None,
    time_column: str | None = None,
) -> pd.DataFrame:
    """Read one exported DE table into the ``de`` schema's columns.

    Parameters
    ----------
    path_or_frame
        A csv / tsv / txt (separator sniffed) or xlsx file, or a DataFrame.
    format
        ``"auto"`` (detected from the columns) or one of :data:`FORMATS`: ``seurat``,
        ``monocle``, ``deseq2``, ``edger``, ``scanpy``, ``omicstwin``.
    gene, log_fc, p_value, q_value
        Column names, overriding the format's. The gene may also be the index / an unnamed
        first column (R's row names).
    fc_base
        Base of the fold-change column's logarithm: ``log2``, ``log10`` or ``ln``; needed when
        neither the format nor the column name says it.
    cell_type, time
        The cell type and time point of a table of one context (time: a number or a label such
        as ``"3D"``; default 0 for a table of one time point).
    cell_type_column, time_column
        Columns holding them, for tables of many contexts (default: the format's, e.g.
        Seurat ``cluster``, scanpy ``group``).

    Returns
    -------
    pandas.DataFrame
        cell_type, time, gene, log_fc (log2), p_value, q_value; ``attrs``: ``source``,
        ``format``, ``time_unit``, ``n_capped`` (infinite fold changes capped),
        ``n_dropped`` (rows without a fold change), ``has_p_value``.
    """
    source, raw = _load(path_or_frame)
    if raw.empty:
        raise EmptyDataError(f"{source} has no rows; fix: export the table with its genes")
    raw = _promote_row_names(raw)
    name = _detect_format(raw, format, source, explicit=(gene, log_fc))
    spec = FORMATS[name]
    gene_col = _column(raw, gene, spec.gene, "gene", source, "--gene")
    fc_col, base = _fold_change(raw, log_fc, spec, fc_base, source)
    p_col = _column(raw, p_value, spec.p_value, "p-value", source, "--p-value", optional=True)
    q_col = _column(raw, q_value, spec.q_value, "q-value", source, "--q-value", optional=True)
    if p_col is None and q_col is None:
        raise MissingKeyError(
            f"{source} has neither a p-value nor a q-value column (columns: {list(raw.columns)});"
            " fix: name them with --p-value / --q-value"
        )
    out = pd.DataFrame({"gene": raw[gene_col].astype("string").str.strip()})
    if out["gene"].isna().any() or (out["gene"] == "").any():
        row = int(np.flatnonzero((out["gene"].isna() | (out["gene"] == "")).to_numpy())[0])
        raise MissingKeyError(
            f"{source}: column '{gene_col}' has an empty gene name (row {row + 1}); fix: drop "
            "the row or fill the name"
        )
    out["cell_type"] = _cell_types(raw, cell_type, cell_type_column, spec, source)
    out["time"], unit = _times(raw, time, time_column, source)
    out["log_fc"] = _numeric(raw, fc_col, source) * FC_BASES[base]
    out["p_value"] = _probabilities(raw, p_col, source)
    out["q_value"] = _probabilities(raw, q_col, source)
    out, n_dropped = _drop_missing_fold_changes(out, fc_col, source)
    out, n_capped = _cap_infinite(out, fc_col, source)
    _check_duplicates(out, gene_col, source)
    if q_col is None:  # BH within each context, as the DE stage does
        out["q_value"] = out.groupby(["cell_type", "time"], observed=True)["p_value"].transform(
            lambda p: pd.Series(_bh_with_nan(p.to_numpy()), index=p.index)
        )
    out = out.loc[:, list(DE_COLUMNS)].astype(
        {"cell_type": "string", "time": "float64", "gene": "string", "log_fc": "float64"}
    )
    out = out.sort_values(["cell_type", "time", "gene"], kind="stable").reset_index(drop=True)
    out.attrs.update(
        source=source,
        format=name,
        time_unit=unit,
        n_capped=n_capped,
        n_dropped=n_dropped,
        has_p_value=p_col is not None,
    )
    return out


# ------------------------------------------------------------------------------ helpers


def _load(path_or_frame: str | Path | pd.DataFrame) -> tuple[str, pd.DataFrame]:
    if isinstance(path_or_frame, pd.DataFrame):
        return "the DE table", path_or_frame.copy()
    path = Path(path_or_frame)
    source = f"'{path}'"
    if not path.is_file():
        raise DataFileError(f"{source} does not exist; fix: give the path of an exported DE table")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xls"):
        try:
            import openpyxl  # noqa: F401
        except ImportError as exc:
            raise OptionalDependencyError(
                f"{source} is an Excel file and reading it needs openpyxl, which is not "
                "installed; fix: pip install openpyxl, or save the sheet as csv"
            ) from exc
        return source, pd.read_excel(path)
    try:
        header = path.open(encoding="utf-8-sig").readline()
    except UnicodeDecodeError as exc:
        raise DataFileError(f"cannot read {source} as text ({exc}); fix: csv or tsv") from exc
    if not header.strip():
        raise EmptyDataError(f"{source} is empty; fix: export the table with its genes")
    tab = suffix in (".tsv", ".tab") or header.count("\t") > header.count(",")
    try:
        frame = pd.read_csv(path, sep="\t" if tab else ",", encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFileError(f"cannot read {source} as a table ({exc}); fix: csv or tsv") from exc
    return source, frame


def _promote_row_names(raw: pd.DataFrame) -> pd.DataFrame:
    """R's write.csv puts row names (genes) in an unnamed first column; a frame, in the index."""
    first = str(raw.columns[0])
    if first == "" or first.startswith("Unnamed: 0"):
        raw = raw.rename(columns={raw.columns[0]: "_row_names"})
    elif not isinstance(raw.index, pd.RangeIndex):
        raw = raw.reset_index(names="_row_names")
    return raw


def _detect_format(raw: pd.DataFrame, format: str, source: str, explicit) -> str:
    if format != "auto":
        if format not in FORMATS:
            raise ParameterError(
                f"unknown DE table format '{format}'; fix: use auto or one of {list(FORMATS)}"
            )
        return format
    columns = set(raw.columns)
    for name in ("seurat", "deseq2", "edger", "scanpy", "omicstwin"):
        if set(FORMATS[name].signature) <= columns:
            return name
    if columns & set(_MONOCLE_GENE):
        return "monocle"
    if all(explicit):  # gene and fold change named: a generic table
        return "monocle"
    raise ParameterError(
        f"cannot tell which tool exported {source} (columns: {list(raw.columns)}); fix: pass "
        f"--format ({', '.join(FORMATS)}) or name the columns with --gene/--log-fc/--p-value/"
        "--q-value"
    )


def _column(
    raw: pd.DataFrame,
    given: str | None,
    candidates: tuple[str, ...],
    what: str,
    source: str,
    flag: str,
    *,
    optional: bool = False,
) -> str | None:
    if given is not None:
        if given not in raw.columns:
            raise MissingKeyError(
                f"{source} has no column '{given}' for the {what} (columns: "
                f"{list(raw.columns)}); fix: {flag} with one of them"
            )
        return given
    for name in candidates:
        if name in raw.columns:
            return name
    if what == "gene" and "_row_names" in raw.columns:
        return "_row_names"
    if optional:
        return None
    raise MissingKeyError(
        f"{source} has no {what} column (looked for {list(candidates)} and row names; columns: "
        f"{list(raw.columns)}); fix: {flag} COLUMN"
    )


def _fold_change(
    raw: pd.DataFrame, given: str | None, spec: Format, fc_base: str | None, source: str
) -> tuple[str, str]:
    base = _normalise_base(fc_base) if fc_base is not None else None
    if given is not None:
        column = _column(raw, given, (), "fold change", source, "--log-fc")
        known = dict(spec.log_fc).get(column)
    else:
        known_columns = [(c, b) for c, b in spec.log_fc if c in raw.columns]
        if known_columns:
            column, known = known_columns[0]
        else:
            guesses = [c for c in raw.columns if _FC_NAME.search(str(c))]
            if len(guesses) != 1:
                raise MissingKeyError(
                    f"{source}: no single fold-change column (candidates {guesses}; columns: "
                    f"{list(raw.columns)}); fix: --log-fc COLUMN"
                )
            column, known = guesses[0], None
    if base is not None:
        return column, base
    base = known or _base_from_name(str(column))
    if base is None:
        raise ParameterError(
            f"{source}: the base of fold-change column '{column}' is ambiguous; fix: --fc-base "
            "log2, log10 or ln"
        )
    return column, base


def _normalise_base(value: str) -> str:
    key = str(value).strip().lower()
    key = _BASE_ALIASES.get(key, key)
    if key not in FC_BASES:
        raise ParameterError(f"unknown fold-change base '{value}'; fix: log2, log10 or ln")
    return key


def _base_from_name(name: str) -> str | None:
    lowered = name.lower()
    found = [b for b in ("log10", "log2") if b in lowered]
    if re.search(r"(^|[^a-z])ln([^a-z]|$)", lowered) or "natural" in lowered:
        found.append("ln")
    return found[0] if len(found) == 1 else None


def _numeric(raw: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = pd.to_numeric(
        raw[column].replace({"Inf": np.inf, "-Inf": -np.inf, "inf": np.inf, "-inf": -np.inf}),
        errors="coerce",
    )
    bad = raw[column].notna() & values.isna()
    if bad.any():
        raise ParameterError(
            f"{source}: column '{column}' has a non-numeric value "
            f"'{raw.loc[bad, column].iloc[0]}'; fix: numbers only (Inf allowed, empty = missing)"
        )
    return values.astype(float)


def _probabilities(raw: pd.DataFrame, column: str | None, source: str) -> pd.Series:
    if column is None:
        return pd.Series(np.nan, index=raw.index)
    values = _numeric(raw, column, source)
    outside = (values < 0) | (values > 1)
    if outside.any():
        raise ParameterError(
            f"{source}: column '{column}' has value {values[outside].iloc[0]} outside [0, 1]; "
            "fix: give raw p-values (not -log10 p) in this column"
        )
    return values


def _cell_types(
    raw: pd.DataFrame, cell_type: str | None, column: str | None, spec: Format, source: str
) -> pd.Series:
    if cell_type is not None and column is not None:
        raise ParameterError("give a cell type or a cell-type column, not both")
    if cell_type is not None:
        return pd.Series(str(cell_type), index=raw.index, dtype="string")
    column = _column(
        raw, column, spec.cell_type, "cell type", source, "--cell-type-column", optional=True
    )
    if column is None:
        raise MissingKeyError(
            f"{source} has no cell-type column (looked for {list(spec.cell_type)}); fix: "
            "--cell-type NAME for a table of one cell type (or FILE:CELL_TYPE), or "
            "--cell-type-column COLUMN"
        )
    values = raw[column].astype("string")
    if values.isna().any():
        raise MissingKeyError(f"{source}: column '{column}' has empty cell types; fix: fill them")
    return values


def _times(
    raw: pd.DataFrame, time: float | str | None, column: str | None, source: str
) -> tuple[pd.Series, str]:
    if time is not None and column is not None:
        raise ParameterError("give a time or a time column, not both")
    if column is None:
        value, unit = parse_time(0.0 if time is None else time, source=source)
        return pd.Series(value, index=raw.index, dtype="float64"), unit
    if column not in raw.columns:
        raise MissingKeyError(
            f"{source} has no time column '{column}' (columns: {list(raw.columns)}); fix: "
            "--time-column with one of them"
        )
    parsed = {v: parse_time(v, source=f"{source} column '{column}'") for v in raw[column].unique()}
    units = sorted({u for _, u in parsed.values()})
    if len(units) > 1:
        raise TimeOrderError(
            f"{source}: column '{column}' mixes time units {units}; fix: one unit per study"
        )
    return raw[column].map(lambda v: parsed[v][0]).astype("float64"), units[0] if units else ""


def _drop_missing_fold_changes(out: pd.DataFrame, column: str, source: str):
    missing = out["log_fc"].isna()
    if missing.any():
        warnings.warn(
            f"{source}: {int(missing.sum())} rows without a fold change in '{column}' dropped "
            "(not tested)",
            OmicstwinWarning,
            stacklevel=3,
        )
    return out[~missing], int(missing.sum())


def _cap_infinite(out: pd.DataFrame, column: str, source: str):
    infinite = np.isinf(out["log_fc"].to_numpy())
    if not infinite.any():
        return out, 0
    finite = out.loc[~infinite, "log_fc"].abs()
    if finite.empty:
        raise ParameterError(
            f"{source}: every fold change in '{column}' is infinite; fix: export finite fold "
            "changes (e.g. with a pseudocount)"
        )
    cap = float(finite.max())
    out = out.copy()
    out.loc[infinite, "log_fc"] = np.sign(out.loc[infinite, "log_fc"]) * cap
    warnings.warn(
        f"{source}: {int(infinite.sum())} infinite fold changes in '{column}' capped at "
        f"+/-{cap:.3g} (log2; the largest finite |FC| of the table), direction kept",
        OmicstwinWarning,
        stacklevel=3,
    )
    return out, int(infinite.sum())


def _check_duplicates(out: pd.DataFrame, gene_col: str, source: str) -> None:
    duplicated = out.duplicated(["cell_type", "time", "gene"])
    if duplicated.any():
        row = out[duplicated].iloc[0]
        raise DuplicateNamesError(
            f"{source}: gene '{row['gene']}' (column '{gene_col}') appears more than once in "
            f"cell type '{row['cell_type']}' at time {row['time']:g}; fix: one row per gene per "
            "context (give --cell-type-column if the table holds several cell types)"
        )


def _bh_with_nan(p: np.ndarray) -> np.ndarray:
    q = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = benjamini_hochberg(p[ok])
    return q


def parse_table_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split ``FILE[:CELL_TYPE[:TIME]]`` (a path that exists is taken whole).

    Returns
    -------
    tuple
        (path, cell type or None, time label or None).
    """
    if Path(spec).exists() or ":" not in spec:
        return spec, None, None
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ParameterError(
            f"cannot read table spec '{spec}'; fix: FILE, FILE:CELL_TYPE or FILE:CELL_TYPE:TIME"
        )
    path, cell_type = parts[0], parts[1] or None
    time = parts[2] if len(parts) == 3 and parts[2] else None
    return path, cell_type, time


def read_gene_list(path: str | Path) -> list[str]:
    """Genes of a background file: one per line (or the first column of a csv/tsv)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"background gene list '{path}' does not exist; fix: give a file")
    genes = []
    for line in path.read_text().splitlines():
        name = re.split(r"[,\t]", line.strip())[0].strip().strip('"')
        if name and not name.startswith("#"):
            genes.append(name)
    if not genes:
        raise EmptyDataError(f"background gene list '{path}' is empty; fix: one gene per line")
    return sorted(set(genes))
