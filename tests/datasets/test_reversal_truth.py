"""Reversal truth against a per-perturbation loop with the documented formula."""

import numpy as np

from omicstwin.datasets import PRESETS, SimulationPriors
from omicstwin.datasets.simulate import build_structure
from tests.datasets.test_model import reference_trajectory


def test_patient_reversal_matches_a_slow_loop(small_cohort):
    s = build_structure(PRESETS["small"], SimulationPriors.from_manifests())
    truth = small_cohort.uns["truth"]["patient_reversal"]
    patient = "P01"
    inputs = s.inputs_case[patient]
    z = lambda y: np.log2(1.0 + s.scales[None] * y)  # noqa: E731
    z_control = z(reference_trajectory(s.model, s.inputs_control))
    z_case = z(reference_trajectory(s.model, inputs))
    d = z_case - z_control
    mine = truth[truth["patient_id"] == patient].set_index("gene")["reversal"]
    for gene in mine.sort_values().index[[0, len(mine) // 2, -1]]:
        g = s.model.genes.index(gene)
        delta = z(reference_trajectory(s.model, inputs, [g])) - z_case
        keep = np.ones(s.model.n_genes, bool)
        keep[g] = False
        expected = -(delta[..., keep] * d[..., keep]).sum() / (d[..., keep] ** 2).sum()
        assert abs(mine[gene] - expected) < 1e-6, gene
