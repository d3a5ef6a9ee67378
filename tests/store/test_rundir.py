"""Run-directory writers: a table extended through Arrow reads back as the pandas concat."""

import numpy as np
import pandas as pd

from omicstwin.schemas import SCHEMAS, conform
from omicstwin.store.rundir import write_table, write_table_extending


def _edges(n: int, layer: str, time: float) -> pd.DataFrame:
    frame = pd.DataFrame({c: ["x"] * n for c in SCHEMAS["edges"]})
    frame["layer"] = layer
    frame["time_from"] = frame["time_to"] = time
    frame["weight"] = frame["stability"] = np.linspace(-1, 1, n)
    frame["p_value"] = frame["q_value"] = np.nan  # the permutation p of intercellular edges only
    return conform(frame, "edges")


def test_extending_reads_back_as_the_concat(tmp_path):
    first, second = _edges(5, "intracellular", 6.0), _edges(3, "donors", np.nan)
    source = write_table(tmp_path, "layers", first)
    write_table_extending(tmp_path, "edges", source, second)
    expected = conform(pd.concat([first, second], ignore_index=True), "edges")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "edges.parquet"), expected)
    write_table_extending(tmp_path, "copy", source)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "copy.parquet"), first)
    assert not list(tmp_path.glob(".*partial"))
