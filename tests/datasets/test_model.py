"""The batched, core-subspace dynamics against a slow one-scenario-at-a-time reference."""

import numpy as np
import pytest

from omicstwin.datasets import PRESETS, SimulationPriors
from omicstwin.datasets.simulate import build_structure


@pytest.fixture(scope="module")
def structure():
    return build_structure(PRESETS["small"], SimulationPriors.from_manifests())


def reference_trajectory(model, inputs, knockout=()):
    """Obviously-correct: dense full-gene fixed points, one scenario, no subspace tricks."""
    n_t, n_c, n_g = inputs.shape
    w = [net.toarray() for net in model.networks]
    beta = [1.0 - wc.sum(axis=0) for wc in w]
    ko = list(knockout)

    def lr_input(prev):
        u = np.zeros((n_c, n_g))
        for e in model.lr_edges:
            u[e.receiver, e.downstream_tf] += e.kappa * (
                prev[e.sender, e.ligand] * prev[e.receiver, e.receptor] - 1.0
            )
        return u

    def steady(c, u, start):
        y = start.copy()
        for _ in range(5000):
            new = np.maximum(beta[c] + y @ w[c] + u, 0.0)
            new[ko] = 0.0
            if np.max(np.abs(new - y)) < 1e-13:
                return new
            y = new
        raise AssertionError("no convergence")

    out = np.zeros((n_t, n_c, n_g))
    state = np.ones((n_c, n_g))
    for _ in range(5000):
        lr = lr_input(state)
        new = np.array([steady(c, inputs[0, c] + lr[c], state[c]) for c in range(n_c)])
        if np.max(np.abs(new - state)) < 1e-13:
            break
        state = new
    out[0] = state
    for t in range(1, n_t):
        lr = lr_input(out[t - 1])
        out[t] = [steady(c, inputs[t, c] + lr[c], np.ones(n_g)) for c in range(n_c)]
    return out


def test_batched_trajectory_matches_reference(structure):
    model = structure.model
    inputs = next(iter(structure.inputs_case.values()))
    core_genes = model.core[:6]
    knockouts = np.zeros((len(core_genes) + 1, model.n_genes), bool)
    knockouts[np.arange(len(core_genes)), core_genes] = True  # last row: no knockout
    batched = model.trajectory(inputs, knockouts)
    for i, gene in enumerate(core_genes):
        ref = reference_trajectory(model, inputs, [gene])
        np.testing.assert_allclose(batched[i], ref, atol=1e-7)
    np.testing.assert_allclose(batched[-1], reference_trajectory(model, inputs), atol=1e-7)


def test_control_is_at_baseline_before_the_shared_response(structure):
    control = structure.model.trajectory(structure.inputs_control)[0]
    np.testing.assert_allclose(control[0], 1.0, atol=1e-8)


def test_cell_response_matches_iterated_linear_response(structure):
    model = structure.model
    y_ctx = model.trajectory(next(iter(structure.inputs_case.values())))[0, 2, 0]
    noise = np.random.default_rng(0).normal(0, 0.2, size=(5, len(model.core)))
    fast = model.cell_response(0, y_ctx, noise)
    active = (y_ctx[model.core] > 0).astype(float)
    w = model.networks[0].toarray()
    delta = np.zeros_like(noise)
    for _ in range(2000):  # delta = (e + delta W_core) * active, iterated to convergence
        delta = (noise + delta @ w[np.ix_(model.core, model.core)]) * active
    full = delta @ w[model.core]
    full[:, model.core] = delta
    np.testing.assert_allclose(fast, np.maximum(y_ctx + full, 0.0), atol=1e-10)


def test_truth_networks_are_the_simulated_networks(structure):
    table = structure.network_table
    genes = structure.model.genes
    for c, cell_type in enumerate(PRESETS["small"].cell_types):
        coo = structure.model.networks[c].tocoo()
        simulated = {
            (genes[i], genes[j]): v for i, j, v in zip(coo.row, coo.col, coo.data, strict=True)
        }
        sub = table[table["cell_type"] == cell_type]
        recorded = dict(
            zip(zip(sub["source"], sub["target"], strict=True), sub["weight"], strict=True)
        )
        assert recorded == pytest.approx(simulated)
        # incoming weights stay below one: the within-cell update is a contraction
        assert np.abs(structure.model.networks[c]).sum(axis=0).max() < 1.0
