"""Figures drawn off-screen and saved to a file, leaving pyplot and the plotting backend alone.

``matplotlib.use`` or ``pyplot`` would change how the whole process that
calls facegrid plots (a notebook, an application). A
:class:`matplotlib.figure.Figure` on its own Agg canvas changes nothing
outside itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from facegrid.errors import PathError


def new_figure(figsize: tuple[float, float]):
    """A :class:`matplotlib.figure.Figure` with its own Agg canvas, known to no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out: str | os.PathLike, dpi: int) -> None:
    """Save ``fig`` in the format its file name's suffix names (``.png``, ``.pdf``, ``.svg``, ...).

    Raises:
        facegrid.errors.PathError: the suffix names no format the canvas writes.
        OSError: the file cannot be written.
    """
    formats = fig.canvas.get_supported_filetypes()
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise PathError(out, f"not a figure file name: give one of the suffixes {', '.join(sorted(formats))}")
    fig.savefig(out, dpi=dpi, format=suffix)
