"""Hill-type kinetics behind :func:`omicstwin.datasets.independent.simulate_independent`.

State: expression ``x`` (relative units, about 1 at the control baseline) per cell type, time
point and gene. Within a cell type and time point every gene is at the steady state of::

    dx_g/dt = basal_g + sum_{e: j -> g, activating} w_e * h_e(x_j)
                      + sum_{e: j -> g, repressing}  w_e * (1 - h_e(x_j))
                      + s_g + u_g - x_g

with Hill functions ``h_e(x) = x^n / (K^n + x^n)`` (``n`` in [1, 4], per edge), ``s_g`` the
lagged ligand-receptor input and ``u_g`` external input (disease drivers, the challenge shared by
both arms). ``basal_g`` is chosen so that ``x = 1`` solves the system at zero input (clipped at
``_MIN_BASAL``). Incoming weights are scaled so that ``sum_e w_e * max h_e' <= _BUDGET`` for each
gene: the update is a contraction, the steady state unique, and damped fixed-point iteration
converges. With ``hill=False`` each ``h_e`` is replaced by the straight line ``x / (2 K)``
(same value at ``x = K``): a linear model for comparison.

Ligand (sender) -> receptor (receiver) couplings add ``kappa * h(x_L * x_R)`` (``K = 2``,
``n = 2``) to the downstream TF of the receiver, evaluated one sampled time point earlier; at the
first time point the whole multicellular system is solved to its joint steady state. Couplings
may point back to an earlier cell type of a cascade (intercellular feedback). Perturbations clamp
genes (``x = 0`` for a knockout) in every cell type and time point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from omicstwin._logging import logger

_MAX_ITER = 2000
_TOL = 1e-9
_DAMPING = 0.7  # joint first time point only; within a context the update is a contraction
_BUDGET = 0.9
_MIN_BASAL = 0.05
LR_K = 2.0
LR_N = 2.0


def hill(x: np.ndarray, k: np.ndarray, n: np.ndarray, *, linear: bool = False) -> np.ndarray:
    """Hill activation ``x^n / (K^n + x^n)`` (``x / (2K)`` when ``linear``), ``x >= 0``."""
    x = np.maximum(x, 0.0)
    if linear:
        return x / (2.0 * k)
    r = (x / k) ** n
    return r / (1.0 + r)


def max_slope(k: np.ndarray, n: np.ndarray, *, linear: bool = False) -> np.ndarray:
    """Largest derivative of :func:`hill` over ``x >= 0`` (at ``r = (n-1)/(n+1)``)."""
    if linear:
        return 1.0 / (2.0 * k)
    r = (n - 1.0) / (n + 1.0)
    return (n / k) * r ** (1.0 - 1.0 / n) / (1.0 + r) ** 2


@dataclass
class Coupling:
    """A ligand (sender) -> receptor (receiver) -> downstream TF coupling (gene indices)."""

    sender: int
    ligand: int
    receiver: int
    receptor: int
    downstream_tf: int
    kappa: float
    endotype: str
    hop: int
    in_prior: bool


@dataclass
class EdgeSet:
    """One cell type's regulatory edges as arrays: source, target, weight, K, n, sign (+1/-1)."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    k: np.ndarray
    n: np.ndarray
    sign: np.ndarray


@dataclass
class HillModel:
    """Per-cell-type Hill networks and lagged couplings of an independent cohort.

    Attributes
    ----------
    genes
        Gene symbols.
    edges
        One :class:`EdgeSet` per cell type (weights already within the contraction budget).
    couplings
        Intercellular ligand-receptor couplings.
    linear
        Replace the Hill functions by straight lines (``hill=False``).
    """

    genes: list[str]
    edges: list[EdgeSet]
    couplings: list[Coupling]
    linear: bool = False
    basal: list[np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        n_g = len(self.genes)
        # core: genes whose level acts on others (edge sources and coupled genes), sorted
        core = set()
        for e in self.edges:
            core.update(e.src.tolist())
        for cp in self.couplings:
            core.update((cp.ligand, cp.receptor))
        self.core = np.array(sorted(core), int)
        pos = np.full(n_g, -1)
        pos[self.core] = np.arange(len(self.core))
        self._pos = pos
        self._scatter, self._src_core, self._core_edges = [], [], []
        for e in self.edges:
            m = sparse.csr_matrix(
                (np.ones(len(e.dst)), (e.dst, np.arange(len(e.dst)))), shape=(n_g, len(e.dst))
            )
            self._scatter.append(m)
            self._src_core.append(pos[e.src])
            # edges into core genes only: all the fixed-point iteration needs
            into = np.flatnonzero(pos[e.dst] >= 0)
            sub = sparse.csr_matrix(
                (np.ones(len(into)), (pos[e.dst[into]], np.arange(len(into)))),
                shape=(len(self.core), len(into)),
            )
            self._core_edges.append((into, sub))
        ones = np.ones((1, len(self.core)))
        self.basal = []
        for c in range(len(self.edges)):
            at_one = self._production(c, ones, full=True)[0]
            lr_at_one = np.zeros(n_g)
            for cp in self.couplings:
                if cp.receiver == c:
                    lr_at_one[cp.downstream_tf] += cp.kappa * hill(
                        np.array(1.0), LR_K, LR_N, linear=self.linear
                    )
            self.basal.append(np.maximum(1.0 - at_one - lr_at_one, _MIN_BASAL))

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return len(self.genes)

    @property
    def n_cell_types(self) -> int:
        """Number of cell types."""
        return len(self.edges)

    def _production(self, c: int, x_core: np.ndarray, *, full: bool) -> np.ndarray:
        """Regulatory input ``sum_e w_e h_e`` (B, G or B, n_core) from core states (B, n_core)."""
        e = self.edges[c]
        if full:
            sel, scatter = slice(None), self._scatter[c]
        else:
            sel, scatter = self._core_edges[c]
        k, n, sign, weight = e.k[sel], e.n[sel], e.sign[sel], e.weight[sel]
        h = hill(x_core[:, self._src_core[c][sel]], k, n, linear=self.linear)
        contrib = np.where(sign > 0, h, 1.0 - h) * weight  # (B, E)
        return (scatter @ contrib.T).T

    def _lr_input(self, core_state: np.ndarray) -> np.ndarray:
        """Coupling input (B, C, G) from a core state (B, C, n_core)."""
        n_b, n_c, _ = core_state.shape
        out = np.zeros((n_b, n_c, self.n_genes))
        for cp in self.couplings:
            signal = core_state[:, cp.sender, self._pos[cp.ligand]]
            signal = signal * core_state[:, cp.receiver, self._pos[cp.receptor]]
            out[:, cp.receiver, cp.downstream_tf] += cp.kappa * hill(
                signal, LR_K, LR_N, linear=self.linear
            )
        return out

    def _steady_core(
        self, c, drive_core, clamp_core, start, max_iter=_MAX_ITER, damping=1.0
    ) -> np.ndarray:
        """Fixed-point iteration of one cell type's core genes (B, n_core)."""
        x = np.array(start, dtype=float)
        drive_core = np.broadcast_to(drive_core, x.shape)
        active = np.arange(len(x))  # rows (scenarios) still moving: only those are updated
        for _ in range(max_iter):
            xa = x[active]
            target = np.maximum(drive_core[active] + self._production(c, xa, full=False), 0.0)
            new = (1.0 - damping) * xa + damping * target
            new[clamp_core[active]] = 0.0
            moving = np.max(np.abs(new - xa), axis=1, initial=0.0) >= _TOL
            x[active] = new
            active = active[moving]
            if not len(active):
                break
        return x

    def _step(self, u_t, lr_core, clamp_core, start, max_iter=_MAX_ITER, damping=1.0):
        """Core steady state (or ``max_iter`` damped steps) of every cell type (B, C, n_core)."""
        out = np.empty_like(start)
        for c in range(self.n_cell_types):
            drive = (self.basal[c] + u_t[c])[self.core][None, :] + lr_core[:, c, :]
            out[:, c, :] = self._steady_core(
                c, drive, clamp_core, start[:, c, :], max_iter, damping
            )
        return out

    def trajectory(
        self,
        inputs: np.ndarray,
        knockouts: np.ndarray | None = None,
        warm: np.ndarray | None = None,
    ) -> np.ndarray:
        """Steady states over time for a batch of knockout scenarios.

        Parameters
        ----------
        inputs
            External input ``u`` (T, n_cell_types, n_genes), shared by the batch.
        knockouts
            Boolean (B, n_genes): genes clamped to zero everywhere; ``None``: one scenario.
        warm
            States (T, n_cell_types, n_genes) to start each time point's iteration from (the
            unperturbed run when scoring knockouts); the steady states do not depend on it.

        Returns
        -------
        numpy.ndarray
            ``x`` of shape (B, T, n_cell_types, n_genes).
        """
        n_t, n_c, n_g = inputs.shape
        clamp = np.zeros((1, n_g), bool) if knockouts is None else np.asarray(knockouts, bool)
        n_b = clamp.shape[0]
        clamp_core = clamp[:, self.core]
        core_states = np.empty((n_t, n_b, n_c, len(self.core)))
        start = np.ones((n_t, n_c, len(self.core))) if warm is None else warm[..., self.core]
        state = np.where(clamp_core[:, None, :], 0.0, start[0][None])
        active = np.arange(n_b)  # t = 0: joint multicellular steady state, damped steps
        for _ in range(_MAX_ITER):
            sa = state[active]
            lr = self._lr_input(sa)
            new = self._step(
                inputs[0], lr[:, :, self.core], clamp_core[active], sa, 1, damping=_DAMPING
            )
            moving = np.max(np.abs(new - sa), axis=(1, 2), initial=0.0) >= _TOL
            state[active] = new
            active = active[moving]
            if not len(active):
                break
        else:
            logger.warning("joint steady state at the first time point did not converge")
        core_states[0] = state
        lr_inputs = [self._lr_input(state)]
        for t in range(1, n_t):
            lr = self._lr_input(core_states[t - 1])
            lr_inputs.append(lr)
            if warm is not None:
                state = np.where(clamp_core[:, None, :], 0.0, start[t][None])
            core_states[t] = self._step(inputs[t], lr[:, :, self.core], clamp_core, state)
            state = core_states[t]
        out = np.empty((n_b, n_t, n_c, n_g))
        for t in range(n_t):
            for c in range(n_c):
                x_core = core_states[t, :, c, :]
                x = self.basal[c] + inputs[t, c] + lr_inputs[t][:, c, :]
                x = np.maximum(x + self._production(c, x_core, full=True), 0.0)
                x[:, self.core] = x_core
                x[clamp] = 0.0
                out[:, t, c, :] = x
        return out

    def cell_states(self, c: int, context: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Per-cell expression: core genes fluctuate, the other genes respond through the network.

        Parameters
        ----------
        c
            Cell type index.
        context
            Steady state of the context (n_genes,).
        noise
            Multiplicative fluctuations of the core genes (n_cells, n_core).

        Returns
        -------
        numpy.ndarray
            (n_cells, n_genes) expression: each non-core gene's input is re-evaluated with its
            regulators' cell-level values (non-linearly), so single cells carry network
            covariance; core genes keep their own fluctuation.
        """
        core_ctx = context[self.core]
        x_core = core_ctx[None, :] * noise
        shift = self._production(c, x_core, full=True) - self._production(
            c, core_ctx[None, :], full=True
        )
        x = np.maximum(context[None, :] + shift, 0.0)
        x[:, self.core] = x_core
        return x
