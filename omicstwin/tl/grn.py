"""Gene regulatory network (GRN) inference: registered methods and one runner.

Kernel level: a cells x genes matrix in, a tidy edge table out (``source, target, weight,
stability``). Methods are registered by name in :data:`GRN_METHODS` with a citation and whether
their weights are signed; :func:`infer_grn` validates the input once, calls the method and
builds the table, so every method gets the same checks and the same output contract.

The default, ``lagged_ridge``, uses pseudotime when it is given: it smooths every gene along each
trajectory branch, regresses each target's *future* smoothed level on the regulators' *current*
levels (plus the target's own current level, so regulators are credited only for the change
they predict) with linear and quadratic ridge models, and bags the fit over bootstrap resamples
of the cells. A regulator that leads its target along pseudotime predicts it; a target that lags
its regulator does not predict it, which orients edges that symmetric scores (correlation,
partial correlation) cannot. On BEELINE it beats GRNBoost2 on all 10 models of the benchmark
(see ``benchmarks/beeline.py``) at a small fraction of the CPU time. Without pseudotime it falls
back to the same ensemble on cells at lag 0 (static, and so unable to orient edges).

Only numpy and pandas are imported here (scipy for Spearman and arboreto for GRNBoost2 load
lazily), so ``omicstwin grn`` starts fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omicstwin._logging import logger
from omicstwin._stats import name_order, ridge_operator, top_k_mask
from omicstwin.errors import (
    DuplicateNamesError,
    EmptyDataError,
    InputTypeError,
    OptionalDependencyError,
    ParameterError,
)
from omicstwin.scores import argsort_scores

__all__ = [
    "DEFAULT_METHOD",
    "GRN_METHODS",
    "GRNMethod",
    "OptionalDependencyError",
    "get_grn_method",
    "infer_grn",
]

DEFAULT_METHOD = "lagged_ridge"

# A method returns (weights, stability), both regulators x genes; stability may be None.
MethodResult = tuple[np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class GRNMethod:
    """A registered GRN inference method.

    Attributes
    ----------
    name
        Registry key.
    function
        ``function(expression, regulator_index, *, pseudotime, seed, **params)`` returning
        ``(weights, stability)``: regulators x genes arrays (``stability`` may be ``None``).
        ``expression`` is validated cells x genes float64; ``pseudotime`` is cells x branches
        (NaN off-branch) or ``None``.
    reference
        Citation of the method (or of the model it implements).
    signed
        Whether ``weight`` carries the sign of the regulation.
    description
        One line on what the method does.
    """

    name: str
    function: Callable[..., MethodResult]
    reference: str
    signed: bool
    description: str


# ----------------------------------------------------------------------------- linear algebra


def _zscore(x: np.ndarray) -> np.ndarray:
    """Centre and scale columns; constant columns become 0 (they carry no information)."""
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    return x / np.where(sd > 0, sd, 1.0)


def _features(z: np.ndarray, quadratic: bool) -> np.ndarray:
    """Feature blocks [linear | quadratic] of z-scored columns (feature-major layout)."""
    if not quadratic:
        return z
    # z**2 of a z-scored variable is a U-shaped response: a cheap stand-in for the
    # saturating (Hill-type) regulation that a linear term misses
    return np.hstack([z, _zscore(z**2)])


def _ridge_all_targets(
    design: np.ndarray,
    response: np.ndarray,
    regulator_pos: np.ndarray,
    k: int,
    alpha: float,
    own: np.ndarray | None,
) -> np.ndarray:
    """Ridge coefficients of every target at once.

    Parameters
    ----------
    design
        rows x (k * R) regulator features, feature-major (column ``f * R + r``).
    response
        rows x T z-scored targets.
    regulator_pos
        Per target, its position among the regulators, or -1.
    k
        Features per regulator (1 linear, 2 linear + quadratic).
    alpha
        Ridge penalty (on the scale of correlations: the Gram matrix is divided by rows).
    own
        ``None`` for a static fit: a target that is also a regulator is regressed on the *other*
        regulators (its own features are removed through the partitioned inverse, exactly).
        Otherwise rows x T: each target's own current (linear) level, for a lagged fit. A target
        that is a regulator already has it in ``design`` (its other own features are removed
        through the partitioned inverse); the others get it appended through a Schur
        complement, so one matrix inverse serves every target.

    Returns
    -------
    numpy.ndarray
        (k * R) x T coefficients; a target's own features have coefficient 0.
    """
    n, p = design.shape
    n_reg = p // k
    apply = ridge_operator(design, alpha)
    beta = apply(design.T @ response / n)
    is_reg = regulator_pos >= 0
    own_cols = regulator_pos[is_reg][:, None] + n_reg * np.arange(k)[None, :]  # T_R x k
    targets_reg = np.flatnonzero(is_reg)

    def precision_columns(cols: np.ndarray) -> np.ndarray:
        unit = np.zeros((p, cols.size))
        unit[cols, np.arange(cols.size)] = 1.0
        return apply(unit)

    if own is None and targets_reg.size:
        # regress target j on the rest: coefficients -P[:, J] P[J, J]^-1 e_lin (block inverse)
        p_cols = precision_columns(own_cols.ravel()).reshape(p, -1, k)  # p x T_R x k
        p_jj = p_cols[
            own_cols[:, :, None],
            np.arange(targets_reg.size)[:, None, None],
            np.arange(k)[None, None, :],
        ]  # T_R x k x k
        e0 = np.zeros((targets_reg.size, k, 1))
        e0[:, 0, 0] = 1.0
        w = np.linalg.solve(p_jj, e0)[:, :, 0]  # T_R x k
        beta[:, targets_reg] = -np.einsum("ptk,tk->pt", p_cols, w)
    elif own is not None:
        if k > 1 and targets_reg.size:
            # a regulator target keeps only its linear own term: drop its other own feature
            # (k = 2: the quadratic) from the fit, beta_rest - P[rest, c] beta_c / P[c, c]
            extra = own_cols[:, 1]
            p_cols = precision_columns(extra)  # p x T_R
            p_cc = p_cols[extra, np.arange(extra.size)]
            b_c = beta[extra, targets_reg]
            beta[:, targets_reg] -= p_cols * (b_c / p_cc)[None, :]
        others = np.flatnonzero(~is_reg)
        if others.size:
            # append each such target's own current level through a Schur complement
            s = own[:, others]  # rows x T'
            y = response[:, others]
            a_s = design.T @ s / n  # p x T'
            v = apply(a_s)
            schur = (s * s).sum(axis=0) / n + alpha - (a_s * v).sum(axis=0)
            rhs = (s * y).sum(axis=0) / n - (a_s * beta[:, others]).sum(axis=0)
            beta[:, others] -= v * (rhs / schur)[None, :]
    if targets_reg.size:
        beta[own_cols.ravel(), np.repeat(targets_reg, k)] = 0.0
    return beta


def _regulator_scores(beta: np.ndarray, k: int) -> np.ndarray:
    """R x T scores: the linear coefficient's sign times the norm of the regulator's features."""
    n_reg = beta.shape[0] // k
    blocks = beta.reshape(k, n_reg, -1)
    return np.sign(blocks[0]) * np.sqrt((blocks**2).sum(axis=0))


# ----------------------------------------------------------------------------- methods


def _ridge(
    expression: np.ndarray,
    regulators: np.ndarray,
    *,
    pseudotime: np.ndarray | None = None,
    seed: int = 0,
    alpha: float = 1.0,
) -> MethodResult:
    """Plain ridge regression of every target on all candidate regulators (static)."""
    z = _zscore(expression)
    pos = _regulator_positions(regulators, expression.shape[1])
    beta = _ridge_all_targets(z[:, regulators], z, pos, 1, alpha, None)
    return beta, None


def _correlation(
    expression: np.ndarray,
    regulators: np.ndarray,
    *,
    pseudotime: np.ndarray | None = None,
    seed: int = 0,
    kind: str = "pearson",
) -> MethodResult:
    """Pearson or Spearman correlation of every regulator with every gene."""
    if kind not in ("pearson", "spearman"):
        raise ParameterError(f"kind must be 'pearson' or 'spearman', got '{kind}'")
    x = expression
    if kind == "spearman":
        from scipy.stats import rankdata

        x = rankdata(x, axis=0)
    z = _zscore(x)
    return z[:, regulators].T @ z / z.shape[0], None


def _partial_correlation(
    expression: np.ndarray,
    regulators: np.ndarray,
    *,
    pseudotime: np.ndarray | None = None,
    seed: int = 0,
    alpha: float = 0.1,
) -> MethodResult:
    """Partial correlation from the ridge-regularised precision matrix of all genes."""
    z = _zscore(expression)
    precision = np.linalg.inv(z.T @ z / z.shape[0] + alpha * np.eye(z.shape[1]))
    d = np.sqrt(np.diag(precision))
    pcor = -precision / d[:, None] / d[None, :]
    return pcor[regulators], None


def _smoothed_branches(
    expression: np.ndarray,
    pseudotime: np.ndarray,
    branches: list[int],
    n_grid: int,
    bandwidth: float,
    rng: np.random.Generator | None,
) -> list[np.ndarray]:
    """Per branch, expression smoothed along pseudotime on ``n_grid`` evenly spaced ranks.

    Smoothing in rank space (not raw pseudotime) makes the bandwidth and the lag fractions of
    the branch, whatever the pseudotime's scale or density.
    """
    grid = np.linspace(0.0, 1.0, n_grid)
    out = []
    for b in branches:
        cells = np.flatnonzero(np.isfinite(pseudotime[:, b]))
        if rng is not None:
            cells = rng.choice(cells, size=cells.size, replace=True)
        cells = cells[np.argsort(pseudotime[cells, b], kind="mergesort")]
        ranks = np.linspace(0.0, 1.0, cells.size)
        weights = np.exp(-0.5 * ((grid[:, None] - ranks[None, :]) / bandwidth) ** 2)
        weights /= weights.sum(axis=1, keepdims=True)
        out.append(weights @ expression[cells])
    return out


def _lagged_ridge(
    expression: np.ndarray,
    regulators: np.ndarray,
    *,
    pseudotime: np.ndarray | None = None,
    seed: int = 0,
    n_grid: int = 50,
    bandwidth: float = 0.04,
    lag: float = 0.06,
    alpha: float = 0.2,
    n_bags: int = 10,
    quadratic: bool = True,
    min_branch_cells: int = 10,
    stability_quantile: float = 0.9,
) -> MethodResult:
    """Pseudotime-lagged ridge ensemble (the default; see the module docstring)."""
    if not 0 < bandwidth <= 1 or not 0 < lag < 1:
        raise ParameterError(
            f"bandwidth ({bandwidth}) and lag ({lag}) are fractions of a branch; fix: use "
            "0 < bandwidth <= 1 and 0 < lag < 1"
        )
    if n_grid < 5 or n_bags < 0 or alpha <= 0:
        raise ParameterError(
            f"need n_grid >= 5 (got {n_grid}), n_bags >= 0 (got {n_bags}), alpha > 0 (got "
            f"{alpha}); fix: change the offending parameter"
        )
    n_genes = expression.shape[1]
    pos = _regulator_positions(regulators, n_genes)
    branches = []
    if pseudotime is not None:
        counts = np.isfinite(pseudotime).sum(axis=0)
        branches = [b for b in range(pseudotime.shape[1]) if counts[b] >= min_branch_cells]
        if not branches:
            logger.warning(
                "lagged_ridge: no pseudotime branch has >= %d cells; falling back to a static "
                "fit (edges cannot be oriented)",
                min_branch_cells,
            )
    steps = max(1, round(lag * (n_grid - 1)))
    rng = np.random.default_rng(seed)

    def one_fit(resample: bool) -> np.ndarray:
        if branches:
            assert pseudotime is not None  # for the type checker; guaranteed by branches
            paths = _smoothed_branches(
                expression, pseudotime, branches, n_grid, bandwidth, rng if resample else None
            )
            current = _zscore(np.vstack([p[:-steps] for p in paths]))
            future = _zscore(np.vstack([p[steps:] for p in paths]))
        else:
            rows = rng.integers(0, expression.shape[0], expression.shape[0]) if resample else None
            current = _zscore(expression if rows is None else expression[rows])
            future = current
        total = np.zeros((regulators.size, n_genes))
        # an ensemble of a linear and a linear + quadratic model: each alone is best on some
        # BEELINE models, their normalised sum is more robust than either
        for k in (1, 2) if quadratic else (1,):
            feats = _features(current[:, regulators], k == 2)
            own = current if branches else None
            beta = _ridge_all_targets(feats, future, pos, k, alpha, own)
            scores = _regulator_scores(beta, k)
            top = np.abs(scores).max()
            total += scores / top if top > 0 else scores
        return total

    if n_bags == 0:
        return one_fit(False), None
    fits = np.stack([one_fit(True) for _ in range(n_bags)])
    weight = np.sign(fits.sum(axis=0)) * np.abs(fits).mean(axis=0)
    # stability: share of bags in which the edge is in the top (1 - stability_quantile) of the
    # candidate edges of that bag
    mask = np.ones(weight.shape, dtype=bool)
    mask[pos[pos >= 0], np.flatnonzero(pos >= 0)] = False
    magnitude = np.abs(fits)
    cut = np.quantile(magnitude[:, mask], stability_quantile, axis=1)
    stability = (magnitude >= cut[:, None, None]).mean(axis=0)
    return weight, stability


def _grnboost2(
    expression: np.ndarray,
    regulators: np.ndarray,
    *,
    pseudotime: np.ndarray | None = None,
    seed: int = 0,
    gene_names: Sequence[str] = (),
) -> MethodResult:
    """GRNBoost2 through arboreto's per-target kernel, run serially in this process.

    arboreto's own driver (``arboreto.algo.grnboost2``) builds its graph with
    ``dask.dataframe.from_delayed``, which fails on dask >= 2025 ("Must supply at least one
    delayed object"), so we call arboreto's per-target function ``infer_partial_network`` with
    its GRNBoost2 settings (``SGBM_KWARGS``, early stopping): the same regressions, no dask.
    """
    try:
        from arboreto import core
    except ImportError as exc:
        raise OptionalDependencyError(
            "method 'grnboost2' needs arboreto, which is not installed; fix: pip install "
            "'omicstwin[grnboost]'"
        ) from exc
    names = list(gene_names) or [f"g{i}" for i in range(expression.shape[1])]
    tf_names = [names[i] for i in regulators]
    tf_matrix = expression[:, regulators]
    index = {g: i for i, g in enumerate(tf_names)}
    weights = np.zeros((regulators.size, expression.shape[1]))
    for j, target in enumerate(names):
        if tf_names == [target]:
            continue  # the only regulator is the target itself
        links = core.infer_partial_network(
            "GBM",
            core.SGBM_KWARGS,
            tf_matrix,
            tf_names,
            target,
            expression[:, j],
            include_meta=False,
            early_stop_window_length=core.EARLY_STOP_WINDOW_LENGTH,
            seed=seed,
        )
        rows = links["TF"].map(index).to_numpy(dtype=int)
        weights[rows, j] = links["importance"].to_numpy(dtype=np.float64)
    return weights, None


def _regulator_positions(regulators: np.ndarray, n_genes: int) -> np.ndarray:
    """Per gene, its position among the regulators, or -1."""
    pos = np.full(n_genes, -1, dtype=np.int64)
    pos[regulators] = np.arange(regulators.size)
    return pos


GRN_METHODS: dict[str, GRNMethod] = {
    m.name: m
    for m in (
        GRNMethod(
            name="lagged_ridge",
            function=_lagged_ridge,
            reference=(
                "omicstwin; lagged regression on pseudotime-ordered cells as in SINCERITIES "
                "(Papili Gao et al., Bioinformatics 2018) and dynGENIE3 (Huynh-Thu & Geurts, "
                "Sci Rep 2018)"
            ),
            signed=True,
            description=(
                "future smoothed level of each target regressed on regulators' current levels "
                "along pseudotime (linear + quadratic ridge, bagged); static without pseudotime"
            ),
        ),
        GRNMethod(
            name="ridge",
            function=_ridge,
            reference="Hoerl & Kennard, Technometrics 1970; as used per cluster by CellOracle",
            signed=True,
            description="ridge regression of every target on all candidate regulators (baseline)",
        ),
        GRNMethod(
            name="correlation",
            function=_correlation,
            reference="Pearson / Spearman correlation (co-expression baseline)",
            signed=True,
            description="correlation of each regulator with each gene (kind='pearson'|'spearman')",
        ),
        GRNMethod(
            name="partial_correlation",
            function=_partial_correlation,
            reference="regularised precision matrix, cf. PPCOR (Kim, CBB 2015) in BEELINE",
            signed=True,
            description="partial correlation from the ridge-regularised inverse covariance",
        ),
        GRNMethod(
            name="grnboost2",
            function=_grnboost2,
            reference="Moerman et al., Bioinformatics 2019 (arboreto)",
            signed=False,
            description="gradient-boosting importance per target (needs omicstwin[grnboost])",
        ),
    )
}


def get_grn_method(name: str) -> GRNMethod:
    """Return a registered GRN method.

    Raises
    ------
    ParameterError
        Unknown name (the message lists the registered ones).
    """
    if name not in GRN_METHODS:
        raise ParameterError(
            f"unknown GRN method '{name}'; registered methods: {sorted(GRN_METHODS)}; fix: use "
            "one of them"
        )
    return GRN_METHODS[name]


# ----------------------------------------------------------------------------- runner


def _validate(
    expression: np.ndarray,
    genes: Sequence[str],
    regulators: Sequence[str] | None,
    pseudotime: np.ndarray | None,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray | None]:
    try:
        x = np.asarray(expression, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(
            f"expression must be a numeric cells x genes array ({exc}); fix: pass e.g. "
            "adata.X.toarray() of normalised data"
        ) from exc
    if x.ndim != 2:
        raise InputTypeError(
            f"expression must be 2-D (cells x genes), got {x.ndim}-D; fix: reshape it"
        )
    genes = [str(g) for g in genes]
    if len(genes) != x.shape[1]:
        raise ParameterError(
            f"expression has {x.shape[1]} columns but {len(genes)} gene names were given; fix: "
            "pass cells x genes (transpose a genes x cells matrix) and one name per column"
        )
    if x.shape[1] < 2:
        raise EmptyDataError(f"a network needs >= 2 genes, got {x.shape[1]}; fix: pass more genes")
    if x.shape[0] < 3:
        raise EmptyDataError(f"need >= 3 cells, got {x.shape[0]}; fix: pass more cells")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ParameterError(
            f"expression holds {bad} NaN/infinite value(s); fix: impute or drop them (e.g. "
            "np.nan_to_num) before inferring a network"
        )
    if len(set(genes)) != len(genes):
        dup = pd.Index(genes)[pd.Index(genes).duplicated()][:3].tolist()
        raise DuplicateNamesError(f"gene names are not unique, e.g. {dup}; fix: deduplicate them")
    index = {g: i for i, g in enumerate(genes)}
    if regulators is None:
        reg_idx = np.arange(len(genes))
    else:
        if isinstance(regulators, str):
            raise InputTypeError(
                "regulators must be a sequence of gene names, not one string; fix: wrap it in "
                "a list"
            )
        unknown = [r for r in regulators if str(r) not in index]
        if unknown:
            raise ParameterError(
                f"{len(unknown)} regulator(s) are not among the genes, e.g. {unknown[:5]}; fix: "
                "drop them (intersect the regulator list with the gene names)"
            )
        reg_idx = np.array(sorted({index[str(r)] for r in regulators}), dtype=np.int64)
        if reg_idx.size == 0:
            raise ParameterError("the regulator list is empty; fix: pass >= 1 regulator or None")
    pt = None
    if pseudotime is not None:
        pt = np.asarray(pseudotime, dtype=np.float64)
        if pt.ndim == 1:
            pt = pt[:, None]
        if pt.ndim != 2 or pt.shape[0] != x.shape[0]:
            raise ParameterError(
                f"pseudotime must have one value (or one row of branch values) per cell: shape "
                f"{pt.shape} for {x.shape[0]} cells; fix: align it with the expression rows"
            )
        if np.isinf(pt).any():
            raise ParameterError(
                "pseudotime holds infinite values; fix: use NaN for cells off a branch"
            )
    return x, genes, reg_idx, pt


def _prior_pairs(prior: pd.DataFrame, genes: list[str]) -> set[tuple[str, str]]:
    missing = [c for c in ("source", "target") if c not in prior.columns]
    if missing:
        raise ParameterError(
            f"prior lacks the columns {missing} (has {list(prior.columns)}); fix: pass a "
            "DataFrame with columns source, target[, weight]"
        )
    return set(zip(prior["source"].astype(str), prior["target"].astype(str), strict=True))


def _top_mask(
    weights: np.ndarray, reg_idx: np.ndarray, genes: Sequence[str], top: int
) -> np.ndarray:
    """Regulators x targets mask of each target's ``top`` regulators by |weight| (self excluded).

    Ties are broken by regulator name, as a sort of the edge table by (target, -|weight|,
    source) would (the package's one top-k rule, :func:`omicstwin._stats.top_k_mask`).
    """
    if top < 1:
        raise ParameterError(f"top_per_target must be >= 1, got {top}")
    n_reg = weights.shape[0]
    self_edge = np.zeros(weights.shape, dtype=bool)
    self_edge[np.arange(n_reg), reg_idx] = True  # a gene never regulates itself here
    names = np.asarray(genes, dtype=object)[reg_idx]
    return top_k_mask(weights, top, order=name_order(names), exclude=self_edge)


def infer_grn(
    expression: np.ndarray,
    genes: Sequence[str],
    *,
    method: str = DEFAULT_METHOD,
    regulators: Sequence[str] | None = None,
    prior: pd.DataFrame | None = None,
    pseudotime: np.ndarray | None = None,
    seed: int = 0,
    top_per_target: int | None = None,
    **params,
) -> pd.DataFrame:
    """Infer a gene regulatory network from single-cell expression.

    Parameters
    ----------
    expression
        Cells x genes, float, already normalised (e.g. log1p CPM); counts are not assumed.
    genes
        Gene names, one per column.
    method
        A name of :data:`GRN_METHODS` (default ``lagged_ridge``).
    regulators
        Candidate regulators (e.g. a TF list); ``None``: every gene. Unknown names are an error.
    prior
        Optional edges (columns ``source, target[, weight]``) that **restrict** the output:
        only pairs listed in the prior are returned. The model is still fitted with every
        candidate regulator, so a prior edge's weight is conditional on the other regulators
        and comparable with an unrestricted run; the prior's weight column is not used.
    pseudotime
        Per cell (1-D), or cells x branches (2-D, one column per trajectory branch as in
        BEELINE's ``PseudoTime.csv``); NaN where unknown / off-branch. Methods that cannot use
        it ignore it.
    seed
        Seed of every random choice (bootstrap, tree ensembles): same seed, same table.
    top_per_target
        Keep only each target's ``top_per_target`` regulators by ``|weight|`` (ties by
        regulator name), chosen on the weight matrix before the table is built: the full table
        of a context with hundreds of regulators has millions of rows.
    **params
        Method parameters (e.g. ``alpha``, ``n_bags``); unknown names are an error.

    Returns
    -------
    pandas.DataFrame
        Columns ``source, target, weight, stability``: one row per candidate regulator-target
        pair (no self-edges), sorted by ``|weight|`` descending (ties in gene order).
        ``weight`` is signed when the method is (``GRN_METHODS[method].signed``);
        ``stability`` is the share of bootstrap fits that rank the edge in their top decile
        (1.0 for methods without resampling).

    Raises
    ------
    ParameterError, InputTypeError, EmptyDataError, DuplicateNamesError
        Bad input; the message names the problem and the fix.
    OptionalDependencyError
        The method needs an optional package that is not installed.
    """
    spec = get_grn_method(method)
    x, genes, reg_idx, pt = _validate(expression, genes, regulators, pseudotime)
    accepted = [
        p.name
        for p in inspect.signature(spec.function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("pseudotime", "seed")
    ]
    unknown = sorted(set(params) - set(accepted) - {"gene_names"})
    if unknown:
        raise ParameterError(
            f"method '{method}' has no parameter(s) {unknown}; accepted: {accepted}"
        )
    if "gene_names" in accepted:
        params = {**params, "gene_names": genes}
    weights, stability = spec.function(x, reg_idx, pseudotime=pt, seed=seed, **params)
    n_reg, n_genes = weights.shape
    src = np.repeat(reg_idx, n_genes)
    tgt = np.tile(np.arange(n_genes), n_reg)
    w = weights.ravel()
    s = np.ones_like(w) if stability is None else stability.ravel()
    keep = src != tgt
    if top_per_target is not None:
        keep &= _top_mask(weights, reg_idx, genes, top_per_target).ravel()
    if prior is not None:
        pairs = _prior_pairs(prior, genes)
        names = np.asarray(genes, dtype=object)
        in_prior = np.fromiter(
            ((a, b) in pairs for a, b in zip(names[src], names[tgt], strict=True)),
            dtype=bool,
            count=src.size,
        )
        keep &= in_prior
    src, tgt, w, s = src[keep], tgt[keep], w[keep], s[keep]
    # strongest |w| first (stable: ties keep (regulator, target) gene order), deterministic
    order = argsort_scores(w, table="edges", column="weight")
    names = np.asarray(genes, dtype=object)
    return pd.DataFrame(
        {
            "source": names[src[order]],
            "target": names[tgt[order]],
            "weight": w[order].astype(np.float64),
            "stability": np.clip(s[order], 0.0, 1.0).astype(np.float64),
        }
    )
