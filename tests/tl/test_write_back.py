"""Every tl verb on an AnnData/MuData stores under key_added (None: nothing) and stays writable."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

from omicstwin import get, tl
from omicstwin.io import load_table


@pytest.fixture(scope="module")
def cohort(small_cohort):
    """The small cohort without its ground truth (nested objects h5ad cannot write)."""
    adata = small_cohort.copy()
    adata.uns.clear()
    return adata


@pytest.fixture(scope="module")
def edges(cohort):
    return tl.multicellular_network(
        tl.context_grns(cohort.copy(), top_k=3, key_added=None),
        tl.intercellular_edges(cohort.copy(), load_table("liana_consensus"), key_added=None),
        tl.temporal_edges(cohort.copy(), n_bootstrap=2, key_added=None),
    )


def _calls(edges):
    """(verb, default key, call(data, key_added), getter)."""
    lr = load_table("liana_consensus")
    return [
        (
            "differential_expression",
            "de",
            lambda d, **k: tl.differential_expression(d, **k),
            get.de,
        ),
        ("timecourse_de", "de_timecourse", tl.timecourse_de, get.de_timecourse),
        ("context_grns", "grn", lambda d, **k: tl.context_grns(d, top_k=3, **k), get.edges),
        (
            "intercellular_edges",
            "intercellular",
            lambda d, **k: tl.intercellular_edges(d, lr, **k),
            get.edges,
        ),
        (
            "temporal_edges",
            "temporal",
            lambda d, **k: tl.temporal_edges(d, n_bootstrap=2, **k),
            get.edges,
        ),
        ("fit_twin", "twin", lambda d, **k: tl.fit_twin(d, edges, top_k=3, **k).network, get.edges),
    ]


def test_every_storing_verb_is_covered(edges):
    from tests.test_package_structure import STORES

    assert {name for name, *_ in _calls(edges)} == STORES


@pytest.mark.parametrize("index", range(6))
def test_write_back_then_h5ad(cohort, edges, index, tmp_path):
    name, default_key, call, getter = _calls(edges)[index]
    adata = cohort.copy()

    call(adata, key_added=None)  # stores nothing (once stored uns[None] and broke write_h5ad)
    assert dict(adata.uns) == {}
    adata.write_h5ad(tmp_path / "none.h5ad")

    table = call(adata)  # the default key
    assert set(adata.uns) == {default_key}
    stored = adata.uns[default_key]
    assert set(stored) == {"results", "params"} and isinstance(stored["params"], dict)
    pd.testing.assert_frame_equal(getter(adata, key=default_key), table.reset_index(drop=True))

    call(adata, key_added="custom")
    assert set(adata.uns) == {default_key, "custom"}
    adata.write_h5ad(tmp_path / "stored.h5ad")
    back = ad.read_h5ad(tmp_path / "stored.h5ad")
    pd.testing.assert_frame_equal(
        getter(back, key="custom"),
        table.reset_index(drop=True),
        check_dtype=False,
        check_categorical=False,
        check_index_type=False,
    )
    assert get.params(back, key="custom").keys() == stored["params"].keys(), name


def test_mudata_results_sit_on_the_mudata(cohort, tmp_path):
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": cohort.copy()})
    for column in ("cell_type", "time", "condition", "donor"):
        mdata.obs[column] = cohort.obs[column].to_numpy()
    table = tl.temporal_edges(mdata, n_bootstrap=2)
    assert "temporal" in mdata.uns and "temporal" not in mdata["rna"].uns
    pd.testing.assert_frame_equal(get.edges(mdata, key="temporal"), table)
    mdata.write(tmp_path / "cohort.h5mu")
