"""The CLI: one-line errors naming the problem and the fix, exit codes, no tracebacks."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse
from typer.testing import CliRunner

from omicstwin.cli import app
from tests.conftest import TINY_FLAGS, make_tiny

runner = CliRunner()


def _write(adata, tmp_path, name="data.h5ad"):
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def _set_x(adata, row, col, value):
    x = adata.X.toarray()
    x[row, col] = value
    adata.X = sparse.csr_matrix(x)
    return adata


def _bad_inputs(tmp_path):
    """(case id, path, extra flags, words the one-line message must contain)."""
    cases = []
    cases.append(
        ("missing file", tmp_path / "absent.h5ad", [], ["absent.h5ad", "not found", "fix:"])
    )
    csv = tmp_path / "counts.csv"
    csv.write_text("a,b\n")
    cases.append(("not h5ad", csv, [], ["counts.csv", ".h5ad or .h5mu", "fix:"]))
    good = _write(make_tiny(), tmp_path, "good.h5ad")
    cases.append(
        (
            "missing key",
            good,
            ["--cell-type-key", "cell_type"],
            ["'cell_type'", "columns present", "celltype", "--cell-type-key"],
        )
    )
    for name, value, word in [
        ("negative", -3.0, "negative"),
        ("nan", np.nan, "NaN"),
        ("inf", np.inf, "infinite"),
        ("fraction", 2.5, "non-integer"),
    ]:
        path = _write(_set_x(make_tiny(), 2, 1, value), tmp_path, f"{name}.h5ad")
        cases.append((name, path, [], [word, "cell 'c2'", "gene 'G1'", "--layer counts"]))
    dup_genes = make_tiny()
    dup_genes.var_names = ["G0", "G0", *dup_genes.var_names[2:]]
    cases.append(
        (
            "duplicate genes",
            _write(dup_genes, tmp_path, "dupg.h5ad"),
            [],
            ["gene names", "'G0'", "var_names_make_unique"],
        )
    )
    dup_cells = make_tiny()
    dup_cells.obs_names = ["c0", "c0", *dup_cells.obs_names[2:]]
    cases.append(
        (
            "duplicate cells",
            _write(dup_cells, tmp_path, "dupc.h5ad"),
            [],
            ["cell names", "'c0'", "obs_names_make_unique"],
        )
    )
    cases.append(
        (
            "case absent",
            good,
            ["--case", "patient"],
            ["'patient'", "labels present", "'case', 'ctrl'", "--case"],
        )
    )
    one_arm = make_tiny()
    one_arm.obs["status"] = "case"
    cases.append(
        (
            "one condition",
            _write(one_arm, tmp_path, "onearm.h5ad"),
            [],
            ["'ctrl'", "only one condition", "labels present"],
        )
    )
    unordered = make_tiny()
    unordered.obs["hours"] = np.where(unordered.obs["hours"] > 0, "late", "early")
    cases.append(
        (
            "unordered time",
            _write(unordered, tmp_path, "time.h5ad"),
            [],
            ["'hours'", "'early', 'late'", "ordered categorical"],
        )
    )
    empty = make_tiny()[:, []].copy()
    cases.append(("empty", _write(empty, tmp_path, "empty.h5ad"), [], ["empty", "0 genes"]))
    cases.append(("missing layer", good, ["--layer", "raw"], ["layer 'raw'", "counts"]))
    return cases


def test_validate_ok(tmp_path):
    path = _write(make_tiny(), tmp_path)
    result = runner.invoke(app, ["validate", str(path), *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ok: 48 cells x 8 genes; 2 cell types; 2 time points")
    assert "donors: 2 case, 2 control" in lines[0]


def test_every_bad_input_gives_one_line_error(tmp_path):
    for case_id, path, extra, words in _bad_inputs(tmp_path):
        flags = list(TINY_FLAGS)
        for i in range(0, len(extra), 2):  # later flags override the defaults
            if extra[i] in flags:
                flags[flags.index(extra[i]) + 1] = extra[i + 1]
            else:
                flags += extra[i : i + 2]
        result = runner.invoke(app, ["validate", str(path), *flags])
        assert result.exit_code == 2, (case_id, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (case_id, result.stderr)
        assert lines[0].startswith("error: "), case_id
        assert "Traceback" not in result.output, case_id
        for word in words:
            assert word in lines[0], (case_id, word, lines[0])


def test_underreplication_is_a_warning_not_an_error(tmp_path):
    adata = make_tiny()
    keep = ~((adata.obs["celltype"] == "Mono") & (adata.obs["patient"] == "d4"))
    path = _write(adata[keep.to_numpy()].copy(), tmp_path)
    result = runner.invoke(app, ["validate", str(path), *TINY_FLAGS])
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "Mono" in result.stderr
    assert "2 of 4 cell type x time groups skipped" in result.stdout


def test_real_process_prints_no_traceback_unless_debug(tmp_path):
    path = _write(_set_x(make_tiny(), 0, 0, -1.0), tmp_path)
    command = [sys.executable, "-m", "omicstwin.cli", "validate", str(path), *TINY_FLAGS]
    plain = subprocess.run(command, capture_output=True, text=True, check=False)
    assert plain.returncode == 2
    assert plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, check=False)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_simulate_writes_reproducible_file(tmp_path):
    import anndata as ad

    paths = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    for path in paths:
        result = runner.invoke(app, ["simulate", "--out", str(path), "--seed", "3"])
        assert result.exit_code == 0, result.output
        assert f"wrote {path}" in result.stdout
    a, b = (ad.read_h5ad(p) for p in paths)
    assert (a.X != b.X).nnz == 0
    result = runner.invoke(app, ["validate", str(paths[0])])
    assert result.exit_code == 0 and "6 cell types; 5 time points (0 h .. 48 h)" in result.stdout


@pytest.mark.parametrize(
    ("args", "word"),
    [(["--preset", "huge"], "unknown simulation preset 'huge'"), (["--out", "x.csv"], ".h5ad")],
)
def test_simulate_bad_options(tmp_path, args, word):
    base = ["simulate", "--out", str(tmp_path / "x.h5ad")]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 2 and word in result.stderr


def test_version_and_help():
    from omicstwin import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    listed = runner.invoke(app, ["--help"]).stdout
    for command in ("validate", "simulate", "demo"):
        assert command in listed
