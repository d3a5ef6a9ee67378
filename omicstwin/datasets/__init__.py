"""Simulated cohorts with known truth (and, later, benchmark loaders)."""

from omicstwin.datasets.simulate import (
    PRESETS,
    SimulationParams,
    SimulationPriors,
    simulate_cohort,
)

__all__ = ["PRESETS", "SimulationParams", "SimulationPriors", "simulate_cohort"]
