"""One entry point to both cohort generators, with or without a disease.

``cohort`` is :func:`~omicstwin.datasets.simulate.simulate_cohort` (networks drawn from the
inference priors, linear dynamics); ``independent`` is
:func:`~omicstwin.datasets.independent.simulate_independent` (networks mostly outside the
priors, Hill kinetics, feedback, donor covariates). A no-disease cohort keeps the design (arms,
donors, time points, cell types) and plants nothing: the calibration cohorts of the benchmarks.
"""

from __future__ import annotations

from typing import Any, Literal

from omicstwin.errors import ParameterError

Generator = Literal["cohort", "independent"]
GENERATORS: tuple[str, ...] = ("cohort", "independent")


def generate(
    preset: str | None = "small",
    *,
    generator: Generator = "cohort",
    disease: bool = True,
    **overrides: Any,
):
    """Simulate a cohort with either generator; ``disease=False`` plants no disease.

    Parameters
    ----------
    preset
        A preset of the chosen generator (``small``, ``demo``, ``sar_like`` for ``cohort``;
        ``small``, ``medium`` for ``independent``), or ``atlas``
        (:func:`~omicstwin.datasets.atlas.simulate_atlas`, whatever the generator).
    generator
        ``cohort`` or ``independent`` (see the module docstring).
    disease
        False: the same design with no disease (zero driver strength for ``cohort``;
        ``disease=False`` for ``independent``).
    **overrides
        Parameters of the generator, e.g. ``seed=3``.

    Returns
    -------
    anndata.AnnData
        Counts and ``uns["truth"]`` as the generator documents; ``uns["generator"]`` names it.
    """
    if preset == "atlas":  # in memory: small atlases (tests); files via write_atlas
        from omicstwin.datasets.atlas import simulate_atlas

        return simulate_atlas(preset, disease=disease, **overrides)
    if generator == "cohort":
        from omicstwin.datasets.simulate import simulate_cohort

        if not disease:
            overrides = {**overrides, "strength_range": (0.0, 0.0)}
        adata = simulate_cohort(preset, **overrides)
        adata.uns["generator"] = "cohort"
        return adata
    if generator == "independent":
        from omicstwin.datasets.independent import simulate_independent

        return simulate_independent(preset, disease=disease, **overrides)
    raise ParameterError(
        f"unknown generator '{generator}'; fix: use one of {', '.join(GENERATORS)}"
    )
