"""QC metrics against scanpy, the thresholds and QC table against loops, scrublet per sample."""

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from omicstwin.errors import OptionalDependencyError
from omicstwin.pp.qc import cell_qc_metrics, doublet_calls, gene_classes, quality_control

GENES = ["MT-CO1", "MT-ND1", "RPS6", "RPL13A", "RPLP0", "RPSA", "RPS6KA1", "RPL36AL", "CD3E"]
GENES += [f"G{i}" for i in range(21)]


def _counts(n_cells=80, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.poisson(rng.gamma(0.6, 2.0, size=len(GENES)), size=(n_cells, len(GENES)))
    dense[:3] = 0
    dense[3, :2] = 50  # a mitochondria-heavy cell
    return dense.astype(np.float32)


def test_gene_classes():
    mito, ribo = gene_classes(GENES)
    assert [g for g, m in zip(GENES, mito, strict=True) if m] == ["MT-CO1", "MT-ND1"]
    assert [g for g, r in zip(GENES, ribo, strict=True) if r] == [
        *("RPS6", "RPL13A", "RPLP0", "RPSA", "RPL36AL")  # not the RPS6KA1 kinase
    ]


def test_metrics_match_scanpy_calculate_qc_metrics():
    dense = _counts()
    adata = ad.AnnData(sparse.csr_matrix(dense), var=pd.DataFrame(index=GENES))
    adata.var["mt"], adata.var["ribo"] = gene_classes(GENES)
    expected, _ = sc.pp.calculate_qc_metrics(
        adata, qc_vars=["mt", "ribo"], percent_top=None, inplace=False
    )
    got = cell_qc_metrics(adata.X, GENES)
    np.testing.assert_allclose(got["n_counts"], expected["total_counts"], rtol=1e-6)
    np.testing.assert_array_equal(got["n_genes"], expected["n_genes_by_counts"])
    full = expected["total_counts"].to_numpy() > 0  # scanpy gives NaN for an empty cell, we give 0
    np.testing.assert_allclose(got["pct_mito"][full], expected["pct_counts_mt"][full], rtol=1e-5)
    np.testing.assert_allclose(got["pct_ribo"][full], expected["pct_counts_ribo"][full], rtol=1e-5)
    assert (got.loc[~full, ["pct_mito", "pct_ribo"]] == 0).all().all()
    # blocks of cells give the rows of the whole (a chunked pass concatenates them)
    blocks = [cell_qc_metrics(adata.X[i : i + 17], GENES) for i in range(0, 80, 17)]
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), got)


def _cells(n):
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "condition": np.where(np.arange(n) % 2 == 0, "case", "control"),
            "donor": rng.choice(["d1", "d2", "d3"], n),
            "time": rng.choice([0.0, 6.0], n),
            "cell_type": rng.choice(["T", "B"], n),
        }
    )


def test_thresholds_and_the_group_table_match_a_loop():
    dense = _counts()
    cells = _cells(len(dense))
    keep, keep_genes, qc = quality_control(
        sparse.csr_matrix(dense),
        cells,
        GENES,
        min_genes=8,
        min_cells=5,
        max_pct_mito=15.0,
        max_pct_ribo=30.0,
    )
    mito, ribo = gene_classes(GENES)
    rows = []
    for row in dense:
        total, detected = row.sum(), int((row > 0).sum())
        pct_m = 100 * row[mito].sum() / total if total else 0.0
        pct_r = 100 * row[ribo].sum() / total if total else 0.0
        rows.append((detected < 8, pct_m > 15.0, pct_r > 30.0, detected, total, pct_m, pct_r))
    flags = pd.DataFrame(rows, columns=["low", "mito", "ribo", "genes", "counts", "pm", "pr"])
    expected_keep = ~(flags["low"] | flags["mito"] | flags["ribo"]).to_numpy()
    np.testing.assert_array_equal(keep, expected_keep)
    assert flags["mito"].any() and flags["low"].any()  # the test exercises the cuts
    expected_genes = [(dense[expected_keep, j] > 0).sum() >= 5 for j in range(len(GENES))]
    np.testing.assert_array_equal(keep_genes, expected_genes)
    for _, group in qc.iterrows():
        mask = (
            (cells["condition"] == group["condition"])
            & (cells["donor"] == group["donor"])
            & (cells["time"] == group["time"])
            & (cells["cell_type"] == group["cell_type"])
        ).to_numpy()
        sub = flags[mask]
        assert group["n_cells"] == mask.sum()
        assert group["n_cells_kept"] == expected_keep[mask].sum()
        assert group[["n_low_genes", "n_high_mito", "n_high_ribo", "n_doublets"]].tolist() == [
            sub["low"].sum(),
            sub["mito"].sum(),
            sub["ribo"].sum(),
            0,
        ]
        assert group["median_genes"] == np.median(sub["genes"])
        assert np.isclose(group["median_counts"], np.median(sub["counts"]))
        assert np.isclose(group["median_pct_mito"], np.median(sub["pm"]))
        assert np.isclose(group["median_pct_ribo"], np.median(sub["pr"]))
        assert np.isnan(group["doublet_rate"])  # not scored
    assert qc["n_cells"].sum() == len(dense)


def _with_doublets(seed=0, n_types=3, per_type=120, n_doublets=30, n_genes=200):
    """Singlets of distinct cell types and doublets made by summing two cells of two types."""
    rng = np.random.default_rng(seed)
    profiles = rng.gamma(0.3, 1.0, size=(n_types, n_genes))
    profiles[:, : n_genes // 2] *= rng.choice([0.05, 8.0], size=(n_types, n_genes // 2))
    singlets = np.vstack(
        [rng.poisson(profiles[t] * 3, size=(per_type, n_genes)) for t in range(n_types)]
    )
    labels = np.repeat(np.arange(n_types), per_type)
    pairs = [rng.choice(np.flatnonzero(labels == a)) for a in rng.integers(0, n_types, n_doublets)]
    partners = [rng.choice(np.flatnonzero(labels != labels[i])) for i in pairs]
    doublets = singlets[pairs] + singlets[partners]
    counts = np.vstack([singlets, doublets]).astype(np.float32)
    truth = np.r_[np.zeros(len(singlets), bool), np.ones(n_doublets, bool)]
    return counts, truth


def test_doublet_scores_separate_planted_doublets_and_match_scanpys_batch_key():
    first, truth_a = _with_doublets(seed=0)
    second, truth_b = _with_doublets(seed=1)
    counts = np.vstack([first, second])
    truth = np.r_[truth_a, truth_b]
    samples = np.repeat(["s1", "s2"], [len(first), len(second)])
    calls = doublet_calls(sparse.csr_matrix(counts), samples, threshold=0.25, seed=0)
    adata = ad.AnnData(sparse.csr_matrix(counts), obs=pd.DataFrame({"sample": samples}))
    adata.obs_names = [f"c{i}" for i in range(len(counts))]
    sc.pp.scrublet(adata, batch_key="sample", threshold=0.25, random_state=0, verbose=False)
    np.testing.assert_allclose(calls["doublet_score"], adata.obs["doublet_score"], rtol=1e-6)
    np.testing.assert_array_equal(calls["predicted_doublet"], adata.obs["predicted_doublet"])
    # the planted doublets score higher than the singlets (rank AUC)
    scores = calls["doublet_score"].to_numpy()
    auc = (scores[truth][:, None] > scores[~truth][None, :]).mean()
    assert auc > 0.9, auc
    assert calls["predicted_doublet"][truth].mean() > calls["predicted_doublet"][~truth].mean()


def test_small_samples_are_not_scored_and_doublets_count_in_the_table():
    counts, truth = _with_doublets(seed=2)
    n = len(counts)
    cells = pd.DataFrame(
        {"condition": "case", "donor": "d1", "time": 0.0, "cell_type": "T"}, index=range(n)
    )
    cells.loc[:19, "donor"] = "d2"  # a 20-cell sample: too small for scrublet
    keep, _, qc = quality_control(
        sparse.csr_matrix(counts),
        cells,
        [f"G{i}" for i in range(counts.shape[1])],
        min_genes=1,
        min_cells=1,
        doublets=True,
        doublet_threshold=0.25,
    )
    big, small = qc.set_index("donor").loc["d1"], qc.set_index("donor").loc["d2"]
    assert small["n_doublets"] == 0 and np.isnan(small["doublet_rate"])
    assert big["n_doublets"] == (~keep[20:]).sum() > 0
    assert big["doublet_rate"] == big["n_doublets"] / (n - 20)
    removed = ~keep[20:]
    assert removed[truth[20:]].mean() > 3 * removed[~truth[20:]].mean()  # mostly doublets


def test_automatic_threshold_without_scikit_image_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import fails as if not installed
    with pytest.raises(OptionalDependencyError, match=r"omicstwin\[qc\]"):
        doublet_calls(sparse.csr_matrix(np.ones((60, 5), np.float32)), ["s"] * 60)


@pytest.mark.parametrize("doublets", [False, True])
def test_chunked_quality_control_decides_as_the_whole_matrix(doublets):
    # a backed cohort's one pass over blocks must keep the same cells and genes and write
    # the same table as quality_control on the whole matrix (mito cut, doublets included)
    from omicstwin.pp.qc import chunked_quality_control

    counts, _ = _with_doublets(seed=0)
    genes = ["MT-CO1", "RPS6", *[f"G{i}" for i in range(counts.shape[1] - 2)]]
    counts[5, 0] = 500  # a mitochondria-heavy cell
    counts[:, -1] = 0
    counts[:2, -1] = 1  # a gene detected in 2 cells only: min_cells decides
    matrix = sparse.csr_matrix(counts)
    cells = _cells(len(counts))
    cells[["donor", "time"]] = ["d1", 0.0]  # one sample, large enough for scrublet
    options = {"min_genes": 5, "min_cells": 2, "max_pct_mito": 20.0, "doublets": doublets}
    options["doublet_threshold"] = 0.25
    keep, keep_genes, qc = quality_control(matrix, cells, genes, **options)
    chunks = ((i, min(i + 37, len(counts)), matrix[i : i + 37]) for i in range(0, len(counts), 37))
    got_keep, got_genes, got_qc, metrics = chunked_quality_control(
        chunks, lambda rows: matrix[rows], cells, genes, **options
    )
    np.testing.assert_array_equal(got_keep, keep)
    np.testing.assert_array_equal(got_genes, keep_genes)
    pd.testing.assert_frame_equal(got_qc, qc)
    pd.testing.assert_frame_equal(metrics, cell_qc_metrics(matrix, genes))
    assert not keep[5] and (not doublets or (~keep).sum() > 1)
