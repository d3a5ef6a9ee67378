"""Gene id harmonisation: Ensembl ids, aliases, make_unique suffixes, summing, species."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from omicstwin.errors import InputTypeError, ParameterError
from omicstwin.io.genes import detect_species, gene_plan, harmonise_genes
from omicstwin.io.manifests import load_table


@pytest.fixture(scope="module")
def hgnc():
    ids = load_table("hgnc_gene_ids").dropna(subset=["gene"])
    aliases = load_table("hgnc_symbol_aliases").dropna(subset=["alias", "gene"])
    return ids, aliases


def _slow_reference(names, ids, aliases, keep):
    """A plain loop over the names with dictionaries built row by row."""
    symbols_of_id: dict[str, set[str]] = {}
    for gene_id, symbol in zip(ids["ensembl_gene_id"], ids["gene"], strict=True):
        if isinstance(gene_id, str):
            symbols_of_id.setdefault(gene_id, set()).add(symbol)
    approved = set(ids["gene"])
    alias_of = {a: g for a, g in zip(aliases["alias"], aliases["gene"], strict=True)}
    known = approved | set(keep)
    present = set(names)
    out = []
    for name in names:
        base = name
        if name not in known and not name.startswith("ENSG"):
            for sep in ("-", "."):
                head, _, tail = name.rpartition(sep)
                if head in present and tail.isdigit() and not tail.startswith("0"):
                    base = head
                    break
        if base.startswith("ENSG"):
            stripped = base.split(".")[0]
            symbols = symbols_of_id.get(stripped, set())
            gene = next(iter(symbols)) if len(symbols) == 1 else stripped
        elif base in keep or base in approved:
            gene = base
        else:
            gene = alias_of.get(base, base)
        if gene not in keep:
            in_keep = [a for a, g in alias_of.items() if g == gene and a in keep]
            if len(in_keep) == 1:
                gene = in_keep[0]
        out.append(gene)
    return out


def test_mapping_matches_a_slow_reference(hgnc):
    ids, aliases = hgnc
    rng = np.random.default_rng(0)
    with_id = ids.dropna(subset=["ensembl_gene_id"]).drop_duplicates("gene")
    picked = with_id.sample(300, random_state=1)
    names = list(picked["gene"].iloc[:100])
    names += [f"{g}.{rng.integers(1, 20)}" for g in picked["ensembl_gene_id"].iloc[100:200]]
    names += list(aliases["alias"].sample(60, random_state=2))
    names += [f"{g}-1" for g in names[:20]] + [f"{g}.1" for g in names[20:30]]
    names += ["ENSG00000276085", "ENSG00000000000.3", "MALAT1", "hsa-miR-21-5p", "HLA-A"]
    names += ["NKX2-1", "MT-CO1", "IGHV1-69", "IGHV1-69-2", "H1-0", "H1-2", "SLC9A3R2", "NHERF2"]
    keep = {"SLC9A3R2", *aliases["alias"].sample(20, random_state=3)}
    plan = gene_plan(names, keep=keep)
    assert plan.genes[plan.columns].tolist() == _slow_reference(names, ids, aliases, keep)
    used = set(plan.table["mapping"])
    assert {"symbol", "ensembl", "alias", "unmapped_id", "unmapped"} <= used
    assert plan.table["suffix_removed"].sum() == 30 and len(plan.genes) < len(names)


def test_real_symbols_with_dashes_and_digits_are_not_suffixes():
    names = ["HLA-A", "HLA", "NKX2-1", "NKX2", "MT-CO1", "IGHV1-69", "IGHV1-69-2", "H1-2", "H1"]
    names += ["CD3E", "CD3E-1", "CD3E.2", "FOO-1", "MALAT1", "MALAT1-1", "CD4-01"]
    table = gene_plan(names).table.set_index("input_name")
    undone = set(table.index[table["suffix_removed"] == 1])
    assert undone == {"CD3E-1", "CD3E.2", "MALAT1-1"}
    assert table.loc["IGHV1-69-2", "gene"] == "IGHV1-69-2"
    assert table.loc["CD4-01", "gene"] == "CD4-01"  # leading zero: not a uniqueness suffix
    # AGT-1 is an alias of SLC7A13, but beside AGT it is AGT's make_unique column
    assert gene_plan(["AGT", "AGT-1"]).genes.tolist() == ["AGT"]
    assert gene_plan(["AGT-1"]).genes.tolist() == ["SLC7A13"]


def test_ensembl_versions_aliases_and_unmapped_ids():
    names = ["ENSG00000121410.12", "ENSG00000276085", "ENSG00000999999.1", "ABG", "CD3E"]
    table = gene_plan(names).table
    assert table["gene"].tolist() == ["A1BG", "ENSG00000276085", "ENSG00000999999", "A1BG", "CD3E"]
    assert table["mapping"].tolist() == ["ensembl", "unmapped_id", "unmapped_id", "alias", "symbol"]
    assert table["gene_id"].tolist()[:3] == [
        "ENSG00000121410",
        "ENSG00000276085",
        "ENSG00000999999",
    ]
    assert table["n_merged"].tolist() == [2, 1, 1, 2, 1]


def test_priors_names_win_over_the_approved_symbol():
    # SLC9A3R2 is NHERF2's previous symbol, the name CollecTRI uses
    plan = gene_plan(["NHERF2", "SLC9A3R2", "THEG"], keep={"SLC9A3R2", "THEG"})
    assert plan.genes.tolist() == ["SLC9A3R2", "THEG"]
    assert plan.table["mapping"].tolist() == ["prior_name", "symbol", "symbol"]
    assert gene_plan(["NHERF2", "SLC9A3R2"]).genes.tolist() == ["NHERF2"]


def test_harmonise_sums_duplicated_columns_of_x_and_layers():
    rng = np.random.default_rng(4)
    names = ["CD3E", "ENSG00000121410.3", "CD3E-1", "A1BG", "GZMB", "CD3E.2"]
    dense = rng.poisson(2.0, size=(7, len(names))).astype(np.float32)
    adata = ad.AnnData(sparse.csr_matrix(dense), var=pd.DataFrame(index=names))
    adata.layers["counts"] = sparse.csr_matrix(dense.astype(np.int32))
    out, table = harmonise_genes(adata)
    assert out.var_names.tolist() == ["CD3E", "A1BG", "GZMB"]
    expected = np.column_stack([dense[:, [0, 2, 5]].sum(1), dense[:, [1, 3]].sum(1), dense[:, 4]])
    np.testing.assert_array_equal(out.X.toarray(), expected)
    np.testing.assert_array_equal(out.layers["counts"].toarray(), expected)
    assert out.X.dtype == np.float32 and out.layers["counts"].dtype == np.int32
    assert out.var["gene_id"].tolist() == ["CD3E;CD3E-1;CD3E.2", "ENSG00000121410.3;A1BG", "GZMB"]
    assert len(table) == len(names) and adata.n_vars == len(names)  # input untouched


def test_identity_returns_the_input_itself():
    adata = ad.AnnData(sparse.csr_matrix(np.ones((3, 2), np.float32)))
    adata.var_names = ["CD3E", "GZMB"]
    out, table = harmonise_genes(adata)
    assert out is adata
    assert table["mapping"].tolist() == ["symbol", "symbol"]
    genes, _ = harmonise_genes(pd.Index(["CD3E", "CD3E-1"]))
    assert genes.tolist() == ["CD3E"]
    with pytest.raises(InputTypeError, match="mdata"):
        harmonise_genes({"rna": adata})


@pytest.mark.parametrize(
    ("names", "species"),
    [
        (["Cd3e", "Actb", "mt-Co1", "Gm12345", "1700001C19Rik", "H2-K1"], "mouse"),
        (["ENSMUSG00000000001.4", "ENSMUSG00000000028", "CD3E"], "mouse"),
        (["CD3E", "C1orf112", "HLA-A", "hsa-miR-21-5p", "Cd4"], "human"),
        (["gene_0", "gene_1"], "human"),
        (["ENSDARG00000000001", "ENSDARG00000000002"], "zebrafish"),
    ],
)
def test_species_detection(names, species):
    assert detect_species(names) == species


def test_mouse_genes_stop_with_one_line_naming_the_fix():
    with pytest.raises(ParameterError) as info:
        gene_plan(["Cd3e", "Actb", "Cd4", "Gzmb"])
    message = str(info.value)
    assert "\n" not in message and "mouse" in message and "Cd3e" in message
    assert "human orthologs" in message and "--species human" in message
    with pytest.raises(ParameterError, match="mouse"):
        gene_plan(["CD3E"], species="mouse")
    assert gene_plan(["Cd3e", "Actb"], species="human").genes.tolist() == ["Cd3e", "Actb"]
