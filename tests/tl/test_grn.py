"""GRN inference: registry, input checks, solver vs slow reference, planted networks, CLI."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from omicstwin.bench.metrics import auprc_ratio
from omicstwin.cli import app
from omicstwin.errors import EmptyDataError, InputTypeError, ParameterError
from omicstwin.tl import grn
from omicstwin.tl.grn import GRN_METHODS, get_grn_method, infer_grn


def _planted_static(seed: int = 0, n_cells: int = 400, n_genes: int = 10):
    """Linear network: 3 sources drive the other genes (2 parents each) + noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_cells, n_genes))
    edges = []
    for j in range(3, n_genes):
        for p in rng.choice(3, 2, replace=False):
            w = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.5)
            x[:, j] += w * x[:, p]
            edges.append((f"g{p}", f"g{j}"))
    genes = [f"g{i}" for i in range(n_genes)]
    return x, genes, pd.DataFrame(edges, columns=["Gene1", "Gene2"])


def _planted_chain(seed: int = 0, n_cells: int = 600):
    """A cascade g0 -> g1 -> g2 -> g3 along pseudotime: each gene follows its parent later."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, n_cells)

    def pulse(centre):
        return 1 / (1 + np.exp(-(t - centre) / 0.05))

    x = np.column_stack([pulse(0.2 + 0.15 * i) for i in range(4)])
    x += 0.05 * rng.standard_normal(x.shape)
    genes = ["g0", "g1", "g2", "g3"]
    ref = pd.DataFrame({"Gene1": ["g0", "g1", "g2"], "Gene2": ["g1", "g2", "g3"]})
    return x, genes, t, ref


def test_registry_holds_the_required_methods():
    assert {"lagged_ridge", "ridge", "correlation", "partial_correlation", "grnboost2"} <= set(
        GRN_METHODS
    )
    assert grn.DEFAULT_METHOD in GRN_METHODS
    for name, spec in GRN_METHODS.items():
        assert spec.name == name and spec.reference and spec.description
        assert isinstance(spec.signed, bool)
    with pytest.raises(AttributeError):
        GRN_METHODS["ridge"].signed = False  # frozen


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ParameterError, match="partial_correlation"):
        get_grn_method("genie9")
    x, genes, _ = _planted_static()
    with pytest.raises(ParameterError, match="unknown GRN method"):
        infer_grn(x, genes, method="genie9")


@pytest.mark.parametrize("method", ["lagged_ridge", "ridge", "correlation", "partial_correlation"])
def test_output_contract(method):
    x, genes, _ = _planted_static()
    t = np.linspace(0, 1, x.shape[0])
    edges = infer_grn(x, genes, method=method, pseudotime=t, regulators=genes[:4])
    assert list(edges.columns) == ["source", "target", "weight", "stability"]
    assert len(edges) == 4 * 10 - 4  # regulators x genes minus self-edges
    assert (edges["source"] != edges["target"]).all()
    assert set(edges["source"]) <= set(genes[:4])
    assert np.all(np.diff(edges["weight"].abs().to_numpy()) <= 0)
    assert edges["stability"].between(0, 1).all()
    again = infer_grn(x, genes, method=method, pseudotime=t, regulators=genes[:4])
    pd.testing.assert_frame_equal(edges, again)


def test_seed_drives_the_bootstrap():
    x, genes, t, _ = _planted_chain()
    a = infer_grn(x, genes, pseudotime=t, seed=1)
    b = infer_grn(x, genes, pseudotime=t, seed=2)
    assert not np.allclose(a["weight"].to_numpy(), b["weight"].to_numpy())
    assert a["stability"].min() < 1.0  # bagged: stability is a real share
    assert (infer_grn(x, genes, pseudotime=t, n_bags=0)["stability"] == 1.0).all()


def test_default_recovers_planted_linear_network_better_than_random_and_ridge_is_close():
    ratios = {}
    for method in ("lagged_ridge", "ridge", "partial_correlation"):
        values = []
        for seed in range(3):
            x, genes, ref = _planted_static(seed)
            values.append(auprc_ratio(ref, infer_grn(x, genes, method=method)))
        ratios[method] = np.median(values)
    density = 14 / 90
    assert ratios["lagged_ridge"] > 2.0, ratios  # random is 1.0; perfect is 1 / density
    assert ratios["ridge"] > 2.0, ratios
    assert ratios["lagged_ridge"] <= 1 / density + 1e-9


def test_pseudotime_orients_a_cascade():
    x, genes, t, ref = _planted_chain()
    with_time = infer_grn(x, genes, pseudotime=t)
    without = infer_grn(x, genes, method="partial_correlation")
    weight = {
        (a, b): abs(w)
        for a, b, w in with_time[["source", "target", "weight"]].itertuples(index=False)
    }
    for a, b in zip(ref["Gene1"], ref["Gene2"], strict=True):
        assert weight[(a, b)] > weight[(b, a)], (a, b)  # the regulator leads, so it is oriented
    assert auprc_ratio(ref, with_time) > auprc_ratio(ref, without)


def _slow_ridge(design, y, alpha):
    n, p = design.shape
    return np.linalg.solve(design.T @ design / n + alpha * np.eye(p), design.T @ y / n)


@pytest.mark.parametrize("n_rows", [40, 7])  # primal and Woodbury paths
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("lagged", [False, True])
def test_all_targets_solver_matches_per_target_reference(n_rows, k, lagged):
    rng = np.random.default_rng(3)
    n_genes, regs = 6, np.array([0, 2, 3])
    current = grn._zscore(rng.standard_normal((n_rows, n_genes)))
    future = grn._zscore(current + rng.standard_normal((n_rows, n_genes))) if lagged else current
    design = grn._features(current[:, regs], k == 2)
    pos = grn._regulator_positions(regs, n_genes)
    beta = grn._ridge_all_targets(design, future, pos, k, 0.3, current if lagged else None)
    n_reg = regs.size
    for j in range(n_genes):
        cols = [f * n_reg + r for f in range(k) for r in range(n_reg) if regs[r] != j]
        x = design[:, cols]
        if lagged:  # the target's own current (linear) level is a covariate, not an edge
            x = np.column_stack([x, current[:, j]])
        expected = _slow_ridge(x, future[:, j], 0.3)[: len(cols)]
        np.testing.assert_allclose(beta[cols, j], expected, rtol=1e-8, atol=1e-10)
        own = [f * n_reg + r for f in range(k) for r in range(n_reg) if regs[r] == j]
        assert np.all(beta[own, j] == 0)


def test_prior_restricts_the_output():
    x, genes, _ = _planted_static()
    prior = pd.DataFrame({"source": ["g0", "g1"], "target": ["g5", "g6"]})
    edges = infer_grn(x, genes, method="ridge", prior=prior)
    assert set(zip(edges["source"], edges["target"], strict=True)) == {("g0", "g5"), ("g1", "g6")}
    full = infer_grn(x, genes, method="ridge").set_index(["source", "target"])["weight"]
    assert edges.set_index(["source", "target"])["weight"].equals(
        full.loc[edges.set_index(["source", "target"]).index]
    )
    with pytest.raises(ParameterError, match="source, target"):
        infer_grn(x, genes, prior=pd.DataFrame({"tf": ["g0"]}))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"expression": np.array([[1.0, np.nan, 0], [0, 1, 0], [1, 1, 0]])}, ParameterError, "NaN"),
        ({"expression": np.ones((5, 3)), "genes": ["a", "b"]}, ParameterError, "transpose"),
        ({"expression": np.ones((5, 1)), "genes": ["a"]}, EmptyDataError, ">= 2 genes"),
        ({"expression": np.ones(5), "genes": ["a"]}, InputTypeError, "2-D"),
        ({"regulators": ["a", "zz"]}, ParameterError, "zz"),
        ({"regulators": "a"}, InputTypeError, "list"),
        ({"pseudotime": np.ones(4)}, ParameterError, "one value"),
        ({"alpha_typo": 1.0}, ParameterError, "accepted"),
        ({"genes": ["a", "a", "c"]}, Exception, "unique"),
    ],
)
def test_bad_input_names_problem_and_fix(kwargs, error, match):
    call = {"expression": np.random.default_rng(0).random((6, 3)), "genes": ["a", "b", "c"]}
    call |= kwargs
    with pytest.raises(error, match=match):
        infer_grn(call.pop("expression"), call.pop("genes"), **call)


def test_grnboost2_without_arboreto_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "arboreto", None)
    x, genes, _ = _planted_static()
    with pytest.raises(ImportError, match=r"pip install 'omicstwin\[grnboost\]'"):
        infer_grn(x, genes, method="grnboost2")


def _write_beeline(tmp_path, x, genes, t):
    cells = [f"E{i}_0_{i}" for i in range(x.shape[0])]
    pd.DataFrame(x.T, index=genes, columns=cells).to_csv(tmp_path / "ExpressionData.csv")
    ptime = pd.DataFrame({"PseudoTime1": t}, index=cells)
    ptime.iloc[::7, 0] = np.nan  # off-branch cells are NA in BEELINE
    ptime.to_csv(tmp_path / "PseudoTime.csv", na_rep="NA")


def test_cli_grn_round_trip_writes_beeline_format(tmp_path):
    x, genes, t, _ = _planted_chain()
    _write_beeline(tmp_path, x, genes, t)
    (tmp_path / "regs.txt").write_text("# TFs\ng0\ng1\ng2\n")
    out = tmp_path / "out" / "rankedEdges.csv"
    args = [
        "grn",
        "--expression",
        str(tmp_path / "ExpressionData.csv"),
        "--pseudotime",
        str(tmp_path / "PseudoTime.csv"),
        "--regulators",
        str(tmp_path / "regs.txt"),
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == "Gene1\tGene2\tEdgeWeight"
    ranked = pd.read_csv(out, sep="\t")
    assert len(ranked) == 3 * 4 - 3
    assert set(ranked["Gene1"]) == {"g0", "g1", "g2"}
    assert ranked["EdgeWeight"].is_monotonic_decreasing
    # same as the kernel on the same input (NA rows included)
    ptime = pd.read_csv(tmp_path / "PseudoTime.csv", index_col=0).to_numpy()
    kernel = infer_grn(x, genes, regulators=["g0", "g1", "g2"], pseudotime=ptime, seed=3)
    top = kernel.sort_values("weight", ascending=False, kind="stable").head(3)
    assert list(ranked["Gene1"].head(3)) == list(top["source"])
    np.testing.assert_allclose(ranked["EdgeWeight"].head(3), top["weight"], rtol=1e-8)


def test_cli_grn_errors_are_one_line(tmp_path):
    x, genes, t, _ = _planted_chain()
    _write_beeline(tmp_path, x, genes, t)
    base = [
        "grn",
        "--expression",
        str(tmp_path / "ExpressionData.csv"),
        "--out",
        str(tmp_path / "r.csv"),
    ]
    result = CliRunner().invoke(app, [*base, "--method", "nope"])
    assert result.exit_code == 2
    assert "unknown GRN method 'nope'" in result.output
    result = CliRunner().invoke(
        app,
        ["grn", "--expression", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r.csv")],
    )
    assert result.exit_code == 2 and "error:" in result.output


def test_top_per_target_equals_sorting_the_full_table():
    from omicstwin.scores import top_rows

    def _top_per_target(edges, k):
        return top_rows(edges, "weight", k, table="edges", within=["target"], tie_break=["source"])

    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 12))
    genes = [f"G{i:02d}" for i in range(12)][::-1]  # name order differs from column order
    regulators = genes[:6]
    full = infer_grn(x, genes, method="ridge", regulators=regulators)
    for top in (1, 3, 6):
        pruned = infer_grn(x, genes, method="ridge", regulators=regulators, top_per_target=top)
        pd.testing.assert_frame_equal(
            _top_per_target(full, top).reset_index(drop=True),
            _top_per_target(pruned, top).reset_index(drop=True),
        )


def test_top_mask_breaks_ties_by_regulator_name_and_skips_self():
    weights = np.array([[0.5, 0.9, 0.5], [0.5, 0.1, 0.5], [0.5, 0.2, 0.7]])  # regulators x genes
    genes = ["C", "A", "B"]  # regulators are genes 0, 1, 2: names C, A, B
    mask = grn._top_mask(weights, np.array([0, 1, 2]), genes, 1)
    # target C (col 0): self excluded, A and B tie at 0.5 -> A; target A: C (0.9);
    # target B: self excluded (0.7), C and A tie at 0.5 -> A
    assert mask.tolist() == [[False, True, False], [True, False, True], [False, False, False]]
    with pytest.raises(ParameterError, match="top_per_target"):
        grn._top_mask(weights, np.array([0, 1, 2]), genes, 0)
