"""Evaluation: BEELINE runner, metrics, truth scoring, knockout fate calls, known biology.

This layer sits above the analysis tools (``tl``) and below the store, the report and the
pipeline: it scores what ``tl`` produces against references (BEELINE networks, a simulated
cohort's truth, Boolean-model knockouts, Hetionet and PharmacotherapyDB) and never feeds back
into an analysis. Submodules are imported explicitly (``from omicstwin.bench import metrics``),
so ``import omicstwin.bench`` loads nothing heavy.
"""
