"""Build the HTML report of a run directory: one self-contained file, no network requests.

The report reads the run directory's tables and ``run.json`` only; it never recomputes a
statistic (it sorts, filters and pivots for display). Figures are PNG data URIs and the CSS is
inline, so the file can be mailed, archived or opened offline.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

from omicstwin._logging import logger
from omicstwin._optional import require
from omicstwin.errors import OmicstwinError
from omicstwin.report._format import DASH, describe_data, time_unit_of

TEMPLATE = "report.html.j2"


class ReportError(OmicstwinError, ValueError):
    """The folder is not a run directory the report can read."""


def _run_date(run: dict[str, Any], run_json: Path) -> str:
    """Return when the run finished: run.json ``finished``, else run.json's modification time."""
    for key in ("finished", "finished_at", "date", "created", "started", "started_at"):
        if run.get(key):
            try:
                stamp = dt.datetime.fromisoformat(str(run[key]))
            except ValueError:
                return str(run[key])  # not an ISO time: shown as written
            if stamp.tzinfo is None:
                return stamp.strftime("%Y-%m-%d %H:%M")
            return stamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    stamp = dt.datetime.fromtimestamp(run_json.stat().st_mtime, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def _data_line(run: dict[str, Any]) -> dict[str, str]:
    """Describe the data for the header: what it is, the input file's name and checksum.

    A simulator spec reads ``simulated cohort (preset demo, seed 0) — cohort.h5ad``,
    ``manifest:NAME`` reads ``manifest:NAME — file.h5ad``, and a path reads as the file's name
    with the full path beside the checksum.
    """
    described = describe_data(run)
    data = (run.get("config") or {}).get("data")
    is_path = isinstance(data, str) and not data.startswith("manifest:")
    details = [described["path"] or str(data)] if is_path else []
    if described["sha256"]:
        details.append(f"sha256 {described['sha256']}")
    return {
        "data_lead": "" if is_path or not data else described["label"],
        "data_file": described["file"],
        "data_details": "; ".join(details),
        "data_title": described["title"],
    }


def _environment():
    jinja2 = require("jinja2", what="the HTML report")

    return jinja2.Environment(
        loader=jinja2.PackageLoader("omicstwin.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,  # a template typo fails the build, not the reader
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(run_dir: str | Path, *, now: dt.datetime | None = None) -> str:
    """Render the report of ``run_dir`` to an HTML string (nothing is written).

    Parameters
    ----------
    run_dir
        A run directory written by ``omicstwin run`` (must contain ``run.json``).
    now
        Generation time shown in the date line (default: the current time, UTC).

    Returns
    -------
    str
        The HTML document.

    Raises
    ------
    ReportError
        ``run_dir`` is not a folder or has no ``run.json``.
    """
    import matplotlib

    from omicstwin.report.figures import RC
    from omicstwin.report.sections import SECTIONS, RunData

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise ReportError(
            f"'{run_dir}' is not a run directory (no run.json); fix: pass the folder written by "
            "`omicstwin run --out FOLDER`"
        )
    data = RunData(run_dir)
    run = data.run
    config = run.get("config") or {}
    # rc_context: the report's font sizes apply to its own figures only, and are restored
    with matplotlib.rc_context(RC):
        sections = [make(data) for make in SECTIONS]
    for number, section in enumerate(sections, start=2):  # 1 is the header
        section.title = f"{number}. {section.title}"
    data_line = _data_line(run)
    now = now or dt.datetime.now(tz=dt.UTC)
    context = {
        "title": f"omicstwin report: {config.get('study') or data_line['data_title']}",
        **data_line,
        "run_date": _run_date(run, run_dir / "run.json"),
        "generated": now.strftime("%Y-%m-%d %H:%M UTC"),
        "cohort": run.get("cohort") or DASH,
        "seed": run.get("seed", config.get("seed", DASH)),
        "unit": time_unit_of(run) or "not given",
        "version": (run.get("versions") or {}).get("omicstwin", DASH),
        "case": config.get("case", "case"),
        "control": config.get("control", "control"),
        "sections": sections,
    }
    return _environment().get_template(TEMPLATE).render(**context)


def build_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write the HTML report of a run directory.

    The file is written to a temporary name in the destination folder and renamed into place,
    so a reader never sees a half-written report.

    Parameters
    ----------
    run_dir
        A run directory written by ``omicstwin run`` (read only).
    out
        Where to write: a file path, or an existing folder (the report goes to
        ``FOLDER/report.html``). Default: ``RUN_DIR/report.html``.

    Returns
    -------
    pathlib.Path
        The report's path.

    Raises
    ------
    ReportError
        ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    target = run_dir / "report.html" if out is None else Path(out)
    if target.is_dir():
        target = target / "report.html"
    html = render_report(run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(html)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    logger.info("report written to %s (%.1f MB)", target, len(html) / 1e6)
    return target
