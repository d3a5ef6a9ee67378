"""The demo job on a small cohort: the demo config's stages, the truth summary, the report."""

import anndata as ad
import pandas as pd
import yaml

from omicstwin.demo import demo_config_path, run_demo


def test_demo_runs_its_config_and_compares_with_truth(tmp_path):
    config = yaml.safe_load(demo_config_path().read_text())
    assert config["data"]["simulate"] == "demo"  # what make demo runs
    config["data"]["simulate"] = "small"
    config["stages"].update(screen_drugs=False)
    path = tmp_path / "small_demo.yaml"
    path.write_text(yaml.safe_dump(config))
    lines = []
    run = run_demo(tmp_path / "out", config=path, echo=lines.append)
    out = tmp_path / "out"
    assert run["timings_s"]["simulate"] > 0 and "validation" in run["timings_s"]
    assert (out / "cohort.h5ad").is_file() and (out / "report.html").is_file()
    validation = pd.read_parquet(out / "validation.parquet")
    assert set(validation["disease_id"]) == {"DOID:4481"}
    assert set(validation["k"]) == {10, 20, 50}
    text = "\n".join(lines)
    assert text.startswith("cohort: ok: 3000 cells x 150 genes")
    assert "endotype A" in text and "endotype B" in text
    # the printed comparison is the run's own top 10 against the simulator's planted genes
    ranking = pd.read_parquet(out / "rank_targets.parquet").sort_values("rank")
    top = ranking["name"].head(10).str.removeprefix("KO:").tolist()
    endotypes = pd.DataFrame(
        ad.read_h5ad(out / "cohort.h5ad", backed="r").uns["truth"]["endotypes"]
    )
    planted = set()
    for column in ("drivers", "cascade_ligands", "cascade_receptors", "cascade_tfs"):
        planted |= set(";".join(endotypes[column]).split(";"))
    expected = f"planted genes among them: {sum(g in planted for g in top)} of {len(top)}"
    assert f"(knockout reversal): {', '.join(top)};" in text and expected in text
    assert "placeholder" not in text.lower() and "not implemented" not in text.lower()
