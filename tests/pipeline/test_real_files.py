"""Real-file gene names end to end: Ensembl ids and duplicated symbols give the golden tables.

Both files are the golden run's cohort (``small``, seed 0) with its genes renamed: to
versioned Ensembl ids from the HGNC table, or with some genes' counts split over ``GENE-1``
(anndata's make_unique), ``GENE.1`` (R's make.unique) and plain duplicated columns. After the
harmonisation each run must give the golden tables exactly (only ``gene_ids`` differs).
"""

import json
import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from typer.testing import CliRunner

from omicstwin.cli import app
from omicstwin.io.manifests import load_table
from omicstwin.pipeline import load_config, run_pipeline
from tests.golden.regenerate import EXPECTED, golden_tables

GOLDEN_SETTINGS = {"seed": 1, "stages": {"screen_drugs": False}}  # tests/golden/small.yaml


def _run(path, out):
    config = load_config(None, {"data": str(path), **GOLDEN_SETTINGS})
    run_pipeline(config, out)
    return golden_tables(out)


def _assert_golden(got: dict[str, pd.DataFrame]) -> None:
    want = {p.stem: pd.read_parquet(p) for p in sorted(EXPECTED.glob("*.parquet"))}
    assert got.keys() == want.keys()
    for name in sorted(set(want) - {"gene_ids"}):
        pd.testing.assert_frame_equal(got[name], want[name], rtol=1e-6, obj=name)


def _ensembl_ids(genes):
    ids = load_table("hgnc_gene_ids").dropna(subset=["gene", "ensembl_gene_id"])
    ids = ids.drop_duplicates(["gene", "ensembl_gene_id"])
    ids = ids[~ids["ensembl_gene_id"].duplicated(keep=False) & ~ids["gene"].duplicated(keep=False)]
    id_of = dict(zip(ids["gene"], ids["ensembl_gene_id"], strict=True))
    return [f"{id_of[g]}.{7 + i % 3}" if g in id_of else g for i, g in enumerate(genes)]


def test_ensembl_id_file_gives_the_golden_tables(small_cohort, tmp_path):
    adata = small_cohort.copy()
    adata.var_names = _ensembl_ids(list(small_cohort.var_names))
    assert sum(name.startswith("ENSG") for name in adata.var_names) >= 140
    path = tmp_path / "ensembl.h5ad"
    adata.write_h5ad(path)
    got = _run(path, tmp_path / "run")
    _assert_golden(got)
    gene_map = got["gene_ids"]
    assert gene_map["gene"].tolist() == list(small_cohort.var_names)
    assert (gene_map["mapping"] == "ensembl").sum() >= 140
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["genes"].startswith("150 input genes -> 150 genes (human); ensembl")


def _duplicated_file(small_cohort, tmp_path):
    rng = np.random.default_rng(0)
    counts = small_cohort.X.toarray()
    names = list(small_cohort.var_names)
    split = {5: "-1", 9: "-1", 17: ".1", 30: "-1", 42: ".1", 60: "", 77: ""}
    extra = []
    for column in split:  # a share of each count moves to the duplicate column
        moved = rng.binomial(counts[:, column].astype(np.int64), 0.3).astype(np.float32)
        counts[:, column] -= moved
        extra.append(moved)
    counts = np.column_stack([counts, *extra])
    var_names = names + [names[c] + suffix for c, suffix in split.items()]
    adata = small_cohort.copy()
    with warnings.catch_warnings():  # anndata warns of the non-unique names: they are the test
        warnings.simplefilter("ignore", UserWarning)
        adata = type(adata)(
            sparse.csr_matrix(counts),
            obs=adata.obs,
            uns=adata.uns,
            var=pd.DataFrame(index=var_names),
        )
        path = tmp_path / "duplicated.h5ad"
        adata.write_h5ad(path)
    return adata, path


def test_duplicated_symbol_file_gives_the_golden_tables(small_cohort, tmp_path):
    adata, path = _duplicated_file(small_cohort, tmp_path)
    assert not adata.var_names.is_unique
    got = _run(path, tmp_path / "run")
    _assert_golden(got)
    merged = got["gene_ids"]
    assert len(merged) == 157 and merged["suffix_removed"].sum() == 5
    assert (merged["n_merged"] == 2).sum() == 14


def test_mouse_file_stops_with_one_line_naming_the_fix(small_cohort, tmp_path):
    adata = small_cohort.copy()
    adata.var_names = [g.capitalize() for g in small_cohort.var_names]  # Cd3e, Gzmb, ...
    path = tmp_path / "mouse.h5ad"
    adata.write_h5ad(path)
    result = CliRunner().invoke(app, ["run", "--data", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the genes look like mouse")
    assert "human orthologs" in errors[0] and "--species human" in errors[0]
    assert "Traceback" not in result.output


def test_mudata_rna_modality_is_harmonised_before_validation(tmp_path):
    import mudata as md

    from omicstwin.pipeline import RunConfig
    from omicstwin.pipeline.stage import RunContext
    from tests.conftest import TINY_KEYS, make_tiny

    rna = make_tiny()
    dense = rna.X.toarray()
    rna.var_names = ["CD3E", "CD3E-1", "ENSG00000121410.2", "A1BG", "CD4", "CD8A", "GZMB", "NKG7"]
    mdata = md.MuData({"rna": rna})
    path = tmp_path / "tiny.h5mu"
    mdata.write(path)
    config = RunConfig(data=str(path), **TINY_KEYS)
    context = RunContext(config, tmp_path, path)
    cohort = context.validated
    assert list(cohort.genes) == ["CD3E", "A1BG", "CD4", "CD8A", "GZMB", "NKG7"]
    expected = np.column_stack([dense[:, :2].sum(1), dense[:, 2:4].sum(1), dense[:, 4:]])
    np.testing.assert_array_equal(cohort.counts.toarray(), expected)
    assert context.gene_plan.one_line().startswith("8 input genes -> 6 genes (human)")


def test_backed_read_sums_duplicated_columns_as_the_in_memory_read(small_cohort, tmp_path):
    # counts on disk are never loaded whole: each block read is summed into the run's genes
    from omicstwin.pipeline.config import RunConfig
    from omicstwin.pipeline.stage import RunContext

    _, path = _duplicated_file(small_cohort, tmp_path)
    backed = RunConfig(data=str(path), compute={"backed": True, "chunk_cells": 1000})
    on_disk = RunContext(backed, tmp_path / "a", path).cohort
    in_memory = RunContext(RunConfig(data=str(path)), tmp_path / "b", path).cohort
    assert on_disk.backed and not in_memory.backed
    assert list(on_disk.genes) == list(in_memory.genes) == list(small_cohort.var_names)
    assert (on_disk.rows() != in_memory.rows()).nnz == 0
    np.testing.assert_array_equal(on_disk.pseudobulk.X, in_memory.pseudobulk.X)


def test_auto_backed_input_with_duplicated_genes_is_summed_block_by_block(tmp_path):
    # compute.backed left to auto: a large input whose genes must be summed stays on disk and
    # every block read is summed (Ensembl id and make_unique suffix included)
    from omicstwin.pipeline import RunConfig
    from omicstwin.pipeline.stage import RunContext
    from tests.conftest import TINY_KEYS, make_tiny

    adata = make_tiny(n_per_group=64)  # 1,024 cells: more than chunk_cells, so auto is backed
    dense = adata.X.toarray()
    adata.var_names = ["CD3E", "CD3E-1", "ENSG00000121410.2", "A1BG", "CD4", "CD8A", "GZMB", "NKG7"]
    path = tmp_path / "dup.h5ad"
    adata.write_h5ad(path)
    config = RunConfig(data=str(path), compute={"chunk_cells": 1000}, **TINY_KEYS)
    cohort = RunContext(config, tmp_path, path).validated
    assert cohort.backed and list(cohort.genes) == ["CD3E", "A1BG", "CD4", "CD8A", "GZMB", "NKG7"]
    expected = np.column_stack([dense[:, :2].sum(1), dense[:, 2:4].sum(1), dense[:, 4:]])
    np.testing.assert_array_equal(cohort.rows().toarray(), expected)
    whole = RunConfig(data=str(path), compute={"chunk_cells": 1000, "backed": False}, **TINY_KEYS)
    np.testing.assert_array_equal(
        RunContext(whole, tmp_path, path).validated.rows().toarray(), expected
    )
