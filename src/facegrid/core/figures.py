"""Figures drawn off-screen and saved to a file, leaving pyplot and the plotting backend alone.

``matplotlib.use`` or ``pyplot`` would change how the whole process that
calls facegrid plots (a notebook, an application). A
:class:`matplotlib.figure.Figure` on its own Agg canvas changes nothing
outside itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from facegrid.core.errors import PathError
from facegrid.core.files import check_outputs, write_atomically


def new_figure(figsize: tuple[float, float]):
    """A :class:`matplotlib.figure.Figure` with its own Agg canvas, known to no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def figure_format(out: str | os.PathLike) -> str:
    """The format a figure file's suffix names (``png``, ``pdf``, ``svg``, ...).

    Raises:
        facegrid.core.errors.PathError: the suffix names no format the canvas writes.
    """
    formats = _formats()
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise PathError(out, f"not a figure file name: give one of the suffixes {', '.join(sorted(formats))}")
    return suffix


def check_figure_path(out: str | os.PathLike, inputs=(), overwrite: bool = False) -> None:
    """Refuse, before any work, a figure file that cannot be saved or may not be written (:mod:`facegrid.core.files`).

    Raises:
        facegrid.core.errors.PathError: no figure format has the suffix; the file
            is one of ``inputs``; or it exists and not ``overwrite``.
    """
    figure_format(out)
    check_outputs([out], inputs, overwrite)


def save_figure(fig, out: str | os.PathLike, dpi: int) -> None:
    """Save ``fig`` atomically in the format its file name's suffix names (see :func:`figure_format`).

    Raises:
        facegrid.core.errors.PathError: the suffix names no format the canvas writes.
        OSError: the file cannot be written.
    """
    suffix = figure_format(out)
    write_atomically(out, lambda tmp: fig.savefig(tmp, dpi=dpi, format=suffix))


def _formats() -> dict[str, str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg.get_supported_filetypes()
