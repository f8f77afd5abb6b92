"""Dataset statistics (``facegrid.data.stats``): the plot, drawn without touching the caller's plotting backend."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from facegrid.data.stats import dataset_stats, plot_stats
from facegrid.wider.annotations import read_annotations


@pytest.fixture
def svg_backend():
    """The process plots with the SVG backend for the test's duration (as a caller may have chosen)."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(before)


def test_plot_stats_leaves_the_callers_backend_alone(samples, tmp_path, svg_backend):
    stats = dataset_stats(read_annotations(samples / "faces_bbx_gt.txt"), samples / "images")
    plot_stats(stats, tmp_path / "stats.png")
    plot_stats(stats, tmp_path / "stats.pdf", title="samples")
    assert matplotlib.get_backend() == svg_backend
    assert (tmp_path / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "stats.pdf").read_bytes()[:5] == b"%PDF-"


def test_plot_stats_of_a_file_without_faces(tmp_path):
    annotations = tmp_path / "gt.txt"
    annotations.write_text("e/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    stats = dataset_stats(read_annotations(annotations))
    assert stats.faces == 0 and np.array_equal(stats.faces_per_image, [0])
    plot_stats(stats, tmp_path / "stats.png")
    assert (tmp_path / "stats.png").stat().st_size > 1_000
