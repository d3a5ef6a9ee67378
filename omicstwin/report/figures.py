"""The report's figures: drawn by :mod:`omicstwin.pl` from run-directory tables, embedded as PNG.

The plots themselves (and how they draw without pyplot or global state) live in
:mod:`omicstwin.pl`; this module renders them: the report's rc settings, PNG encoding and the
``<img>`` tag.

PNG rather than SVG: the heatmaps have thousands of cells, which as SVG paths weigh megabytes
and slow the browser, while a PNG at 1.5x the displayed size stays sharp on high-density
screens and small (tens of kB).
"""

from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass

import pandas as pd
from markupsafe import Markup, escape
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 144  # PNG pixels per inch
CSS_PPI = 96  # CSS pixels per inch: images are shown at 96/144 of their pixel size (crisp)
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.dpi": 100,
    "svg.hashsalt": "omicstwin",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class EmbeddedFigure:
    """A rendered figure: an ``<img>`` tag with a PNG data URI, and its description."""

    html: Markup
    alt: str
    width_px: int
    height_px: int


def embed(fig: Figure, alt: str) -> EmbeddedFigure:
    """Render ``fig`` to PNG and wrap it in an ``<img>`` with a data URI.

    The PNG carries no timestamp or software metadata, so identical figures give identical
    bytes (the report is reproducible). No ``bbox_inches="tight"``: the figures use the
    constrained layout, which already keeps every label inside; the layout runs once, within
    the figure's only draw.
    """
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # one draw: ``savefig`` would first draw the whole figure without rendering just to run
    # the layout engine, which the draw below runs anyway (half the time of a figure)
    fig.set_dpi(DPI)
    fig.set_facecolor("white")
    # zlib level 3 instead of 6: the same pixels, files ~5 % larger, encoded twice as fast
    canvas.print_png(buffer, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    data = buffer.getvalue()
    width, height = struct.unpack(">II", data[16:24])  # the PNG IHDR chunk
    css_w, css_h = round(width * CSS_PPI / DPI), round(height * CSS_PPI / DPI)
    encoded = base64.b64encode(data).decode("ascii")
    html = Markup(
        f'<img src="data:image/png;base64,{encoded}" width="{css_w}" height="{css_h}" '
        f'alt="{escape(alt)}">'
    )
    return EmbeddedFigure(html=html, alt=alt, width_px=css_w, height_px=css_h)


def n_ranked_regulators(
    regulators: pd.DataFrame, rank_regulators: pd.DataFrame | None, n: int = 25
) -> int:
    """Return how many rows of :func:`omicstwin.pl.regulators` are ranked regulators."""
    from omicstwin.pl._plots import regulator_rows

    return len(regulator_rows(regulators, rank_regulators, n)[0])
