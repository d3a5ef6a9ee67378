"""Methods prose: which paragraphs appear and how config choices change their text."""

import pytest

from omicstwin.report.methods import methods_paragraphs

ALL_TABLES = {
    "de",
    "edges",
    "network_layers",
    "regulators",
    "perturbations",
    "rank_targets",
    "rank_drugs",
    "enrichment",
    "validation",
}


def _run(**config):
    stages = config.pop("stages", {})
    compute = config.pop("compute", {})
    base = {
        "cell_type_key": "cell_type",
        "time_key": "time",
        "condition_key": "condition",
        "donor_key": "donor",
        "stages": {"min_donors": 3, "n_steps": 4, **stages},
        "compute": compute,
    }
    return {"config": base | config, "seed": 7, "versions": {"omicstwin": "9.9", "numpy": "2.0"}}


def _text(run, tables=frozenset(ALL_TABLES)):
    return dict(methods_paragraphs(run, tables=set(tables)))


def test_paragraphs_follow_the_stages_that_ran():
    stages = [s for s, _ in methods_paragraphs(_run(), tables=set(ALL_TABLES))]
    assert stages == [
        "Data and design",
        "Differential expression",
        "Multicellular network",
        "Upstream regulators",
        "Digital twin",
        "Perturbation screens",
        "Enrichment",
        "Validation",
        "Computation",
    ]
    assert [s for s, _ in methods_paragraphs(_run(), tables=set())] == [
        "Data and design",
        "Computation",
    ]
    # network layers alone show the network stage ran; a target ranking alone, the screens
    only = [s for s, _ in methods_paragraphs(_run(), tables={"network_layers", "rank_targets"})]
    assert only == [
        "Data and design",
        "Multicellular network",
        "Perturbation screens",
        "Computation",
    ]


def test_parameters_of_the_run_appear_in_the_text():
    text = _text(_run(layer="counts", stages={"min_genes": 10, "min_cells": 3}))
    assert "(layer 'counts')" in text["Data and design"]
    assert "fewer than 3 donors per arm" in text["Data and design"]
    assert "at least 10 detected genes" in text["Data and design"]
    assert "(min_donors=3)" in text["Differential expression"]
    assert "propagated 4 steps" in text["Perturbation screens"]
    assert text["Computation"].startswith("Random seed 7;")
    assert "software: omicstwin 9.9 and numpy 2.0" in text["Computation"]
    assert "Quality control" not in _text(_run())["Data and design"]


@pytest.mark.parametrize(
    ("compute", "where"),
    [
        ({"scheduler": "tcp://h:8786", "workers": 4}, "the dask scheduler at tcp://h:8786"),
        ({"profile": "slurm", "workers": 4}, "cluster profile 'slurm'"),
        ({"workers": 0}, "in process;"),
        ({"workers": 4}, "a local dask cluster of 4 workers"),
        ({}, "in process or on a local dask cluster, chosen by screen size"),
    ],
)
def test_computation_says_where_the_screens_ran(compute, where):
    assert f"screens ran {where}" in _text(_run(compute=compute))["Computation"] + ";"


def test_drugs_and_network_level_change_their_paragraphs():
    assert "Drugs (sets of targets" in _text(_run())["Perturbation screens"]
    no_screen = _text(_run(stages={"screen_drugs": False}))["Perturbation screens"]
    assert "Drugs" not in no_screen
    assert "Drugs" not in _text(_run(), ALL_TABLES - {"rank_drugs"})["Perturbation screens"]
    assert "donor-to-donor variation" in _text(_run())["Digital twin"]
    cells = _text(_run(stages={"network_level": "cells"}))["Digital twin"]
    assert "cell-to-cell variation" in cells


def test_an_empty_run_still_reads():
    text = dict(methods_paragraphs({}, tables=set(ALL_TABLES)))
    assert "cell type ('?')" in text["Data and design"]
    assert text["Computation"].startswith("Random seed ?;")
    assert "software" not in text["Computation"]


def test_mnm_paragraph_when_the_run_has_the_mnm():
    stages = [s for s, _ in methods_paragraphs(_run(), tables={"regulators", "mnm"})]
    assert stages[1:3] == ["Upstream regulators", "Multicellular network model"]
    text = _text(_run(), {"mnm", "centrality"})["Multicellular network model"]
    assert "eigenvector centrality" in text and "up-regulated DEG of the sender" in text
