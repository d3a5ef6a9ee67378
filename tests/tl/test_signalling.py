"""Signed personalised-PageRank priors against networkx, a hand computation and a slow loop."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin.errors import MissingKeyError, ParameterError
from omicstwin.tl import signalling as sig


def _random_digraph(seed: int, n: int = 14) -> nx.DiGraph:
    rng = np.random.default_rng(seed)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    for u in range(n - 3):  # the last three nodes are dangling (no out-edges)
        for v in rng.choice(n, size=3, replace=False):
            if u != v:
                graph.add_edge(u, int(v), weight=float(rng.uniform(0.5, 2.0)))
    return graph


@pytest.mark.parametrize("damping", [0.5, 0.85])
def test_pagerank_matches_networkx_for_many_seed_sets_with_dangling_nodes(damping):
    graph = _random_digraph(seed=3)
    n = graph.number_of_nodes()
    adjacency = nx.to_scipy_sparse_array(graph, nodelist=range(n), weight="weight")
    rng = np.random.default_rng(0)
    seeds = np.zeros((n, 4))
    seeds[[0, 5], 0] = [1.0, 3.0]
    seeds[12, 1] = 1.0  # a dangling seed
    seeds[:, 2] = rng.uniform(size=n)
    seeds[[1, 2, 13], 3] = 1.0
    ours = sig.personalised_pagerank(adjacency, seeds, damping=damping, tol=1e-13)
    for column in range(seeds.shape[1]):
        personalization = {i: seeds[i, column] for i in range(n) if seeds[i, column] > 0}
        expected = nx.pagerank(
            graph, alpha=damping, personalization=personalization, tol=1e-14, max_iter=10_000
        )
        np.testing.assert_allclose(ours[:, column], [expected[i] for i in range(n)], atol=1e-9)
    np.testing.assert_allclose(ours.sum(axis=0), 1.0)
    one = sig.personalised_pagerank(adjacency, seeds[:, 0], damping=damping, tol=1e-13)
    np.testing.assert_allclose(one, ours[:, 0])


def test_pagerank_rejects_bad_input():
    adjacency = sparse.csr_array(np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ParameterError, match="damping"):
        sig.personalised_pagerank(adjacency, [1.0, 0.0], damping=1.0)
    with pytest.raises(ParameterError, match="seed set 0 has no weight"):
        sig.personalised_pagerank(adjacency, [0.0, 0.0])
    with pytest.raises(ParameterError, match="one seed row per node"):
        sig.personalised_pagerank(adjacency, [1.0, 0.0, 0.0])
    with pytest.raises(ParameterError, match="negative"):
        sig.personalised_pagerank(-adjacency, [1.0, 0.0])
    with pytest.raises(ParameterError, match="did not converge"):
        sig.personalised_pagerank(adjacency, [1.0, 1.0], max_iter=1, tol=0.0)


def test_signed_lift_by_hand():
    # R -(+)-> K -(-)-> T, T dangling. With damping d the walk from R+ goes R+ -> K+ -> T- and
    # T- sends its mass back to R+: x_R = (1-d)/(1-d^3), x_K = d x_R, x_T = d^2 x_R (all on T-).
    signalling = pd.DataFrame({"source": ["R", "K"], "target": ["K", "T"], "sign": [1, -1]})
    adjacency, nodes = sig.signed_lift(signalling)
    assert list(nodes) == ["K", "R", "T"]
    dense = adjacency.toarray()
    k, r, t, n = 0, 1, 2, 3
    expected = np.zeros((6, 6))
    expected[r, k] = expected[r + n, k + n] = 1  # activation keeps the copy
    expected[k, t + n] = expected[k + n, t] = 1  # inhibition swaps it
    np.testing.assert_array_equal(dense, expected)
    seeds = np.zeros(6)
    seeds[r] = 1.0
    mass = sig.personalised_pagerank(adjacency, seeds, damping=0.5, tol=1e-14)
    x_r = 0.5 / (1 - 0.5**3)
    np.testing.assert_allclose(mass[[r, k, t + n]], [x_r, x_r / 2, x_r / 4])
    assert mass[[r + n, k + n, t]].sum() == 0
    # T is inhibited, so g (repressed by T) goes up and h (activated by T) goes down, each with
    # weight x_T
    tf_targets = pd.DataFrame({"source": ["T", "T"], "target": ["g", "h"], "weight": [-1, 1]})
    lr = pd.DataFrame({"ligand": ["L"], "receptor": ["R"]})
    prior = sig.ligand_target_prior(
        lr, signalling, tf_targets, damping=0.5, signal_quantile=0, max_targets=None
    )
    assert list(prior["target"]) == ["g", "h"]
    np.testing.assert_allclose(prior["weight"], [x_r / 4, x_r / 4])
    assert list(prior["sign"]) == [1, -1]


def test_lift_lumps_onto_the_unsigned_pagerank():
    graph = _random_digraph(seed=7, n=12)
    rng = np.random.default_rng(1)
    edges = pd.DataFrame(
        [(f"g{u}", f"g{v}", int(rng.choice([1, -1]))) for u, v in graph.edges],
        columns=["source", "target", "sign"],
    )
    adjacency, nodes = sig.signed_lift(edges)
    seeds = np.zeros(2 * len(nodes))
    seeds[nodes.get_loc("g0")] = 1.0
    lifted = sig.personalised_pagerank(adjacency, seeds, tol=1e-14)
    unsigned = nx.DiGraph((s, t) for s, t in zip(edges["source"], edges["target"], strict=True))
    unsigned.add_nodes_from(nodes)
    expected = nx.pagerank(unsigned, alpha=0.5, personalization={"g0": 1}, tol=1e-14)
    n = len(nodes)
    np.testing.assert_allclose(lifted[:n] + lifted[n:], [expected[g] for g in nodes], atol=1e-10)


# --- the vectorised prior against a per-ligand networkx loop ----------------------------------

LR = pd.DataFrame(
    {
        "ligand": ["L1", "L1", "L2", "L3_L4", "L5", "L6"],
        "receptor": ["R1", "R2_R3", "R2_R3", "R4", "R9", "R1"],
    }
)
SIGNALLING = pd.DataFrame(
    [
        ("R1", "K1", 1),
        ("R2", "K1", -1),
        ("R3", "K2", 1),
        ("K1", "TF1", 1),
        ("K1", "TF2", -1),
        ("K2", "TF2", 1),
        ("K2", "TF2", -1),  # a pair with both signs
        ("R4", "K2_K3", 1),  # a complex node
        ("K3", "TF3", -1),
        ("TF1", "K1", 1),
        ("TF2", "R1", 1),
        ("K2", "FOS", 1),
    ],
    columns=["source", "target", "sign"],
)
TF_TARGETS = pd.DataFrame(
    [
        ("TF1", "a", 1),
        ("TF1", "b", -1),
        ("TF2", "b", 1),
        ("TF2", "c", 1),
        ("TF3", "c", -1),
        ("TF3", "d", 1),
        ("AP1", "e", 1),  # a CollecTRI complex: FOS stands for it
        ("TF9", "f", 1),  # outside the graph
    ],
    columns=["source", "target", "weight"],
)


def _slow_prior(lr, signalling, tf_targets, *, damping, signal_quantile, max_targets):
    """Per ligand: an explicit lifted networkx graph, nx.pagerank, and loops over regulons."""
    edges = set()
    for s, t, sign in signalling.itertuples(index=False):
        for a in s.split("_"):
            for b in t.split("_"):
                if a != b:
                    edges.add((a, b, sign))
    lifted = nx.DiGraph()
    nodes = sorted({a for a, _, _ in edges} | {b for _, b, _ in edges})
    lifted.add_nodes_from((g, c) for g in nodes for c in "+-")
    for a, b, sign in edges:
        flip = {"+": "-", "-": "+"}
        for c in "+-":
            lifted.add_edge((a, c), (b, c if sign > 0 else flip[c]))
    regulons = []
    for tf, target, weight in tf_targets.itertuples(index=False):
        for unit in sig.COLLECTRI_COMPLEXES.get(tf, (tf,)):
            regulons.append((unit, target, weight))
    ligands = {}
    for ligand, receptor in lr.itertuples(index=False):
        units = receptor.split("_")
        for lig in ligand.split("_"):
            for unit in units:
                ligands.setdefault(lig, {}).setdefault(unit, 0.0)
                ligands[lig][unit] += 1 / len(units)
    rows = []
    for ligand, seeds in sorted(ligands.items()):
        seeds = {(g, "+"): w for g, w in seeds.items() if g in nodes}
        if not seeds:
            continue
        rank = nx.pagerank(lifted, alpha=damping, personalization=seeds, tol=1e-14, max_iter=10**4)
        total = {g: rank[(g, "+")] + rank[(g, "-")] for g in nodes}
        cut = np.quantile(list(total.values()), signal_quantile)
        up, down = {}, {}
        for tf, target, weight in regulons:
            if tf not in total or total[tf] < cut:
                continue
            plus, minus = rank[(tf, "+")], rank[(tf, "-")]
            same, other = (plus, minus) if weight > 0 else (minus, plus)
            up[target] = up.get(target, 0.0) + abs(weight) * same
            down[target] = down.get(target, 0.0) + abs(weight) * other
        scored = [
            (ligand, t, up[t] + down[t], 1 if up[t] >= down[t] else -1)
            for t in up
            if up[t] + down[t] > 0 and t != ligand
        ]
        scored.sort(key=lambda row: (-row[2], row[1]))
        rows += scored[:max_targets]
    return pd.DataFrame(rows, columns=["ligand", "target", "weight", "sign"])


@pytest.mark.parametrize(("signal_quantile", "max_targets"), [(0.0, None), (0.6, 2)])
def test_ligand_prior_matches_the_slow_per_ligand_loop(signal_quantile, max_targets):
    params = {"damping": 0.5, "signal_quantile": signal_quantile, "max_targets": max_targets}
    ours = sig.ligand_target_prior(LR, SIGNALLING, TF_TARGETS, **params)
    slow = _slow_prior(LR, SIGNALLING, TF_TARGETS, **params)
    assert set(ours["ligand"]) == set(slow["ligand"])
    assert "L5" not in set(ours["ligand"])  # its receptor is outside the graph
    pd.testing.assert_frame_equal(
        ours[["ligand", "target"]].astype(str), slow[["ligand", "target"]].astype(str)
    )
    np.testing.assert_allclose(ours["weight"], slow["weight"], rtol=1e-8)
    np.testing.assert_array_equal(ours["sign"], slow["sign"])
    assert set(ours["ligand"]) >= {"L3", "L4"}  # a ligand complex gives each subunit its seeds


def test_receptor_prior_is_seeded_at_each_receptor_subunit():
    ours = sig.receptor_target_prior(LR, SIGNALLING, TF_TARGETS, signal_quantile=0)
    single = pd.DataFrame({"ligand": ["R2", "R3", "R1"], "receptor": ["R2", "R3", "R1"]})
    slow = _slow_prior(
        single, SIGNALLING, TF_TARGETS, damping=0.5, signal_quantile=0, max_targets=250
    )
    assert set(ours["receptor"]) == {"R1", "R2", "R3", "R4"}  # R9 is not in the graph
    mine = ours[ours["receptor"].isin(["R1", "R2", "R3"])].reset_index(drop=True)
    np.testing.assert_allclose(mine["weight"], slow["weight"], rtol=1e-8)
    assert list(mine["target"]) == list(slow["target"])
    assert list(mine["sign"]) == list(slow["sign"])
    # R2 inhibits K1, which activates TF1 (a up, b down): R2 sends a down and b up
    r2 = ours[ours["receptor"] == "R2"].set_index("target")["sign"]
    assert r2["a"] == -1


def test_prior_input_errors_name_the_problem():
    with pytest.raises(MissingKeyError, match=r"ligand-receptor table lacks.*'receptor'"):
        sig.ligand_target_prior(LR[["ligand"]], SIGNALLING, TF_TARGETS)
    with pytest.raises(ParameterError, match="sign '0' is not"):
        sig.ligand_target_prior(LR, SIGNALLING.assign(sign=0), TF_TARGETS)
    with pytest.raises(ParameterError, match="signal_quantile"):
        sig.ligand_target_prior(LR, SIGNALLING, TF_TARGETS, signal_quantile=1.0)


def test_regulator_types_precedence():
    lr = pd.DataFrame(
        {
            "ligand": ["TNF", "CD58", "EGF", "HORMONE"],
            "receptor": ["TNFRSF1A", "CD2", "EGFR", "NR3C1"],
        }
    )
    lr = pd.concat([lr, pd.DataFrame({"ligand": ["CD2"], "receptor": ["CD58"]})])
    types = sig.regulator_types(
        ["NR3C1", "STAT1", "TNF"], lr, ["EGFR", "JAK1", "STAT1"], genes=["ACTB", "JAK1"]
    )
    kind = dict(zip(types["gene"], types["regulator_type"], strict=True))
    assert kind["TNF"] == "ligand"  # ligand beats tf (and cytokine is ligand)
    assert kind["CD2"] == kind["CD58"] == "ligand"  # ligand beats receptor
    assert kind["NR3C1"] == "tf"  # tf beats receptor
    assert kind["EGFR"] == "receptor"  # receptor beats kinase
    assert kind["STAT1"] == "tf"  # tf beats kinase
    assert kind["JAK1"] == "kinase" and kind["ACTB"] == "other"
    assert list(types["gene"]) == sorted(kind)


def test_regulator_prior_keeps_each_regulators_own_programme_scaled_and_signed():
    types = pd.DataFrame(
        {"gene": ["TF1", "L1", "R1", "CO"], "regulator_type": ["tf", "ligand", "receptor", "other"]}
    )
    tf_targets = pd.DataFrame(
        {
            "source": ["TF1", "L1", "CO", "NFKB"],
            "target": ["a", "b", "c", "d"],
            "weight": [1, 1, -1, 1],
        }
    )
    ligand = pd.DataFrame(
        {
            "ligand": ["L1", "L1", "TF1"],
            "target": ["a", "b", "x"],
            "weight": [0.2, 0.1, 0.5],
            "sign": [1, -1, 1],
        }
    )
    receptor = pd.DataFrame({"receptor": ["R1"], "target": ["a"], "weight": [0.05], "sign": [-1]})
    prior = sig.regulator_prior(tf_targets, ligand, receptor, types)
    got = {(s, t): (w, k) for s, t, w, k in prior.itertuples(index=False)}
    assert got == {
        ("CO", "c"): (-1.0, "other"),
        ("L1", "a"): (1.0, "ligand"),
        ("L1", "b"): (-0.5, "ligand"),
        ("NFKB", "d"): (1.0, "tf"),
        ("R1", "a"): (-1.0, "receptor"),
        ("TF1", "a"): (1.0, "tf"),
    }
    assert list(prior.columns) == ["source", "target", "weight", "regulator_type"]
