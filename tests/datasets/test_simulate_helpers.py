"""Helpers of the cohort simulator's structure: the panel-wide picker, edge masks, hops."""

from dataclasses import replace

import numpy as np

from omicstwin.datasets import PRESETS
from omicstwin.datasets.simulate import _cascade_hops, _in_pairs, _Picker


def test_picker_draws_without_replacement_and_reports_exhaustion():
    picker = _Picker(np.random.default_rng(0))
    drawn = [picker.pick(["a", "b", "c"]) for _ in range(3)]
    assert sorted(drawn) == ["a", "b", "c"]
    assert picker.used == {"a", "b", "c"}
    assert picker.pick(["a", "b", "c"]) is None
    assert picker.pick(["d", "e"], lambda g: g == "e") == "e"


def test_picker_consumes_one_draw_per_pick():
    # the simulator's output depends on the order of draws: a pick is one integers() call
    rng, reference = np.random.default_rng(3), np.random.default_rng(3)
    picker = _Picker(rng)
    pool = [f"g{i}" for i in range(10)]
    first = picker.pick(pool)
    assert first == pool[int(reference.integers(10))]
    assert picker.pick([first]) is None  # nothing left: no draw
    assert rng.random() == reference.random()


def test_in_pairs_masks_listed_pairs():
    mask = _in_pairs(np.array([0, 1, 2]), np.array([1, 2, 0]), {(0, 1), (2, 0)})
    assert mask.dtype == bool and mask.tolist() == [True, False, True]
    assert _in_pairs(np.array([], int), np.array([], int), {(0, 1)}).tolist() == []


def test_cascade_hops_fit_cell_types_and_time_points():
    small = PRESETS["small"]  # 6 cell types, 5 time points, onset at index 1
    assert _cascade_hops(small) == 3
    assert _cascade_hops(replace(small, onset_index=3)) == 1
    assert _cascade_hops(replace(small, cell_types=small.cell_types[:3])) == 2


def test_priors_too_small_for_a_cascade_is_a_clear_error():
    import pandas as pd
    import pytest

    from omicstwin.datasets.simulate import SimulationPriors, simulate_cohort
    from omicstwin.errors import ParameterError

    tiny = SimulationPriors(
        tfs=("TF1", "TF2"),
        collectri=pd.DataFrame({"source": ["TF1"], "target": ["G1"], "weight": [1.0]}),
        ligand_receptor=pd.DataFrame({"ligand": ["L1"], "receptor": ["R1"]}),
    )
    with pytest.raises(ParameterError, match=r"priors are too small.*fix:"):
        simulate_cohort("small", priors=tiny)
