"""The regulators stage's prior is a setting: CollecTRI by default, the typed prior opt-in."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omicstwin.errors import ParameterError
from omicstwin.pipeline import STAGES, RunConfig
from omicstwin.pipeline.config import DEFAULT_PRIORS, load_config
from omicstwin.pipeline.stage import RunContext
from omicstwin.schemas import conform

GENES = [f"G{i:02d}" for i in range(40)]
TARGETS = GENES[:8]  # the regulator's prior targets = B's DEGs


def _de() -> pd.DataFrame:
    rows = []
    for cell_type in ("B", "Mono"):
        for gene in GENES:
            deg = cell_type == "B" and gene in TARGETS
            rows.append((cell_type, 6.0, gene, 1.5 if deg else 0.01, 1e-4 if deg else 0.8))
    de = pd.DataFrame(rows, columns=["cell_type", "time", "gene", "log_fc", "p_value"])
    de["q_value"] = np.minimum(de["p_value"] * 10, 1.0)
    de["mean_case"] = de["mean_control"] = 10.0
    de["n_donors_case"] = de["n_donors_control"] = 3
    return conform(de, "de")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    _de().to_parquet(tmp_path / "de.parquet", index=False)
    design = pd.DataFrame(
        {"condition": "case", "donor": "d1", "time": 6.0, "cell_type": ["B", "Mono"]}
    ).assign(n_cells=10)
    design.to_parquet(tmp_path / "design.parquet", index=False)
    return tmp_path


def _run_stage(run_dir: Path, priors: dict[str, str]) -> pd.DataFrame:
    stage = next(s for s in STAGES if s.name == "regulators")
    config = RunConfig(data="cohort.h5ad", priors=priors)
    stage.run(RunContext(config, run_dir, run_dir / "cohort.h5ad"))
    return pd.read_parquet(run_dir / "regulators.parquet")


def test_priors_left_out_take_their_defaults() -> None:
    assert RunConfig(data="x.h5ad").priors == DEFAULT_PRIORS
    assert DEFAULT_PRIORS["regulators"] == "collectri"  # the calibrated prior stays the default
    # an older config naming three priors: the stage keeps its TF -> target prior
    old = RunConfig(data="x.h5ad", priors={"tf_targets": "dorothea", "tfs": "lambert2018_tfs"})
    assert old.priors["regulators"] == "dorothea"
    assert old.priors["regulator_source"] == "omnipath"
    assert old.priors["ligand_receptor"] == "liana_consensus"
    chosen = RunConfig(data="x.h5ad", priors={"regulators": "regulator_prior"})
    assert chosen.priors["regulators"] == "regulator_prior"
    assert chosen.priors["tf_targets"] == "collectri"


def test_bad_prior_settings_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: x.h5ad\npriors:\n  regulator_source: omnipat\n")
    with pytest.raises(ParameterError, match=r"regulator_source 'omnipat' is unknown.*omnipath"):
        load_config(config, {})
    config.write_text("data: x.h5ad\npriors:\n  regulator: regulator_prior\n")
    with pytest.raises(ParameterError, match=r"priors\.regulator"):
        load_config(config, {})


def test_the_stage_key_follows_the_regulator_prior() -> None:
    stage = next(s for s in STAGES if s.name == "regulators")
    default = stage.param_values(RunConfig(data="x.h5ad"))
    typed = stage.param_values(RunConfig(data="x.h5ad", priors={"regulators": "regulator_prior"}))
    source = stage.param_values(RunConfig(data="x.h5ad", priors={"regulator_source": "permissive"}))
    assert default != typed and default != source and typed != source


def test_default_stage_reads_the_tf_prior(run_dir: Path, monkeypatch) -> None:
    asked = []
    prior = pd.DataFrame({"source": "TF1", "target": TARGETS, "weight": 1.0})
    monkeypatch.setattr(
        "omicstwin.io.manifests.load_table", lambda name: asked.append(name) or prior
    )
    table = _run_stage(run_dir, {})
    assert asked == ["collectri"]
    called = table[table["predicted"]]
    assert called[["cell_type", "regulator", "regulator_type"]].values.tolist() == [
        ["B", "TF1", "tf"]
    ]


def test_typed_prior_from_its_source_makes_a_ligand_a_regulator(run_dir: Path, monkeypatch):
    built = []
    typed = pd.concat(
        [
            pd.DataFrame({"source": "LIG1", "target": TARGETS, "regulator_type": "ligand"}),
            pd.DataFrame({"source": "TF2", "target": GENES[20:30], "regulator_type": "tf"}),
        ]
    ).assign(weight=1.0)

    def fake_load_prior(name, *, source):
        built.append((name, source))
        return typed

    monkeypatch.setattr("omicstwin.tl.priors.load_prior", fake_load_prior)
    table = _run_stage(run_dir, {"regulators": "regulator_prior", "regulator_source": "permissive"})
    assert built == [("regulator_prior", "permissive")]
    called = table[table["predicted"]]
    assert called[["cell_type", "regulator", "regulator_type"]].values.tolist() == [
        ["B", "LIG1", "ligand"]
    ]  # TF2's targets are not DEGs: tested, not called
    assert "TF2" in set(table["regulator"])


def test_a_prior_file_works_as_regulators(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "my_prior.csv"
    pd.DataFrame(
        {"source": "IL9R", "target": TARGETS, "weight": -1.0, "regulator_type": "receptor"}
    ).to_csv(path, index=False)
    table = _run_stage(run_dir, {"regulators": str(path)})
    called = table[table["predicted"]]
    assert called["regulator"].tolist() == ["IL9R"]
    assert called["regulator_type"].tolist() == ["receptor"]
    # every target is up and every edge represses: an inhibited receptor
    assert (called["activation_z_uncorrected"] < 0).all()
