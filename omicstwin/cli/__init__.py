"""Command-line interface (typer): ``omicstwin --help`` lists the commands.

``analysis`` holds the app and the analysis commands (validate, simulate, demo, run, report, grn,
bench), ``database`` the results-database and service commands (publish, serve, keys, grants,
patients, db), ``_common`` what both share (one-line errors, ``--debug``). Heavy libraries are
imported inside the commands so that start-up stays fast.
"""

from omicstwin.cli.analysis import app, main

__all__ = ["app", "main"]
