"""Results storage: the run directory (parquet + run.json)."""
