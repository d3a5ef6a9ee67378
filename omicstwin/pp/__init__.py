"""Preprocessing: QC, normalisation, pseudobulk (scanpy underneath)."""
