"""Golden outputs of a small end-to-end run (see ``regenerate.py``)."""
