"""GridLoss: hand-computed values, box terms only where faces are, batch normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from facegrid.loss import GridLoss


def grids(batch=2, g=3):
    y_true = np.zeros((batch, g, g, 5), np.float32)
    y_true[0, 1, 1] = [1, 0.5, 0.5, 0.25, 0.16]
    y_pred = np.full((batch, g, g, 5), 0.1, np.float32)
    y_pred[..., 3:] = 0.2
    return y_true, y_pred


def test_plain_cross_entropy_matches_hand_computation():
    y_true, y_pred = grids()
    loss = GridLoss(focal_gamma=0.0, focal_alpha=None, box_weight=2.0)
    value = float(loss(y_true, y_pred))
    # Objectness: 17 background cells at p=0.1 cost -log(0.9) each, the face cell -log(0.1).
    objectness = 17 * -np.log(0.9) - np.log(0.1)
    # Box on the face cell: |0.5-0.1| * 2 + |sqrt(.25)-sqrt(.2)| + |sqrt(.16)-sqrt(.2)|.
    box = 0.8 + abs(0.5 - np.sqrt(0.2)) + abs(0.4 - np.sqrt(0.2))
    # One face in the batch: the batch sum is divided by 1.
    assert value == pytest.approx(objectness + 2.0 * box, rel=1e-4)


def test_focal_weights_down_easy_background():
    y_true, y_pred = grids()
    y_pred[..., 0] = 0.01  # confident, correct background everywhere but the face cell
    y_pred[0, 1, 1, 0] = 0.01
    focal = GridLoss(focal_gamma=2.0, focal_alpha=None, box_weight=0.0)
    plain = GridLoss(focal_gamma=0.0, focal_alpha=None, box_weight=0.0)
    background = 17 * -np.log(0.99) * 0.01**2
    face = -np.log(0.01) * 0.99**2
    assert float(focal(y_true, y_pred)) == pytest.approx(background + face, rel=1e-4)
    assert float(focal(y_true, y_pred)) < float(plain(y_true, y_pred))


def test_box_term_ignores_cells_without_faces():
    y_true, y_pred = grids()
    loss = GridLoss()
    before = float(loss(y_true, y_pred))
    y_pred[1, 2, 2, 1:] = [0.9, 0.9, 0.9, 0.9]  # box channels of an empty cell
    assert float(loss(y_true, y_pred)) == pytest.approx(before, rel=1e-6)
    y_pred[0, 1, 1, 1:] = [0.9, 0.9, 0.9, 0.9]  # box channels of the face cell
    assert float(loss(y_true, y_pred)) > before


def test_perfect_prediction_costs_almost_nothing():
    y_true, _ = grids()
    assert float(GridLoss()(y_true, y_true.copy())) < 1e-3


def test_normalised_by_faces_in_the_batch():
    y_true, y_pred = grids(batch=1)
    one = float(GridLoss(focal_gamma=0.0, focal_alpha=None)(y_true, y_pred))
    twice_true = np.concatenate([y_true, y_true])
    twice_pred = np.concatenate([y_pred, y_pred])
    assert float(GridLoss(focal_gamma=0.0, focal_alpha=None)(twice_true, twice_pred)) == pytest.approx(one, rel=1e-5)


def test_config_round_trip():
    loss = GridLoss(focal_gamma=1.5, focal_alpha=0.3, box_weight=4.0)
    again = GridLoss.from_config(loss.get_config())
    assert (again.focal_gamma, again.focal_alpha, again.box_weight) == (1.5, 0.3, 4.0)
