"""Donor-aware differential expression per cell type x time point, and its change over time.

Model (method ``"nb_glm"``, the default)
---------------------------------------
Cells are summed per donor x cell type x time (:func:`omicstwin.pp.pseudobulk.pseudobulk`), so
the replicates are donors, not cells. In each cell type x time *context* the pseudobulk counts
``y[i, g]`` of sample ``i`` and gene ``g`` follow a negative binomial GLM

    ``y ~ NB(mu, alpha_g)``, ``Var(y) = mu + alpha_g mu**2``, ``log mu = X beta + log(L_i)``

with design ``X`` = ``~ condition`` (intercept + case indicator) and offset the log library size
``L_i`` (total counts of the sample; no TMM/median-of-ratios factor, so the fit is exactly the
model a statsmodels ``GLM(..., offset=log(L))`` fits). ``log_fc`` is the case coefficient in
log2 units.

*Dispersion.* Per gene, the Cox-Reid adjusted profile log-likelihood (APL; Cox & Reid 1987,
McCarthy et al. 2012) ``l(beta_hat(alpha), alpha) - 1/2 log det(X' W X)`` is evaluated on a
log-spaced grid of ``alpha`` (:data:`DISPERSION_GRID`), with ``beta_hat(alpha)`` the exact NB
maximum-likelihood fit at each grid value. It is shrunk by edgeR's weighted-likelihood empirical
Bayes rule (Robinson & Smyth 2007; ``estimateGLMTagwiseDisp``): the gene's APL curve plus
``prior_df / (n - p)`` times the average APL curve of the genes of similar abundance (a moving
window of ``span`` of the genes sorted by mean log CPM: the mean-dispersion trend). The
maximiser is located on the grid and refined by quadratic interpolation in ``log alpha``.
``prior_df=0`` gives the per-gene Cox-Reid estimate.

*Test.* Likelihood-ratio test of the full model against the intercept-only model at the gene's
dispersion (edgeR ``glmLRT``): ``2 (l_full - l_reduced) ~ chi2(1)``. The LRT is chosen over the
Wald test because it stays valid when an arm has only zeros (the MLE is then at infinity, the
Wald standard error too, while the likelihood ratio converges). ``q_value`` is the
Benjamini-Hochberg adjustment within the context.

*Edge cases.* Genes with zero counts in every sample of a context get NaN statistics. When one
arm has only zeros the MLE fold change is infinite; ``log_fc`` is then reported as
``log2(((S_case + 0.5) / L_case) / ((S_control + 0.5) / L_control))`` with ``S`` summed counts
and ``L`` summed library sizes per arm (the Poisson MLE with a 0.5 continuity count), while the
p-value is still the exact LRT.

*Fitting.* Both designs used here have a one-way-layout full model (one mean per group), which
Newton's method fits for all genes and all grid dispersions at once in numpy (no loop over
genes); other designs (the additive reduced model of :func:`timecourse_de`) use IRLS with the
normal equations batched over genes (``numpy.linalg.solve`` on ``(genes, p, p)``).

Other methods (:data:`DE_METHODS`): ``"wilcoxon_cells"``, a cell-level Wilcoxon rank-sum test on
log-normalised cells, used automatically when the design has no donor replication.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse, special, stats

from omicstwin._logging import logger
from omicstwin._stats import benjamini_hochberg
from omicstwin.errors import InsufficientReplicationWarning, ParameterError
from omicstwin.io.validate import CohortKeys
from omicstwin.schemas import conform
from omicstwin.tl._store import store_result

#: Dispersion grid (log-spaced): from nearly Poisson to very overdispersed.
DISPERSION_GRID = np.logspace(-4, 1, 31)
_NEWTON_TOL = 1e-11  # on the log-mean step; Newton converges quadratically so this is cheap
_IRLS_TOL = 1e-12  # relative deviance change, as R's glm.control(epsilon) but tighter
_MAX_ITER = 100
_MIN_INFO = 1e-10  # floor of a group's Fisher information in the Cox-Reid term (all-zero groups)
_CONTINUITY = 0.5  # counts added per arm to report a finite log_fc when an arm is all zero
_GENE_CHUNK = 4096  # genes per block in the grid evaluation (bounds memory: K x n x chunk)


# =============================================================================== kernels


def nb_loglik(y: np.ndarray, mu: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
    """Negative binomial log-likelihood, summed over samples (axis ``-2``).

    Parameters
    ----------
    y
        Counts, ``(..., n, genes)``.
    mu
        Means, broadcastable to ``y``; zeros allowed where ``y`` is zero.
    dispersion
        ``alpha`` with ``Var = mu + alpha mu**2``, broadcastable (``(..., 1, genes)``).

    Returns
    -------
    numpy.ndarray
        ``(..., genes)``.
    """
    alpha = np.asarray(dispersion, dtype=np.float64)
    r = 1.0 / alpha
    log1p_am = np.log1p(alpha * mu)
    # log Gamma(y + r) - log Gamma(r) - log y! + y log(alpha mu) - (y + r) log(1 + alpha mu)
    terms = (
        special.gammaln(y + r)
        - special.gammaln(r)
        - special.gammaln(y + 1.0)
        + special.xlogy(y, alpha * mu)
        - (y + r) * log1p_am
    )
    return terms.sum(axis=-2)


def _loglik_mu_part(y: np.ndarray, mu: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
    """Return the part of :func:`nb_loglik` that depends on ``mu`` (for likelihood ratios)."""
    alpha = np.asarray(dispersion, dtype=np.float64)
    return (special.xlogy(y, mu) - (y + 1.0 / alpha) * np.log1p(alpha * mu)).sum(axis=-2)


def nb_deviance(y: np.ndarray, mu: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
    """Negative binomial deviance per gene (sum over axis ``-2``), stable near Poisson."""
    alpha = np.asarray(dispersion, dtype=np.float64)
    r = 1.0 / alpha
    unit = (
        special.xlogy(y, y)
        - special.xlogy(y, mu)
        - (y + r) * np.log1p(alpha * (y - mu) / (1.0 + alpha * mu))
    )
    return 2.0 * unit.sum(axis=-2)


def fit_oneway(
    counts: np.ndarray,
    offset: np.ndarray,
    groups: np.ndarray,
    dispersion: np.ndarray,
    *,
    max_iter: int = _MAX_ITER,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood NB fit of a one-way layout (one mean per group), all genes at once.

    Parameters
    ----------
    counts
        ``(n, genes)``.
    offset
        ``(n,)`` log library sizes.
    groups
        ``(n,)`` group index ``0 .. m - 1``; every group must have a sample.
    dispersion
        ``(genes,)`` or ``(K, genes)`` (a grid of values per gene).
    max_iter
        Newton iterations at most (each gene stops moving once its step is below 1e-11).

    Returns
    -------
    coef : numpy.ndarray
        ``(..., m, genes)`` log mean per unit library size; ``-inf`` where a group's counts are
        all zero (the MLE is at the boundary).
    mu : numpy.ndarray
        ``(..., n, genes)`` fitted means.
    """
    counts = np.asarray(counts, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    groups = np.asarray(groups)
    alpha = np.asarray(dispersion, dtype=np.float64)
    lead = alpha.shape[:-1]
    n_groups = int(groups.max()) + 1
    coef = np.empty((*lead, n_groups, counts.shape[1]))
    mu = np.empty((*lead, *counts.shape))
    for j in range(n_groups):
        rows = np.flatnonzero(groups == j)
        y = counts[rows]
        off = offset[rows][:, None]
        total = y.sum(axis=0)
        with np.errstate(divide="ignore"):
            # Poisson MLE: exact when alpha -> 0 and a good start otherwise
            start = np.log(total) - np.log(np.exp(off).sum())
        b = np.broadcast_to(start, alpha.shape).copy()
        a = alpha[..., None, :]
        active = np.isfinite(b)
        for _ in range(max_iter):
            m = np.exp(b[..., None, :] + off)
            score = ((y - m) / (1.0 + a * m)).sum(axis=-2)
            # observed information: the log-likelihood is strictly concave in b
            info = (m * (1.0 + a * y) / (1.0 + a * m) ** 2).sum(axis=-2)
            with np.errstate(invalid="ignore", divide="ignore"):
                step = np.where(active, score / info, 0.0)
            step = np.clip(step, -5.0, 5.0)  # guards the first steps from a poor start
            b = b + step
            if np.all(np.abs(step) < _NEWTON_TOL):
                break
        coef[..., j, :] = b
        mu[..., rows, :] = np.exp(b[..., None, :] + off)
    return coef, mu


def fit_glm(
    counts: np.ndarray,
    offset: np.ndarray,
    design: np.ndarray,
    dispersion: np.ndarray,
    *,
    max_iter: int = _MAX_ITER,
    tol: float = _IRLS_TOL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NB GLM (log link) by IRLS for a general design, vectorised across genes.

    Parameters
    ----------
    counts
        ``(n, genes)``.
    offset
        ``(n,)``.
    design
        ``(n, p)`` full-rank design.
    dispersion
        ``(genes,)``.
    max_iter
        IRLS iterations at most.
    tol
        Convergence: relative change of the deviance below ``tol``.

    Returns
    -------
    beta : numpy.ndarray
        ``(p, genes)`` coefficients.
    mu : numpy.ndarray
        ``(n, genes)`` fitted means.
    converged : numpy.ndarray
        ``(genes,)`` bool: relative deviance change below ``tol``.
    """
    y = np.asarray(counts, dtype=np.float64)
    x = np.asarray(design, dtype=np.float64)
    off = np.asarray(offset, dtype=np.float64)[:, None]
    alpha = np.asarray(dispersion, dtype=np.float64)
    n_genes, p = y.shape[1], x.shape[1]
    # start: least squares on log((y + 0.5) / L), one lstsq for all genes
    beta = np.linalg.lstsq(x, np.log(y + 0.5) - off, rcond=None)[0]
    converged = np.zeros(n_genes, dtype=bool)
    eye = np.eye(p)

    def mean(b):
        return np.exp(np.clip(x @ b + off, -700.0, 700.0))

    mu = mean(beta)
    dev = nb_deviance(y, mu, alpha)
    active = np.arange(n_genes)
    for _ in range(max_iter):
        ya, ba, aa, ma = y[:, active], beta[:, active], alpha[active], mu[:, active]
        w = ma / (1.0 + aa * ma)
        z = x @ ba + (ya - ma) / ma
        xtwx = np.einsum("ip,ig,iq->gpq", x, w, x)
        # a relative ridge keeps separated genes (a group of zeros, weights -> 0) solvable;
        # it moves regular fits by ~1e-12 relative
        ridge = 1e-12 * np.trace(xtwx, axis1=1, axis2=2)[:, None, None] / p + 1e-300
        xtwz = np.einsum("ip,ig->gp", x, w * z)
        new = np.linalg.solve(xtwx + ridge * eye, xtwz[..., None])[..., 0].T
        new_mu = mean(new)
        new_dev = nb_deviance(ya, new_mu, aa)
        old_dev = dev[active]
        # step halving where the deviance went up (NB with a log link is not canonical)
        for _half in range(30):
            worse = ~(new_dev <= old_dev * (1.0 + 1e-12) + 1e-12)
            if not worse.any():
                break
            new[:, worse] = 0.5 * (new[:, worse] + ba[:, worse])
            new_mu[:, worse] = mean(new[:, worse])
            new_dev[worse] = nb_deviance(ya[:, worse], new_mu[:, worse], aa[worse])
        done = np.abs(new_dev - old_dev) < tol * (np.abs(new_dev) + 0.1)
        beta[:, active], mu[:, active], dev[active] = new, new_mu, new_dev
        converged[active[done]] = True
        active = active[~done]
        if active.size == 0:
            break
    return beta, mu, converged


def cox_reid_apl(
    counts: np.ndarray, offset: np.ndarray, groups: np.ndarray, dispersion: np.ndarray
) -> np.ndarray:
    """Cox-Reid adjusted profile log-likelihood of a one-way layout.

    ``l(beta_hat(alpha), alpha) - 1/2 log det(X' W X)`` with ``W = mu / (1 + alpha mu)``; for
    group indicators (or any reparametrisation with unit determinant, such as treatment coding)
    ``det(X' W X)`` is the product over groups of the summed weights.

    Parameters
    ----------
    counts, offset, groups
        As for :func:`fit_oneway`.
    dispersion
        ``(K, genes)`` or ``(genes,)``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``dispersion``.
    """
    alpha = np.asarray(dispersion, dtype=np.float64)
    _, mu = fit_oneway(counts, offset, groups, alpha)
    a = alpha[..., None, :]
    loglik = nb_loglik(counts, mu, a)
    w = mu / (1.0 + a * mu)
    n_groups = int(np.max(groups)) + 1
    logdet = np.zeros(alpha.shape)
    for j in range(n_groups):
        info = w[..., groups == j, :].sum(axis=-2)
        # all-zero groups: information 0 for every alpha; a constant floor keeps the
        # curve finite without moving its maximum
        logdet += np.log(np.maximum(info, _MIN_INFO))
    return loglik - 0.5 * logdet


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis (windows truncated at the ends)."""
    n = values.shape[-1]
    half = max(width, 1) // 2
    cums = np.concatenate([np.zeros((*values.shape[:-1], 1)), np.cumsum(values, axis=-1)], axis=-1)
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    return (cums[..., hi] - cums[..., lo]) / (hi - lo)


def estimate_dispersion(
    counts: np.ndarray,
    offset: np.ndarray,
    groups: np.ndarray,
    *,
    prior_df: float = 10.0,
    span: float = 0.3,
    grid: np.ndarray = DISPERSION_GRID,
) -> np.ndarray:
    """Per-gene NB dispersion: Cox-Reid APL with weighted-likelihood empirical Bayes shrinkage.

    Parameters
    ----------
    counts
        ``(n, genes)``; no gene may be all zero (callers drop those first).
    offset
        ``(n,)`` log library sizes.
    groups
        ``(n,)`` group index of the (one-way) full model.
    prior_df
        Prior degrees of freedom (edgeR's default 10); the shrinkage weight is
        ``prior_df / (n - p)`` average-APL curves. ``0`` gives per-gene Cox-Reid estimates.
    span
        Fraction of genes (sorted by abundance) averaged into each gene's trend curve.
    grid
        Increasing dispersion values on which the APL is evaluated.

    Returns
    -------
    numpy.ndarray
        ``(genes,)`` dispersions (within the grid's range).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n, n_genes = counts.shape
    residual_df = n - (int(np.max(groups)) + 1)
    if residual_df < 1:
        raise ParameterError(
            f"{n} samples for {n - residual_df} groups leave no residual degrees of freedom to "
            "estimate a dispersion; fix: require at least 2 donors per arm (min_donors >= 2)"
        )
    grid = np.asarray(grid, dtype=np.float64)
    apl = np.empty((grid.size, n_genes))
    for start in range(0, n_genes, _GENE_CHUNK):
        block = slice(start, min(start + _GENE_CHUNK, n_genes))
        width = block.stop - block.start
        apl[:, block] = cox_reid_apl(
            counts[:, block], offset, groups, np.repeat(grid[:, None], width, axis=1)
        )
    combined = apl
    if prior_df > 0 and n_genes > 1:
        abundance = np.log((counts / np.exp(offset)[:, None]).mean(axis=0))
        order = np.argsort(abundance, kind="stable")
        trend_sorted = _moving_average(apl[:, order], max(1, round(span * n_genes)))
        trend = np.empty_like(apl)
        trend[:, order] = trend_sorted
        combined = apl + (prior_df / residual_df) * trend
    return _interpolated_argmax(np.log(grid), combined)


def _interpolated_argmax(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per column of ``f`` (K, genes): the maximiser over the grid ``x``, refined by a parabola."""
    k = np.argmax(f, axis=0)
    cols = np.arange(f.shape[1])
    best = x[k].copy()
    inner = (k > 0) & (k < x.size - 1)
    ki, ci = k[inner], cols[inner]
    f0, f1, f2 = f[ki - 1, ci], f[ki, ci], f[ki + 1, ci]
    x0, x1, x2 = x[ki - 1], x[ki], x[ki + 1]
    # vertex of the parabola through three (unevenly spaced in general) points
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (f1 - f0) + x1 * (f0 - f2) + x0 * (f2 - f1)) / denom
    b = (x2**2 * (f0 - f1) + x1**2 * (f2 - f0) + x0**2 * (f1 - f2)) / denom
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -b / (2.0 * a)
    ok = (a < 0) & np.isfinite(vertex)
    best[inner] = np.where(ok, np.clip(vertex, x0, x2), x1)
    return np.exp(best)


@dataclass
class NBTwoGroupResult:
    """Per-gene output of :func:`nb_glm_two_group` (arrays of length genes; NaN if untestable)."""

    log_fc: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    dispersion: np.ndarray
    coef: np.ndarray  # (2, genes): log rate of control, case (natural log; -inf if all zero)


def nb_glm_two_group(
    counts: np.ndarray,
    library_size: np.ndarray,
    is_case: np.ndarray,
    *,
    prior_df: float = 10.0,
    span: float = 0.3,
    grid: np.ndarray = DISPERSION_GRID,
) -> NBTwoGroupResult:
    """NB GLM ``~ condition`` with log library-size offsets and a likelihood-ratio test.

    Parameters
    ----------
    counts
        ``(n_samples, genes)`` pseudobulk counts of one context.
    library_size
        ``(n_samples,)`` total counts per sample.
    is_case
        ``(n_samples,)`` bool.
    prior_df, span, grid
        Dispersion estimation, see :func:`estimate_dispersion`.

    Returns
    -------
    NBTwoGroupResult
        ``log_fc`` in log2 units (case over control), LR statistic (1 df), p-value, dispersion.
    """
    counts = np.asarray(counts, dtype=np.float64)
    is_case = np.asarray(is_case, dtype=bool)
    offset = np.log(np.asarray(library_size, dtype=np.float64))
    n_genes = counts.shape[1]
    out = NBTwoGroupResult(
        *(np.full(n_genes, np.nan) for _ in range(4)), np.full((2, n_genes), np.nan)
    )
    tested = np.flatnonzero(counts.sum(axis=0) > 0)
    if tested.size == 0:
        return out
    y = counts[:, tested]
    groups = is_case.astype(np.int64)
    alpha = estimate_dispersion(y, offset, groups, prior_df=prior_df, span=span, grid=grid)
    coef, mu_full = fit_oneway(y, offset, groups, alpha)
    _, mu_null = fit_oneway(y, offset, np.zeros_like(groups), alpha)
    statistic = 2.0 * (_loglik_mu_part(y, mu_full, alpha) - _loglik_mu_part(y, mu_null, alpha))
    statistic = np.maximum(statistic, 0.0)  # rounding can make a null statistic -1e-12
    log_fc = (coef[1] - coef[0]) / np.log(2.0)
    separated = ~np.isfinite(log_fc)
    if separated.any():
        lib_case, lib_control = np.exp(offset[is_case]).sum(), np.exp(offset[~is_case]).sum()
        s_case, s_control = y[is_case].sum(axis=0), y[~is_case].sum(axis=0)
        log_fc[separated] = np.log2(
            ((s_case[separated] + _CONTINUITY) / lib_case)
            / ((s_control[separated] + _CONTINUITY) / lib_control)
        )
    out.log_fc[tested] = log_fc
    out.statistic[tested] = statistic
    out.p_value[tested] = stats.chi2.sf(statistic, 1)
    out.dispersion[tested] = alpha
    out.coef[:, tested] = coef
    return out


def wilcoxon_two_group(
    lognorm_case: np.ndarray, lognorm_control: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon rank-sum (Mann-Whitney U) test per gene between two sets of cells.

    Parameters
    ----------
    lognorm_case, lognorm_control
        ``(cells, genes)`` dense log-normalised expression.

    Returns
    -------
    statistic, p_value
        U statistic of the case cells and two-sided asymptotic p-value (tie-corrected, with
        continuity correction); NaN for genes that are constant across both sets.
    """
    n_genes = lognorm_case.shape[1]
    statistic, p_value = np.full(n_genes, np.nan), np.full(n_genes, np.nan)
    both = np.vstack([lognorm_case, lognorm_control])
    varying = np.flatnonzero(both.max(axis=0) > both.min(axis=0))
    if varying.size:
        res = stats.mannwhitneyu(
            lognorm_case[:, varying],
            lognorm_control[:, varying],
            alternative="two-sided",
            method="asymptotic",
            axis=0,
        )
        statistic[varying], p_value[varying] = res.statistic, res.pvalue
    return statistic, p_value


# =============================================================================== registry


@dataclass(frozen=True)
class DEMethod:
    """A differential expression method: how it is run and what it is.

    Attributes
    ----------
    name
        Registry key.
    level
        ``"pseudobulk"`` (donors are the replicates) or ``"cells"`` (cells are).
    kernel
        ``kernel(context, **options) -> dict`` with arrays ``log_fc`` and ``p_value``.
    reference
        Citation of the method.
    description
        One line.
    """

    name: str
    level: str
    kernel: Callable[..., dict[str, np.ndarray]]
    reference: str
    description: str


@dataclass
class _Context:
    """One cell type x time context handed to a method kernel."""

    counts: np.ndarray | Any  # pseudobulk (samples x genes) or cells (CSR, cells x genes)
    library_size: np.ndarray
    is_case: np.ndarray
    donor: np.ndarray | None = None  # per cell donor codes (cell-level contexts only)


def _run_nb_glm(context: _Context, **options: Any) -> dict[str, np.ndarray]:
    res = nb_glm_two_group(context.counts, context.library_size, context.is_case, **options)
    return {"log_fc": res.log_fc, "p_value": res.p_value, "dispersion": res.dispersion}


def _run_wilcoxon_cells(context: _Context, **options: Any) -> dict[str, np.ndarray]:
    del options  # no tuning parameters
    counts = context.counts
    lib = np.maximum(context.library_size, 1.0)
    # scanpy-style log1p(counts per 10k): the usual input of cell-level rank tests
    scale = sparse.diags(1e4 / lib) if sparse.issparse(counts) else (1e4 / lib)[:, None]
    normed = scale @ counts if sparse.issparse(counts) else counts * scale
    dense = np.log1p(normed.toarray() if sparse.issparse(normed) else np.asarray(normed))
    _, p_value = wilcoxon_two_group(dense[context.is_case], dense[~context.is_case])
    sums = np.asarray(counts.sum(axis=0)).ravel()
    case_sum = np.asarray(counts[context.is_case].sum(axis=0)).ravel()
    control_sum = sums - case_sum
    lib_case, lib_control = lib[context.is_case].sum(), lib[~context.is_case].sum()
    log_fc = np.log2(
        ((case_sum + _CONTINUITY) / lib_case) / ((control_sum + _CONTINUITY) / lib_control)
    )
    log_fc[sums == 0] = np.nan
    return {"log_fc": log_fc, "p_value": p_value}


def nb_timecourse(
    counts: np.ndarray,
    library_size: np.ndarray,
    is_case: np.ndarray,
    time_index: np.ndarray,
    *,
    prior_df: float = 10.0,
    span: float = 0.3,
    grid: np.ndarray = DISPERSION_GRID,
) -> dict[str, np.ndarray | int]:
    """LRT of ``~ condition * time`` against ``~ condition + time`` (time as a factor).

    Parameters
    ----------
    counts
        ``(n_samples, genes)`` pseudobulk counts of one cell type over time.
    library_size
        ``(n_samples,)``.
    is_case
        ``(n_samples,)`` bool.
    time_index
        ``(n_samples,)`` time level ``0 .. T - 1``; every level needs samples of both arms.
    prior_df, span, grid
        Dispersion estimation (under the full model), see :func:`estimate_dispersion`.

    Returns
    -------
    dict
        ``statistic``, ``p_value``, ``dispersion`` (arrays over genes; NaN for genes with no
        counts) and ``df`` (``T - 1``, the number of interaction terms).
    """
    counts = np.asarray(counts, dtype=np.float64)
    is_case = np.asarray(is_case, dtype=bool)
    time_index = np.asarray(time_index, dtype=np.int64)
    offset = np.log(np.asarray(library_size, dtype=np.float64))
    n_levels = int(time_index.max()) + 1
    n_genes = counts.shape[1]
    out: dict[str, Any] = {
        "statistic": np.full(n_genes, np.nan),
        "p_value": np.full(n_genes, np.nan),
        "dispersion": np.full(n_genes, np.nan),
        "df": n_levels - 1,
    }
    tested = np.flatnonzero(counts.sum(axis=0) > 0)
    if tested.size == 0 or n_levels < 2:
        return out
    y = counts[:, tested]
    # the full model ~ condition * time is a one-way layout over condition x time cells
    groups = time_index * 2 + is_case
    alpha = estimate_dispersion(y, offset, groups, prior_df=prior_df, span=span, grid=grid)
    _, mu_full = fit_oneway(y, offset, groups, alpha)
    reduced = reduced_timecourse_design(is_case, time_index)
    _, mu_reduced, _ = fit_glm(y, offset, reduced, alpha)
    statistic = 2.0 * (_loglik_mu_part(y, mu_full, alpha) - _loglik_mu_part(y, mu_reduced, alpha))
    statistic = np.maximum(statistic, 0.0)
    out["statistic"][tested] = statistic
    out["p_value"][tested] = stats.chi2.sf(statistic, n_levels - 1)
    out["dispersion"][tested] = alpha
    return out


def reduced_timecourse_design(is_case: np.ndarray, time_index: np.ndarray) -> np.ndarray:
    """Treatment-coded ``~ condition + time``: intercept, case, one column per later level."""
    time_index = np.asarray(time_index, dtype=np.int64)
    n_levels = int(time_index.max()) + 1
    dummies = (time_index[:, None] == np.arange(1, n_levels)[None, :]).astype(np.float64)
    return np.column_stack([np.ones(len(time_index)), np.asarray(is_case, float), dummies])


DE_METHODS: dict[str, DEMethod] = {
    "nb_glm": DEMethod(
        name="nb_glm",
        level="pseudobulk",
        kernel=_run_nb_glm,
        reference=(
            "McCarthy, Chen & Smyth, Nucleic Acids Res 2012 (edgeR GLM, Cox-Reid APL, "
            "weighted-likelihood empirical Bayes); Squair et al., Nat Commun 2021 (pseudobulk)"
        ),
        description=(
            "donor pseudobulk NB GLM ~ condition with log library-size offsets, shrunken "
            "Cox-Reid dispersions, likelihood-ratio test"
        ),
    ),
    "wilcoxon_cells": DEMethod(
        name="wilcoxon_cells",
        level="cells",
        kernel=_run_wilcoxon_cells,
        reference="Wilcoxon 1945; Mann & Whitney 1947 (as scanpy rank_genes_groups 'wilcoxon')",
        description=(
            "cell-level Wilcoxon rank-sum test on log1p(counts per 10k); cells are treated as "
            "replicates, so p-values are optimistic when donors differ"
        ),
    ),
}


# =============================================================================== wrappers


@dataclass
class _Prepared:
    cohort: Any  # omicstwin.pp.cohort.Cohort
    pb: Any  # pseudobulk AnnData, case and control samples with >= min_cells cells
    cells: pd.DataFrame  # per cell: cell_type, time (float), condition, donor; all cells
    time_levels: list[float]  # schema time of the levels present in the two arms
    time_labels: list[str]
    time_unit: str | None


def _prepare(data: Any, keys: dict[str, Any], min_donors: int, min_cells: int) -> _Prepared:
    from omicstwin.pp.cohort import as_cohort

    # Validate once at the door (or take the validated Cohort). Its under-replication warning
    # counts donors before the min_cells filter, so it is silenced here and this module warns
    # once, after.
    cohort = as_cohort(data, keys, validate=True, min_donors=min_donors, warn=False)
    pb = cohort.pseudobulk
    arms = [cohort.keys.case, cohort.keys.control]
    keep = pb.obs["condition"].isin(arms).to_numpy() & (pb.obs["n_cells"] >= min_cells).to_numpy()
    pb = pb[keep].copy()
    cells = cohort.obs.reset_index(drop=True)
    levels = sorted(set(cells.loc[cohort.in_arms, "time"].tolist()))
    unit = cohort.keys.time_unit
    if cohort.summary is not None:
        unit = cohort.summary.time.unit
    if cohort.time_numeric:
        level_labels = [f"{t:g} {unit}" if unit else f"{t:g}" for t in levels]
    else:
        level_labels = [cohort.time_level_labels[int(t)] for t in levels]
    return _Prepared(cohort, pb, cells, levels, level_labels, unit)


def _skip_warning(skipped: pd.DataFrame, what: str) -> None:
    if skipped.empty:
        return
    shown = ", ".join(f"{r.cell_type}@{r.time:g}" for r in skipped.head(5).itertuples())
    message = (
        f"{what}: {len(skipped)} cell type x time context(s) skipped for too few replicates "
        f"(e.g. {shown}); they are listed in uns[key_added]['params']['skipped']"
    )
    warnings.warn(message, InsufficientReplicationWarning, stacklevel=3)


def _skipped_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["cell_type", "time", "n_donors_case", "n_donors_control", "reason"]
    ).astype(
        {
            "cell_type": "string",
            "time": "float64",
            "n_donors_case": "int64",
            "n_donors_control": "int64",
            "reason": "string",
        }
    )


def _empty(name: str) -> pd.DataFrame:
    from omicstwin.schemas import SCHEMAS

    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in SCHEMAS[name].items()})


def _pseudobulk_contexts(prep: _Prepared, min_donors: int, min_cells: int, case: str):
    """Yield (cell_type, time, context or None, n_donors_case, n_donors_control, reason)."""
    obs = prep.pb.obs
    counts = np.asarray(prep.pb.X, dtype=np.float64)
    cell_type = obs["cell_type"].astype(str).to_numpy()
    time = obs["time"].to_numpy(dtype=np.float64)
    is_case_all = obs["condition"].to_numpy() == case
    library = obs["library_size"].to_numpy(dtype=np.float64)
    for ct in prep.cohort.cell_types:
        for t in prep.time_levels:
            rows = np.flatnonzero((cell_type == ct) & (time == t))
            is_case = is_case_all[rows]
            n_dc, n_dk = int(is_case.sum()), int((~is_case).sum())
            if n_dc < min_donors or n_dk < min_donors:
                reason = (
                    f"{n_dc} case / {n_dk} control donors with >= {min_cells} cells "
                    f"(< {min_donors} per arm)"
                )
                yield ct, t, None, n_dc, n_dk, reason
                continue
            yield ct, t, _Context(counts[rows], library[rows], is_case), n_dc, n_dk, ""


def _cell_contexts(prep: _Prepared, min_cells: int, case: str, control: str):
    """Cell-level contexts: every cell of the two arms in a cell type x time."""
    cohort = prep.cohort
    cells = prep.cells
    arm = cells["condition"].to_numpy()
    in_arms = np.isin(arm, [case, control])
    cell_type, time = cells["cell_type"].to_numpy(), cells["time"].to_numpy()
    donor_codes = pd.factorize(cells["donor"])[0]
    for ct in prep.cohort.cell_types:
        for t in prep.time_levels:
            rows = np.flatnonzero(in_arms & (cell_type == ct) & (time == t))
            is_case = arm[rows] == case
            n_dc = len(np.unique(donor_codes[rows][is_case]))
            n_dk = len(np.unique(donor_codes[rows][~is_case]))
            if is_case.sum() < min_cells or (~is_case).sum() < min_cells:
                reason = (
                    f"{int(is_case.sum())} case / {int((~is_case).sum())} control cells "
                    f"(< {min_cells} per arm)"
                )
                yield ct, t, None, n_dc, n_dk, reason
                continue
            # a backed cohort reads only this context's rows from the file
            block = sparse.csr_matrix(cohort.rows(rows), dtype=np.float64)
            library = np.asarray(block.sum(axis=1)).ravel()
            context = _Context(block, library, is_case, donor_codes[rows])
            yield ct, t, context, n_dc, n_dk, ""


def _context_means(context: _Context) -> tuple[np.ndarray, np.ndarray]:
    """Mean CPM per arm over donors (pseudobulk samples), for either kind of context."""
    from omicstwin.pp.pseudobulk import aggregate_counts

    if context.donor is None:
        counts, library, is_case = context.counts, context.library_size, context.is_case
    else:
        codes = np.unique(context.donor, return_inverse=True)[1]
        counts = aggregate_counts(context.counts, codes, int(codes.max()) + 1)
        library = counts.sum(axis=1)
        is_case = np.zeros(counts.shape[0], dtype=bool)
        is_case[codes[context.is_case]] = True
    cpm = counts / np.maximum(library, 1.0)[:, None] * 1e6
    return cpm[is_case].mean(axis=0), cpm[~is_case].mean(axis=0)


def differential_expression(
    data: Any,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
    method: str = "nb_glm",
    min_donors: int = 2,
    min_cells: int = 10,
    time_unit: str | None = None,
    prior_df: float = 10.0,
    key_added: str | None = "de",
) -> pd.DataFrame:
    """Differential expression, case vs control, in every cell type x time point.

    Parameters
    ----------
    data
        AnnData, or MuData with an ``rna`` modality, holding raw counts.
    cell_type_key, time_key, condition_key, donor_key
        obs columns (see :func:`omicstwin.io.validate_cohort`).
    case, control
        Labels of the two arms.
    layer
        Layer with raw counts; ``None`` uses ``X``.
    method
        A key of :data:`DE_METHODS`: ``"nb_glm"`` (default; donor pseudobulk NB GLM, see the
        module docstring) or ``"wilcoxon_cells"``. When ``"nb_glm"`` is asked for but an arm
        has fewer than ``min_donors`` donors in the whole cohort (no donor replication), the
        cell-level ``"wilcoxon_cells"`` runs instead, with a warning saying why, and
        ``params["fallback"]`` is True.
    min_donors
        Donors (pseudobulk samples) needed per arm in a context (>= 2); contexts below it are
        skipped with an :class:`~omicstwin.errors.InsufficientReplicationWarning` and listed.
    min_cells
        Cells needed for a donor's pseudobulk sample (``"nb_glm"``), or per arm in a context
        (``"wilcoxon_cells"``).
    time_unit
        Unit of numeric time.
    prior_df
        Empirical Bayes prior degrees of freedom of the dispersion (0: no shrinkage).
    key_added
        Store the table and its parameters in ``data.uns[key_added]`` (see Notes); ``None``
        stores nothing.

    Returns
    -------
    pandas.DataFrame
        Conforming to ``SCHEMAS["de"]``, one row per tested context x gene, sorted by cell
        type, time, then gene order. ``mean_case``/``mean_control`` are mean CPM over the
        arm's donors. Genes with no counts in a context have NaN ``log_fc``, ``p_value`` and
        ``q_value``.

    Notes
    -----
    The only mutation, unless ``key_added`` is None: ``data.uns[key_added] = {"results": table,
    "params": params}`` (on the object passed, i.e. the MuData itself for MuData input; read
    it back with :func:`omicstwin.get.de`). ``params`` records the keys, the
    arms, ``method`` (the one used), ``method_requested``, ``fallback`` and
    ``fallback_reason``, the test and dispersion scheme, ``min_donors``, ``min_cells``,
    ``prior_df``, ``time_unit``, ``time_levels`` (labels) and ``skipped``: a table of the
    skipped contexts (``cell_type, time, n_donors_case, n_donors_control, reason``).

    Raises
    ------
    ParameterError
        Unknown method or ``min_donors < 2``.
    MissingKeyError, CountsError, ConditionError, TimeOrderError, EmptyDataError
        From the validation at the door (:func:`omicstwin.io.validate_cohort`).

    Examples
    --------
    >>> table = differential_expression(adata, case="case", control="control")  # doctest: +SKIP
    >>> table.query("q_value < 0.05 and log_fc > 1")  # doctest: +SKIP
    """
    _check_de_arguments(method, min_donors)
    keys = CohortKeys.from_arguments(locals()).as_arguments()
    prep = _prepare(data, keys, min_donors, min_cells)
    keys = prep.cohort.keys.as_arguments()  # a Cohort's own keys
    case, control = keys["case"], keys["control"]
    chosen, fallback_reason = _replicated_method(prep, method, min_donors, case, control)
    options = {"prior_df": prior_df} if chosen.name == "nb_glm" else {}
    if chosen.level == "pseudobulk":
        contexts = _pseudobulk_contexts(prep, min_donors, min_cells, case)
    else:
        contexts = _cell_contexts(prep, min_cells, case, control)
    frames, skipped_rows = _test_contexts(chosen, contexts, prep.pb.var_names.to_numpy(), options)
    skipped = _skipped_frame(skipped_rows)
    _skip_warning(skipped, "differential_expression")
    table = conform(pd.concat(frames, ignore_index=True) if frames else _empty("de"), "de")
    is_nb = chosen.name == "nb_glm"
    params = {
        "method": chosen.name,
        "method_requested": method,
        "fallback": bool(fallback_reason),
        "fallback_reason": fallback_reason,
        "test": "likelihood ratio, chi2 (1 df)" if is_nb else "Wilcoxon rank-sum (cells)",
        "dispersion": _DISPERSION_TEXT.format(prior_df=prior_df) if is_nb else "",
        **{k: ("" if v is None else v) for k, v in keys.items()},
        "min_donors": int(min_donors),
        "min_cells": int(min_cells),
        "prior_df": float(prior_df),
        "time_unit": prep.time_unit or "",
        "time_levels": np.asarray(prep.time_labels, dtype=object),
        "n_contexts_tested": len(frames),
        "skipped": skipped,
    }
    store_result(data, key_added, table, params)
    logger.info(
        "differential_expression (%s): %d contexts tested, %d skipped, %d rows with q < 0.05",
        chosen.name,
        len(frames),
        len(skipped),
        int((table["q_value"] < 0.05).sum()),
    )
    return table


def _check_de_arguments(method: str, min_donors: int) -> None:
    """Raise before any work when the method or the replication threshold cannot be used.

    Parameters
    ----------
    method, min_donors
        As given to :func:`differential_expression`.

    Raises
    ------
    ParameterError
        Unknown method or ``min_donors < 2``.
    """
    if method not in DE_METHODS:
        raise ParameterError(f"unknown DE method '{method}'; fix: use one of {sorted(DE_METHODS)}")
    if min_donors < 2:
        raise ParameterError(
            f"min_donors must be >= 2 (a dispersion needs replicates), got {min_donors}; fix: "
            "pass 2 or more (designs without donor replication fall back to a cell-level test)"
        )


def _replicated_method(
    prep: _Prepared, method: str, min_donors: int, case: str, control: str
) -> tuple[DEMethod, str]:
    """Return the method asked for, or the cell-level test when donors are not replicated.

    A pseudobulk method estimates between-donor variability, which needs ``min_donors`` donors
    per arm in the whole cohort; without them the cell-level Wilcoxon test runs instead, with
    an :class:`~omicstwin.errors.InsufficientReplicationWarning` saying why.

    Parameters
    ----------
    prep
        The prepared cohort.
    method
        A key of :data:`DE_METHODS`.
    min_donors
        Donors needed per arm.
    case, control
        Labels of the arms.

    Returns
    -------
    method : DEMethod
        The method to run.
    fallback_reason : str
        Why it differs from the one asked for; "" when it does not.
    """
    chosen = DE_METHODS[method]
    fallback_reason = ""
    n_case, n_control = len(prep.cohort.donors(case)), len(prep.cohort.donors(control))
    if chosen.level == "pseudobulk" and (n_case < min_donors or n_control < min_donors):
        fallback_reason = (
            f"no donor replication ({n_case} case and {n_control} control donor(s) in the "
            f"cohort; the NB GLM needs >= {min_donors} per arm to estimate between-donor "
            "variability): fell back to the cell-level Wilcoxon test, which treats cells as "
            "replicates, so its p-values are optimistic"
        )
        # stacklevel 3: the warning points at the caller of differential_expression
        warnings.warn(fallback_reason, InsufficientReplicationWarning, stacklevel=3)
        logger.warning(fallback_reason)
        chosen = DE_METHODS["wilcoxon_cells"]
    return chosen, fallback_reason


def _test_contexts(
    chosen: DEMethod, contexts: Iterator[tuple], genes: np.ndarray, options: dict[str, Any]
) -> tuple[list[pd.DataFrame], list[tuple]]:
    """Run the method's kernel on every testable context, and list the others.

    Parameters
    ----------
    chosen
        The method to run.
    contexts
        ``(cell_type, time, context or None, n_donors_case, n_donors_control, reason)`` as
        yielded by :func:`_pseudobulk_contexts` or :func:`_cell_contexts`.
    genes
        Gene names, in the order of the counts' columns.
    options
        Keyword arguments of the kernel.

    Returns
    -------
    frames : list of pandas.DataFrame
        One ``de`` frame per tested context.
    skipped_rows : list of tuple
        ``(cell_type, time, n_donors_case, n_donors_control, reason)`` per skipped context.
    """
    frames, skipped_rows = [], []
    for cell_type, time, context, n_dc, n_dk, reason in contexts:
        if context is None:
            skipped_rows.append((cell_type, time, n_dc, n_dk, reason))
            continue
        result = chosen.kernel(context, **options)
        mean_case, mean_control = _context_means(context)
        frames.append(
            pd.DataFrame(
                {
                    "cell_type": cell_type,
                    "time": time,
                    "gene": genes,
                    "log_fc": result["log_fc"],
                    "p_value": result["p_value"],
                    "q_value": benjamini_hochberg(result["p_value"]),
                    "mean_case": mean_case,
                    "mean_control": mean_control,
                    "n_donors_case": n_dc,
                    "n_donors_control": n_dk,
                }
            )
        )
    return frames, skipped_rows


_DISPERSION_TEXT = (
    "per gene: Cox-Reid adjusted profile likelihood on a log grid, weighted-likelihood "
    "empirical Bayes towards the abundance trend (prior_df={prior_df:g}), parabolic refinement"
)


def timecourse_de(
    data: Any,
    *,
    cell_type_key: str = "cell_type",
    time_key: str = "time",
    condition_key: str = "condition",
    donor_key: str = "donor",
    case: str = "case",
    control: str = "control",
    layer: str | None = None,
    min_donors: int = 2,
    min_cells: int = 10,
    time_unit: str | None = None,
    prior_df: float = 10.0,
    key_added: str | None = "de_timecourse",
) -> pd.DataFrame:
    """Genes whose disease effect changes over time, per cell type.

    Per cell type, the donor pseudobulk counts over all time points are fitted by the NB GLM
    ``~ condition + time + condition:time`` (time as a factor, log library-size offsets,
    dispersions as in :func:`differential_expression`, estimated under this full model) and
    compared with ``~ condition + time`` by a likelihood-ratio test (``df`` = number of time
    points - 1); ``q_value`` is Benjamini-Hochberg within the cell type. Donors are treated as
    independent across time points (the design of the brief; a donor blocking factor is not
    included, which is conservative when donor effects persist over time).

    Parameters
    ----------
    data
        AnnData or MuData with raw counts.
    cell_type_key, time_key, condition_key, donor_key, case, control, layer, time_unit
        As for :func:`differential_expression`.
    min_donors
        Donors per arm needed at a time point for it to enter a cell type's model; time
        points below it are dropped (listed in params), and cell types left with fewer than
        two time points are skipped, with an
        :class:`~omicstwin.errors.InsufficientReplicationWarning`.
    min_cells
        Cells needed for a pseudobulk sample.
    prior_df
        Empirical Bayes prior degrees of freedom of the dispersion.
    key_added
        Store the table and its parameters in ``data.uns[key_added]`` (see Notes); ``None``
        stores nothing.

    Returns
    -------
    pandas.DataFrame
        Conforming to ``SCHEMAS["de_timecourse"]``.

    Notes
    -----
    The only mutation, unless ``key_added`` is None: ``data.uns[key_added] = {"results": table,
    "params": params}`` (read it back with :func:`omicstwin.get.de_timecourse`), with
    ``params["skipped"]`` listing dropped cell type x time points (``time`` NaN when a whole
    cell type was skipped).
    """
    if min_donors < 2:
        raise ParameterError(
            f"min_donors must be >= 2 (a dispersion needs replicates), got {min_donors}; fix: "
            "pass 2 or more"
        )
    keys = CohortKeys.from_arguments(locals()).as_arguments()
    prep = _prepare(data, keys, min_donors, min_cells)
    keys = prep.cohort.keys.as_arguments()  # a Cohort's own keys
    frames, skipped_rows = [], []
    for ct in prep.cohort.cell_types:
        kept_levels, dropped = _usable_time_points(prep, ct, keys["case"], min_donors)
        skipped_rows += dropped
        if len(kept_levels) < 2:
            skipped_rows.append(
                (ct, np.nan, 0, 0, f"cell type skipped: {len(kept_levels)} usable time point(s)")
            )
            continue
        frames.append(_timecourse_frame(prep, ct, kept_levels, keys["case"], prior_df))
    skipped = _skipped_frame(skipped_rows)
    _skip_warning(skipped, "timecourse_de")
    table = conform(
        pd.concat(frames, ignore_index=True) if frames else _empty("de_timecourse"),
        "de_timecourse",
    )
    params = {
        "method": "nb_glm_lrt_interaction",
        "model": "~ condition + time + condition:time vs ~ condition + time (time as factor)",
        "test": "likelihood ratio, chi2 (df = time points - 1)",
        "dispersion": _DISPERSION_TEXT.format(prior_df=prior_df),
        **{k: ("" if v is None else v) for k, v in keys.items()},
        "min_donors": int(min_donors),
        "min_cells": int(min_cells),
        "prior_df": float(prior_df),
        "time_unit": prep.time_unit or "",
        "time_levels": np.asarray(prep.time_labels, dtype=object),
        "n_cell_types_tested": len(frames),
        "skipped": skipped,
    }
    store_result(data, key_added, table, params)
    return table


def _usable_time_points(
    prep: _Prepared, cell_type: str, case: str, min_donors: int
) -> tuple[list[float], list[tuple]]:
    """Time points of a cell type with ``min_donors`` pseudobulk samples in each arm.

    Parameters
    ----------
    prep
        The prepared cohort.
    cell_type
        The cell type.
    case
        Label of the case arm (every other sample is a control).
    min_donors
        Samples needed per arm.

    Returns
    -------
    kept_levels : list of float
        The usable time points, in order.
    dropped : list of tuple
        ``(cell_type, time, n_donors_case, n_donors_control, reason)`` per dropped time point.
    """
    obs = prep.pb.obs
    in_ct = (obs["cell_type"].astype(str) == cell_type).to_numpy()
    kept_levels, dropped = [], []
    for t in prep.time_levels:
        at = in_ct & (obs["time"].to_numpy() == t)
        n_dc = int((obs["condition"].to_numpy()[at] == case).sum())
        n_dk = int(at.sum()) - n_dc
        if n_dc < min_donors or n_dk < min_donors:
            reason = f"{n_dc} case / {n_dk} control donors (< {min_donors} per arm)"
            dropped.append((cell_type, t, n_dc, n_dk, f"time point dropped: {reason}"))
        else:
            kept_levels.append(t)
    return kept_levels, dropped


def _timecourse_frame(
    prep: _Prepared, cell_type: str, kept_levels: list[float], case: str, prior_df: float
) -> pd.DataFrame:
    """Fit the interaction NB GLM of one cell type over its usable time points.

    Parameters
    ----------
    prep
        The prepared cohort.
    cell_type
        The cell type.
    kept_levels
        Its usable time points (at least two), in order.
    case
        Label of the case arm.
    prior_df
        Empirical Bayes prior degrees of freedom of the dispersion.

    Returns
    -------
    pandas.DataFrame
        One ``de_timecourse`` row per gene, BH within the cell type.
    """
    obs = prep.pb.obs
    counts = np.asarray(prep.pb.X, dtype=np.float64)
    in_ct = (obs["cell_type"].astype(str) == cell_type).to_numpy()
    rows = np.flatnonzero(in_ct & obs["time"].isin(kept_levels).to_numpy())
    time_index = np.searchsorted(np.asarray(kept_levels), obs["time"].to_numpy()[rows])
    result = nb_timecourse(
        counts[rows],
        obs["library_size"].to_numpy()[rows],
        obs["condition"].to_numpy()[rows] == case,
        time_index,
        prior_df=prior_df,
    )
    return pd.DataFrame(
        {
            "cell_type": cell_type,
            "gene": prep.pb.var_names.to_numpy(),
            "statistic": result["statistic"],
            "df": result["df"],
            "p_value": result["p_value"],
            "q_value": benjamini_hochberg(result["p_value"]),
        }
    )
