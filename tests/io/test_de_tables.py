"""Exported DE tables (Seurat, monocle, DESeq2, edgeR, scanpy) into the ``de`` schema."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from omicstwin import errors
from omicstwin.io.de_tables import parse_table_spec, parse_time, read_de_table, read_gene_list


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


SEURAT_V4 = """\
"","p_val","avg_log2FC","pct.1","pct.2","p_val_adj"
"IL4",1e-10,2.5,0.8,0.1,2e-8
"GATA3",0.001,-1.0,0.3,0.5,0.2
"ACTB",0.6,0.05,1,1,1
"""

SEURAT_V3_ALL_MARKERS = """\
"","p_val","avg_logFC","pct.1","pct.2","p_val_adj","cluster","gene"
"IL4",1e-10,0.693147,0.8,0.1,2e-8,"Th2","IL4"
"ACTB",0.6,0.1,1,1,1,"Th2","ACTB"
"IL41",0.01,-0.693147,0.2,0.4,1,"Treg","IL4"
"""

MONOCLE = """\
symbol,log10 fold change,q-value
IL4,Inf,1e-6
IL13,0.5,1e-4
IL5,-Inf,0.01
GATA3,-0.25,0.02
"""

DESEQ2 = """\
"","baseMean","log2FoldChange","lfcSE","stat","pvalue","padj"
"IL4",120.5,3.1,0.4,7.7,1e-14,1e-12
"GATA3",80.2,-0.8,0.3,-2.6,0.009,0.05
"ZERO",0,NA,NA,NA,NA,NA
"ACTB",5000,0.01,0.05,0.2,0.84,NA
"""

EDGER = """\
genes\tlogFC\tlogCPM\tF\tPValue\tFDR
IL4\t2.0\t5.1\t40.2\t1e-08\t1e-06
GATA3\t-1.5\t4.0\t12.1\t0.001\t0.02
ACTB\t0.02\t12.0\t0.1\t0.9\t0.95
"""


def test_seurat_v4_findmarkers_row_names_and_log2(tmp_path):
    de = read_de_table(_write(tmp_path, "th2.csv", SEURAT_V4), cell_type="Th2", time="3D")
    assert de.attrs["format"] == "seurat" and de.attrs["time_unit"] == "day"
    assert list(de.columns) == ["cell_type", "time", "gene", "log_fc", "p_value", "q_value"]
    row = de.set_index("gene").loc["IL4"]
    assert row["log_fc"] == 2.5 and row["p_value"] == 1e-10 and row["q_value"] == 2e-8
    assert (de["time"] == 3.0).all() and (de["cell_type"] == "Th2").all()


def test_seurat_v3_findallmarkers_natural_log_and_cluster_column(tmp_path):
    de = read_de_table(_write(tmp_path, "all.csv", SEURAT_V3_ALL_MARKERS))
    # avg_logFC is the natural log in Seurat < 4: ln 2 -> log2 FC of 1
    il4 = de.set_index(["cell_type", "gene"])["log_fc"]
    assert il4[("Th2", "IL4")] == pytest.approx(1.0, abs=1e-6)
    assert il4[("Treg", "IL4")] == pytest.approx(-1.0, abs=1e-6)
    assert sorted(de["cell_type"].unique()) == ["Th2", "Treg"]  # gene column, not row names


def test_monocle_log10_infinite_and_q_only(tmp_path):
    path = _write(tmp_path, "monocle.csv", MONOCLE)
    with pytest.warns(errors.OmicstwinWarning, match=r"2 infinite fold changes.*capped"):
        de = read_de_table(path, cell_type="B", time="day 7")
    assert de.attrs["format"] == "monocle" and de.attrs["n_capped"] == 2
    assert not de.attrs["has_p_value"] and de["p_value"].isna().all()
    lfc = de.set_index("gene")["log_fc"]
    largest = 0.5 * math.log2(10)  # the largest finite |log10 FC|, in log2
    assert lfc["IL13"] == pytest.approx(largest)
    assert lfc["IL4"] == pytest.approx(largest) and lfc["IL5"] == pytest.approx(-largest)
    assert de["time"].unique().tolist() == [7.0]


def test_deseq2_drops_missing_fold_changes_and_keeps_missing_padj(tmp_path):
    path = _write(tmp_path, "deseq2.csv", DESEQ2)
    with pytest.warns(errors.OmicstwinWarning, match="1 rows without a fold change"):
        de = read_de_table(path, cell_type="CD4")
    assert de.attrs["format"] == "deseq2" and de.attrs["n_dropped"] == 1
    assert "ZERO" not in set(de["gene"])
    actb = de.set_index("gene").loc["ACTB"]
    assert actb["p_value"] == 0.84 and np.isnan(actb["q_value"])  # independent filtering
    assert de.set_index("gene").loc["IL4", "log_fc"] == 3.1


def test_edger_tsv(tmp_path):
    de = read_de_table(_write(tmp_path, "edger.tsv", EDGER), cell_type="NK", time=6)
    assert de.attrs["format"] == "edger"
    assert de.set_index("gene").loc["GATA3", ["log_fc", "p_value", "q_value"]].tolist() == [
        -1.5,
        0.001,
        0.02,
    ]


def test_scanpy_rank_genes_groups_df_frame():
    # the columns of sc.get.rank_genes_groups_df(adata, group=None)
    frame = pd.DataFrame(
        {
            "group": ["0", "0", "1"],
            "names": ["IL4", "ACTB", "IL4"],
            "scores": [8.0, 0.1, -3.0],
            "logfoldchanges": [2.0, 0.01, -1.0],
            "pvals": [1e-9, 0.9, 0.002],
            "pvals_adj": [1e-7, 0.95, 0.01],
        }
    )
    de = read_de_table(frame, time_column=None, time="h6")
    assert de.attrs["format"] == "scanpy" and de.attrs["time_unit"] == "hour"
    assert de.groupby("cell_type").size().to_dict() == {"0": 2, "1": 1}


def test_p_values_only_get_bh_q_values_within_each_context():
    frame = pd.DataFrame(
        {"gene": list("abcd"), "logFC_log2": [1, -1, 2, 0.1], "pval": [0.01, 0.02, 0.03, 0.5]}
    )
    de = read_de_table(
        frame, format="omicstwin", gene="gene", log_fc="logFC_log2", p_value="pval", cell_type="A"
    )
    from statsmodels.stats.multitest import multipletests

    expected = multipletests([0.01, 0.02, 0.03, 0.5], method="fdr_bh")[1]
    assert de.set_index("gene").loc[list("abcd"), "q_value"].to_numpy() == pytest.approx(expected)


def test_fold_change_base_given_or_from_the_name():
    frame = pd.DataFrame({"gene": ["a", "b"], "lfc": [1.0, -2.0], "p_value": [0.01, 0.2]})
    de = read_de_table(frame, fc_base="ln", cell_type="A", format="monocle", gene="gene")
    assert de["log_fc"].tolist() == pytest.approx([1 / math.log(2), -2 / math.log(2)])
    named = frame.rename(columns={"lfc": "log2_fc"})
    de = read_de_table(named, cell_type="A", format="monocle", gene="gene")
    assert de["log_fc"].tolist() == [1.0, -2.0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, (3.0, "")),
        ("3D", (3.0, "day")),
        ("day 3", (3.0, "day")),
        ("d7", (7.0, "day")),
        ("6h", (6.0, "hour")),
        ("W2", (2.0, "week")),
        ("0.5", (0.5, "")),
    ],
)
def test_time_labels(value, expected):
    assert parse_time(value) == expected


def test_table_specs_and_gene_lists(tmp_path):
    assert parse_table_spec("x.csv:B cells:3D") == ("x.csv", "B cells", "3D")
    assert parse_table_spec("x.csv:NK") == ("x.csv", "NK", None)
    existing = _write(tmp_path, "a:b.csv", "gene\n")
    assert parse_table_spec(str(existing)) == (str(existing), None, None)
    genes = _write(tmp_path, "bg.txt", "# background\nIL4\nACTB\nIL4\n")
    assert read_gene_list(genes) == ["ACTB", "IL4"]


# ----------------------------------------------------------------------- bad tables: one line


def _one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message and "fix:" in message, message
    for needle in needles:
        assert needle in message, message


def test_missing_gene_column(tmp_path):
    path = _write(tmp_path, "nogene.csv", "log2FoldChange,pvalue,padj\n1,0.01,0.02\n")
    with pytest.raises(errors.MissingKeyError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "nogene.csv", "gene", "--gene")


def test_duplicated_genes_in_a_context(tmp_path):
    path = _write(
        tmp_path, "dup.csv", "gene,log2FoldChange,pvalue,padj\nIL4,1,0.01,0.02\nIL4,2,0.1,0.2\n"
    )
    with pytest.raises(errors.DuplicateNamesError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "dup.csv", "IL4", "'A'")


def test_no_fold_change_column(tmp_path):
    path = _write(tmp_path, "nofc.csv", "symbol,q-value\nIL4,0.01\n")
    with pytest.raises(errors.MissingKeyError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "nofc.csv", "fold-change", "--log-fc")


def test_ambiguous_and_unknown_fold_change_base(tmp_path):
    path = _write(tmp_path, "amb.csv", "symbol,logFoldChange,q-value\nIL4,1,0.01\n")
    with pytest.raises(errors.ParameterError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "amb.csv", "logFoldChange", "--fc-base")
    with pytest.raises(errors.ParameterError) as excinfo:
        read_de_table(path, cell_type="A", fc_base="log3")
    _one_line(excinfo, "log3")


def test_empty_table(tmp_path):
    path = _write(tmp_path, "empty.csv", "gene,log2FoldChange,pvalue,padj\n")
    with pytest.raises(errors.EmptyDataError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "empty.csv")
    with pytest.raises(errors.EmptyDataError):
        read_de_table(_write(tmp_path, "nothing.csv", ""), cell_type="A")


def test_p_values_outside_the_unit_interval(tmp_path):
    path = _write(tmp_path, "mlog.csv", "gene,log2FoldChange,pvalue,padj\nIL4,1,12.5,0.01\n")
    with pytest.raises(errors.ParameterError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "mlog.csv", "'pvalue'", "12.5")


def test_unparseable_time_fails_while_reading(tmp_path):
    path = _write(tmp_path, "t.csv", SEURAT_V4)
    with pytest.raises(errors.TimeOrderError) as excinfo:
        read_de_table(path, cell_type="A", time="baseline")
    _one_line(excinfo, "t.csv", "baseline")
    frame = pd.read_csv(path).assign(when=["3D", "6h", "3D"], cluster="A")
    with pytest.raises(errors.TimeOrderError) as excinfo:
        read_de_table(frame, time_column="when")
    _one_line(excinfo, "when", "day", "hour")


def test_no_cell_type_and_unknown_format(tmp_path):
    path = _write(tmp_path, "noct.csv", DESEQ2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(errors.MissingKeyError) as excinfo:
            read_de_table(path)
    _one_line(excinfo, "noct.csv", "--cell-type")
    odd = _write(tmp_path, "odd.csv", "a,b\n1,2\n")
    with pytest.raises(errors.ParameterError) as excinfo:
        read_de_table(odd, cell_type="A")
    _one_line(excinfo, "odd.csv", "--format")


def test_non_numeric_values_and_missing_file(tmp_path):
    path = _write(tmp_path, "txt.csv", "gene,log2FoldChange,pvalue,padj\nIL4,high,0.01,0.02\n")
    with pytest.raises(errors.ParameterError) as excinfo:
        read_de_table(path, cell_type="A")
    _one_line(excinfo, "log2FoldChange", "high")
    with pytest.raises(errors.DataFileError) as excinfo:
        read_de_table(tmp_path / "absent.csv", cell_type="A")
    _one_line(excinfo, "absent.csv")


def test_xlsx_without_openpyxl_is_one_clear_line(tmp_path):
    pytest.importorskip("pandas")
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        path = _write(tmp_path, "t.xlsx", "not really excel")
        with pytest.raises(errors.OptionalDependencyError) as excinfo:
            read_de_table(path, cell_type="A")
        _one_line(excinfo, "openpyxl")
    else:
        frame = pd.read_csv(pd.io.common.StringIO(DESEQ2))
        frame.to_excel(tmp_path / "t.xlsx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert len(read_de_table(tmp_path / "t.xlsx", cell_type="A")) == 3
