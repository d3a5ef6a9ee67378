"""omicstwin.pl: each plot draws a small fixture (table or AnnData + key) with the right artists."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from omicstwin import pl
from omicstwin.tl._store import store_result

CELL_TYPES = ["B", "Mono", "T"]
TIMES = [0.0, 6.0]


def _contexts() -> pd.DataFrame:
    return pd.DataFrame([(c, t) for t in TIMES for c in CELL_TYPES], columns=["cell_type", "time"])


@pytest.fixture
def de() -> pd.DataFrame:
    rows = []
    for c, t in _contexts().itertuples(index=False):
        for g, lfc, q in (("G1", 1.0, 0.01), ("G2", -1.0, 0.02), ("G3", 0.1, 0.9)):
            rows.append((c, t, g, lfc, q))
    return pd.DataFrame(rows, columns=["cell_type", "time", "gene", "log_fc", "q_value"])


@pytest.fixture
def edges() -> pd.DataFrame:
    inter = pd.DataFrame(
        {
            "layer": "intercellular",
            "source_cell_type": ["B", "Mono", "T", "Mono"],
            "target_cell_type": ["T", "B", "Mono", "T"],
            "time_from": [0.0, 0.0, 6.0, 6.0],
            "source": ["L1", "L2", "L3", "L4"],
            "target": ["R1", "R2", "R3", "R4"],
            "weight": [1.0, -0.5, 2.0, 0.3],
        }
    )
    intra = pd.DataFrame(
        {
            "layer": "intracellular",
            "source_cell_type": ["B", "T"],
            "target_cell_type": ["B", "T"],
            "time_from": [0.0, 6.0],
            "source": ["TF", "TF"],
            "target": ["G", "G"],
            "weight": [0.5, 0.5],
        }
    )
    frame = pd.concat([inter, intra], ignore_index=True)
    frame["time_to"] = frame["time_from"]
    frame["condition"] = "all"
    frame["stability"] = 1.0
    return frame


def _image_shape(fig: Figure) -> tuple[int, int]:
    return fig.axes[0].images[0].get_array().shape


def test_de_counts_one_cell_per_context(de):
    fig = pl.de_counts(de)
    assert isinstance(fig, Figure)
    assert _image_shape(fig) == (len(CELL_TYPES), len(TIMES))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("2\n↑1 ↓1") == len(CELL_TYPES) * len(TIMES)


def test_de_counts_from_anndata_and_key_uses_the_stored_unit(de):
    adata = ad.AnnData(np.zeros((1, 1), dtype=np.float32))
    store_result(adata, "my_de", de, {"time_unit": "h"})
    fig = pl.de_counts(adata, key="my_de")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["0 h", "6 h"]


def test_draws_into_given_axes(de):
    fig = Figure()
    ax = fig.add_subplot()
    assert pl.de_counts(de, ax=ax) is fig
    assert len(ax.images) == 1 and fig.get_size_inches().tolist() == [6.4, 4.8]  # not resized


def test_cohort_design_rows_are_donors():
    design = pd.DataFrame(
        [
            (d, arm, t, c, 10)
            for d, arm in (("d1", "case"), ("d2", "case"), ("d3", "control"))
            for t in TIMES
            for c in CELL_TYPES
        ],
        columns=["donor", "condition", "time", "cell_type", "n_cells"],
    )
    fig = pl.cohort_design(design)
    assert _image_shape(fig) == (3, len(TIMES) * len(CELL_TYPES))


def test_network_one_panel_per_time_plus_legend(edges):
    fig = pl.network(edges)
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == len(TIMES)
    for ax in panels:
        nodes = ax.collections[0]  # draw_networkx_nodes: one marker per cell type
        assert len(nodes.get_offsets()) == len(CELL_TYPES)
    assert any(ax.get_legend() is not None for ax in fig.axes)  # the legend panel
    assert "6 h: top 2" in panels[1].get_title() or "t=6: top 2" in panels[1].get_title()


def test_network_single_panel_into_axes(edges):
    fig = Figure()
    ax = fig.add_subplot()
    assert pl.network(edges, time=6.0, ax=ax, unit="h") is fig
    assert len(fig.axes) == 1 and ax.get_title() == "6 h: top 2 ligand→receptor edges"


def test_network_from_anndata_keys(edges):
    adata = ad.AnnData(np.zeros((1, 1), dtype=np.float32))
    store_result(adata, "grn", edges[edges["layer"] == "intracellular"], {})
    store_result(adata, "intercellular", edges[edges["layer"] == "intercellular"], {})
    fig = pl.network(adata)
    assert len([ax for ax in fig.axes if ax.collections]) == len(TIMES)


def test_regulators_rows_ranked_first():
    rows = [
        (c, t, r, z, p)
        for c, t in _contexts().itertuples(index=False)
        for r, z, p in (("STAT6", 3.0, 0.001), ("IRF4", -2.5, 0.01), ("MYC", 0.2, 0.6))
    ]
    table = pd.DataFrame(
        rows, columns=["cell_type", "time", "regulator", "activation_z", "p_value"]
    )
    table["q_value"] = table["p_value"] * 2
    rankings = pd.DataFrame({"regulator": ["IRF4", "STAT6"], "rank": [1, 2]})
    fig = pl.regulators(table, rankings=rankings, n=3)
    assert _image_shape(fig) == (3, len(CELL_TYPES) * len(TIMES))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["1. IRF4", "2. STAT6", "(MYC)"]
    assert len(fig.axes[0].collections[0].get_offsets()) == 2 * len(CELL_TYPES) * len(TIMES)
    assert pl.regulators(table.iloc[:0]) is None


def test_rankings_one_bar_per_item():
    ranking = pd.DataFrame(
        {
            "name": [f"KO:G{i}" for i in range(5)],
            "rank": np.arange(1, 6),
            "score": np.linspace(1, 0.2, 5),
            "q_value": [0.01, 0.02, 0.2, np.nan, 0.5],
        }
    )
    fig = pl.rankings(ranking, n=4)
    ax = fig.axes[0]
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_yticklabels()] == ["G0", "G1", "G2", "G3"]


def test_perturbation_effects_heatmap():
    frame = _contexts().merge(pd.DataFrame({"perturbation_id": ["KO:A", "KO:B"]}), how="cross")
    frame["reversal_score"] = np.linspace(-0.5, 1.0, len(frame))
    frame["q_value"] = 0.01
    fig = pl.perturbation_effects(frame, n=2)
    assert _image_shape(fig) == (2, len(CELL_TYPES) * len(TIMES))


def test_patient_ranks_heatmap():
    patients = pd.DataFrame(
        {
            "patient_id": ["p1", "p1", "p2", "p2"],
            "target": ["A", "B", "A", "C"],
            "rank": [1, 2, 3, 1],
        }
    )
    fig = pl.patient_ranks(patients, top=2)
    assert _image_shape(fig) == (2, 3)


def test_patient_trajectories_rows_grouped_by_arm():
    states = _contexts().merge(
        pd.DataFrame({"patient_id": ["c1", "p1", "p2"], "arm": ["control", "case", "case"]}),
        how="cross",
    )
    states["disease_score"] = np.where(states["arm"] == "case", 1.0, 0.0)
    fig = pl.patient_trajectories(states)
    assert _image_shape(fig) == (3, len(CELL_TYPES) * len(TIMES))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["p1", "p2", "c1"]


def test_enrichment_one_dot_per_term_and_context():
    rows = [
        ("prerank", "de", c, t, f"TERM_{i}", 1.5 - i, 0.01 * (i + 1), 0.02 * (i + 1), 5 + i)
        for c, t in _contexts().head(2).itertuples(index=False)
        for i in range(2)
    ]
    columns = ["analysis", "ranking", "cell_type", "time", "term", "score", "p_value"]
    table = pd.DataFrame(rows, columns=[*columns, "q_value", "n_overlap"])
    fig = pl.enrichment(table, analysis="prerank")
    assert len(fig.axes[0].collections[0].get_offsets()) == 4
    assert pl.enrichment(table, analysis="ora") is None
    other = Figure()
    assert pl.enrichment(table, ax=other.add_subplot()) is other


def test_no_pyplot_state(de, edges):
    pl.de_counts(de)
    pl.network(edges)
    if "matplotlib.pyplot" in sys.modules:  # networkx imports it; no figure may stay open
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_network_unknown_time_is_a_clear_error(edges):
    from omicstwin.errors import ParameterError

    with pytest.raises(ParameterError, match="fix: pass one of"):
        pl.network(edges, time=99.0, ax=Figure().add_subplot())


def test_null_calibration_plot():
    """One panel per screen, observed bars against the uniform line; None when empty."""
    from matplotlib.figure import Figure

    from omicstwin import pl
    from omicstwin.pl._calibration import calibration_reading
    from omicstwin.tl.nulls import calibration_table

    rng = np.random.default_rng(0)
    flat = calibration_table("targets", rng.uniform(size=200), n_permutations=99, method="m")
    spiked = calibration_table(
        "drugs", np.r_[rng.uniform(0, 0.01, 50), rng.uniform(size=50)], n_permutations=9, method="m"
    )
    table = pd.concat([flat, spiked], ignore_index=True)
    fig = pl.null_calibration(table)
    assert len(fig.axes) == 2
    assert [a.get_title() for a in fig.axes] == ["targets", "drugs"]
    assert len(fig.axes[0].patches) == 20
    assert "permutations" in fig.axes[0].texts[0].get_text()
    own = Figure()
    ax = own.subplots()
    assert pl.null_calibration(table, ax=ax) is own
    assert pl.null_calibration(table.iloc[:0]) is None
    assert "flat histogram" in calibration_reading(table, "targets")
    assert "excess of small p-values" in calibration_reading(
        spiked.assign(n_permutations=99), "drugs"
    )
    assert "cannot show signal" in calibration_reading(table, "drugs")  # 9: p >= 0.1


@pytest.fixture
def mnm_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    edges = pd.DataFrame(
        {
            "time": [0.0, 0.0, 6.0],
            "source_cell_type": ["B", "Mono", "T"],
            "target_cell_type": ["T", "B", "Mono"],
            "n_regulators": [1, 4, 2],
            "regulators": ["ETS1", "JUN;MAF;RELA;SPI1", "IRF1;STAT1"],
        }
    )
    centrality = pd.DataFrame(
        {
            "cell_type": ["Mono", "B", "T", "NK"],
            "centrality": [1.0, 0.8, 0.5, 0.0],
            "rank": [1, 2, 3, 4],
        }
    )
    return edges, centrality


def test_mnm_one_panel_per_time_point_sized_by_centrality(mnm_tables):
    from matplotlib.patches import FancyArrowPatch

    edges, centrality = mnm_tables
    fig = pl.mnm(edges, centrality=centrality, times=[0.0, 6.0, 12.0], unit="h")
    panels = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title() for ax in panels] == ["0 h: 2 edges", "6 h: 1 edge", "12 h: no edge"]
    nodes = panels[0].collections[0]  # every cell type, the isolated NK included
    assert len(nodes.get_offsets()) == 4
    sizes = dict(zip(["B", "Mono", "NK", "T"], nodes.get_sizes(), strict=True))
    assert sizes["Mono"] > sizes["B"] > sizes["T"] > sizes["NK"]  # node area by centrality
    arrows = [p for p in panels[0].patches if isinstance(p, FancyArrowPatch)]
    assert sorted(a.get_linewidth() for a in arrows) == pytest.approx([0.8, 5.8])  # 1 vs 4
    assert not [p for p in panels[2].patches if isinstance(p, FancyArrowPatch)]
    texts = " ".join(t.get_text() for t in panels[0].texts)
    assert "Mono→B: JUN, MAF, RELA, SPI1" in texts
    assert any(ax.get_legend() is not None for ax in fig.axes)


def test_mnm_single_panel_empty_table_and_errors(mnm_tables):
    from omicstwin.errors import MissingKeyError, ParameterError

    edges, _ = mnm_tables
    fig = Figure()
    ax = fig.add_subplot()
    assert pl.mnm(edges, time=6.0, ax=ax) is fig
    assert len(fig.axes) == 1 and ax.get_title() == "t=6: 1 edge"
    assert pl.mnm(edges.iloc[:0]) is None  # no edge: nothing to draw
    with pytest.raises(ParameterError, match="fix: pass one of"):
        pl.mnm(edges, time=99.0, ax=Figure().add_subplot())
    with pytest.raises(MissingKeyError, match="n_regulators"):
        pl.mnm(edges.drop(columns="n_regulators"))
