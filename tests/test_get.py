"""omicstwin.get: tidy frames of what tl stored, and tables passing through the same filters."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from omicstwin import errors, get
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.tl._store import store_result


def _de() -> pd.DataFrame:
    rows = [
        (c, t, g, lfc, q)
        for c in ("B", "T")
        for t in (0.0, 6.0)
        for g, lfc, q in (("G1", 2.0, 0.01), ("G2", -0.1, 0.5), ("G3", -1.5, 0.04))
    ]
    frame = pd.DataFrame(rows, columns=["cell_type", "time", "gene", "log_fc", "q_value"])
    frame["p_value"] = frame["q_value"] / 2
    frame["mean_case"] = frame["mean_control"] = 1.0
    frame["n_donors_case"] = frame["n_donors_control"] = 3
    return conform(frame, "de")


def _edges(layer: str, times=(0.0, 6.0)) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "layer": layer,
            "condition": "all",
            "source_cell_type": ["B", "T"] * len(times),
            "target_cell_type": ["T", "T"] * len(times),
            "time_from": np.repeat(times, 2),
            "time_to": np.repeat(times, 2),
            "source": "L",
            "target": "R",
            "weight": np.arange(2 * len(times), dtype=float),
            "stability": 1.0,
        }
    )
    return conform(frame, "edges")


@pytest.fixture
def adata():
    data = ad.AnnData(np.zeros((2, 3), dtype=np.float32))
    store_result(data, "de", _de(), {"time_unit": "h", "skipped": _de().head(1), "layer": None})
    store_result(data, "grn", _edges("intracellular"), {"top_k": 3})
    store_result(data, "intercellular", _edges("intercellular"), {"min_fraction": 0.1})
    return data


def test_de_round_trips_what_tl_stored(adata, tmp_path):
    pd.testing.assert_frame_equal(get.de(adata), _de())
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(get.de(back), _de(), check_dtype=False)
    assert list(get.de(back).dtypes.astype(str)) == list(SCHEMAS["de"].values())


def test_de_filters_and_table_pass_through(adata):
    hits = get.de(adata, cell_type="B", time=[6.0], max_q=0.05, min_abs_log_fc=1.0)
    assert hits["gene"].tolist() == ["G1", "G3"]
    assert (hits["cell_type"] == "B").all() and (hits["time"] == 6.0).all()
    from_table = get.de(_de(), cell_type="B", time=[6.0], max_q=0.05, min_abs_log_fc=1.0)
    pd.testing.assert_frame_equal(from_table, hits)


def test_a_getter_returns_a_copy(adata):
    table = get.de(adata)
    table.loc[0, "log_fc"] = 99.0
    assert get.de(adata).loc[0, "log_fc"] == 2.0


def test_params_beside_the_result(adata):
    params = get.params(adata, key="de")
    assert params["time_unit"] == "h" and params["layer"] == ""  # None is stored as ""
    pd.testing.assert_frame_equal(params["skipped"], _de().head(1))


def test_edges_concatenate_keys_and_filter(adata):
    every = get.edges(adata)  # the default keys present: grn, intercellular
    assert every["layer"].tolist() == ["intracellular"] * 4 + ["intercellular"] * 4
    assert list(every.columns) == list(SCHEMAS["edges"])
    inter = get.edges(adata, key="intercellular", time=6.0, cell_type="B")
    assert len(inter) == 1 and inter.loc[0, "weight"] == 2.0
    same = get.edges(every, layer="intercellular", time=6.0, cell_type="B")
    pd.testing.assert_frame_equal(same, inter)


def test_edges_without_a_time_apply_at_every_time():
    table = _edges("intercellular", times=(np.nan,))
    assert len(get.edges(table, time=6.0)) == 2


def test_missing_key_names_what_is_there(adata):
    with pytest.raises(errors.MissingKeyError, match=r"uns\['temporal'\].*'de', 'grn'"):
        get.edges(adata, key="temporal")
    with pytest.raises(errors.MissingKeyError, match="fix:"):
        get.de(ad.AnnData(np.zeros((1, 1))))


def test_results_of_a_mudata_modality_written_before_are_found(adata):
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": adata})
    pd.testing.assert_frame_equal(get.de(mdata), _de())
