"""Perturbation kernel and twin scoring against slow one-at-a-time references."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.tl import perturb
from omicstwin.tl.perturb import (
    clamp_matrix,
    combination,
    drug,
    drugs_from_table,
    knockdown,
    knockout,
    overexpression,
    propagate,
    single_gene_perturbations,
)
from omicstwin.tl.twin import Twin, fit_elasticities, run_perturbations


def random_network(n=30, density=0.1, seed=0, scale=0.4):
    rng = np.random.default_rng(seed)
    w = sparse.random(
        n, n, density=density, random_state=seed, data_rvs=lambda k: rng.uniform(-scale, scale, k)
    )
    w.setdiag(0)
    w.eliminate_zeros()
    return w.tocsr()


def reference_propagate(z0, w, mask, shift, extra, n_steps):
    """One perturbation at a time, dense, the update rule written out."""
    dense = w.toarray()
    out = np.zeros_like(shift)
    for i in range(shift.shape[0]):
        base = shift[i] if extra is None else np.where(mask[i], shift[i], extra[i])
        delta = base.copy()
        for _ in range(n_steps):
            new = delta @ dense + (0 if extra is None else extra[i])
            new[mask[i]] = shift[i][mask[i]]
            new = np.maximum(new, -z0)
            delta = new
        out[i] = delta
    return out


def test_vectorised_screen_equals_one_at_a_time_loop():
    n = 40
    w = random_network(n)
    z0 = np.random.default_rng(1).uniform(0.0, 3.0, n)
    z0[5] = 0.0  # not expressed: no effect
    genes = [f"g{i}" for i in range(n)]
    perts = [
        *single_gene_perturbations(genes),
        knockdown("g3", 0.5),
        overexpression("g7", 3.0),
        combination(knockout("g1"), overexpression("g2", 2.0)),
    ]
    mask, shift = clamp_matrix(perts, genes, z0)
    extra = np.random.default_rng(2).normal(0, 0.1, size=shift.shape)
    for steps in (1, 3, 5):
        for ex in (None, extra):
            fast = propagate(z0, w, mask, shift, extra=ex, n_steps=steps)
            slow = reference_propagate(z0, w, mask, shift, ex, steps)
            np.testing.assert_allclose(fast, slow, atol=1e-12)
    assert np.all(z0 + propagate(z0, w, mask, shift) >= -1e-12)  # expression stays >= 0
    assert np.all(propagate(z0, w, mask, shift)[5] == 0)  # knocking out an unexpressed gene


def test_clamp_values():
    z0 = np.log1p(np.array([4.0, 0.0, 9.0]))
    genes = ["a", "b", "c"]
    perts = [knockout("a"), knockdown("c", 0.5), overexpression("a", 3.0)]
    mask, shift = clamp_matrix(perts, genes, z0)
    assert np.allclose((z0 + shift)[mask], [0.0, np.log1p(4.5), np.log1p(12.0)])
    with pytest.raises(errors.ParameterError, match="unknown gene 'zz'"):
        clamp_matrix([knockout("zz")], genes, z0)


def test_steady_state_solves_the_linear_system():
    n = 20
    w = random_network(n, density=0.15, scale=0.2)
    z0 = np.full(n, 5.0)  # far from the floor: linear regime
    mask, shift = clamp_matrix([knockdown("g0", 0.3)], [f"g{i}" for i in range(n)], z0)
    delta = propagate(z0, w, mask, shift, n_steps=None)
    free = ~mask[0]
    a = w.toarray()
    # free genes satisfy delta_free = delta @ W restricted to the free columns
    np.testing.assert_allclose(delta[0, free], (delta[0] @ a)[free], atol=1e-8)
    # an overexpression through a network with gain > 1 grows without bound (a knockdown would
    # stop at the expression floor, which is a steady state)
    up_mask, up_shift = clamp_matrix([overexpression("g0", 3.0)], [f"g{i}" for i in range(n)], z0)
    with pytest.raises(errors.ParameterError, match="steady state"):
        propagate(z0, sparse.csr_matrix(np.full((n, n), 0.5)), up_mask, up_shift, n_steps=None)


def test_perturbation_validation_and_drugs():
    with pytest.raises(errors.ParameterError, match=r"\[0, 1\]"):
        knockdown("a", 1.5)
    with pytest.raises(errors.ParameterError, match="fold"):
        overexpression("a", 0.5)
    d = drug("DB1", {"A": "inhibitor", "B": "agonist", "C": "binder"}, dose=0.8, fold=2.0)
    assert d.genes == ("A", "B") and d.factors == pytest.approx((0.2, 2.0))
    table = pd.DataFrame(
        {
            "drug_id": ["D1", "D1", "D2"],
            "gene": ["A", "B", "C"],
            "action": ["antagonist", None, "unknown"],
        }
    )
    drugs = drugs_from_table(table)
    assert [x.perturbation_id for x in drugs] == ["drug:D1"]  # D2 has no known direction
    assert perturb.Perturbation("x", "knockout", ("a",), (0.0,)).kind == "knockout"


def test_elasticities_match_per_target_ridge():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 6))
    z[:, 5] = 0.8 * z[:, 0] - 0.5 * z[:, 1] + rng.normal(0, 0.1, 200)
    sources, targets = np.array([0, 1, 2, 0, 3]), np.array([5, 5, 5, 4, 4])
    w = fit_elasticities(z, sources, targets, 6, alpha=0.01).toarray()
    zc = z - z.mean(0)
    for t, srcs in ((5, [0, 1, 2]), (4, [0, 3])):
        x = zc[:, srcs]
        beta = np.linalg.solve(x.T @ x / 200 + 0.01 * np.eye(len(srcs)), x.T @ zc[:, t] / 200)
        np.testing.assert_allclose(w[srcs, t], beta, atol=1e-10)
    assert w[0, 5] == pytest.approx(0.8, abs=0.05)


def toy_twin():
    """Two cell types, two time points: S's ligand L drives R's receptor Rc, which drives T."""
    genes = ["TF", "L", "Rc", "T", "X"]
    w_s = sparse.csr_matrix(([0.9], ([0], [1])), shape=(5, 5))  # TF -> L in the sender
    w_r = sparse.csr_matrix(([0.7], ([2], [3])), shape=(5, 5))  # Rc -> T in the receiver
    control = np.ones((2, 2, 5))
    case = control.copy()
    case[:, 0, [0, 1]] = 2.0  # TF and L up in the sender
    case[:, 1, [2, 3]] = 1.8  # receiver responds
    return Twin(
        genes=genes,
        cell_types=["S", "R"],
        times=[0.0, 1.0],
        states={"case": case, "control": control},
        donors={},
        intracellular=[[w_s, w_r], [w_s, w_r]],
        temporal=[[None, None], [None, None]],
        intercellular=pd.DataFrame(
            {
                "time_index": [0, 1],
                "sender": [0, 0],
                "ligand": [1, 1],
                "receiver": [1, 1],
                "receptor": [2, 2],
                "kappa": [1.0, 1.0],
            }
        ),
    )


def toy_twin_with_donors(n_case: int = 4, n_control: int = 3, seed: int = 0):
    """The toy twin with donors: case and control states plus donor noise."""
    twin = toy_twin()
    rng = np.random.default_rng(seed)
    twin.donors = {f"P{i}": "case" for i in range(n_case)}
    twin.donors.update({f"C{i}": "control" for i in range(n_control)})
    for donor, arm in twin.donors.items():
        base = twin.states[arm]
        twin.states[donor] = np.maximum(base + rng.normal(0, 0.2, base.shape), 0.01)
    return twin


def test_twin_propagates_across_cell_types_and_scores():
    twin = toy_twin()
    summary, per_context, delta = run_perturbations(
        twin, [knockout("TF"), knockout("X")], keep_delta=True, n_steps=3
    )
    ko_tf = delta[0]
    assert ko_tf[0, 0, 1] == pytest.approx(0.9 * (0 - 2.0))  # L falls in the sender
    assert ko_tf[0, 1, 2] == pytest.approx(0.9 * -2.0)  # the receptor follows the ligand
    assert ko_tf[0, 1, 3] == pytest.approx(0.7 * 0.9 * -2.0)  # and its target in the receiver
    tf, x = summary.set_index("perturbation_id").loc[["KO:TF", "KO:X"], "score"]
    assert tf > 0.5 and x == 0.0  # X has no edges: no effect on anything else
    assert set(per_context["cell_type"]) == {"S", "R"} and len(per_context) == 2 * 2 * 2
    only_r, _, _ = run_perturbations(twin, [knockout("TF")], cell_types=["R"])
    assert only_r["score"].iloc[0] == pytest.approx(0.0)  # TF acts in S only
    with pytest.raises(errors.ParameterError, match="unknown twin state"):
        run_perturbations(twin, [knockout("TF")], state="P99")


def test_screens_on_the_toy_twin():
    from omicstwin.tl.twin import disease_gene_screen, target_screen

    twin = toy_twin()
    ranking, per_context = target_screen(twin, seed=0)
    assert ranking.iloc[0]["name"] == "KO:TF" and list(ranking["rank"]) == [1, 2, 3]
    assert ranking["p_value"].isna().all()  # no donors: no permutation null
    ranking, _ = target_screen(toy_twin_with_donors(), seed=0)
    assert ranking.iloc[0]["name"] == "KO:TF" and ranking.attrs["null"]["exhaustive"]
    assert ranking.attrs["null"]["n_permutations"] == 34  # C(7, 4) - 1 relabellings
    assert ranking["p_value"].between(0, 1).all() and ranking["q_value"].notna().all()
    assert ranking["p_value"].iloc[0] == pytest.approx(1 / 35)  # the planted driver
    assert set(per_context.columns) >= {"perturbation_id", "cell_type", "time", "reversal_score"}
    induction = disease_gene_screen(twin)
    assert induction.iloc[0]["name"] in {"TF", "L"} and induction.iloc[0]["score"] > 0


def test_randomised_twin_preserves_degrees():
    from omicstwin.tl.twin import randomised

    w = random_network(50, density=0.1)
    twin = toy_twin()
    twin.intracellular = [[w, w], [w, w]]
    twin.genes = [f"g{i}" for i in range(50)]
    null = randomised(twin, seed=1).intracellular[0][0]
    assert null.nnz <= w.nnz and null.diagonal().sum() == 0
    # out-degrees are kept exactly (up to dropped self-loops)
    assert np.all(np.diff(null.indptr) <= np.diff(w.indptr))


def test_screen_identical_in_process_and_on_dask_workers():
    from distributed import Client, LocalCluster

    from omicstwin.tl.twin import target_screen

    twin = toy_twin_with_donors(6, 6)
    local = target_screen(twin, n_permutations=50, batch_size=1, seed=3)
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, processes=False, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                remote = target_screen(twin, n_permutations=50, batch_size=1, seed=3, client=client)
        pd.testing.assert_frame_equal(local[0], remote[0])
        pd.testing.assert_frame_equal(
            local[1].reset_index(drop=True), remote[1].reset_index(drop=True)
        )


def test_what_if_and_save_load_round_trip(tmp_path):
    from omicstwin.tl.twin import load_twin, save_twin, what_if

    twin = toy_twin()
    save_twin(twin, tmp_path / "twin")
    again = load_twin(tmp_path / "twin")
    first = what_if(twin, [knockout("TF"), combination(knockout("TF"), knockout("Rc"))])
    second = what_if(again, [knockout("TF"), combination(knockout("TF"), knockout("Rc"))])
    pd.testing.assert_frame_equal(first[0], second[0])
    pd.testing.assert_frame_equal(first[1], second[1])
    changes = first[1]
    assert set(changes.columns) == {
        "perturbation_id",
        "cell_type",
        "time",
        "gene",
        "z_before",
        "z_after",
        "delta",
    }
    receiver = changes[(changes["perturbation_id"] == "KO:TF") & (changes["cell_type"] == "R")]
    # systemic: TF is knocked out there too, and the signal reaches the receptor and its target
    assert set(receiver["gene"]) == {"TF", "Rc", "T"}
    with pytest.raises(errors.DataFileError, match=r"meta\.json"):
        load_twin(tmp_path)


def test_drug_actions():
    from omicstwin.tl.perturb import action_direction

    assert action_direction("inhibitor|substrate") == "down"
    assert action_direction("positive allosteric modulator|potentiator") == "up"
    assert action_direction("inducer|inhibitor") is None and action_direction("") is None


def test_drug_target_table_from_hetionet():
    from omicstwin.io.resources import drug_target_table

    table = drug_target_table()
    assert {"drug_id", "drug_name", "gene", "action", "license"} <= set(table.columns)
    assert table["gene"].notna().all() and len(table) > 10000
    assert len(drugs_from_table(table)) > 1000


def test_screen_identical_on_worker_processes():
    from omicstwin.parallel import resolve_client
    from omicstwin.tl.twin import target_screen

    twin = toy_twin_with_donors(6, 6)
    local = target_screen(twin, n_permutations=50, batch_size=1, seed=5)
    with resolve_client(n_workers=2) as client:  # real processes: pickled, single-threaded BLAS
        remote = target_screen(twin, n_permutations=50, batch_size=1, seed=5, client=client)
    pd.testing.assert_frame_equal(local[0], remote[0], check_exact=True)
