"""Label-free perturbation effects and the donor-label permutation null of the twin's screens.

**Why a label permutation null, and why it is exact here.** The twin's networks are fitted on
the same donors whose case - control difference the screens score, so any null that keeps the
fitted twin fixed and randomises something else (e.g. the old pooled null of degree-preserving
randomised networks) ignores that the disease vector and the networks share their noise: on
cohorts with no disease a quarter of the targets came out at p < 0.05. Here every ingredient of
a perturbation's effect is made free of the arm labels:

- the intracellular networks are fitted on donor x time states centred per time point over *all*
  donors (:func:`omicstwin.tl.twin.fit_twin`, ``network_level="donors"``), the temporal
  elasticities on all donors' states; neither reads a label;
- the perturbed state is the **label-free reference**: per cell type x time the mean of the
  donors' states with equal weight per donor (:func:`reference_state`).

The effect ``delta_g`` of perturbation ``g`` is then a fixed function of the donors' states,
whatever the labels, and its reversal of any disease vector ``d`` is the linear functional
``-<delta_g, d> / <d, d>`` (the simulator's truth definition, the perturbed genes' own
coordinates left out). A disease vector is a *contrast* of donor states: per context a weight per
donor (``+1/n_case`` on case donors, ``-1/n_control`` on control donors for the study; ``e_k -
mean(controls)`` for patient ``k``), so ``<delta_g, d> = sum_k w_k <delta_g, x_k>``. One
propagation gives ``<delta_g, x_k>`` for every donor; every relabelling is then a matrix product.
Under no disease the donors are exchangeable, so recomputing the disease vector under every
relabelling of the arms (all distinct ones when there are few, else seeded random ones) and
rescoring each perturbation gives the exact permutation distribution of *that perturbation's*
score: ``p_g = (1 + #{b: U_b(g) >= U_obs(g)}) / (B + 1)``, one test per perturbation (no
pooling over genes, whose scores are not exchangeable), BH q over perturbations. The test
statistic is ``U = -<delta_g, d>``, the perturbation's change along the disease vector in
absolute units (the reversal times ``<d, d>``; the same order as the reversal for the observed
labels). It is linear in the labels, so the test compares the donors' projections
``<delta_g, x_k>`` between the arms, like a two-sample permutation test of a mean difference.
The reversal itself divides by ``<d, d>``: relabelled disease vectors are shorter than a real
one, so their reversals are inflated and drown a true effect (the toy twin's planted driver: p
0.37 with the reversal, 1/35 with ``U``); dividing by ``|d|`` still lost most of the power on
the demo (its planted drivers' p 0.015-0.075 vs 0.005-0.05). With ~650 targets, BH can only
reach q < 0.05 when p can reach ~1e-3, hence 1999 relabellings by default.

What stays label-dependent is documented, not hidden: the intercellular couplings are the
networks stage's top ligand -> receptor edges, whose weight uses the ligand's case/control fold
change; the permutation null conditions on them (holds them fixed). Calibration is shown on
no-disease cohorts (``benchmarks/calibration.py``, ``null_calibration.parquet``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin.tl.perturb import DEFAULT_STEPS, Perturbation

__all__ = [
    "DonorStates",
    "calibration_table",
    "donor_states",
    "permutation_p",
    "project_perturbations",
    "reference_state",
    "study_labellings",
    "study_weights",
]


class DonorStates:
    """The donors' states stacked: ``x`` (K, T, C, G), ``present`` (K, T, C), ids and arms.

    A twin without donor states uses its ``case`` and ``control`` states as one donor each
    (``pseudo``): scores are then defined, p-values are not.
    """

    def __init__(self, twin) -> None:
        self.case_label = twin.params.get("case", "case")
        self.control_label = twin.params.get("control", "control")
        self.ids = sorted(d for d in twin.donors if d in twin.states)
        self.arms = np.array([twin.donors[d] for d in self.ids], dtype=object)
        # a twin without donor states (built by hand): its two arm states stand in as donors
        self.pseudo = not self.ids
        if self.pseudo:
            self.ids = ["case", "control"]
            self.arms = np.array([self.case_label, self.control_label], dtype=object)
        self.x = np.stack([twin.states[d] for d in self.ids])
        # a donor not sampled in a context has an all-zero state there
        self.present = np.any(self.x != 0.0, axis=3)

    @property
    def is_case(self) -> np.ndarray:
        """Donors of the case arm (K,) bool."""
        return self.arms == self.case_label

    @property
    def is_control(self) -> np.ndarray:
        """Donors of the control arm (K,) bool."""
        return self.arms == self.control_label


def donor_states(twin) -> DonorStates:
    """Stack a twin's donor states (see :class:`DonorStates`)."""
    return DonorStates(twin)


def reference_state(twin, donors: DonorStates | None = None) -> np.ndarray:
    """Return the label-free state (T, C, G): per context the mean of the sampled donors' states.

    Each donor weighs the same, whatever its arm and its number of cells. A context no donor
    was sampled in falls back to the mean of the arm states.
    """
    donors = donors if donors is not None else DonorStates(twin)
    n = donors.present.sum(axis=0)  # (T, C)
    total = np.einsum("ktcg,ktc->tcg", donors.x, donors.present.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n[..., None]
    fallback = 0.5 * (twin.state("case") + twin.state("control"))
    return np.where(n[..., None] > 0, mean, fallback)


def study_labellings(
    is_case: np.ndarray, n_permutations: int, seed: int
) -> tuple[np.ndarray, bool]:
    """Case-label vectors: the observed one first, then the relabellings of the null.

    All distinct relabellings (same arm sizes) when there are at most ``n_permutations`` of
    them besides the observed one (an exact test), else ``n_permutations`` seeded random
    permutations of the labels (drawn with replacement; the observed labelling can recur).

    Returns
    -------
    labels, exhaustive
        ``labels`` (1 + B, K) bool; ``exhaustive`` whether every relabelling was used.
    """
    is_case = np.asarray(is_case, bool)
    k, n_case = is_case.size, int(is_case.sum())
    total = math.comb(k, n_case)
    if total - 1 <= n_permutations:
        rows = [is_case]
        for chosen in itertools.combinations(range(k), n_case):
            labels = np.zeros(k, bool)
            labels[list(chosen)] = True
            if not np.array_equal(labels, is_case):
                rows.append(labels)
        return np.array(rows, bool).reshape(len(rows), k), True
    rng = np.random.default_rng(seed)
    rows = [is_case] + [rng.permutation(is_case) for _ in range(n_permutations)]
    return np.array(rows, bool), False


def study_weights(
    labels: np.ndarray, present: np.ndarray, control: np.ndarray | None = None
) -> np.ndarray:
    """Contrast weights (M, T, C, K) of ``case mean - control mean`` per labelling.

    ``labels`` (M, K): True = case. Donors in neither arm of a labelling (``control`` False and
    label False) get weight 0; by default every non-case donor is a control. Per context, the
    mean is over the sampled donors (``present``, (K, T, C)); a context lacking one arm gets 0.
    """
    labels = np.asarray(labels, bool)
    control = ~labels if control is None else np.asarray(control, bool) & ~labels
    here = present[None].astype(float)  # (1, K, T, C)
    case_w = labels[:, :, None, None] * here
    ctrl_w = control[:, :, None, None] * here
    n_case, n_ctrl = case_w.sum(axis=1, keepdims=True), ctrl_w.sum(axis=1, keepdims=True)
    ok = (n_case > 0) & (n_ctrl > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(ok, case_w / n_case - ctrl_w / n_ctrl, 0.0)
    return np.ascontiguousarray(np.moveaxis(w, 1, 3))  # (M, T, C, K)


def project_perturbations(
    twin,
    perturbations: Sequence[Perturbation],
    weights: np.ndarray,
    *,
    donors: DonorStates | None = None,
    reference: np.ndarray | None = None,
    n_steps: int | None = DEFAULT_STEPS,
    context_contrasts: Sequence[int] = (0,),
) -> dict[str, np.ndarray]:
    """Reversal of every contrast by every perturbation of the label-free reference state.

    Parameters
    ----------
    twin
        A fitted twin.
    perturbations
        Perturbations simulated once, on ``reference`` (default :func:`reference_state`).
    weights
        Contrasts (M, T, C, K) of the donor states: ``d_m[t, c] = sum_k w[m, t, c, k] x_k[t, c]``
        (:func:`study_weights`).
    donors, reference
        The stacked donor states and the perturbed state (computed when None).
    n_steps
        Propagation steps.
    context_contrasts
        Contrasts whose per-context scores are also returned.

    Returns
    -------
    dict
        ``score`` (P, M): ``-<delta, d_m> / <d_m, d_m>`` over all contexts and genes except the
        perturbed genes' own coordinates; ``statistic`` (P, M): the test statistic ``-<delta,
        d_m>`` (the change along the disease vector; see the module docstring);
        ``off_target`` (P, M); ``context_score`` and
        ``context_off_target`` (P, len(context_contrasts), T, C).
    """
    from omicstwin.tl.twin import _scores, simulate_contexts

    donors = donors if donors is not None else DonorStates(twin)
    z = reference if reference is not None else reference_state(twin, donors)
    n_t, n_c, _ = twin.shape
    p, m = len(perturbations), weights.shape[0]
    sel = list(context_contrasts)
    dot, dd, xx = np.zeros((p, m)), np.zeros((p, m)), np.zeros(p)
    c_dot, c_dd = np.zeros((p, len(sel), n_t, n_c)), np.zeros((p, len(sel), n_t, n_c))
    c_xx = np.zeros((p, n_t, n_c))
    for t, c, delta, mask in simulate_contexts(twin, perturbations, z, n_steps=n_steps):
        x = donors.x[:, t, c, :]  # (K, G)
        w = weights[:, t, c, :]  # (M, K)
        rows, cols = np.nonzero(mask)
        clamped = delta[rows, cols]
        # clamped entries -> their perturbation (sums in a fixed order, no BLAS)
        owner = sparse.csr_matrix(
            (np.ones(rows.size), (rows, np.arange(rows.size))), (p, rows.size)
        )
        # einsum, not BLAS: identical sums for any thread count (dask workers)
        proj = np.einsum("pg,kg->pk", delta, x) - owner @ (clamped[:, None] * x[:, cols].T)
        dot_ctx = np.einsum("pk,mk->pm", proj, w)
        gram = np.einsum("kg,lg->kl", x, x)
        dd_full = np.einsum("mk,kl,ml->m", w, gram, w)
        own = np.einsum("ek,mk->em", x[:, cols].T, w) ** 2  # (entries, M)
        dd_ctx = dd_full[None, :] - owner @ own
        xx_ctx = np.einsum("pg,pg->p", delta, delta) - np.bincount(rows, clamped**2, minlength=p)
        dot += dot_ctx
        dd += dd_ctx
        xx += xx_ctx
        c_dot[:, :, t, c], c_dd[:, :, t, c] = dot_ctx[:, sel], dd_ctx[:, sel]
        c_xx[:, t, c] = xx_ctx
    score, off = _scores(dot, dd, np.repeat(xx[:, None], m, axis=1), -1.0)
    c_score, c_off = _scores(c_dot, c_dd, np.repeat(c_xx[:, None], len(sel), axis=1), -1.0)
    statistic = -dot
    return {
        "score": score,
        "statistic": statistic,
        "off_target": off,
        "context_score": c_score,
        "context_off": c_off,
    }


def permutation_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Per-row permutation p: ``(1 + #{b: null[:, b] >= observed}) / (1 + B)``.

    ``observed`` (P,), ``null`` (P, B). A relative tolerance of 1e-9 counts floating-point
    ties (the same contrast reached by another route) as ties. NaN without a null.
    """
    observed = np.asarray(observed, float)
    null = np.asarray(null, float)
    if null.ndim != 2 or null.shape[1] == 0:
        return np.full(observed.shape, np.nan)
    tol = 1e-9 * np.maximum(np.abs(observed), 1e-12)
    greater = np.sum(null >= (observed - tol)[:, None], axis=1)
    return (1.0 + greater) / (1.0 + null.shape[1])


def calibration_table(
    screen: str, p_values: np.ndarray, *, n_permutations: int, method: str, bins: int = 20
) -> pd.DataFrame:
    """Histogram of a screen's p-values against the uniform (``null_calibration`` schema).

    Under no disease the counts should be flat (``expected`` per bin); a spike near 0 on a
    disease cohort is power. Also records the permutation count (the smallest attainable p is
    ``1 / (n_permutations + 1)``).
    """
    p = np.asarray(p_values, float)
    p = p[np.isfinite(p)]
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(p, bins=edges)
    return pd.DataFrame(
        {
            "screen": screen,
            "method": method,
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "n_tests": int(p.size),
            "n_observed": counts.astype(np.int64),
            "n_expected": p.size / bins,
            "n_permutations": int(n_permutations),
            "share_below_005": float(np.mean(p < 0.05)) if p.size else np.nan,
        }
    )
