"""The independent generator: contract, reproducibility, knobs, and truth consistent with itself."""

import numpy as np
import pandas as pd
import pytest

from omicstwin import errors
from omicstwin.datasets import SimulationPriors, simulate_independent
from omicstwin.datasets._independent_build import build_independent
from omicstwin.datasets.independent import _params, knockout_reversal
from omicstwin.io import validate_cohort

# truth columns shared with simulate_cohort (it may add more, never fewer)
TRUTH_COLUMNS = {
    "genes": {"gene", "role", "in_prior_tf_list", "is_core"},
    "networks": {"cell_type", "source", "target", "weight", "sign", "in_prior", "shared"},
    "lr_edges": {
        "sender",
        "ligand",
        "receiver",
        "receptor",
        "downstream_tf",
        "kappa",
        "endotype",
        "hop",
    },
    "endotypes": {
        "endotype",
        "drivers",
        "cascade_cell_types",
        "cascade_ligands",
        "cascade_receptors",
        "cascade_tfs",
    },
    "drivers": {
        "patient_id",
        "endotype",
        "strength",
        "driver_genes",
        "initiating_cell_type",
        "onset_time",
    },
    "reversal": {"gene", "reversal", "rank", "planted"},
    "patient_reversal": {"patient_id", "gene", "reversal", "rank"},
    "degs": {"cell_type", "time", "gene", "log_fc", "direction"},
}
TINY = dict(
    n_genes=90,
    n_cells=200,
    cell_types=("CD14 Mono", "CD4 T", "B"),
    time_points=(0, 6, 24),
    n_case=2,
    n_control=2,
)


@pytest.fixture(scope="module")
def indep():
    return simulate_independent("small", seed=0)


@pytest.fixture(scope="module")
def priors():
    return SimulationPriors.from_manifests()


def test_output_contract(indep):
    adata = indep
    summary = validate_cohort(
        adata,
        cell_type_key="cell_type",
        time_key="time",
        condition_key="condition",
        donor_key="donor",
        case="case",
        control="control",
    )
    assert len(summary.cell_types) == 6 and len(summary.time.levels) == 5
    assert adata.X.format == "csr" and adata.X.dtype == np.float32
    x = adata.X.data
    assert np.all(x >= 0) and np.all(x == np.round(x))
    assert 0.2 < 1 - adata.X.nnz / np.prod(adata.shape) < 0.95
    assert adata.obs["time"].dtype.kind == "f" and adata.uns["time_unit"] == "h"
    assert adata.uns["generator"] == "independent"
    assert adata.uns["simulation"]["generator"] == "independent"
    truth = adata.uns["truth"]
    for name, columns in TRUTH_COLUMNS.items():
        assert columns <= set(truth[name].columns), name
    assert {"reversal_A", "reversal_B"} <= set(truth["reversal"].columns)
    assert truth["networks"]["in_prior"].dtype == bool
    assert truth["reversal"]["rank"].tolist() == list(range(1, adata.n_vars + 1))
    roles = truth["genes"].set_index("gene")["role"]
    assert (roles[list(adata.var_names)] == "tf").sum() >= 12  # real symbols, priors apply


def test_reproducible_by_seed(indep):
    again = simulate_independent("small", seed=0)
    assert (again.X != indep.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, indep.obs)
    for name in ("networks", "reversal", "degs", "drivers", "donors"):
        pd.testing.assert_frame_equal(again.uns["truth"][name], indep.uns["truth"][name])


@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_prior_fraction_is_realised(priors, fraction):
    s = build_independent(_params("small", {"prior_fraction": fraction}), priors)
    table = s.network_table
    col = priors.collectri
    pairs = set(zip(col["source"], col["target"], strict=True))
    in_prior = [(a, b) in pairs for a, b in zip(table["source"], table["target"], strict=True)]
    assert np.array_equal(in_prior, table["in_prior"].to_numpy())
    assert abs(np.mean(in_prior) - fraction) <= 0.1
    assert abs(s.prior_fraction_realised - fraction) <= 0.1


def test_lr_prior_fraction(priors):
    s = build_independent(_params("small", {"lr_prior_fraction": 0.0}), priors)
    lr = priors.ligand_receptor
    pairs = set(zip(lr["ligand"], lr["receptor"], strict=True))
    assert not any((c.ligand, c.receptor) in pairs for c in _named(s.model.couplings, s.genes))


def _named(couplings, genes):
    class _Pair:
        def __init__(self, c):
            self.ligand, self.receptor = genes[c.ligand], genes[c.receptor]

    return [_Pair(c) for c in couplings]


def test_hubs_are_heavy_tailed(indep):
    genes = indep.uns["truth"]["genes"]
    degree = genes.loc[genes["role"] == "tf", "out_degree"]
    assert degree.max() >= 5 * degree.median()


def test_drivers_are_de_from_onset_only(indep):
    truth = indep.uns["truth"]
    degs = truth["degs"]
    onset = truth["drivers"]["onset_time"].iloc[0]
    for row in truth["endotypes"].itertuples():
        initiating = row.cascade_cell_types.split(";")[0]
        for driver in row.drivers.split(";"):
            hits = degs[(degs["gene"] == driver) & (degs["cell_type"] == initiating)]
            assert onset in set(hits["time"]), driver
            assert (hits["time"] >= onset).all() and (hits["direction"] == "up").all()
    assert (degs["time"] >= onset).all()  # nothing differs before the disease starts


def test_planted_genes_lead_the_reversal(indep):
    reversal = indep.uns["truth"]["reversal"]
    assert reversal.head(10)["planted"].mean() >= 0.5


def test_no_disease_cohort_is_null():
    adata = simulate_independent("small", seed=2, disease=False)
    truth = adata.uns["truth"]
    assert truth["degs"].empty and truth["drivers"].empty and truth["endotypes"].empty
    assert (truth["reversal"]["reversal"] == 0).all() and not truth["reversal"]["planted"].any()
    assert (truth["patient_reversal"]["reversal"] == 0).all()
    assert set(adata.obs["condition"]) == {"case", "control"}  # same design


def test_donor_covariates(indep):
    truth = indep.uns["truth"]
    donors = truth["donors"]
    assert donors.groupby("condition")["ifn_high"].any().all()  # both arms
    assert set(donors.groupby("condition")["sex"].nunique()) == {2}
    adata = indep
    isg = truth["genes"].loc[truth["genes"]["role"] == "isg", "gene"].tolist()
    high = set(donors.loc[donors["ifn_high"], "donor"])
    per_cell = np.asarray(adata[:, isg].X.sum(axis=1)).ravel()
    is_high = adata.obs["donor"].isin(high).to_numpy()
    assert per_cell[is_high].mean() > 1.5 * per_cell[~is_high].mean()
    xist = np.asarray(adata[:, "XIST"].X.sum(axis=1)).ravel()
    female = adata.obs["donor"].isin(set(donors.loc[donors["sex"] == "F", "donor"])).to_numpy()
    assert xist[female].mean() > 20 * max(xist[~female].mean(), 1e-3)
    comp = truth["composition"].pivot(index="cell_type", columns="condition", values="proportion")
    assert not np.allclose(comp["case"], comp["control"])


def test_batched_reversal_matches_per_gene_loop(priors):
    params = _params(None, dict(TINY, seed=3))
    s = build_independent(params, priors)
    model, scales = s.model, s.scales
    _, u = next(iter(s.inputs_case.items()))
    control = model.trajectory(s.inputs_control)[0]
    case = model.trajectory(u)[0]
    genes = model.core[:12]
    batched = knockout_reversal(model, scales, u, case, control, genes)
    z_case = np.log2(1.0 + scales[None] * case)
    d = z_case - np.log2(1.0 + scales[None] * control)
    for score, g in zip(batched, genes, strict=True):
        knockout = np.zeros((1, model.n_genes), bool)
        knockout[0, g] = True
        delta = np.log2(1.0 + scales[None] * model.trajectory(u, knockout)[0]) - z_case
        keep = np.ones(model.n_genes, bool)
        keep[g] = False
        slow = -np.sum(delta[..., keep] * d[..., keep]) / np.sum(d[..., keep] ** 2)
        assert score == pytest.approx(slow, rel=1e-5, abs=1e-7)
    assert np.abs(batched).max() > 0.01  # the tiny cohort has a disease to undo


def test_linear_kinetics_and_no_feedback(priors):
    from omicstwin.datasets.simulate import _signalling_order

    params = _params(None, dict(TINY, hill=False, feedback=False))
    s = build_independent(params, priors)
    assert s.model.linear and all(e["feedback"] is None for e in s.endotypes)
    order = _signalling_order(3, [e["path"] for e in s.endotypes])
    for c in s.model.couplings:  # every coupling goes forward: no intercellular loop
        assert order.index(c.sender) < order.index(c.receiver)
    with_feedback = build_independent(_params(None, dict(TINY, feedback=True)), priors)
    assert any(c.receiver == 0 and c.endotype for c in with_feedback.model.couplings)


def test_bad_parameters_are_refused():
    with pytest.raises(errors.ParameterError, match="prior_fraction"):
        simulate_independent("small", prior_fraction=1.5)
    with pytest.raises(errors.ParameterError, match="unknown parameter"):
        simulate_independent("small", hub_cap=10)
    with pytest.raises(errors.ParameterError, match="unknown preset"):
        simulate_independent("huge")


def test_generate_dispatches_to_either_generator_with_or_without_disease():
    import pandas as pd
    import pytest

    from omicstwin.datasets import generate
    from omicstwin.errors import ParameterError

    null = generate("small", generator="cohort", disease=False, seed=2)
    assert pd.DataFrame(null.uns["truth"]["degs"]).empty
    assert null.uns["generator"] == "cohort"
    other = generate("small", generator="independent", disease=False, seed=2)
    assert other.uns["generator"] == "independent"
    assert pd.DataFrame(other.uns["truth"]["degs"]).empty
    with pytest.raises(ParameterError, match="unknown generator"):
        generate("small", generator="nope")
