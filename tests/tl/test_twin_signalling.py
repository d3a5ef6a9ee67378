"""The twin's intercellular signalling: edge null, gains, programmes, blocking, one ranking."""

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin import errors
from omicstwin.io import load_table
from omicstwin.tl.perturb import (
    blocking_antibody,
    combination,
    drug,
    knockout,
    overexpression,
)
from omicstwin.tl.twin import (
    Twin,
    estimate_gains,
    fit_twin,
    ligand_programmes,
    load_twin,
    run_perturbations,
    save_twin,
    shrunk_slope,
    target_screen,
)


@pytest.fixture(scope="module")
def inter(small_cohort):
    from omicstwin.tl.networks import intercellular_edges

    return intercellular_edges(
        small_cohort, load_table("liana_consensus"), n_permutations=40, seed=3, key_added=None
    )


def _slow_edge_statistic(levels, labels, sender, receiver, time, later, pair):
    """lfc x max(r, 0) for one pair and one labelling, by a loop over donors (np.corrcoef)."""
    keys = levels.donor_keys
    case = {d for d, is_case in labels.items() if is_case}

    def rows(cell_type, t):
        here = keys[(keys["cell_type"] == cell_type) & (keys["time"] == t)]
        return {d: i for d, i in zip(here["donor"], here.index, strict=True) if d in labels}

    s_rows, r_rows = rows(sender, time), rows(receiver, later)
    lig = {d: levels.donor_lig[i, pair] for d, i in s_rows.items()}
    s_case = [lig[d] for d in lig if d in case]
    s_ctrl = [lig[d] for d in lig if d not in case]
    if not s_case or not s_ctrl:
        return 0.0
    lfc = (np.mean(s_case) - np.mean(s_ctrl)) / np.log(2)
    x = {d: levels.donor_mean[i] for d, i in r_rows.items()}
    x_case = [x[d] for d in x if d in case]
    x_ctrl = [x[d] for d in x if d not in case]
    if not x_case or not x_ctrl:
        return 0.0
    control_mean = np.mean(x_ctrl, axis=0)
    axis = np.mean(x_case, axis=0) - control_mean
    both = [d for d in sorted(case) if d in s_rows and d in r_rows]
    if len(both) < 3 or np.linalg.norm(axis) == 0:
        return 0.0
    a = np.array([lig[d] for d in both])
    b = np.array([(x[d] - control_mean) @ axis / np.linalg.norm(axis) for d in both])
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return lfc * max(np.corrcoef(a, b)[0, 1], 0.0)


def test_edge_permutation_p_matches_a_donor_loop(small_cohort, inter):
    from omicstwin.pp.cohort import as_cohort
    from omicstwin.tl import networks
    from omicstwin.tl.nulls import study_labellings

    cohort = as_cohort(small_cohort, {})
    pairs = networks._split_complexes(load_table("liana_consensus"), cohort.genes)
    levels = networks._PairLevels.of(cohort, pairs)
    arm = levels.donor_keys.groupby("donor", observed=True)["condition"].first().sort_index()
    labellings, exhaustive = study_labellings((arm == "case").to_numpy(), 40, 3)
    assert exhaustive and labellings.shape[0] == 35  # 4 + 3 donors: every relabelling
    times = sorted(small_cohort.obs["time"].unique())
    rng = np.random.default_rng(0)
    tested = inter[inter["weight"] > 0]
    chosen = tested.iloc[rng.choice(len(tested), 20, replace=False)]
    index = {
        (lg, rc): i
        for i, (lg, rc) in enumerate(zip(pairs["ligand"], pairs["receptor"], strict=True))
    }
    for row in chosen.itertuples():
        later = times[min(times.index(row.time_from) + 1, len(times) - 1)]
        pair = index[(row.source, row.target)]
        stats = [
            _slow_edge_statistic(
                levels,
                dict(zip(arm.index, labels, strict=True)),
                row.source_cell_type,
                row.target_cell_type,
                row.time_from,
                later,
                pair,
            )
            for labels in labellings
        ]
        tol = 1e-9 * max(abs(stats[0]), 1e-12)
        expected = (1 + sum(s >= stats[0] - tol for s in stats[1:])) / len(stats)
        assert row.p_value == pytest.approx(expected), row
    assert tested["p_value"].between(1 / 35, 1).all()
    assert inter.loc[inter["weight"] <= 0, "p_value"].isna().all()  # not candidates: untested
    from omicstwin._stats import benjamini_hochberg

    np.testing.assert_allclose(inter["q_value"], benjamini_hochberg(inter["p_value"].to_numpy()))


def test_shrunk_slope_matches_statsmodels_ols():
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    for effect in (0.0, 0.3, 2.0):
        group = np.repeat(np.arange(4), 9)
        x = rng.normal(size=group.size) + group
        a = rng.normal(size=group.size) + 0.5 * x
        y = effect * x + 0.7 * a + rng.normal(size=group.size) + 3 * group
        dummies = (group[:, None] == np.arange(4)).astype(float)
        for covariate in (None, a):
            extra = [] if covariate is None else [covariate]
            fit = sm.OLS(y, np.column_stack([x, *extra, dummies])).fit()
            slope, t = fit.params[0], fit.tvalues[0]
            expected = slope * max(0.0, 1 - 1 / t**2)
            got = shrunk_slope(x, y, group, covariate=covariate)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert shrunk_slope(np.ones(5), np.arange(5.0), np.zeros(5, int)) == 0.0  # no variation
    assert shrunk_slope(np.zeros(0), np.zeros(0), np.zeros(0, int)) == 0.0


def _programme_twin(gain: float = 0.5) -> Twin:
    """S's ligand L reaches R's receptor Rc at t0; L's programme in R is T1 (+) and T2 (-)."""
    genes = ["L", "Rc", "T1", "T2", "TF"]
    w = sparse.csr_matrix(([0.6], ([2], [4])), shape=(5, 5))  # T1 -> TF inside each cell type
    control = np.ones((2, 2, 5))
    case = control.copy()
    case[:, 0, 0] = 2.0
    prior = pd.DataFrame(
        {"ligand": ["L", "L", "L"], "target": ["T1", "T2", "ABSENT"], "weight": 1.0, "sign": 1}
    )
    prior.loc[1, "sign"] = -1
    return Twin(
        genes=genes,
        cell_types=["S", "R"],
        times=[0.0, 1.0],
        states={"case": case, "control": control},
        donors={},
        intracellular=[[w, w], [w, w]],
        temporal=[[None, None], [None, None]],
        intercellular=pd.DataFrame(
            {
                "time_index": [0],
                "sender": [0],
                "ligand": [0],
                "receiver": [1],
                "receptor": [1],
                "kappa": [1.0],
                "gain": [gain],
            }
        ),
        params={"intercellular_model": "programme"},
        programmes=ligand_programmes(prior, genes),
    )


def test_programme_signal_and_its_blocking():
    twin = _programme_twin()
    programme = twin.programmes.set_index("target")["weight"]
    assert programme.loc[2] == pytest.approx(1 / np.sqrt(2))  # unit norm, signed
    assert programme.loc[3] == pytest.approx(-1 / np.sqrt(2))
    up = overexpression("L", 3.0)
    perts = [
        up,
        knockout("Rc"),
        combination(up, knockout("Rc")),
        blocking_antibody("L"),
        combination(up, blocking_antibody("L")),
    ]
    _, _, delta = run_perturbations(twin, perts, state="case", keep_delta=True, n_steps=3)
    receiver_next = delta[:, 1, 1]  # the receiver at t1, after the signal of t0
    z = twin.states["case"]
    d_ligand = np.log1p(3.0 * np.expm1(z[0, 0, 0])) - z[0, 0, 0]
    expected = 0.5 * d_ligand * z[0, 1, 1] / np.sqrt(2)  # gain x d(L x A) x w
    assert receiver_next[0, 2] == pytest.approx(expected)
    assert receiver_next[0, 3] == pytest.approx(-expected)
    assert receiver_next[0, 4] == pytest.approx(0.6 * expected)  # spreads in the receiver
    assert np.all(delta[0, 0, 1, 2:] == 0)  # no signal within the same time point
    # the ligand's own effect vanishes under the receptor knockout and under the antibody
    np.testing.assert_allclose(receiver_next[2, 2:], receiver_next[1, 2:], atol=1e-12)
    np.testing.assert_allclose(receiver_next[4, 2:], receiver_next[3, 2:], atol=1e-12)
    assert abs(receiver_next[1, 2]) > 0  # a receptor knockout removes the baseline signal
    # the antibody leaves the ligand's expression alone; the knockout clamps the receptor
    assert delta[3, 0, 0, 0] == 0.0 and delta[1, 0, 1, 1] == pytest.approx(-z[0, 1, 1])
    with pytest.raises(errors.ParameterError, match="unknown gene"):
        run_perturbations(twin, [blocking_antibody("NOPE")])


def test_drug_with_a_blocking_action_blocks_without_moving_expression():
    anti = drug("mab", {"L": "neutralizing antibody", "Rc": "inhibitor"}, dose=0.9)
    assert anti.genes == ("Rc",) and anti.blocks == (("L", pytest.approx(0.1)),)
    only = drug("mab2", {"L": "Neutralizing Antibody"})
    assert only.genes == () and only.blocks[0][0] == "L"
    with pytest.raises(errors.ParameterError):
        blocking_antibody("L", dose=1.5)


def test_estimate_gains_recovers_a_planted_gain():
    rng = np.random.default_rng(0)
    genes, n_donors = 4, 30
    states = {}
    for k in range(n_donors):
        z = rng.uniform(0.5, 1.5, size=(3, 2, genes))
        states[f"d{k}"] = z
    # programme of ligand 0 in receiver 1: gene 2 (+) and gene 3 (-), driven by L x A one step on
    for z in states.values():
        for t in range(2):
            signal = z[t, 0, 0] * z[t, 1, 1]
            z[t + 1, 1, 2] = 1 + 0.8 * signal / np.sqrt(2) + rng.normal(0, 0.01)
            z[t + 1, 1, 3] = 1 - 0.8 * signal / np.sqrt(2) + rng.normal(0, 0.01)
    prior = pd.DataFrame({"ligand": ["g0", "g0"], "target": ["g2", "g3"], "weight": 1.0})
    prior["sign"] = [1, -1]
    programmes = ligand_programmes(prior, [f"g{i}" for i in range(genes)])
    coupling = pd.DataFrame(
        {"time_index": [0, 1], "sender": 0, "ligand": 0, "receiver": 1, "receptor": 1}
    )
    gains = estimate_gains(states, sorted(states), coupling, programmes)
    assert gains["gain"].to_numpy() == pytest.approx([0.8, 0.8], abs=0.02)
    assert (gains["receptor_gain"] == 0).all()  # no intracellular network given
    # the receptor's own programme: receiver 1's network has receptor 1 -> gene 2
    w = sparse.csr_matrix(([0.5], ([1], [2])), shape=(genes, genes))
    grid = [[None, w], [None, w], [None, w]]
    gains = estimate_gains(states, sorted(states), coupling, programmes, grid)
    assert gains["receptor_gain"].to_numpy() == pytest.approx([0.8 / np.sqrt(2)] * 2, abs=0.02)
    with pytest.raises(errors.MissingKeyError, match="sign"):
        ligand_programmes(prior.drop(columns="sign"), ["g0"])


@pytest.fixture(scope="module")
def small_edges(small_cohort, inter):
    from omicstwin.tl.networks import multicellular_network, temporal_edges

    roles = small_cohort.uns["truth"]["genes"]
    # candidate regulators as the pipeline's: TFs and receptors
    tfs = roles.query("role in ('tf', 'receptor')")["gene"].tolist()
    temporal = temporal_edges(small_cohort, regulators=tfs, n_bootstrap=2, key_added=None)
    return multicellular_network(inter, temporal), tfs


def _hand_prior(genes):
    """A small ligand -> target prior made in the test: every ligand of LIANA -> 5 genes."""
    lr = load_table("liana_consensus")
    ligands = sorted(set(lr["ligand"]) & set(genes))
    rng = np.random.default_rng(0)
    rows = [
        (lg, t, 1.0, int(rng.choice([-1, 1])))
        for lg in ligands
        for t in rng.choice(sorted(genes), 5, replace=False)
    ]
    return pd.DataFrame(rows, columns=["ligand", "target", "weight", "sign"])


def test_fit_twin_programme_model_end_to_end(small_cohort, small_edges, tmp_path, caplog):
    edges, tfs = small_edges
    genes = list(small_cohort.var_names)
    twin = fit_twin(
        small_cohort,
        edges,
        regulators=tfs,
        ligand_targets=_hand_prior(genes),
        intercellular_model="programme",
        lr_selection="evidence",
        key_added=None,
    )
    ic = twin.intercellular
    assert twin.params["intercellular_model"] == "programme"
    inter = edges[(edges["layer"] == "intercellular") & (edges["weight"] > 0)]
    assert 0 < len(ic) <= 50 * inter["time_from"].nunique()
    # evidence first: no kept edge has a larger p than a dropped one of its time point
    times = sorted(small_cohort.obs["time"].unique())
    names, types = np.array(twin.genes), np.array(twin.cell_types)
    for t, block in inter.groupby("time_from"):
        mine = ic[ic["time_index"] == times.index(t)]
        assert len(mine) == min(50, len(block))
        kept = set(
            zip(
                types[mine["sender"]],
                names[mine["ligand"]],
                types[mine["receiver"]],
                names[mine["receptor"]],
                strict=True,
            )
        )
        columns = ["source_cell_type", "source", "target_cell_type", "target"]
        is_kept = np.array([tuple(r) in kept for r in block[columns].itertuples(index=False)])
        if (~is_kept).any():
            assert block["p_value"][is_kept].max() <= block["p_value"][~is_kept].min()
    assert np.isfinite(ic["gain"]).all() and np.isfinite(ic["receptor_gain"]).all()
    assert (ic["receptor_gain"] != 0).any()
    ranking, _ = target_screen(twin, n_permutations=0)
    roles = dict(zip(ranking["genes"], ranking["role"], strict=True))
    receptors = {twin.genes[i] for i in ic["receptor"]}
    assert receptors <= set(roles) and {roles[g] for g in receptors} <= {"receptor", "ligand"}
    assert {"tf", "ligand", "receptor"} <= set(roles.values())
    # save and load: the same simulation
    save_twin(twin, tmp_path / "twin")
    again = load_twin(tmp_path / "twin")
    pd.testing.assert_frame_equal(again.programmes, twin.programmes)
    perts = [knockout(twin.genes[i]) for i in ic["ligand"].unique()[:3]]
    np.testing.assert_array_equal(
        run_perturbations(twin, perts, keep_delta=True)[2],
        run_perturbations(again, perts, keep_delta=True)[2],
    )
    # without the prior: a warning and the receptor model, never silently
    with caplog.at_level(logging.WARNING, logger="omicstwin"):
        fallback = fit_twin(
            small_cohort, edges, regulators=tfs, intercellular_model="programme", key_added=None
        )
    assert "no ligand -> target prior" in caplog.text
    assert fallback.params["intercellular_model"] == "receptor" and fallback.programmes is None


def test_previous_rule_is_reachable(small_cohort, small_edges):
    edges, tfs = small_edges
    previous = fit_twin(
        small_cohort,
        edges,
        regulators=tfs,
        intercellular_model="receptor",
        lr_selection="weight",
        n_intercellular=5,
        key_added=None,
    )
    inter = edges[(edges["layer"] == "intercellular") & (edges["weight"] > 0)]
    expected = inter.groupby("time_from").head(5)  # the table is sorted by weight per time
    assert len(previous.intercellular) == len(expected)
    assert (previous.intercellular["kappa"] == 1.0).all()
    cut = fit_twin(small_cohort, edges, regulators=tfs, lr_max_p=0.05, key_added=None)
    assert cut.params["intercellular_model"] == "receptor"  # the default
    assert len(cut.intercellular) <= (inter["p_value"] <= 0.05).sum()
    with pytest.raises(errors.ParameterError, match="lr_selection"):
        fit_twin(small_cohort, edges, lr_selection="nope", key_added=None)
    with pytest.raises(errors.ParameterError, match="intercellular_model"):
        fit_twin(small_cohort, edges, intercellular_model="nope", key_added=None)
    no_p = edges.drop(columns=["p_value"]).assign(p_value=np.nan)
    with pytest.raises(errors.ParameterError, match="p_value"):
        fit_twin(small_cohort, no_p, regulators=tfs, lr_selection="evidence", key_added=None)
