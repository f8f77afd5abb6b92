"""Off-screen figures (``facegrid.core.figures``): saved in the format their suffix names, or refused."""

from __future__ import annotations

import pytest

from facegrid.core.errors import PathError
from facegrid.core.figures import new_figure, save_figure


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


def test_training_curves_number_epochs_from_one_and_survive_a_redone_epoch(tmp_path):
    from facegrid.train.curves import TrainingCurves, read_history

    curves = TrainingCurves(tmp_path)
    curves.on_epoch_end(0, {"loss": 2.0, "val_ap": 0.1})
    curves.on_epoch_end(1, {"loss": 1.5, "val_ap": 0.3})
    resumed = TrainingCurves(tmp_path)  # a run killed during epoch 3 redoes it after resuming
    resumed.on_epoch_end(2, {"loss": 1.2, "val_ap": 0.4})
    resumed.on_epoch_end(2, {"loss": 1.1, "val_ap": 0.5})
    assert read_history(tmp_path / "history.csv") == [
        {"epoch": 1, "loss": 2.0, "val_ap": 0.1},
        {"epoch": 2, "loss": 1.5, "val_ap": 0.3},
        {"epoch": 3, "loss": 1.1, "val_ap": 0.5},
    ]
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "results.png"]
