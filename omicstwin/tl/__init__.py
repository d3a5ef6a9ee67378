"""Analysis tools: differential expression, networks, regulators (pure kernels + thin wrappers)."""
