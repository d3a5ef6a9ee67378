"""Scale in genes: the network gene rule, restricted layers and memory-bounded screen batches."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.pp.cohort import as_cohort
from omicstwin.tl import grn
from omicstwin.tl.networks import context_grns, network_genes, temporal_edges
from omicstwin.tl.nulls import donor_states, project_perturbations, study_weights
from omicstwin.tl.patients import patient_screen
from omicstwin.tl.perturb import knockout
from omicstwin.tl.twin import (
    Twin,
    _donor_networks,
    disease_gene_screen,
    screen_batch_size,
    target_screen,
)


@pytest.fixture(scope="module")
def tfs(small_cohort):
    return small_cohort.uns["truth"]["genes"].query("role == 'tf'")["gene"].tolist()


def test_rule_keeps_every_gene_up_to_the_cap(small_cohort, tfs):
    genes = list(small_cohort.var_names)
    rule = network_genes(small_cohort, regulators=tfs, max_genes=len(genes))
    assert rule.genes == genes and rule.regulators == tfs
    assert network_genes(small_cohort, max_genes=None).genes == genes
    with pytest.raises(errors.ParameterError, match="max_genes"):
        network_genes(small_cohort, max_genes=0)


def test_rule_takes_de_genes_then_variable_ones(small_cohort, tfs):
    cohort = as_cohort(small_cohort, {})
    genes = list(cohort.genes)
    # slow reference of the pseudobulk log2 CPM, sample by sample
    pb = cohort.pseudobulk
    arms = pb.obs["condition"].isin(["case", "control"]).to_numpy()
    counts = np.asarray(pb.X[arms], float)
    log_cpm = np.array([np.log2(row / max(row.sum(), 1.0) * 1e6 + 1.0) for row in counts])
    variance = pd.Series(log_cpm.var(axis=0), index=genes)
    mean_cpm = pd.Series((2.0**log_cpm - 1.0).mean(axis=0), index=genes)
    de = pd.DataFrame(
        {"gene": [genes[5], genes[9], genes[5], "NOT_MEASURED"], "q_value": [0.01, 0.2, 0.03, 0]}
    )
    cap = 20
    rule = network_genes(small_cohort, de=de, regulators=tfs, max_genes=cap)
    by_variance = variance.sort_values(ascending=False, kind="stable").index
    expected_targets = [genes[5], *[g for g in by_variance if g != genes[5]][: cap - 1]]
    expressed_tfs = [g for g in tfs if mean_cpm[g] >= 1.0]
    assert rule.regulators == expressed_tfs
    assert set(rule.genes) == set(expected_targets) | set(expressed_tfs)
    assert rule.genes == [g for g in genes if g in set(rule.genes)]  # cohort order
    assert rule.params() == {
        "n_genes": len(rule.genes),
        "n_regulators": len(expressed_tfs),
        "n_de": 1,
        "n_variable": cap - 1,
    }


def test_restricted_context_grns_equal_the_fit_on_the_columns(small_cohort, tfs):
    genes = list(small_cohort.var_names)
    keep = sorted(set(genes[::3]) | set(tfs[:8]), key=genes.index)
    edges = context_grns(small_cohort, regulators=tfs, genes=keep, top_k=3, key_added=None)
    regulators = [g for g in tfs if g in keep]
    assert set(edges["target"]) <= set(keep) and set(edges["source"]) <= set(regulators)
    # reference: one context by hand on the chosen columns
    cohort = as_cohort(small_cohort, {})
    obs = cohort.obs
    first = edges.iloc[0]
    rows = np.flatnonzero(
        (obs["cell_type"] == first["source_cell_type"]).to_numpy()
        & (obs["time"] == first["time_from"]).to_numpy()
        & (obs["condition"] == first["condition"]).to_numpy()
    )
    columns = [genes.index(g) for g in keep]
    x = cohort.log_normalised(rows).toarray()[:, columns]
    ref = grn.infer_grn(x, keep, method="ridge", regulators=regulators, top_per_target=3)
    got = edges[
        (edges["source_cell_type"] == first["source_cell_type"])
        & (edges["time_from"] == first["time_from"])
        & (edges["condition"] == first["condition"])
    ]
    merged = got.merge(ref, on=["source", "target"], suffixes=("", "_ref"))
    assert len(merged) == len(got)
    np.testing.assert_allclose(merged["weight"], merged["weight_ref"], rtol=1e-10)
    every = context_grns(small_cohort, regulators=tfs, genes=genes, top_k=3, key_added=None)
    pd.testing.assert_frame_equal(every, context_grns(small_cohort, regulators=tfs, top_k=3))


def test_restricted_temporal_edges(small_cohort, tfs):
    genes = list(small_cohort.var_names)
    keep = sorted(set(genes[::2]) | set(tfs), key=genes.index)
    edges = temporal_edges(
        small_cohort, regulators=tfs, genes=keep, n_bootstrap=3, top_k=2, key_added=None
    )
    assert set(edges["target"]) <= set(keep) and len(edges)
    full = temporal_edges(small_cohort, regulators=tfs, n_bootstrap=3, top_k=2, key_added=None)
    same = temporal_edges(
        small_cohort, regulators=tfs, genes=genes, n_bootstrap=3, top_k=2, key_added=None
    )
    pd.testing.assert_frame_equal(full, same)
    with pytest.raises(errors.ParameterError, match="network genes"):
        temporal_edges(small_cohort, genes=["NOPE"], key_added=None)


def _random_twin(n_genes=40, n_types=3, n_times=3, n_case=5, n_control=4, seed=0):
    """A twin with random sparse networks (intracellular, temporal) and noisy donor states."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i:02d}" for i in range(n_genes)]

    def network():
        w = sparse.random(n_genes, n_genes, density=0.08, random_state=rng, format="csr")
        w.data = rng.normal(0, 0.3, w.data.size)
        w.setdiag(0)
        w.eliminate_zeros()
        return w

    control = rng.uniform(0.5, 2.0, (n_times, n_types, n_genes))
    case = control + rng.normal(0, 0.5, control.shape) * (rng.random(n_genes) < 0.3)
    case = np.maximum(case, 0.01)
    states = {"case": case, "control": control}
    donors = {f"P{i}": "case" for i in range(n_case)} | {
        f"C{i}": "control" for i in range(n_control)
    }
    for donor, arm in donors.items():
        states[donor] = np.maximum(states[arm] + rng.normal(0, 0.2, case.shape), 0.01)
    intercellular = pd.DataFrame(
        {"time_index": [0, 1], "sender": [0, 1], "ligand": [1, 3], "receiver": [1, 2]}
        | {"receptor": [2, 4], "kappa": [1.0, 1.0]}
    )
    return Twin(
        genes=genes,
        cell_types=[f"ct{c}" for c in range(n_types)],
        times=[float(t) for t in range(n_times)],
        states=states,
        donors=donors,
        intracellular=[[network() for _ in range(n_types)] for _ in range(n_times)],
        temporal=[[network() for _ in range(n_types)] for _ in range(n_times)],
        intercellular=intercellular,
        params={"case": "case", "control": "control"},
    )


def test_screen_batch_size_follows_the_memory_budget():
    twin = _random_twin()
    assert screen_batch_size(twin, 500, None) == 500
    assert screen_batch_size(twin, 500, 1.0) == 500  # the budget is not binding
    per = screen_batch_size(twin, 10**9, 1.0 / 1024)  # 1 MB
    assert 1 <= per < 500 and screen_batch_size(twin, 500, 1e-9) == 1
    with pytest.raises(errors.ParameterError, match="memory_per_worker"):
        screen_batch_size(twin, 10, 0.0)


def test_memory_estimate_bounds_a_batch():
    """tracemalloc peak of one batch stays below the estimate the batch size is chosen from."""
    twin = _random_twin(n_genes=3000, n_types=4, n_times=3)
    donors = donor_states(twin)
    weights = study_weights(donors.is_case[None], donors.present)
    perts = [knockout(g) for g in twin.genes[:64]]
    budget = 64 / screen_batch_size(twin, 10**9, 1.0)  # GB the estimate gives 64 perturbations
    tracemalloc.start()
    project_perturbations(twin, perts, weights, donors=donors)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= budget * 2**30
    assert peak >= 0.3 * budget * 2**30  # and the estimate is not wildly loose


def test_screens_identical_for_any_batch_size():
    twin = _random_twin()
    perts = [knockout(g) for g in twin.genes]
    big = target_screen(twin, perts, n_permutations=30, seed=2, batch_size=500)
    small = target_screen(twin, perts, n_permutations=30, seed=2, memory_per_worker=1e-5)
    assert screen_batch_size(twin, 500, 1e-5) < 10  # several batches really ran
    for a, b in zip(big, small, strict=True):
        pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(
        patient_screen(twin, perts), patient_screen(twin, perts, memory_per_worker=1e-5)
    )
    pd.testing.assert_frame_equal(
        disease_gene_screen(twin), disease_gene_screen(twin, memory_per_worker=1e-5)
    )


def test_donor_networks_on_network_genes_equal_the_fit_on_those_genes():
    twin = _random_twin(n_genes=30)
    donors = sorted(twin.donors)
    keep = twin.genes[::2]
    regulators = twin.genes[:6]
    net, grid = _donor_networks(
        twin.states, donors, twin.genes, twin.cell_types, twin.times, regulators, 3, 1.0, keep
    )
    columns = [twin.genes.index(g) for g in keep]
    sub_states = {d: twin.states[d][..., columns] for d in donors}
    ref_net, ref_grid = _donor_networks(
        sub_states, donors, keep, twin.cell_types, twin.times, regulators, 3, 1.0
    )
    pd.testing.assert_frame_equal(net, ref_net)
    w, ref = grid[0][0].toarray(), ref_grid[0][0].toarray()
    np.testing.assert_array_equal(w[np.ix_(columns, columns)], ref)
    outside = np.setdiff1d(np.arange(len(twin.genes)), columns)
    assert not w[outside].any() and not w[:, outside].any()


def test_lagged_fit_on_the_edge_genes_equals_the_whole_matrix_fit():
    from omicstwin.tl.twin import _fit_lagged, fit_elasticities

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 50)), rng.normal(size=(12, 50))
    sources, targets = np.array([1, 4, 4, 7]), np.array([4, 9, 20, 9])
    got = _fit_lagged(x, y, sources, targets, 50, 0.5).toarray()
    whole = fit_elasticities(np.concatenate([x, y], axis=1), sources, targets + 50, 100, alpha=0.5)
    np.testing.assert_allclose(got, whole[:50, 50:].toarray(), rtol=1e-12, atol=1e-14)
    assert np.count_nonzero(got) == 4
