"""Network layers: intercellular scoring, temporal ridge, assembly, networkx export."""

import itertools

import numpy as np
import pandas as pd
import pytest

from omicstwin import errors, get
from omicstwin.bench.truth import planted_lr_recall
from omicstwin.io import load_table
from omicstwin.schemas import SCHEMAS
from omicstwin.tl import networks
from omicstwin.tl.networks import (
    intercellular_edges,
    multicellular_network,
    temporal_edges,
    to_networkx,
)


def planted_recall(adata, edges):
    return planted_lr_recall(adata, edges)[0]


@pytest.fixture(scope="module")
def inter(small_cohort):
    return intercellular_edges(small_cohort, load_table("liana_consensus"), key_added=None)


def test_intercellular_schema_and_order(inter):
    assert list(inter.columns) == list(SCHEMAS["edges"])
    assert (inter["layer"] == "intercellular").all() and (inter["condition"] == "all").all()
    assert (inter["source_cell_type"] != inter["target_cell_type"]).all()  # no autocrine
    for _, block in inter.groupby("time_from"):
        assert block["weight"].is_monotonic_decreasing
    assert inter["stability"].between(0, 1).all()


def test_intercellular_finds_planted_edges(small_cohort, inter):
    assert planted_recall(small_cohort, inter) >= 0.5
    # the shuffled-label control: permuting case/control across donors loses them
    shuffled = small_cohort.copy()
    donors = shuffled.obs["donor"].astype(str)
    arm = donors.map(
        dict(
            zip(
                sorted(donors.unique()),
                np.random.default_rng(0).permutation(
                    [
                        c
                        for _, c in sorted(
                            shuffled.obs.groupby("donor", observed=True)["condition"]
                            .first()
                            .astype(str)
                            .items()
                        )
                    ]
                ),
                strict=True,
            )
        )
    )
    shuffled.obs["condition"] = arm.to_numpy()
    control = intercellular_edges(shuffled, load_table("liana_consensus"), key_added=None)
    assert planted_recall(small_cohort, control) < planted_recall(small_cohort, inter)


def test_intercellular_weight_by_hand(small_cohort):
    lr = pd.DataFrame(
        {
            "ligand": ["NOPE", small_cohort.var_names[0]],
            "receptor": ["X_Y", small_cohort.var_names[1]],
        }
    )
    edges = intercellular_edges(small_cohort, lr, min_fraction=0.0, key_added=None)
    assert set(edges["source"]) <= {small_cohort.var_names[0]}  # unmeasured complex dropped
    with pytest.raises(errors.MissingKeyError, match="receptor"):
        intercellular_edges(small_cohort, lr.rename(columns={"receptor": "r"}), key_added=None)


def test_top_mask_excludes_self_and_keeps_k():
    weight = np.array([[5.0, 1.0, 3.0], [4.0, 2.0, 1.0], [1.0, 9.0, 2.0]])
    mask = networks._top_mask(weight, np.array([0, 1, 2]), ["a", "b", "c"], top_k=1)
    # column 0: self (row 0) excluded -> row 1; column 1: row 2; column 2: row 0
    assert mask.tolist() == [[False, False, True], [True, False, False], [False, True, False]]


def test_temporal_edges(small_cohort):
    tfs = small_cohort.uns["truth"]["genes"].query("role == 'tf'")["gene"].tolist()
    adata = small_cohort.copy()
    edges = temporal_edges(adata, regulators=tfs, n_bootstrap=5, top_k=3, seed=1)
    again = temporal_edges(adata, regulators=tfs, n_bootstrap=5, top_k=3, seed=1, key_added=None)
    assert adata.uns["temporal"]["params"]["top_k"] == 3  # stored beside its parameters
    pd.testing.assert_frame_equal(get.edges(adata, key="temporal"), edges)
    pd.testing.assert_frame_equal(edges, again)
    levels = sorted(small_cohort.obs["time"].unique())
    step = dict(itertools.pairwise(levels))
    assert (edges["time_to"] == edges["time_from"].map(step)).all()
    assert edges["source"].isin(tfs).all() and (edges["source"] != edges["target"]).all()
    assert edges.groupby(["source_cell_type", "time_from", "target"]).size().max() <= 3
    assert edges["stability"].between(0, 1).all()
    with pytest.raises(errors.ParameterError):
        temporal_edges(small_cohort, regulators=["NOT_A_GENE"], key_added=None)


def test_assembly_and_networkx(small_cohort, inter):
    tfs = small_cohort.uns["truth"]["genes"].query("role == 'tf'")["gene"].tolist()
    temporal = temporal_edges(small_cohort, regulators=tfs, n_bootstrap=2, top_k=2, key_added=None)
    edges = multicellular_network(inter, temporal)
    assert set(edges["layer"]) == {"intercellular", "temporal"}
    assert len(edges) == len(inter) + len(temporal)
    t = sorted(edges["time_from"].unique())[1]
    graph = to_networkx(edges, time=t)
    expected = (edges["time_from"] == t).sum()
    assert graph.number_of_edges() == expected
    node = next(iter(graph.nodes))
    assert set(graph.nodes[node]) == {"cell_type", "gene", "time"}
