"""Off-screen figures (``facegrid.figures``): saved in the format their suffix names, or refused."""

from __future__ import annotations

import pytest

from facegrid.errors import PathError
from facegrid.figures import new_figure, save_figure


@pytest.mark.parametrize("name", ["plot.xyz", "plot"])
def test_a_name_without_a_figure_suffix_is_refused_before_writing(tmp_path, name):
    fig = new_figure((2, 2))
    with pytest.raises(PathError, match=r"not a figure file name: give one of the suffixes .*png.*svg"):
        save_figure(fig, tmp_path / name, dpi=50)
    assert list(tmp_path.iterdir()) == []


def test_the_suffix_chooses_the_format(tmp_path):
    fig = new_figure((2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "plot.SVG", dpi=50)
    assert b"<svg" in (tmp_path / "plot.SVG").read_bytes()[:500]
