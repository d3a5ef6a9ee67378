"""The package logger (never configured at import; the CLI attaches a handler)."""

from __future__ import annotations

import logging

logger = logging.getLogger("omicstwin")
