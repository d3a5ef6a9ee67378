"""The generative model behind :func:`omicstwin.datasets.simulate_cohort` (pure numpy/scipy).

State: relative expression ``y`` (1 = the gene's control baseline) per cell type, time point and
gene. Within a cell type and time point the regulatory network is at steady state::

    y = relu(beta + y @ W + u)        with beta = 1 - W.sum(axis=0)

so that ``y = 1`` exactly when the input ``u`` is zero. ``W[j, g]`` is the change of gene ``g``
(in units of its baseline) per unit change of regulator ``j``; incoming absolute weights sum to
less than one per gene, so the update is a contraction and the fixed point is unique.

Between cell types, ligand -> receptor edges act with a lag of one sampled time point: the input
to a downstream TF of receptor ``R`` in the receiver at time ``t`` is
``kappa * (y_sender[L] * y_receiver[R] - 1)`` evaluated at ``t - 1`` (zero at baseline; at the
first time point the whole multicellular system is solved to its joint steady state).
Perturbations clamp genes (``y = 0`` for a knockout) in every cell type and time point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

_MAX_ITER = 500
_TOL = 1e-9


@dataclass
class LigandReceptorEdge:
    """A ligand (sender) -> receptor (receiver) -> downstream TF coupling."""

    sender: int
    ligand: int
    receiver: int
    receptor: int
    downstream_tf: int
    kappa: float
    endotype: str
    hop: int


@dataclass
class TwinModel:
    """Networks, couplings and per-gene scales of a simulated cohort (indices into ``genes``).

    Attributes
    ----------
    genes
        Gene symbols.
    networks
        One ``(n_genes, n_genes)`` CSR matrix per cell type, rows = regulators.
    lr_edges
        Intercellular couplings.
    core
        Indices of genes that influence others (TFs, ligands, receptors), sorted.
    """

    genes: list[str]
    networks: list[sparse.csr_matrix]
    lr_edges: list[LigandReceptorEdge]
    core: np.ndarray

    def __post_init__(self) -> None:
        self.beta = [1.0 - np.asarray(w.sum(axis=0)).ravel() for w in self.networks]
        self._core_pos = {int(g): i for i, g in enumerate(self.core)}
        self.w_core = [w[self.core][:, self.core].tocsr() for w in self.networks]
        self.w_core_all = [w[self.core].tocsr() for w in self.networks]
        # pre-transposed copies: ``(wT @ y.T).T == y @ w`` without scipy's per-call transpose
        self._w_core_t = [w.T.tocsr() for w in self.w_core]
        self._w_core_all_t = [w.T.tocsr() for w in self.w_core_all]
        self._response_cache: dict[tuple[int, bytes], np.ndarray] = {}
        self._lr_core = [
            (
                self.core_position(e.ligand),
                self.core_position(e.receptor),
                self.core_position(e.downstream_tf),
            )
            for e in self.lr_edges
        ]

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return len(self.genes)

    @property
    def n_cell_types(self) -> int:
        """Number of cell types."""
        return len(self.networks)

    def core_position(self, gene: int) -> int:
        """Position of a core gene inside the core subspace."""
        return self._core_pos[int(gene)]

    def _steady_core(
        self, c: int, u_core: np.ndarray, clamp: np.ndarray, start: np.ndarray
    ) -> np.ndarray:
        """Steady state of the core subspace for a batch of inputs ``u_core`` (B, n_core)."""
        beta = self.beta[c][self.core]
        w_t = self._w_core_t[c]
        y = start
        for _ in range(_MAX_ITER):
            new = np.maximum(beta + (w_t @ y.T).T + u_core, 0.0)
            new[clamp] = 0.0
            if np.max(np.abs(new - y), initial=0.0) < _TOL:
                return new
            y = new
        return y

    def _lr_input(self, prev: np.ndarray) -> np.ndarray:
        """Input to receivers' TFs from ligand-receptor signalling at the previous time point.

        ``prev`` is the core state (B, n_cell_types, n_core); returns the same shape.
        """
        u = np.zeros_like(prev)
        for e, (lig, rec, tf) in zip(self.lr_edges, self._lr_core, strict=True):
            signal = prev[:, e.sender, lig] * prev[:, e.receiver, rec] - 1.0
            u[:, e.receiver, tf] += e.kappa * signal
        return u

    def _step(self, u_t, lr_u, clamp_core, start) -> np.ndarray:
        """Core steady state of every cell type at one time point (B, C, n_core)."""
        out = np.empty_like(start)
        for c in range(self.n_cell_types):
            u = u_t[c][self.core][None, :] + lr_u[:, c, :]
            out[:, c, :] = self._steady_core(c, u, clamp_core, start[:, c, :])
        return out

    def trajectory(
        self,
        inputs: np.ndarray,
        knockouts: np.ndarray | None = None,
    ) -> np.ndarray:
        """Simulate relative expression over time for a batch of scenarios.

        Parameters
        ----------
        inputs
            External input ``u`` of shape (T, n_cell_types, n_genes), shared by the batch.
        knockouts
            Boolean (B, n_genes): genes clamped to zero in every cell type and time point.
            ``None`` means one unperturbed scenario.

        Returns
        -------
        numpy.ndarray
            ``y`` of shape (B, T, n_cell_types, n_genes).
        """
        n_t, n_c, n_g = inputs.shape
        clamp = np.zeros((1, n_g), bool) if knockouts is None else np.asarray(knockouts, bool)
        n_b = clamp.shape[0]
        clamp_core = clamp[:, self.core]
        core_states = np.empty((n_t, n_b, n_c, len(self.core)))
        # t = 0: joint multicellular steady state (lagged signals equal the current state);
        # the core subspace closes on itself, so leaves are expanded once at the end
        state = np.ones((n_b, n_c, len(self.core)))
        for _ in range(_MAX_ITER):
            new = self._step(inputs[0], self._lr_input(state), clamp_core, state)
            converged = np.max(np.abs(new - state), initial=0.0) < _TOL
            state = new
            if converged:
                break
        core_states[0] = state
        for t in range(1, n_t):
            lagged = self._lr_input(core_states[t - 1])
            core_states[t] = self._step(inputs[t], lagged, clamp_core, core_states[t - 1])
        out = np.empty((n_b, n_t, n_c, n_g))
        for t in range(n_t):
            for c in range(n_c):
                y_core = core_states[t, :, c, :]
                y = np.maximum(
                    self.beta[c] + (self._w_core_all_t[c] @ y_core.T).T + inputs[t, c], 0.0
                )
                y[:, self.core] = y_core
                y[clamp] = 0.0
                out[:, t, c, :] = y
        return out

    def _response_matrix(self, c: int, active: np.ndarray) -> np.ndarray:
        """Return ``A (I - W A)^-1`` on the core: the first-order response to fluctuations.

        From ``delta = (e + delta @ W) * a``; genes clamped at zero (inactive) do not respond.
        Cached per cell type and active set, which rarely changes between contexts.
        """
        key = (c, active.tobytes())
        cached = self._response_cache.get(key)
        if cached is None:
            a = active.astype(float)
            w_active = self.w_core[c].toarray() * a[None, :]
            cached = np.linalg.solve((np.eye(len(a)) - w_active).T, np.diag(a)).T
            self._response_cache[key] = cached
        return cached

    def cell_response(self, c: int, y_context: np.ndarray, noise_core: np.ndarray) -> np.ndarray:
        """Per-cell relative expression: core-gene noise propagated linearly around the context.

        Parameters
        ----------
        c
            Cell type index.
        y_context
            Steady state of the context (n_genes,).
        noise_core
            Intrinsic fluctuations of the core genes, (n_cells, n_core).

        Returns
        -------
        numpy.ndarray
            (n_cells, n_genes) relative expression, non-negative.
        """
        active = y_context[self.core] > 0
        delta = noise_core @ self._response_matrix(c, active)
        full = (self._w_core_all_t[c] @ delta.T).T
        full[:, self.core] = delta
        return np.maximum(y_context[None, :] + full, 0.0)
