"""The cohort simulator: contract, reproducibility, priors, and truth consistent with the data."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omicstwin import errors
from omicstwin.datasets import PRESETS, SimulationPriors, simulate_cohort
from omicstwin.datasets.simulate import build_structure
from omicstwin.io import validate_cohort


def test_contract_and_sizes(small_cohort):
    adata = small_cohort
    summary = validate_cohort(
        adata,
        cell_type_key="cell_type",
        time_key="time",
        condition_key="condition",
        donor_key="donor",
        case="case",
        control="control",
    )
    assert len(summary.cell_types) >= 6 and len(summary.time.levels) >= 5
    assert len(summary.donors_case) >= 2 and len(summary.donors_control) >= 2
    assert summary.skipped_groups.empty
    assert adata.n_obs == PRESETS["small"].n_cells and adata.n_vars == PRESETS["small"].n_genes
    x = adata.X.data
    assert np.all(x >= 0) and np.all(x == np.round(x))
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    assert 20 < np.median(library) < 1000  # realistic for 150 genes (~1,800 UMI per 2,000)
    assert 0.05 < 1 - adata.X.nnz / np.prod(adata.shape) < 0.95  # zeros present, not all


def test_reproducible_by_seed(small_cohort):
    again = simulate_cohort("small", seed=0)
    assert (again.X != small_cohort.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, small_cohort.obs)
    for name in ("networks", "reversal", "degs", "drivers"):
        pd.testing.assert_frame_equal(again.uns["truth"][name], small_cohort.uns["truth"][name])
    other = simulate_cohort("small", seed=1)
    assert other.X.shape != small_cohort.X.shape or (other.X != small_cohort.X).nnz > 0


def test_genes_and_edges_come_from_the_priors(small_cohort):
    priors = SimulationPriors.from_manifests()
    truth = small_cohort.uns["truth"]
    genes = truth["genes"]
    tf_list = set(priors.tfs)
    assert set(genes.loc[genes["role"] == "tf", "gene"]) <= tf_list
    pairs = set(
        zip(priors.ligand_receptor["ligand"], priors.ligand_receptor["receptor"], strict=True)
    )
    lr = truth["lr_edges"]
    assert all((a, b) in pairs for a, b in zip(lr["ligand"], lr["receptor"], strict=True))
    net = truth["networks"]
    prior_sign = {
        (s, t): np.sign(w)
        for s, t, w in priors.collectri[["source", "target", "weight"]].itertuples(index=False)
    }
    in_prior = net[net["in_prior"]]
    assert len(in_prior) > 0.7 * len(net)  # mostly prior edges, some novel ones
    assert (~net["in_prior"]).any()
    assert all(
        prior_sign[(s, t)] == sg
        for s, t, sg in in_prior[["source", "target", "sign"]].itertuples(index=False)
    )
    # shared core and cell-type-specific edges
    per_edge = net.groupby(["source", "target"])["cell_type"].nunique()
    assert (per_edge == net["cell_type"].nunique()).any() and (per_edge == 1).any()


def test_endotypes_differ_and_patients_vary(small_cohort):
    truth = small_cohort.uns["truth"]
    endotypes = truth["endotypes"]
    assert len(endotypes) >= 2
    drivers = [set(d.split(";")) for d in endotypes["drivers"]]
    assert not drivers[0] & drivers[1]
    patients = truth["drivers"]
    assert patients["endotype"].nunique() >= 2 and patients["strength"].nunique() == len(patients)
    # personal truth differs: each patient's top reversal gene is among their own endotype's
    pr = truth["patient_reversal"]
    own = dict(zip(endotypes["endotype"], endotypes["drivers"], strict=True))
    for row in patients.itertuples():
        mine = pr[pr["patient_id"] == row.patient_id].sort_values("rank")
        cascade = endotypes.set_index("endotype").loc[row.endotype]
        planted = set(
            ";".join(
                cascade[["drivers", "cascade_ligands", "cascade_receptors", "cascade_tfs"]]
            ).split(";")
        )
        assert mine.iloc[0]["gene"] in planted, row.patient_id
        assert own[row.endotype]


def _pseudobulk_log_cpm(adata, cell_type, time):
    mask = ((adata.obs["cell_type"] == cell_type) & (adata.obs["time"] == time)).to_numpy()
    sub = adata[mask]
    donors = sub.obs["donor"].astype(str)
    rows, conditions = [], []
    for donor in sorted(donors.unique()):
        d = (donors == donor).to_numpy()
        counts = np.asarray(sub.X[d].sum(axis=0)).ravel()
        rows.append(np.log2(counts / counts.sum() * 1e6 + 1))
        conditions.append(str(sub.obs["condition"][d].iloc[0]))
    return pd.DataFrame(rows, columns=adata.var_names), np.array(conditions)


def _case_vs_control(adata, gene, cell_type, time, patients=None):
    table, condition = _pseudobulk_log_cpm(adata, cell_type, time)
    case = table.loc[condition == "case", gene]
    if patients is not None:
        donors = sorted(
            adata.obs.loc[
                (adata.obs["cell_type"] == cell_type) & (adata.obs["time"] == time), "donor"
            ]
            .astype(str)
            .unique()
        )
        keep = [d in patients for d, c in zip(donors, condition, strict=True) if c == "case"]
        case = case[np.array(keep)]
    control = table.loc[condition == "control", gene]
    return case.mean() - control.mean(), stats.ttest_ind(case, control).pvalue


def test_planted_drivers_are_de_in_the_right_cell_type_and_time():
    adata = simulate_cohort("small", seed=0, n_cells=6000, n_case=6, n_control=4)
    truth = adata.uns["truth"]
    onset = truth["drivers"]["onset_time"].iloc[0]
    times = sorted(adata.obs["time"].unique())
    for row in truth["endotypes"].itertuples():
        patients = set(truth["drivers"].query("endotype == @row.endotype")["patient_id"])
        start = row.cascade_cell_types.split(";")[0]
        for driver in row.drivers.split(";"):
            lfc_after, p_after = _case_vs_control(adata, driver, start, onset, patients)
            lfc_before, _ = _case_vs_control(adata, driver, start, times[0], patients)
            assert lfc_after > 0.7 and p_after < 0.01, (driver, lfc_after, p_after)
            assert abs(lfc_before) < 0.5, (driver, lfc_before)
        # the cascade reaches the second cell type one time point later, not before
        receiver = row.cascade_cell_types.split(";")[1]
        tf = row.cascade_tfs.split(";")[0]
        next_time = times[times.index(onset) + 1]
        lfc_next, p_next = _case_vs_control(adata, tf, receiver, next_time, patients)
        lfc_onset, _ = _case_vs_control(adata, tf, receiver, onset, patients)
        assert lfc_next > 0.5 and p_next < 0.05, (tf, lfc_next, p_next)
        assert lfc_onset < lfc_next - 0.4


def test_truth_degs_follow_the_cascade(small_cohort):
    truth = small_cohort.uns["truth"]
    degs = truth["degs"]
    onset = truth["drivers"]["onset_time"].iloc[0]
    first_seen = degs.groupby("cell_type")["time"].min()
    start = truth["endotypes"]["cascade_cell_types"].iloc[0].split(";")[0]
    assert first_seen[start] == onset
    assert (first_seen.drop(start) > onset).all()
    assert degs["time"].min() > 0  # nothing is DE at baseline


def test_planted_genes_lead_the_reversal_truth(small_cohort):
    reversal = small_cohort.uns["truth"]["reversal"]
    assert reversal.head(10)["planted"].mean() >= 0.8
    leaves = small_cohort.uns["truth"]["genes"].query("~is_core")["gene"]
    assert (reversal.set_index("gene").loc[leaves, "reversal"] == 0).all()


def test_bad_parameters_are_clear_errors():
    with pytest.raises(errors.ParameterError, match="unknown simulation parameter"):
        simulate_cohort("small", n_cels=10)
    with pytest.raises(errors.ParameterError, match="time_points"):
        simulate_cohort("small", time_points=(0, 6))
    with pytest.raises(errors.ParameterError, match="n_cells must be at least"):
        simulate_cohort("small", n_cells=10)


def test_structure_is_deterministic():
    priors = SimulationPriors.from_manifests()
    a = build_structure(PRESETS["small"], priors)
    b = build_structure(PRESETS["small"], priors)
    pd.testing.assert_frame_equal(a.network_table, b.network_table)
    assert np.array_equal(a.scales, b.scales)
