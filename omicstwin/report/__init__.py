"""HTML report of a run directory: reads the run's tables, never recomputes.

>>> from omicstwin.report import build_report
>>> build_report("results/run")  # doctest: +SKIP
PosixPath('results/run/report.html')
"""

from omicstwin.report.build import ReportError, build_report, render_report

__all__ = ["ReportError", "build_report", "render_report"]
