"""The names the command line still imports from here; each is owned by the module it comes from.

The protocol lives in :mod:`facegrid.eval.protocol`, the plain AP in
:mod:`facegrid.eval.ap`, the plots in :mod:`facegrid.eval.plots` and the
ground truth in :mod:`facegrid.wider.ground_truth`. This module goes once
the command line imports them from there.
"""

from facegrid.eval.ap import average_precision
from facegrid.eval.plots import plot_pr
from facegrid.eval.protocol import evaluate_wider
from facegrid.wider.ground_truth import load_wider_ground_truth

__all__ = ["average_precision", "evaluate_wider", "load_wider_ground_truth", "plot_pr"]
