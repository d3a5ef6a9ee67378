"""Shared statistics kernels: Benjamini-Hochberg, ridge regression and top-k selection.

One implementation of each, used by every layer above (``tl.de``, ``tl.enrich``,
``tl.regulators``, ``tl.grn``, ``tl.networks``, ``tl.twin``, ``bench``). Pure numpy functions on
arrays; nothing here knows about AnnData or result tables.

**Ridge.** Every ridge fit in the package solves the same problem on centred data,
``min_B |Y - X B|^2 / n + alpha |B|^2`` (``alpha`` on the scale of covariances, so it does not
grow with the number of samples ``n``), with one of three solvers, chosen by the problem's shape:

- :func:`ridge_operator` -- one design shared by all targets: returns
  ``M -> (X'X / n + alpha I)^-1 M`` (primal ``p x p`` inverse, or through the Woodbury identity
  an ``n x n`` one when ``n < p``); the GRN methods use the operator itself for partitioned
  inverses;
- :func:`ridge_dual` / :func:`ridge` -- few samples, many features: standardised ``X`` and the
  dual coefficients ``(X X' + alpha n I)^-1 Y`` (``B = X' dual``), so a few coefficients cost a
  few dot products (bootstrap stability of temporal edges);
- :func:`ridge_per_target` -- each target on its own subset of regressors (the twin's
  elasticities), all targets solved in one batched call.

**Top-k.** :func:`top_k_mask` keeps, per column, the ``k`` rows with the largest ``|score|``.
The one tie rule of the package: ties at the cut go to the row that comes first in ``order``
(the rank of each row's *name*, so ties are broken alphabetically), which is what a stable sort
of the long table by (score best first, name) followed by ``head(k)`` gives
(:func:`omicstwin.scores.top_rows`, the table-level form of the same rule).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "benjamini_hochberg",
    "name_order",
    "ridge",
    "ridge_dual",
    "ridge_operator",
    "ridge_per_target",
    "top_k_mask",
]


# ----------------------------------------------------------------------------- multiple testing


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values; NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


# ----------------------------------------------------------------------------- ridge


def ridge_operator(design: np.ndarray, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``M -> (A'A / n + alpha I)^-1 M`` for a rows x p design ``A``.

    With fewer rows than features (smoothed trajectories with hundreds of regulators) the
    Woodbury identity inverts an n x n matrix instead of a p x p one:
    ``(alpha I + A'A/n)^-1 M = (M - A' (alpha I + AA'/n)^-1 A M / n) / alpha``.
    The ridge coefficients of targets ``Y`` are ``operator(A'Y / n)``.
    """
    n, p = design.shape
    if n < p:
        inner = np.linalg.inv(design @ design.T / n + alpha * np.eye(n))
        return lambda m: (m - design.T @ (inner @ (design @ m)) / n) / alpha
    precision = np.linalg.inv(design.T @ design / n + alpha * np.eye(p))
    return lambda m: precision @ m


def ridge_dual(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Standardised ``X`` and the dual coefficients ``(X X' + alpha n I)^-1 Y`` of :func:`ridge`.

    ``X``'s columns are centred and scaled (constant columns become 0), ``Y``'s centred.
    Coefficient (r, g) is ``X[:, r] . dual[:, g]``, so a few edges cost a few dot products.
    """
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    x = np.divide(x, scale, out=np.zeros_like(x), where=scale > 0)
    y = y - y.mean(axis=0)
    gram = x @ x.T + alpha * len(x) * np.eye(len(x))
    return x, np.linalg.solve(gram, y)


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Standardised ridge coefficients (features x targets) for all targets at once.

    Uses the dual form ``X' (X X' + alpha n I)^-1 Y`` (:func:`ridge_dual`): meant for samples
    (e.g. donor transitions) far fewer than features, where the system to solve is
    samples x samples.
    """
    x, dual = ridge_dual(x, y, alpha)
    return x.T @ dual


def ridge_per_target(
    z: np.ndarray, sources: np.ndarray, targets: np.ndarray, *, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge of each target column of ``z`` on its own source columns, all targets at once.

    Parameters
    ----------
    z
        Samples x variables; centred here.
    sources, targets
        Edge list (column indices): each target is regressed on its sources only. Duplicated
        edges and self-edges are dropped.
    alpha
        Ridge penalty on the covariance scale (added to the sources' covariance).

    Returns
    -------
    rows, cols, coef
        One entry per kept edge: source index, target index and coefficient. Empty with fewer
        than 3 samples or no edge.
    """
    s_all, t_all = np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    empty = np.zeros(0, np.int64)
    if s_all.size:
        _, first = np.unique(np.stack([s_all, t_all]), axis=1, return_index=True)
        first = np.sort(first)  # first occurrence of each (source, target), in edge order
        keep = first[s_all[first] != t_all[first]]
        s_all, t_all = s_all[keep], t_all[keep]
    if s_all.size == 0 or z.shape[0] < 3:
        return empty, empty, np.zeros(0)
    regs = np.unique(s_all)
    zc = z - z.mean(axis=0)
    n = len(zc)
    c_rr = zc[:, regs].T @ zc[:, regs] / n  # regulators' covariance, computed once
    c_rg = zc[:, regs].T @ zc / n
    # per target, its regulators' positions in edge order (a stable sort by target, then
    # split: a pandas groupby-apply over thousands of targets was the bottleneck)
    order = np.argsort(t_all, kind="stable")
    members = np.searchsorted(regs, s_all[order])
    tgt, start, counts = np.unique(t_all[order], return_index=True, return_counts=True)
    k_max, n_t = int(counts.max()), len(tgt)
    row = np.repeat(np.arange(n_t), counts)
    slot = np.arange(len(order)) - np.repeat(start, counts)
    idx = np.zeros((n_t, k_max), int)
    valid = np.zeros((n_t, k_max), bool)
    idx[row, slot] = members
    valid[row, slot] = True
    a = c_rr[idx[:, :, None], idx[:, None, :]] * (valid[:, :, None] & valid[:, None, :])
    a += alpha * np.eye(k_max)[None]  # ridge; padded slots stay solvable and get 0
    b = c_rg[idx, tgt[:, None]] * valid
    coef = np.linalg.solve(a, b[..., None])[..., 0] * valid
    return regs[idx[valid]], np.repeat(tgt, valid.sum(axis=1)), coef[valid]


# ----------------------------------------------------------------------------- top-k


def name_order(names) -> np.ndarray:
    """Rank of each name in alphabetical order (the ``order`` of :func:`top_k_mask`)."""
    names = np.asarray(names, dtype=object)
    rank = np.empty(names.size, dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(names.size)
    return rank


def top_k_mask(
    scores: np.ndarray,
    k: int,
    *,
    order: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    nonzero: bool = False,
) -> np.ndarray:
    """Rows x columns mask of each column's ``k`` rows with the largest ``|score|``.

    Parameters
    ----------
    scores
        Rows (e.g. regulators) x columns (e.g. targets).
    k
        Rows kept per column (all eligible rows when fewer).
    order
        Per row, its tie-break rank: at the cut, tied rows are taken in increasing ``order``
        (pass :func:`name_order` of the row names to break ties by name). Default: row index.
    exclude
        Boolean mask (same shape) of entries never kept (e.g. a gene regulating itself).
    nonzero
        Never keep an entry whose score is 0.

    Returns
    -------
    numpy.ndarray
        Boolean, same shape as ``scores``.
    """
    n_rows = scores.shape[0]
    k = min(int(k), n_rows)
    strength = -np.abs(scores)
    if exclude is not None:
        strength[exclude] = np.inf
    if nonzero:
        strength[scores == 0] = np.inf
    # partition, not sort: the k-th strength per column splits clear winners from ties
    kth = np.partition(strength, k - 1, axis=0)[k - 1]
    mask = strength < kth[None, :]
    tie = (strength == kth[None, :]) & np.isfinite(strength)
    slots = k - mask.sum(axis=0)
    crowded = np.flatnonzero(tie.sum(axis=0) > slots)
    mask |= tie
    if crowded.size:  # more tied rows than places: the first in order win
        rank = np.arange(n_rows) if order is None else np.asarray(order)
        for column in crowded:
            tied = np.flatnonzero(tie[:, column])
            losers = tied[np.argsort(rank[tied], kind="stable")][slots[column] :]
            mask[losers, column] = False
    return mask
