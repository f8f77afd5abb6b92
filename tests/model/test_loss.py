"""GridLoss: hand-computed values, box terms only where faces are, batch normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from facegrid.model.loss import GridLoss, PyramidLoss, loss_for


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
    # Box, in cell units of the 3x3 grid: true centre (0.5, 0.5) size (0.75, 0.48)
    # -> [0.125, 0.26, 0.875, 0.74]; predicted centre (0.1, 0.1) size (0.6, 0.6)
    # -> [-0.2, -0.2, 0.4, 0.4]. Intersection 0.275 x 0.14, union 0.36 + 0.36 - 0.0385,
    # hull 1.075 x 0.94.
    intersection = 0.275 * 0.14
    union = 0.36 + 0.36 - intersection
    hull = 1.075 * 0.94
    giou = intersection / union - (hull - union) / hull
    # One face in the batch: the batch sum is divided by 1.
    assert value == pytest.approx(objectness + 2.0 * (1.0 - giou), rel=1e-4)


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
    y_pred[0, 1, 1, 1:] = [0.0, 0.0, 0.01, 0.01]  # the face cell's box, now far off
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


def test_box_term_is_scale_invariant_and_zero_when_exact():
    loss = GridLoss()
    small_true = np.zeros((1, 4, 4, 5), np.float32)
    small_true[0, 2, 2] = [1, 0.5, 0.5, 0.02, 0.02]
    large_true = small_true.copy()
    large_true[0, 2, 2, 3:] = 0.2
    small_pred, large_pred = small_true.copy(), large_true.copy()
    small_pred[0, 2, 2, 3:] *= 1.5  # the same relative error on a tiny and on a large face
    large_pred[0, 2, 2, 3:] *= 1.5
    small = float(np.asarray(loss.box(small_true, small_pred)).sum())
    large = float(np.asarray(loss.box(large_true, large_pred)).sum())
    assert small == pytest.approx(large, rel=1e-4) and small == pytest.approx(1 - 1 / 2.25, rel=1e-3)
    assert float(np.asarray(loss.box(large_true, large_true)).sum()) == pytest.approx(0.0, abs=1e-4)


def test_ignore_cells_cost_nothing():
    y_true, y_pred = grids()
    loss = GridLoss()
    before = float(loss(y_true, y_pred))
    y_true[1, 0, 0, 0] = -1.0  # an ignore cell, e.g. covered by a face it does not hold
    y_pred[1, 0, 0, 0] = 0.99  # a confident detection there is not punished...
    after = float(loss(y_true, y_pred))
    background = GridLoss().objectness(np.zeros((1, 1, 1, 5), np.float32), np.full((1, 1, 1, 5), 0.1, np.float32))
    assert after == pytest.approx(before - float(np.asarray(background).sum()), rel=1e-5)
    y_true[1, 0, 0, 0] = 0.0  # ...where as background it costs a lot
    assert float(loss(y_true, y_pred)) > before


def pyramid_cells():
    """Two images of 4 cells: one positive cell (box 2 x 2 strides at the cell centre), one ignore cell."""
    y_true = np.zeros((2, 4, 5), np.float32)
    y_true[0, 0] = [1, 0, 0, 2, 2]
    y_true[0, 1, 0] = -1
    y_pred = np.zeros((2, 4, 5), np.float32)
    y_pred[..., 0] = 0.1
    y_pred[..., 3:] = 1.0
    y_pred[0, 0] = [0.3, 0.5, 0, 2, 2]  # the same box moved right by a quarter of its width
    return y_true, y_pred


def test_pyramid_loss_matches_hand_computation():
    y_true, y_pred = pyramid_cells()
    value = float(PyramidLoss(focal_gamma=2.0, box_weight=2.0)(y_true, y_pred))
    # IoU of [-1, -1, 1, 1] and [-0.5, -1, 1.5, 1]: 1.5 x 2 / (4 + 4 - 3); hull 2.5 x 2.
    iou = 3 / 5
    giou = iou - (5 - 5) / 5
    q, p = iou, 0.3
    positive = abs(q - p) ** 2 * -(q * np.log(p) + (1 - q) * np.log(1 - p))
    negatives = 6 * 0.1**2 * -np.log(0.9)  # 8 cells less the positive and the ignore cell
    assert value == pytest.approx(positive + negatives + 2.0 * (1 - giou), rel=1e-4)


def test_pyramid_loss_is_zero_for_a_perfect_prediction():
    y_true, _ = pyramid_cells()
    perfect = y_true.copy()
    perfect[..., 0] = np.maximum(perfect[..., 0], 1e-7)
    perfect[0, 1, 0] = 0.9  # an ignore cell may score anything
    assert float(PyramidLoss()(y_true, perfect)) == pytest.approx(0.0, abs=1e-4)


def test_pyramid_score_target_is_the_iou_and_gets_no_box_gradient():
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    y_true, y_pred = pyramid_cells()
    score, box, iou = PyramidLoss().parts(y_true, y_pred)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(iou)[0, 0], 0.6, rtol=1e-5)
    assert float(keras.ops.sum(box)) == pytest.approx(1 - 0.6, rel=1e-5)
    pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        score, _, _ = PyramidLoss().parts(y_true, pred)
        total = tf.reduce_sum(score)
    gradient = tape.gradient(total, pred).numpy()
    assert np.abs(gradient[..., 1:]).max() == 0  # the IoU target is held constant
    assert gradient[0, 1, 0] == 0 and gradient[1, 1, 0] != 0  # nothing flows from an ignore cell


def test_loss_for_each_layout():
    from facegrid.core.config import Config

    assert isinstance(loss_for(Config()), GridLoss)
    pyramid = loss_for(Config(strides=(8, 16), grid_size=0, focal_gamma=1.5, box_weight=3.0))
    assert isinstance(pyramid, PyramidLoss) and (pyramid.focal_gamma, pyramid.box_weight) == (1.5, 3.0)
    assert PyramidLoss.from_config(pyramid.get_config()).box_weight == 3.0


@pytest.mark.parametrize("make", ["grid", "pyramid"])
def test_the_logged_terms_add_up_to_the_loss(make):
    from facegrid.model.loss import GridLoss, LossTerm, PyramidLoss

    rng = np.random.default_rng(0)
    if make == "grid":
        loss, shape = GridLoss(box_weight=2.0), (3, 4, 4, 5)
    else:
        loss, shape = PyramidLoss(box_weight=2.0), (3, 21, 5)
    y_true = rng.uniform(0.05, 1.0, shape).astype(np.float32)
    y_true[..., 0] = rng.choice([-1.0, 0.0, 1.0], shape[:-1])
    y_pred = rng.uniform(0.05, 1.0, shape).astype(np.float32)
    score, box = (float(t) for t in loss.terms(y_true, y_pred))
    assert score > 0 and box > 0
    assert float(loss(y_true, y_pred)) == pytest.approx(score + 2.0 * box, rel=1e-5)
    metric = LossTerm(loss, "box")
    metric.update_state(y_true, y_pred)
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(box, rel=1e-5) and metric.name == "box_loss"
    assert LossTerm.from_config(metric.get_config()).term == "box"
