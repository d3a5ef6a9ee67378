"""Per-patient scores that hold the scored donor out: disease position and own target ranking.

**Disease position** (:func:`patient_states`). Donor ``k``'s position on the disease axis is
computed from an axis, a gene filter and reference means fitted on *other* donors only:
``disease_score = <x_k - control', s'> / max_t <s', s'>``, with ``s'`` the disease vector
``case' - control'`` (donor means, each donor weighted equally) restricted to genes whose
difference exceeds ``z`` standard errors of the arm means (from those donors' spread).
Including the donor in its own arm mean and in the gene filter is what made cases and controls
separate perfectly on cohorts with no disease (the donor's own noise picks the genes it is then
projected on). The leave-out is *balanced*: besides ``k``, one donor of the other arm is left
out in turn and the scores averaged over which one, so cases and controls are both scored
against arms of ``n_case - 1`` and ``n_control - 1`` donors. Plain leave-one-out is not enough:
the reference (control mean) is shared by ``x_k - control'`` and the axis, and its noise, which
the gene filter amplifies, is larger when ``k``'s own arm lost a donor, so the smaller arm is
pushed up (cases-vs-controls AUC 0 on the small no-disease cohorts). The interval is a
percentile bootstrap over the donor's cells (the axis held fixed).

**Own target ranking** (:func:`patient_screen`). Perturbations are simulated once on the
label-free reference state (:mod:`omicstwin.tl.nulls`); patient ``k``'s disease vector is
``x_k - mean(controls)`` (the patient is not in the control mean). Its null is the control
donors' own vectors, each against the mean of the *other* controls: under no disease a
patient is exchangeable with a control, and both kinds of vector leave the scored donor out of
the reference. ``p = (1 + #{controls l: T_l >= T_k}) / (1 + n_controls)`` per target (``U``:
the change along the vector, :mod:`omicstwin.tl.nulls`), BH q
within the patient. With few controls the p-value is coarse (its smallest value is ``1 /
(n_controls + 1)``: 1/7 for the demo's 6 controls), so per-patient q-values cannot reach small
levels there; the score's order is the ranking. The twin's networks are fitted on all donors'
variation, the patient's included, but without labels and equally for the controls of the null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from omicstwin._stats import benjamini_hochberg
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.tl.nulls import DonorStates, donor_states
from omicstwin.tl.perturb import DEFAULT_STEPS, Perturbation

__all__ = ["patient_contrasts", "patient_screen", "patient_states"]


def _mean_over(x: np.ndarray, present: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Mean (T, C, G) of the chosen donors' states over those sampled in each context."""
    use = present & chosen[:, None, None]
    n = use.sum(axis=0)
    total = np.einsum("ktcg,ktc->tcg", x, use.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n[..., None] > 0, total / np.maximum(n, 1)[..., None], np.nan)


def patient_contrasts(donors: DonorStates, patients: Sequence[int]) -> np.ndarray:
    """Contrast weights (len(patients) + n_controls, T, C, K) of the patient screen.

    First each patient's ``x_k - mean(controls)``, then each control's ``x_l - mean(other
    controls)`` (the null), per context over the sampled donors (0 where undefined).
    """
    k = len(donors.ids)
    controls = np.flatnonzero(donors.is_control)
    present = donors.present.astype(float)  # (K, T, C)
    rows = []
    for own, reference in [(i, controls[controls != i]) for i in patients] + [
        (j, controls[controls != j]) for j in controls
    ]:
        ref = np.zeros((k, *present.shape[1:]))
        ref[reference] = present[reference]
        n = ref.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = -np.where(n > 0, ref / np.maximum(n, 1), 0.0)
        w[own] += present[own]
        w[:, (n == 0) | (present[own] == 0)] = 0.0
        rows.append(np.moveaxis(w, 0, 2))  # (T, C, K)
    return np.array(rows).reshape(len(rows), *present.shape[1:], k)


def patient_screen(
    twin,
    perturbations: Sequence[Perturbation] | None = None,
    *,
    n_steps: int | None = DEFAULT_STEPS,
    client: Any = None,
    batch_size: int = 500,
    memory_per_worker: float | None = None,
) -> pd.DataFrame:
    """Each case donor's own target ranking, with a p / q per target (see the module docstring).

    Parameters
    ----------
    twin
        A fitted twin (its ``states`` hold one entry per donor).
    perturbations
        Perturbations screened (default: a knockout of every regulator of the twin).
    n_steps
        Propagation steps (None: to the steady state).
    client, batch_size, memory_per_worker
        As :func:`omicstwin.tl.twin.target_screen` (one propagation serves every patient).

    Returns
    -------
    pandas.DataFrame
        ``patients.parquet`` rows: patient_id, cell_type, time (the target's best context for
        that patient), target, reversal_score (a rank score), rank, p_value, q_value.
    """
    from omicstwin.tl.perturb import single_gene_perturbations
    from omicstwin.tl.twin import _project_screen, _ranking, genes_from_ids

    if perturbations is None:
        perturbations = single_gene_perturbations(twin.regulators())
    perturbations = list(perturbations)
    donors = donor_states(twin)
    patients = [i for i, case in enumerate(donors.is_case) if case and not donors.pseudo]
    if not patients or not perturbations:
        return conform(pd.DataFrame(columns=list(SCHEMAS["patients"])), "patients")
    weights = patient_contrasts(donors, patients)
    n_pat = len(patients)
    scores, per_context, _ = _project_screen(
        twin,
        perturbations,
        weights,
        donors=donors,
        n_steps=n_steps,
        client=client,
        batch_size=batch_size,
        progress=None,
        n_tested=n_pat,
        memory_per_worker=memory_per_worker,
    )
    enough = donors.is_control.sum() >= 2
    ids = [q.perturbation_id for q in perturbations]
    rows = []
    for j, k in enumerate(patients):
        p_value = scores["p_value"][:, j] if enough else np.full(len(ids), np.nan)
        summary = pd.DataFrame(
            {
                "perturbation_id": ids,
                "kind": [q.kind for q in perturbations],
                "genes": [";".join(q.genes) for q in perturbations],
                "dose": [q.dose for q in perturbations],
                "score": scores["score"][:, j],
                "off_target": scores["off_target"][:, j],
                "p_value": p_value,
                "q_value": benjamini_hochberg(p_value),
            }
        )
        context = per_context[per_context["contrast"] == j].drop(columns="contrast")
        ranking = _ranking(summary, context)
        rows.append(
            pd.DataFrame(
                {
                    "patient_id": donors.ids[k],
                    "cell_type": ranking["best_cell_type"],
                    "time": ranking["best_time"],
                    "target": genes_from_ids(ranking["name"]),
                    "reversal_score": ranking["score"],
                    "rank": ranking["rank"],
                    "p_value": ranking["p_value"],
                    "q_value": ranking["q_value"],
                }
            )
        )
    return conform(pd.concat(rows, ignore_index=True), "patients")


def patient_states(
    twin,
    design: pd.DataFrame | None = None,
    *,
    z: float = 3.0,
    data: Any = None,
    n_bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> pd.DataFrame:
    """Each donor's held-out position on the disease axis per cell type x time.

    Parameters
    ----------
    twin
        A fitted twin (its ``states`` hold one entry per donor).
    design
        ``design.parquet`` (condition, donor, time, cell_type, n_cells) for the cell counts;
        without it ``n_cells`` is 0.
    z
        Standard errors a gene's case - control difference (other donors) needs to count.
    data
        The cohort the twin was fitted on (AnnData, MuData or Cohort): for the bootstrap
        interval over the donor's cells; without it the interval is NaN.
    n_bootstrap, level, seed
        Bootstrap resamples of the donor's cells per context, the interval's coverage and the
        seed (one stream per donor, so results do not depend on the order of donors).

    Returns
    -------
    pandas.DataFrame
        ``patient_states.parquet`` rows: patient_id, arm, cell_type, time, n_cells,
        disease_score (0 = control mean, 1 = case mean at the cell type's peak; both without
        the donor), disease_score_low, disease_score_high. NaN where the donor was not
        sampled or the cell type has no changed gene.
    """
    donors = donor_states(twin)
    cells = _donor_cells(data, donors, twin) if data is not None else None
    counts: dict[tuple[str, str, float], int] = {}
    if design is not None:
        grouped = design.groupby(["donor", "cell_type", "time"], observed=True)["n_cells"].sum()
        counts = {(str(k[0]), str(k[1]), float(k[2])): int(v) for k, v in grouped.items()}
    rows = []
    alpha = (1.0 - level) / 2.0
    for k, donor in enumerate(donors.ids):
        if donors.pseudo:
            break
        weight, offset = _held_out_projection(donors, k, z)  # (T, C, G), (T, C)
        score = np.einsum("tcg,tcg->tc", donors.x[k], weight) - offset
        score[~donors.present[k]] = np.nan
        low, high = np.full_like(score, np.nan), np.full_like(score, np.nan)
        if cells is not None:
            rng = np.random.default_rng([seed, k])
            for (t, c), read_cells in sorted(cells.get(donor, {}).items()):
                if not np.isfinite(score[t, c]):
                    continue
                per_cell = np.asarray(read_cells() @ weight[t, c]).ravel()
                n = per_cell.size
                draws = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap) / n
                boot = draws @ per_cell - offset[t, c]
                low[t, c], high[t, c] = np.quantile(boot, [alpha, 1.0 - alpha])
        for ti, time in enumerate(twin.times):
            for ci, cell_type in enumerate(twin.cell_types):
                rows.append(
                    (
                        donor,
                        twin.donors[donor],
                        cell_type,
                        float(time),
                        counts.get((donor, cell_type, float(time)), 0),
                        float(score[ti, ci]),
                        float(low[ti, ci]),
                        float(high[ti, ci]),
                    )
                )
    table = pd.DataFrame(rows, columns=list(SCHEMAS["patient_states"]))
    return conform(table, "patient_states")


def _held_out_projection(donors: DonorStates, k: int, z: float):
    """Linear form of donor ``k``'s held-out score: ``score = <x, weight> - offset`` per context.

    Averaged over the balanced leave-outs of :func:`patient_states` (``k`` and, in turn, each
    donor of the other arm); a context where no leave-out has a changed gene gets NaN.
    """
    own_case = bool(donors.is_case[k])
    other_arm = np.flatnonzero(donors.is_control if own_case else donors.is_case)
    drops = [j for j in other_arm] if len(other_arm) >= 2 else [None]
    shape = donors.x.shape[1:]
    weight, offset = np.zeros(shape), np.zeros(shape[:2])
    n_valid = np.zeros(shape[:2])
    for j in drops:
        left_out = [k] if j is None else [k, j]
        axis, control, peak = _held_out_axis(donors, left_out, z)
        valid = np.broadcast_to(peak[None, :] > 1e-12, shape[:2])
        scale = np.where(valid, 1.0 / np.where(valid, peak[None, :], 1.0), 0.0)
        weight += axis * scale[..., None]
        offset += np.einsum("tcg,tcg->tc", control, axis) * scale
        n_valid += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(n_valid[..., None] > 0, weight / np.maximum(n_valid, 1)[..., None], 0.0)
        offset = np.where(n_valid > 0, offset / np.maximum(n_valid, 1), np.nan)
    return weight, offset


def _held_out_axis(donors: DonorStates, left_out: Sequence[int], z: float):
    """Axis (T, C, G), control mean (T, C, G) and peak (C,) from every donor not left out."""
    others = np.ones(len(donors.ids), bool)
    others[list(left_out)] = False
    noise = 0.0
    means = []
    for arm in (donors.is_case, donors.is_control):
        chosen = arm & others
        means.append(_mean_over(donors.x, donors.present, chosen))
        use = donors.present & chosen[:, None, None]
        n = use.sum(axis=0)[..., None]
        if chosen.sum() >= 2:  # variance of the arm's mean, from the other donors' spread
            dev = (donors.x - np.nan_to_num(means[-1])[None]) * use[..., None]
            var = np.einsum("ktcg,ktcg->tcg", dev, dev) / np.maximum(n - 1, 1)
            noise = noise + np.where(n >= 2, var / np.maximum(n, 1), 0.0)
    case, control = means
    d = np.nan_to_num(case - control)
    axis = np.where(d**2 > z * z * noise, d, 0.0)
    peak = np.einsum("tcg,tcg->tc", axis, axis).max(axis=0)
    return axis, np.nan_to_num(control), peak


def _donor_cells(data, donors: DonorStates, twin) -> dict:
    """``{donor: {(t, c): read}}`` of the twin's contexts; ``read()`` returns the cells x genes.

    The log-normalised cells (sparse) are read when a context is bootstrapped, one context
    at a time, so memory holds one context's cells, never the cohort's (a backed cohort reads
    them from disk).
    """
    from functools import partial

    from omicstwin.pp.cohort import as_cohort

    cohort = as_cohort(data, {})
    rows = np.flatnonzero(cohort.in_arms)
    obs = cohort.obs.iloc[rows].reset_index(drop=True)
    genes = list(cohort.genes)
    if genes != list(twin.genes):
        return {}
    t_index = {t: i for i, t in enumerate(twin.times)}
    c_index = {c: i for i, c in enumerate(twin.cell_types)}
    out: dict = {}
    groups = obs.groupby(["donor", "time", "cell_type"], observed=True).indices
    for (donor, time, cell_type), positions in groups.items():
        t, c = t_index.get(time), c_index.get(cell_type)
        if t is None or c is None:
            continue
        out.setdefault(str(donor), {})[(t, c)] = partial(cohort.log_normalised, rows[positions])
    return out
