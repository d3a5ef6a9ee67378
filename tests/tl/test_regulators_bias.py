"""Bias-corrected activation z, universe, top-N signature, Li's rule, external tables, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omicstwin import errors
from omicstwin.tl.regulators import regulators_from_tables, upstream_regulators


def _context(genes, lfc, p, cell_type="A", time=0.0):
    q = np.clip(np.asarray(p) * 5, 0, 1)
    return pd.DataFrame(
        {
            "cell_type": cell_type,
            "time": time,
            "gene": genes,
            "log_fc": lfc,
            "p_value": p,
            "q_value": q,
        }
    )


def _skewed(seed=0, n_genes=3000, n_degs=400, share_up=0.85, n_unrelated=60, n_targets=300):
    """A DEG list 85% up, a prior 80% activating, unrelated regulators and one real one."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"g{i}" for i in range(n_genes)])
    deg = rng.choice(n_genes, n_degs, replace=False)
    lfc = rng.normal(0, 0.05, n_genes)
    lfc[deg] = np.where(rng.random(n_degs) < share_up, 1.0, -1.0)
    p = rng.uniform(0.1, 1.0, n_genes)
    p[deg] = 1e-4
    edges = []
    for r in range(n_unrelated):
        targets = rng.choice(n_genes, n_targets, replace=False)
        signs = np.where(rng.random(n_targets) < 0.8, 1, -1)
        edges += [(f"U{r}", genes[t], s) for t, s in zip(targets, signs, strict=True)]
    # the real regulator: 40 of its 60 targets are DEGs moving as its edge signs say
    real = np.concatenate([deg[:40], rng.choice(np.setdiff1d(np.arange(n_genes), deg), 20)])
    signs = np.where(np.arange(60) < 48, 1, -1)  # 80% activating
    lfc[real[:40]] = signs[:40] * 1.0
    edges += [("REAL", genes[t], s) for t, s in zip(real, signs, strict=True)]
    prior = pd.DataFrame(edges, columns=["source", "target", "weight"])
    return _context(genes, lfc, p), prior


def _permutation_z(de, prior, regulator, *, n_perm=4000, seed=1):
    """Slow reference: shuffle directions among the DEGs and signs among the regulator's edges.

    This is the null the bias-corrected z describes: the DEG list keeps its share of up genes
    (u_D) and the regulator keeps its share of activating edges (u_R), but which target gets
    which is random. For an all-activating regulator the sign shuffle does nothing and this is
    the plain direction-permutation null.
    """
    rng = np.random.default_rng(seed)
    is_deg = ((de["p_value"] < 0.05) & (de["log_fc"].abs() >= 0.25)).to_numpy()
    deg_directions = np.sign(de["log_fc"].to_numpy()[is_deg])
    deg_position = pd.Series(np.arange(is_deg.sum()), index=de["gene"].to_numpy()[is_deg])
    edges = prior[(prior["source"] == regulator) & prior["target"].isin(de["gene"])]
    signs = np.sign(edges["weight"].to_numpy(float))
    at = deg_position.reindex(edges["target"]).to_numpy()  # NaN: the target is no DEG
    hit = ~np.isnan(at)
    at = at[hit].astype(int)
    observed = float(np.sum(signs[hit] * deg_directions[at]))
    null = np.empty(n_perm)
    for b in range(n_perm):
        directions = rng.permutation(deg_directions)
        shuffled_signs = rng.permutation(signs)
        null[b] = np.sum(shuffled_signs[hit] * directions[at])
    return (observed - null.mean()) / null.std()


def test_bias_corrected_z_matches_the_permutation_reference():
    # few targets among many DEGs and many edges: permuting without replacement then differs
    # from the formula's independent draws by ~2% (finite-population correction)
    de, prior = _skewed(n_genes=20000, n_degs=1000, n_unrelated=3, n_targets=1000)
    # an all-activating regulator: here the reference is the plain direction permutation
    rng = np.random.default_rng(5)
    prior = pd.concat(
        [
            prior,
            pd.DataFrame(
                {
                    "source": "ACT",
                    "target": rng.choice(de["gene"], 1000, replace=False),
                    "weight": 1,
                }
            ),
        ]
    )
    table = upstream_regulators(de, prior).set_index("regulator")
    # (not REAL: 40 of its 60 edges hit DEGs, far from the regime where sampling without
    # replacement is close to the formula's independent draws)
    for regulator in ["U0", "U1", "U2", "ACT"]:
        reference = _permutation_z(de, prior, regulator)
        z = table.loc[regulator, "activation_z"]
        # finite-population effects of permuting without replacement: a few percent
        assert z == pytest.approx(reference, rel=0.04, abs=0.08), regulator
    # uncorrected z is far from the permutation reference for the unrelated ones
    assert (table.loc[["U0", "U1", "U2"], "activation_z_uncorrected"] > 1.0).all()


def test_skewed_lists_do_not_call_unrelated_regulators_but_call_the_real_one():
    de, prior = _skewed()
    table = upstream_regulators(de, prior, rule="li2022").set_index("regulator")
    unrelated = table.drop(index="REAL")
    u_d = 2 * 0.85 - 1
    assert len(unrelated) == 60
    # the uncorrected z would call most unrelated regulators "activated" ...
    assert (unrelated["activation_z_uncorrected"] >= 2).mean() >= 0.5
    # ... the corrected one about as often as chance, and Li's rule (p < 0.05 and |z| >= 2)
    # calls at most chance level of them, where with the uncorrected z it calls every one
    # that passes p < 0.05
    assert (unrelated["activation_z"].abs() >= 2).mean() <= 0.1
    uncorrected_calls = (unrelated["p_value"] < 0.05) & (
        unrelated["activation_z_uncorrected"].abs() >= 2
    )
    assert unrelated["predicted"].mean() <= 0.05
    assert uncorrected_calls.sum() >= 2 * max(unrelated["predicted"].sum(), 1)
    assert abs(unrelated["activation_z"].mean()) < 0.5 < u_d
    real = table.loc["REAL"]
    assert real["predicted"] and real["direction"] == "activated" and real["activation_z"] > 3


def test_no_bias_no_correction():
    de, prior = _skewed(share_up=0.5, seed=3)
    de = de.copy()
    deg = (de["p_value"] < 0.05).to_numpy()
    signs = np.where(np.arange(deg.sum()) % 2 == 0, 1.0, -1.0)  # exactly balanced list
    de.loc[deg, "log_fc"] = signs
    table = upstream_regulators(de, prior)
    assert table["activation_z"].to_numpy() == pytest.approx(
        table["activation_z_uncorrected"].to_numpy()
    )


def test_universe_choices_against_a_fisher_loop():
    rng = np.random.default_rng(2)
    genes = [f"g{i}" for i in range(80)]
    lfc = rng.choice([-1.0, 1.0], 80)
    p = np.where(np.arange(80) < 20, 1e-4, rng.uniform(0.2, 1, 80))
    de = _context(genes, lfc, p)
    prior = pd.DataFrame(
        {
            "source": ["R"] * 15 + ["L"] * 12,
            "target": [*genes[:10], "x1", "x2", "x3", "x4", "x5", *genes[30:42]],
            "weight": 1.0,
            "regulator_type": ["tf"] * 15 + ["ligand"] * 12,
        }
    )
    background = [*genes[:60], "x1", "x2"]
    for universe, pool in (
        ("tested", set(genes)),
        ("prior", set(prior["source"]) | set(prior["target"])),
        (background, set(background)),
    ):
        table = upstream_regulators(de, prior, universe=universe, min_targets=1)
        degs = {g for g, q in zip(genes, p, strict=True) if q < 0.05} & pool
        for row in table.itertuples():
            targets = set(prior.loc[prior["source"] == row.regulator, "target"]) & pool
            a = len(targets & degs)
            table_2x2 = [[a, len(targets) - a], [len(degs) - a, len(pool) - len(targets | degs)]]
            expected = stats.fisher_exact(table_2x2, alternative="greater").pvalue
            assert row.p_value == pytest.approx(expected, rel=1e-9), (universe, row.regulator)
            assert (row.n_universe, row.n_degs, row.n_prior_targets) == (
                len(pool),
                len(degs),
                len(targets),
            )
    assert set(table["regulator_type"]) == {"tf", "ligand"}


def test_deg_only_tables_need_a_background():
    de = _context([f"g{i}" for i in range(30)], np.linspace(-2, 2, 30), np.full(30, 1e-3))
    prior = pd.DataFrame({"source": "R", "target": [f"g{i}" for i in range(5)] + ["h1", "h2"]})
    with pytest.raises(errors.ParameterError, match=r"universe='prior'.*--background FILE"):
        upstream_regulators(de, prior)
    table = upstream_regulators(de, prior, universe="prior")
    assert table["n_universe"].item() == 1 + 7 + 0  # R, its 7 targets
    assert table["n_targets"].item() == 5


def test_top_n_keeps_the_best_degs_by_q_then_p():
    genes = [f"g{i}" for i in range(50)]
    p = np.array([1e-6] * 3 + [1e-3] * 7 + [0.5] * 40)
    de = _context(genes, np.ones(50), p)
    de.loc[[0, 1, 2], "q_value"] = [0.001, 0.001, 0.0001]  # ties on q broken by p, then name
    prior = pd.DataFrame({"source": "R", "target": genes[2:12]})
    table = upstream_regulators(de, prior, top_n=4)
    assert table["n_degs"].item() == 4
    # kept: g2 (q 1e-4), g0 and g1 (q 1e-3: tie, then p, then name), g3 (first by name of
    # the q 5e-3 block); R's targets g2..g11 meet two of them
    assert table["n_targets"].item() == 2
    with pytest.raises(errors.ParameterError, match="top_n"):
        upstream_regulators(de, prior, top_n=0)


def test_li2022_rule_and_molecule_types():
    de, prior = _skewed(n_unrelated=10)
    prior["regulator_type"] = np.where(prior["source"] == "REAL", "ligand", "tf")
    li = upstream_regulators(de, prior, rule="li2022")
    expected = (li["p_value"] < 0.05) & (li["activation_z"].abs() >= 2)
    assert li["predicted"].tolist() == expected.tolist()
    default = upstream_regulators(de, prior)
    assert default["predicted"].tolist() == (default["q_value"] < 0.05).tolist()
    ligands = upstream_regulators(de, prior, rule="li2022", molecule_types=["ligand"])
    assert (
        ligands["regulator"].tolist() == ["REAL"] and ligands["regulator_type"].item() == "ligand"
    )
    with pytest.raises(errors.ParameterError, match="cytokine"):
        upstream_regulators(de, prior, molecule_types=["cytokine"])
    with pytest.raises(errors.ParameterError, match="kinase"):
        upstream_regulators(de, prior, molecule_types=["kinase"])  # none in this prior
    with pytest.raises(errors.ParameterError, match="li2022"):
        upstream_regulators(de, prior, rule="ipa")


def test_q_only_tables_say_which_column_to_use():
    de, prior = _skewed(n_unrelated=2)
    de = de.assign(p_value=np.nan)
    with pytest.raises(errors.ParameterError, match="deg_column='q_value'"):
        upstream_regulators(de, prior)
    assert len(upstream_regulators(de, prior, deg_column="q_value"))


# --------------------------------------------------------------------- external tables + CLI


def _seurat_tables(tmp_path):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(60)] + ["IL4"]
    prior = pd.DataFrame(
        {
            "source": ["IL4"] * 12 + ["TBX21"] * 8,
            "target": genes[:12] + genes[40:48],
            "weight": [1] * 12 + [-1] * 8,
            "regulator_type": ["ligand"] * 12 + ["tf"] * 8,
        }
    )
    lfc_a = rng.normal(0, 0.1, 61)
    p_a = rng.uniform(0.2, 1, 61)
    lfc_a[:10], p_a[:10] = 1.5, 1e-6  # IL4's targets up in A
    # other DEGs of A go down: with every DEG up, no direction could be read (u_D = 1)
    lfc_a[20:28], p_a[20:28] = -1.5, 1e-6
    lfc_b = rng.normal(0, 0.1, 61)
    p_b = rng.uniform(0.2, 1, 61)
    lfc_b[60], p_b[60] = 2.0, 1e-5  # IL4 itself up in B
    paths = []
    for name, lfc, p in (("a", lfc_a, p_a), ("b", lfc_b, p_b)):
        table = pd.DataFrame(
            {"p_val": p, "avg_log2FC": lfc, "pct.1": 0.5, "pct.2": 0.5, "p_val_adj": p * 61},
            index=genes,
        )
        table["p_val_adj"] = table["p_val_adj"].clip(upper=1)
        path = tmp_path / f"{name}.csv"
        table.to_csv(path)
        paths.append(path)
    prior_path = tmp_path / "prior.csv"
    prior.to_csv(prior_path, index=False)
    return paths, prior_path


def test_regulators_from_tables_python(tmp_path):
    (a, b), prior = _seurat_tables(tmp_path)
    out = regulators_from_tables([f"{a}:A:3D", (b, "B", "day 3")], prior=prior)
    regulators = out["regulators"].set_index(["cell_type", "regulator"])
    assert regulators.loc[("A", "IL4"), "predicted"]
    assert regulators.loc[("A", "IL4"), "regulator_type"] == "ligand"
    assert out["mnm"][
        ["time", "source_cell_type", "target_cell_type", "regulators"]
    ].values.tolist() == [[3.0, "B", "A", "IL4"]]
    assert out["regulators"].attrs["time_unit"] == "day"
    assert set(out["rank_regulators"]["scheme"]) == {"li2022", "lilja2023"}
    assert out["centrality"].set_index("cell_type")["centrality"].to_dict() == {"A": 1.0, "B": 1.0}
    with pytest.raises(errors.ParameterError, match="time units"):
        regulators_from_tables([f"{a}:A:3D", f"{b}:B:6h"], prior=prior)
    with pytest.raises(errors.ParameterError, match="several tables"):
        regulators_from_tables([f"{a}:A:3D", f"{b}:A:3D"], prior=prior)


def test_cli_end_to_end_on_two_tables(tmp_path):
    from typer.testing import CliRunner

    from omicstwin.cli import app

    (a, b), prior = _seurat_tables(tmp_path)
    out = tmp_path / "out"
    args = ["regulators", f"{a}:A:3D", f"{b}:B:3D", "--out", str(out), "--prior", str(prior)]
    result = CliRunner().invoke(app, [*args, "--rule", "li2022", "--molecule-types", "ligand,tf"])
    assert result.exit_code == 0, result.output
    tables = {
        n: pd.read_parquet(out / f"{n}.parquet")
        for n in ("regulators", "mnm", "centrality", "rank_regulators")
    }
    assert list(tables["regulators"].columns[:8]) == [
        "cell_type",
        "time",
        "regulator",
        "regulator_type",
        "activation_z",
        "p_value",
        "q_value",
        "predicted",
    ]
    assert tables["mnm"]["regulators"].tolist() == ["IL4"]
    ranked = tables["rank_regulators"]
    assert ranked[ranked["scheme"] == "li2022"]["regulator"].iloc[0] == "IL4"
    # a table of DEGs only: one line naming the fix
    deg_only = pd.read_csv(a, index_col=0)
    deg_only = deg_only[deg_only["p_val"] < 0.05]
    deg_only.to_csv(tmp_path / "degs.csv")
    bad = CliRunner().invoke(
        app, ["regulators", f"{tmp_path / 'degs.csv'}:A", "--out", str(out), "--prior", str(prior)]
    )
    assert bad.exit_code == 2
    line = [x for x in bad.output.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "--background FILE" in line[0]
    ok = CliRunner().invoke(
        app,
        ["regulators", f"{tmp_path / 'degs.csv'}:A", "--out", str(out), "--prior", str(prior),
         "--universe", "prior"],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    background = tmp_path / "measured.txt"
    background.write_text("\n".join(pd.read_csv(a, index_col=0).index))
    given = CliRunner().invoke(
        app,
        ["regulators", f"{tmp_path / 'degs.csv'}:A", "--out", str(tmp_path / "bg"), "--prior",
         str(prior), "--background", str(background)],
    )  # fmt: skip
    assert given.exit_code == 0, given.output
    with_background = pd.read_parquet(tmp_path / "bg" / "regulators.parquet")
    assert (with_background["n_universe"] == 61).all()  # the 61 genes measured


def test_default_prior_is_the_combined_one_and_programmes_become_signed_regulons(monkeypatch):
    import omicstwin.tl.priors as priors
    from omicstwin.tl.regulators import load_regulator_prior

    asked = []

    def fake_load_prior(name, *, source):
        asked.append((name, source))
        if name == "regulator_prior":
            return pd.DataFrame(
                {
                    "source": ["IFNG"],
                    "target": ["IRF1"],
                    "weight": [1.0],
                    "regulator_type": "ligand",
                }
            )
        return pd.DataFrame(
            {"ligand": ["IL1B", "IL1B"], "target": ["IL6", "CCL2"], "weight": [0.5, 0.2],
             "sign": [1, -1]}
        )  # fmt: skip

    monkeypatch.setattr(priors, "load_prior", fake_load_prior)
    combined = load_regulator_prior(None)
    assert list(combined["regulator_type"]) == ["ligand"] and asked[-1][0] == "regulator_prior"
    programme = load_regulator_prior("ligand_targets", source="permissive")
    assert asked[-1] == ("ligand_targets", "permissive")
    assert list(programme["weight"]) == [0.5, -0.2]
    assert set(programme["regulator_type"]) == {"ligand"}
    assert list(programme["source"]) == ["IL1B", "IL1B"]


def test_too_few_targets_give_no_corrected_z():
    # a DEG list 85% up and a regulator with 80% activating edges, one target among the DEGs
    # going against the bias: the formula gives z = -2.45, which is no evidence with N = 1
    from omicstwin.tl.regulators import MIN_Z_TARGETS, activation_z

    raw = activation_z(np.array([-1.0]), np.array([1.0]), np.array([1.0]), 0.7, np.array([0.6]))
    assert raw[0] == pytest.approx((-1 - 0.42) / np.sqrt(1 - 0.42**2))
    genes = [f"g{i}" for i in range(200)]
    lfc = np.where(np.arange(200) < 17, 1.0, np.where(np.arange(200) < 20, -1.0, 0.0))
    p = np.where(np.arange(200) < 20, 1e-4, 0.5)
    prior = pd.DataFrame(
        {"source": "R", "target": ["g19", *genes[100:109]], "weight": [1] * 8 + [-1] * 2}
    )
    row = upstream_regulators(_context(genes, lfc, p), prior).iloc[0]
    assert row["n_targets"] == 1 < MIN_Z_TARGETS
    assert row["activation_z"] == 0.0 and row["direction"] == "undetermined"
    assert row["activation_z_uncorrected"] == -1.0
