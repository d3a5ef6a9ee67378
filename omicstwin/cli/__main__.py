"""``python -m omicstwin.cli``: the same as the ``omicstwin`` command."""

from omicstwin.cli.analysis import main

main()
