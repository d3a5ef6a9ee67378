"""The declared stages and the one runner: keys from declarations, reuse, records, short code."""

import ast
from pathlib import Path

import pytest

from omicstwin.pipeline import STAGES, RunConfig, Stage
from omicstwin.pipeline.runner import Runner
from omicstwin.store.rundir import write_json

PIPELINE = Path(__file__).resolve().parents[2] / "omicstwin" / "pipeline"


def _config(**stages) -> RunConfig:
    return RunConfig(data="cohort.h5ad", stages=stages)


def test_declarations_are_consistent():
    names = [stage.name for stage in STAGES]
    assert len(names) == len(set(names))
    for position, stage in enumerate(STAGES):
        assert set(stage.upstream) <= set(names[:position]), stage.name
        stage.param_values(_config())  # every declared param path exists


def _keys(config: RunConfig, tmp_path: Path) -> dict[str, str]:
    runner = Runner(config, tmp_path)
    runner.data_sha = "0" * 64  # no input file needed to compute keys
    for stage in STAGES:
        if stage.active(config):
            runner.keys[stage.name] = runner.key(stage)
    return runner.keys


def test_a_param_changes_its_stage_and_the_stages_downstream_only(tmp_path):
    before = _keys(_config(), tmp_path)
    after = _keys(_config(n_permutations=99), tmp_path)
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["enrichment", "report", "screens"]  # the report's key has the config
    seed = _keys(RunConfig(data="cohort.h5ad", seed=5), tmp_path)
    assert seed["preprocess"] == before["preprocess"] and seed["networks"] != before["networks"]


def test_a_new_stage_is_one_declaration(tmp_path):
    calls = []

    def count_genes(ctx):
        calls.append(ctx.config.stages.grn_top_k)
        (ctx.out / "extra.txt").write_text("done")
        return {"note": "kept in the record"}

    extra = Stage("extra", count_genes, params=("stages.grn_top_k",), outputs=("extra.txt",))
    for top_k, expected in ((10, [10]), (10, [10]), (5, [10, 5])):
        runner = Runner(_config(grn_top_k=top_k), tmp_path)
        runner.run_stage(extra)
        assert calls == expected
        assert runner.context.records["extra"]["note"] == "kept in the record"
    (tmp_path / "extra.txt").write_text("tampered")
    Runner(_config(grn_top_k=5), tmp_path).run_stage(extra)
    assert len(calls) == 3 and (tmp_path / "extra.txt").read_text() == "done"


def test_a_stage_switched_off_removes_its_stale_outputs(tmp_path):
    validation = next(stage for stage in STAGES if stage.name == "validation")
    write_json(tmp_path / "validation.parquet", {})
    Runner(_config(), tmp_path).run_stage(validation)  # no disease in the config
    assert not (tmp_path / "validation.parquet").exists()


@pytest.mark.parametrize("path", sorted(PIPELINE.glob("*.py")), ids=lambda p: p.name)
def test_functions_are_short(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno < 60, f"{path.name}:{node.name}"
