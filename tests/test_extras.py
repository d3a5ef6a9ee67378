"""The core install is the analysis library; service, report, dask and enrichment are extras."""

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from omicstwin._optional import EXTRA_OF, install_hint, require
from omicstwin.errors import OptionalDependencyError

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "gseapy", "distributed", "jinja2")


def _blocker(blocked: tuple[str, ...]) -> str:
    """Code that makes ``blocked`` modules unimportable in a fresh interpreter (as if absent)."""
    return (
        "import importlib.abc, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
    )


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_core_dependencies_leave_out_the_service_report_dask_and_enrichment_stacks():
    core = " ".join(_project()["dependencies"]).lower()
    for name in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "gseapy", "dask", "jinja2"):
        assert name not in core, name
    extras = _project()["optional-dependencies"]
    assert {"dask", "cluster", "enrichment", "report", "service", "postgres", "all"} <= set(extras)
    for extra in set(EXTRA_OF.values()) - {"grnboost"}:
        assert extra in extras["all"][0], extra  # `all` names every extra a module maps to


def test_require_names_the_extra_that_installs_a_missing_module():
    with pytest.raises(OptionalDependencyError, match=r"omicstwin\[enrichment\]"):
        require("gseapy.no_such_submodule", what="gene set enrichment")
    assert install_hint("distributed") == "pip install 'omicstwin[dask]'"
    assert require("numpy", what="x").__name__ == "numpy"


def test_analysis_runs_without_any_extra_installed():
    """Block every optional module in a fresh interpreter: the analysis layers still import and
    run, and an optional feature fails with its install hint (not a bare ModuleNotFoundError)."""
    script = _blocker(OPTIONAL) + textwrap.dedent(
        """
        import omicstwin
        from omicstwin import datasets, io, parallel, pp, tl
        from omicstwin.tl import de, grn, networks, perturb, regulators, twin, enrich
        from omicstwin.errors import OptionalDependencyError

        adata = datasets.simulate_cohort("small", seed=3)
        table = de.differential_expression(adata, key_added=None)
        assert len(table) > 0
        try:
            enrich._gseapy()
        except OptionalDependencyError as exc:
            assert "omicstwin[enrichment]" in str(exc), exc
        else:
            raise SystemExit("enrichment ran without gseapy")
        with parallel.resolve_client(n_workers=0) as client:
            assert client is None
        try:
            with parallel.resolve_client(n_workers=1):
                pass
        except OptionalDependencyError as exc:
            assert "omicstwin[dask]" in str(exc), exc
        else:
            raise SystemExit("a cluster started without distributed")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_cli_names_the_extra_a_command_needs(tmp_path):
    """``omicstwin publish`` without the service stack: one line with the pip command, exit 2."""
    script = _blocker(OPTIONAL) + textwrap.dedent(
        f"""
        sys.argv = ["omicstwin", "publish", {str(tmp_path)!r}, "--db", "sqlite:///x.db"]
        from omicstwin.cli import main
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: this command needs sqlalchemy, which is not installed; "
        "fix: pip install 'omicstwin[service]'"
    )


def test_run_without_the_enrichment_and_dask_extras(tmp_path):
    """The pipeline names a missing extra before its first stage, and runs without it when the
    config does not need it (prerank off; screens in process, as chosen without dask)."""
    blocked = ("gseapy", "distributed", "fastapi", "sqlalchemy", "alembic", "uvicorn")
    script = _blocker(blocked) + textwrap.dedent(
        f"""
        from pathlib import Path
        from omicstwin.errors import OptionalDependencyError
        from omicstwin.pipeline import load_config, run_pipeline

        base = {{"data": {{"simulate": "small", "seed": 0}}, "seed": 1}}
        stages = {{"screen_drugs": False}}
        out = Path({str(tmp_path)!r})
        try:
            run_pipeline(load_config(None, {{**base, "stages": stages}}), out / "a")
        except OptionalDependencyError as exc:
            assert "omicstwin[enrichment]" in str(exc), exc
        else:
            raise SystemExit("ran without gseapy")
        assert not (out / "a" / "de.parquet").exists()  # failed before the first stage
        stages["enrichment_prerank"] = []
        run_pipeline(load_config(None, {{**base, "stages": stages}}), out / "b")
        assert (out / "b" / "report.html").is_file()
        assert (out / "b" / "enrichment.parquet").is_file()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
