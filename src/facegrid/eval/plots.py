"""Precision/recall curves drawn into a figure file, each labelled with its AP."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from facegrid.core.figures import new_figure, save_figure
from facegrid.eval.ap import PRCurve, voc_ap


def plot_pr(
    curves: Mapping[str, PRCurve | tuple[np.ndarray, np.ndarray]], out_png: str | os.PathLike, title: str
) -> None:
    """Save precision/recall curves, each labelled with its AP, in the format the suffix of ``out_png`` names.

    Args:
        curves: ``{label: curve}``, each a :class:`~facegrid.eval.ap.PRCurve` or ``(recall, precision)``.
        out_png: the PNG to write.
        title: the figure title.

    Example:
        >>> plot_pr(result.curves, "pr.png", "WIDER FACE val")  # doctest: +SKIP
    """
    fig = new_figure((6.4, 5.2))
    ax = fig.add_subplot()
    for label, curve in curves.items():
        recall, precision = (curve.recall, curve.precision) if isinstance(curve, PRCurve) else curve
        ax.plot(recall, precision, linewidth=2, label=f"{label} (AP {voc_ap(recall, precision):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=120)
