"""The pyramid target layout (``facegrid.core.codec.PyramidCodec``): levels, positive cells, encode/decode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facegrid.core.codec import PYRAMID_CHANNELS, GridCodec, PyramidCodec, codec_for


def same_faces(found: np.ndarray, faces: np.ndarray, tolerance: float = 0.02) -> bool:
    """Whether every box of ``found`` is one of ``faces`` and every face is found, within ``tolerance`` pixels.

    A face decoded from several cells comes back several times, its copies differing by float rounding.
    """
    found, faces = (np.asarray(b, np.float64).reshape(-1, 4) for b in (found, faces))
    gaps = np.abs(found[:, None, :] - faces[None, :, :]).max(axis=2)  # [found, faces]
    return bool((gaps <= tolerance).any(axis=1).all() and (gaps <= tolerance).any(axis=0).all())


@st.composite
def faces(draw):
    """(width, height, boxes): an input of multiple-of-32 sides with faces of every size inside it."""
    width = 32 * draw(st.integers(2, 12))
    height = 32 * draw(st.integers(2, 12))
    boxes = []
    for _ in range(draw(st.integers(0, 25))):
        side = draw(st.floats(2.0, min(width, height) * 0.9))
        aspect = draw(st.floats(0.6, 1.6))
        w, h = side * aspect**0.5, side / aspect**0.5
        x1 = draw(st.floats(0, max(width - w, 0)))
        y1 = draw(st.floats(0, max(height - h, 0)))
        boxes.append([x1, y1, min(x1 + w, width), min(y1 + h, height)])
    return width, height, np.array(boxes, np.float32).reshape(-1, 4)


@settings(max_examples=200, deadline=None)
@given(faces())
def test_decode_returns_every_represented_face_on_each_of_its_cells(case):
    width, height, boxes = case
    codec = PyramidCodec()
    target = codec.encode(boxes, width, height)
    assert target.shape == codec.target_shape(width, height) == (codec.cells_for(width, height), 5)
    decoded, scores = codec.decode(target, width, height)
    assert len(decoded) == int((target[:, 0] == 1).sum()) and (scores == 1).all()
    kept = codec.assign(boxes, width, height)
    assert same_faces(decoded, boxes[kept])
    # each face is decoded only from cells of its own level
    _, _, levels = codec.cell_table(width, height)
    positive = np.flatnonzero(target[:, 0] == 1)
    per_box_level = codec.level_of(decoded)
    np.testing.assert_array_equal(np.sort(levels[positive]), np.sort(per_box_level))


def test_levels_by_face_size():
    codec = PyramidCodec()  # strides 8, 16, 32, four strides a face: 8 takes < 45 px, 16 45-91, 32 > 91
    sides = np.array([4, 20, 44, 46, 90, 92, 300], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=1)
    assert codec.level_of(boxes).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert PyramidCodec(faces_per_stride=2.0).level_of(boxes).tolist() == [0, 0, 1, 2, 2, 2, 2]  # 23 / 45 px


def test_hand_computed_cells_and_channels():
    codec = PyramidCodec(strides=(8, 16, 32))
    # A 64 x 64 face centred at (100, 100) on a 256 x 256 input: level 16 (64 / 4 = 16).
    target = codec.encode(np.array([[68, 68, 132, 132]]), 256, 256)
    level_16 = slice(32 * 32, 32 * 32 + 16 * 16)
    scores = target[level_16, 0].reshape(16, 16)
    # centre cell (6, 6) (centre 104, 104); cells within 1.5 strides (24 px) of the face centre:
    # cell centres 88, 104, 120 on each axis, all inside the face -> a 3 x 3 block at rows/cols 5..7
    expected = np.zeros((16, 16))
    expected[5:8, 5:8] = 1
    np.testing.assert_array_equal(scores, expected)
    assert (target[:, 0] == 1).sum() == 9  # nothing on the other levels
    cell = target[level_16][6 * 16 + 6]
    np.testing.assert_allclose(cell, [1, (100 - 104) / 16, (100 - 104) / 16, 4, 4], atol=1e-6)
    assert PYRAMID_CHANNELS == ("score", "dx", "dy", "w", "h")


def test_a_tiny_face_keeps_the_cell_holding_its_centre():
    codec = PyramidCodec()
    target = codec.encode(np.array([[101, 101, 104, 104]]), 128, 128)  # 3 px, no cell centre inside
    positive = np.flatnonzero(target[:, 0] == 1)
    assert len(positive) == 1
    centres, strides, levels = codec.cell_table(128, 128)
    assert levels[positive[0]] == 0 and centres[positive[0]].tolist() == [100.0, 100.0]
    np.testing.assert_allclose(codec.decode(target, 128, 128)[0], [[101, 101, 104, 104]], atol=1e-4)


def test_a_shared_cell_goes_to_the_smaller_face():
    codec = PyramidCodec(strides=(8,))
    big = [80, 80, 120, 120]  # centre (100, 100), cells around (12, 12)
    small = [97, 97, 107, 107]  # centre (102, 102), same home cell
    target = codec.encode(np.array([big, small], np.float32), 256, 256)
    centres, _, _ = codec.cell_table(256, 256)
    home = np.flatnonzero((centres == [100.0, 100.0]).all(axis=1))[0]
    np.testing.assert_allclose(target[home, 3:5], [10 / 8, 10 / 8])
    assert codec.assign(np.array([big, small]), 256, 256).tolist() == [0, 1]  # the big face keeps other cells


def test_ignore_regions_and_empty_images():
    codec = PyramidCodec()
    empty = codec.encode(np.zeros((0, 4)), 96, 64)
    assert empty.shape == (12 * 8 + 6 * 4 + 3 * 2, 5) and not empty.any()
    assert codec.decode(empty, 96, 64)[0].shape == (0, 4)
    ignored = codec.encode(np.zeros((0, 4)), 96, 64, ignore=np.array([[0, 0, 40, 40]]))
    centres, _, _ = codec.cell_table(96, 64)
    inside = (centres < 40).all(axis=1)
    np.testing.assert_array_equal(ignored[:, 0], np.where(inside, -1.0, 0.0))
    # a face's own cells stay positive inside an ignore region
    both = codec.encode(np.array([[8, 8, 24, 24]]), 96, 64, ignore=np.array([[0, 0, 40, 40]]))
    assert (both[:, 0] == 1).sum() >= 1 and len(codec.decode(both, 96, 64)[0]) == (both[:, 0] == 1).sum()


def test_a_batch_encodes_as_its_images_one_by_one():
    rng = np.random.default_rng(5)
    codec = PyramidCodec()
    per_image, ignores = [], []
    for _ in range(10):
        n = int(rng.integers(0, 40))
        corner = rng.uniform(-20, 240, (n, 2))
        per_image.append(np.concatenate([corner, corner + rng.uniform(2, 150, (n, 2))], axis=1).astype(np.float32))
        ignores.append(per_image[-1][: int(rng.integers(0, 4))] + 3)
    owners = np.repeat(np.arange(10), [len(b) for b in per_image])
    ignore_owners = np.repeat(np.arange(10), [len(b) for b in ignores])
    batch = codec.encode_batch(np.concatenate(per_image), owners, 10, 256, 256, np.concatenate(ignores), ignore_owners)
    for k in range(10):
        np.testing.assert_array_equal(batch[k], codec.encode(per_image[k], 256, 256, ignore=ignores[k]))
        mask = codec.represented(per_image[k], np.zeros(len(per_image[k]), np.int64), 256, 256)
        np.testing.assert_array_equal(np.flatnonzero(mask), codec.assign(per_image[k], 256, 256))
    assert (batch[..., 0] == 1).sum() > 100


def test_corners_work_on_numpy_and_tensors_alike():
    cells = np.array([[1, 0.5, -0.25, 2, 1]], np.float32)
    top_left, bottom_right = PyramidCodec.corners(cells)
    np.testing.assert_allclose(top_left, [[-0.5, -0.75]])
    np.testing.assert_allclose(bottom_right, [[1.5, 0.25]])
    keras = pytest.importorskip("keras")
    tl, br = PyramidCodec.corners(keras.ops.convert_to_tensor(cells))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tl), top_left)


def test_invalid_settings_say_what_was_received():
    for bad in ((), (16, 8), (8, 8), (0, 8)):
        with pytest.raises(ValueError, match="Received: strides="):
            PyramidCodec(bad)
    with pytest.raises(ValueError, match="radius"):
        PyramidCodec(radius=-1)
    with pytest.raises(ValueError, match="expected cells of shape"):
        PyramidCodec().decode(np.zeros((10, 5)), 64, 64)


def test_codec_for_chooses_by_strides():
    assert codec_for((8, 16, 32), 0) == PyramidCodec((8, 16, 32))
    assert codec_for((), 7) == GridCodec(7)
