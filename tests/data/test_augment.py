"""Box-aware augmentation (``facegrid.data.augment``): crops, flips and colour jitter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from facegrid.data.augment import (
    NO_JITTER,
    Augment,
    Jitter,
    adjust_color,
    crop_boxes,
    flip_boxes,
)
from facegrid.data.geometry import FULL_IMAGE


def relative_boxes(max_n=8):
    """Strategy: float32 [N, 4] xyxy boxes inside the unit square."""

    def build(corners):
        a, b = corners[:, :2], corners[:, 2:]
        return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1).astype(np.float32)

    return st.integers(0, max_n).flatmap(
        lambda n: arrays(np.float32, (n, 4), elements=st.floats(0, 1, width=32)).map(build)
    )


# --------------------------------------------------------------------------- flip


def test_flip_boxes_hand_computed():
    boxes = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(flip_boxes(boxes), [[0.7, 0.2, 0.9, 0.4], [0.0, 0.0, 1.0, 1.0]], atol=1e-7)
    assert flip_boxes(np.zeros((0, 4), dtype=np.float32)).shape == (0, 4)


@settings(max_examples=100, deadline=None)
@given(relative_boxes())
def test_flip_boxes_twice_is_identity(boxes):
    once = flip_boxes(boxes)
    assert once.shape == boxes.shape
    assert (once[:, 0] <= once[:, 2]).all() and (once[:, 1] <= once[:, 3]).all()
    np.testing.assert_allclose(once[:, 2] - once[:, 0], boxes[:, 2] - boxes[:, 0], atol=1e-6)
    np.testing.assert_allclose(flip_boxes(once), boxes, atol=1e-6)


# --------------------------------------------------------------------------- crop


def test_crop_boxes_hand_computed():
    crop = (0.25, 0.25, 0.75, 0.75)
    boxes = np.array(
        [
            [0.3, 0.3, 0.4, 0.4],  # inside: -> (0.1, 0.1, 0.3, 0.3)
            [0.2, 0.3, 0.4, 0.5],  # centre (0.3, 0.4) inside, left edge clipped -> (0, 0.1, 0.3, 0.5)
            [0.0, 0.0, 0.2, 0.2],  # centre outside: dropped
            [0.6, 0.6, 1.0, 1.0],  # centre (0.8, 0.8) outside: dropped although it overlaps
            [0.5, 0.6, 0.9, 0.8],  # centre (0.7, 0.7) inside, right edge clipped -> (0.5, 0.7, 1, 1)
        ],
        dtype=np.float32,
    )
    moved, kept = crop_boxes(boxes, crop)
    np.testing.assert_allclose(moved, [[0.1, 0.1, 0.3, 0.3], [0, 0.1, 0.3, 0.5], [0.5, 0.7, 1, 1]], atol=1e-6)
    assert kept.tolist() == [True, True, False, False, True]


def test_crop_boxes_non_square_crop():
    out, _ = crop_boxes(np.array([[0.45, 0.1, 0.55, 0.3]], dtype=np.float32), (0.4, 0.0, 0.6, 0.5))
    np.testing.assert_allclose(out, [[0.25, 0.2, 0.75, 0.6]], atol=1e-6)


def test_crop_boxes_full_image_is_identity_and_empty_stays_empty():
    boxes = np.array([[0.1, 0.2, 0.5, 0.9]], dtype=np.float32)
    np.testing.assert_allclose(crop_boxes(boxes, FULL_IMAGE)[0], boxes)
    assert crop_boxes(np.zeros((0, 4), dtype=np.float32), (0.1, 0.1, 0.9, 0.9))[0].shape == (0, 4)


def test_crop_boxes_with_a_crop_per_box_crops_each_box_as_alone():
    rng = np.random.default_rng(5)
    corner = rng.uniform(0, 0.6, (40, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.01, 0.4, (40, 2))], axis=1).astype(np.float32)
    start = rng.uniform(0, 0.4, (40, 2))
    crops = np.concatenate([start, start + rng.uniform(0.3, 0.6, (40, 2))], axis=1)
    moved, kept = crop_boxes(boxes, crops)
    one_by_one = [crop_boxes(box[None], tuple(crop)) for box, crop in zip(boxes, crops)]
    assert kept.tolist() == [bool(k[0]) for _, k in one_by_one]
    np.testing.assert_array_equal(moved, np.concatenate([m for m, _ in one_by_one]))
    assert 0 < kept.sum() < len(boxes)


@settings(max_examples=100, deadline=None)
@given(
    relative_boxes(),
    st.floats(0, 0.4),
    st.floats(0, 0.4),
    st.floats(0.3, 0.6),
    st.floats(0.3, 0.6),
)
def test_crop_boxes_keeps_exactly_the_faces_centred_inside(boxes, x1, y1, w, h):
    crop = (x1, y1, x1 + w, y1 + h)
    out, kept = crop_boxes(boxes, crop)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cx >= crop[0]) & (cx < crop[2]) & (cy >= crop[1]) & (cy < crop[3])
    assert len(out) == inside.sum() and (kept == inside).all()
    assert ((out >= 0) & (out <= 1)).all()
    # mapping back to image fractions gives the kept boxes clipped to the crop
    back = out * np.array([w, h, w, h]) + np.array([x1, y1, x1, y1])
    expected = np.clip(boxes[inside], [x1, y1, x1, y1], [x1 + w, y1 + h, x1 + w, y1 + h])
    np.testing.assert_allclose(back, expected, atol=1e-5)


# --------------------------------------------------------------------------- crop sampling


def test_sample_crop_respects_scale_and_aspect():
    augment = Augment()
    rng = np.random.default_rng(0)
    for _ in range(500):
        x1, y1, x2, y2 = augment.sample_crop(rng)
        w, h = x2 - x1, y2 - y1
        assert 0 <= x1 < x2 <= 1 + 1e-9 and 0 <= y1 < y2 <= 1 + 1e-9
        assert 0.6 - 1e-9 <= w <= 1 + 1e-9 and 0.6 - 1e-9 <= h <= 1 + 1e-9
        assert 1 / 1.3 - 1e-9 <= h / w <= 1.3 + 1e-9


def test_sample_crop_is_reproducible_and_varied():
    augment = Augment()
    a = [augment.sample_crop(np.random.default_rng(seed)) for seed in range(20)]
    b = [augment.sample_crop(np.random.default_rng(seed)) for seed in range(20)]
    assert a == b
    assert len(set(a)) == 20


def test_sample_draws_every_choice_reproducibly():
    augment = Augment()
    draws = [augment.sample(np.random.default_rng(seed)) for seed in range(40)]
    assert draws == [augment.sample(np.random.default_rng(seed)) for seed in range(40)]
    assert 10 <= sum(j.flip for j in draws) <= 30
    for j in draws:
        assert 0.75 <= j.saturation <= 1.25 and 0.75 <= j.contrast <= 1.25
        assert abs(j.brightness) <= 0.15 * 255
        assert j.changes_color
    assert not NO_JITTER.changes_color and NO_JITTER.crop == FULL_IMAGE and not NO_JITTER.flip


def test_no_jitter_leaves_pixels_alone(photo):
    assert adjust_color(photo, NO_JITTER) is photo
    assert adjust_color(photo, Jitter(brightness=10.0)) is not photo


def test_crop_scale_one_disables_cropping():
    rng = np.random.default_rng(0)
    assert Augment(crop_scale=(1.0, 1.0)).sample_crop(rng) == FULL_IMAGE


# --------------------------------------------------------------------------- colour


@pytest.fixture
def photo():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)


def test_color_without_strength_is_identity(photo):
    still = Augment(brightness=0.0, contrast=0.0, saturation=0.0)
    out = adjust_color(photo, still.sample(np.random.default_rng(0)))
    assert out.dtype == np.uint8 and out.shape == photo.shape
    np.testing.assert_array_equal(out, photo)


def test_color_is_reproducible_and_keeps_shape(photo):
    augment = Augment()
    a = adjust_color(photo, augment.sample(np.random.default_rng(7)))
    b = adjust_color(photo, augment.sample(np.random.default_rng(7)))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == photo.shape
    assert not np.array_equal(a, adjust_color(photo, augment.sample(np.random.default_rng(8))))


def test_brightness_only_shifts_every_pixel_alike(photo):
    mid = np.clip(photo, 60, 190).astype(np.uint8)  # no clipping at 0 or 255 after the shift
    augment = Augment(brightness=0.2, contrast=0.0, saturation=0.0)
    for seed in range(10):
        shift = adjust_color(mid, augment.sample(np.random.default_rng(seed))).astype(int) - mid
        assert shift.max() - shift.min() <= 1
        assert abs(shift.mean()) <= 0.2 * 255 + 1


def test_color_keeps_gray_pixels_gray():
    gray = np.repeat(np.arange(0, 250, 5, dtype=np.uint8)[None, :, None], 3, axis=2)
    out = adjust_color(gray, Augment().sample(np.random.default_rng(1)))
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # brightness order is preserved
    assert (np.diff(out[0, :, 0].astype(int)) >= 0).all()
