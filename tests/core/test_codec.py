"""The grid target layout (``facegrid.core.codec.GridCodec``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facegrid.core.codec import CHANNELS, GridCodec


def sort_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    # Sort on coordinates rounded well below the test tolerance, so float noise
    # (-2e-8 against 0) cannot reorder boxes that tie.
    return boxes[np.lexsort(np.round(boxes, 2).T[::-1])]


@st.composite
def boxes_in_distinct_cells(draw):
    """(grid_size, width, height, boxes): boxes inside the image, one centre per cell at most."""
    grid = draw(st.integers(1, 13))
    width = draw(st.integers(16, 1024))
    height = draw(st.integers(16, 1024))
    cells = draw(st.sets(st.tuples(st.integers(0, grid - 1), st.integers(0, grid - 1)), max_size=min(12, grid * grid)))
    boxes = []
    for col, row in sorted(cells):
        fx = draw(st.floats(0.02, 0.98))
        fy = draw(st.floats(0.02, 0.98))
        cx = (col + fx) * width / grid
        cy = (row + fy) * height / grid
        hw = draw(st.floats(0.05, 1.0)) * min(cx, width - cx)
        hh = draw(st.floats(0.05, 1.0)) * min(cy, height - cy)
        boxes.append([cx - hw, cy - hh, cx + hw, cy + hh])
    boxes = np.clip(np.array(boxes, dtype=np.float32).reshape(-1, 4), 0, [width, height, width, height])
    return grid, width, height, boxes.astype(np.float32)


@settings(max_examples=300, deadline=None)
@given(boxes_in_distinct_cells())
def test_decode_inverts_encode(case):
    grid, width, height, boxes = case
    codec = GridCodec(grid)
    target = codec.encode(boxes, width, height)
    assert target.shape == (grid, grid, 5) and target.dtype == np.float32
    assert int((target[..., 0] == 1).sum()) == len(boxes)
    decoded, scores = codec.decode(target, width, height)
    assert decoded.shape == (len(boxes), 4) and decoded.dtype == np.float32
    np.testing.assert_array_equal(scores, np.ones(len(boxes), dtype=np.float32))
    np.testing.assert_allclose(sort_boxes(decoded), sort_boxes(boxes), atol=1e-3, rtol=0)
    assert sorted(codec.assign(boxes, width, height).tolist()) == list(range(len(boxes)))
    # Coordinates are fractions: the same target decodes to a scaled copy at any size.
    scaled, _ = codec.decode(target, 2 * width, 3 * height)
    np.testing.assert_allclose(
        sort_boxes(scaled), sort_boxes(boxes * np.array([2, 3, 2, 3], dtype=np.float32)), atol=3e-3, rtol=0
    )


@settings(max_examples=100, deadline=None)
@given(boxes_in_distinct_cells())
def test_encoded_channels_stay_in_range(case):
    grid, width, height, boxes = case
    target = GridCodec(grid).encode(boxes, width, height)
    occupied = target[..., 0] == 1
    assert set(np.unique(target[..., 0]).tolist()) <= {-1.0, 0.0, 1.0}
    assert (target[~occupied, 1:] == 0).all()
    assert ((target[..., 1:] >= 0) & (target[..., 1:] <= 1)).all()


def test_cells_covered_by_a_face_they_do_not_hold_are_ignored():
    codec = GridCodec(4)
    # A 100 x 100 image, cells of 25 px: a large face owns cell (1, 1) by its centre
    # and covers the centres of cells (0..2, 0..2); a small face owns cell (3, 3).
    target = codec.encode(np.array([[0, 0, 70, 70], [80, 80, 95, 95]]), 100, 100)
    expected = np.zeros((4, 4))
    expected[:3, :3] = -1
    expected[1, 1] = expected[3, 3] = 1
    np.testing.assert_array_equal(target[..., 0], expected)
    ignored = codec.encode(np.zeros((0, 4)), 100, 100, ignore=np.array([[50, 0, 100, 30]]))
    assert np.argwhere(ignored[..., 0] == -1).tolist() == [[0, 2], [0, 3]]
    boxes, _ = codec.decode(target, 100, 100)
    assert len(boxes) == 2  # ignore cells decode as background


def test_channel_layout_hand_computed_square():
    codec = GridCodec(7)
    assert CHANNELS == ("objectness", "x", "y", "w", "h")
    assert codec.shape == codec.target_shape(640, 480) == (7, 7, 5)
    target = codec.encode(np.array([[0, 0, 32, 32]]), 224, 224)
    expected = np.zeros((7, 7, 5), dtype=np.float32)
    expected[0, 0] = [1, 0.5, 0.5, 32 / 224, 32 / 224]
    np.testing.assert_allclose(target, expected, atol=1e-7)


def test_channel_layout_hand_computed_non_square():
    # 448x224 image: centre (100, 70) -> column 100*7/448 = 1.5625, row 70*7/224 = 2.1875
    target = GridCodec(7).encode(np.array([[70, 40, 130, 100]]), 448, 224)
    assert np.argwhere(target[..., 0] == 1).tolist() == [[2, 1]]  # [row, col]
    np.testing.assert_allclose(target[2, 1], [1, 0.5625, 0.1875, 60 / 448, 60 / 224], atol=1e-6)
    assert np.count_nonzero(target[..., 1:]) == 4
    # The face also covers the centre (96, 48) of the cell above: ignored, not background.
    assert np.argwhere(target[..., 0] == -1).tolist() == [[1, 1]]


def test_two_faces_in_one_cell_keep_the_larger():
    codec = GridCodec(7)
    small = [4, 4, 24, 24]  # centre (14, 14), cell (0, 0), area 400
    large = [0, 0, 30, 30]  # centre (15, 15), cell (0, 0), area 900
    other = [100, 100, 120, 140]  # centre (110, 120), cell row 3, col 3
    boxes = np.array([small, large, other], dtype=np.float32)
    assert codec.assign(boxes, 224, 224).tolist() == [1, 2]
    target = codec.encode(boxes, 224, 224)
    assert (target[..., 0] == 1).sum() == 2
    decoded, _ = codec.decode(target, 224, 224)
    np.testing.assert_allclose(sort_boxes(decoded), sort_boxes([large, other]), atol=1e-3)
    # order of the input does not matter
    assert codec.assign(boxes[[2, 1, 0]], 224, 224).tolist() == [1, 0]


def test_larger_means_larger_clipped_area():
    codec = GridCodec(2)
    # Both centres in cell (0, 0) of a 100x100 image after clipping; the first is
    # bigger before clipping (60x60) but only 30x30 lies inside the image.
    outside = [-30, -30, 30, 30]
    inside = [5, 5, 45, 45]
    assert codec.assign(np.array([outside, inside]), 100, 100).tolist() == [1]


def test_assign_is_ordered_by_cell_row_major():
    codec = GridCodec(4)
    boxes = np.array(
        [[80, 80, 90, 90], [10, 80, 20, 90], [80, 10, 90, 20], [10, 10, 20, 20]], dtype=np.float32
    )  # cells (row, col): (3,3), (3,0), (0,3), (0,0)
    assert codec.assign(boxes, 100, 100).tolist() == [3, 2, 1, 0]


def test_empty_boxes_give_an_all_zero_target():
    codec = GridCodec(5)
    for empty in (np.zeros((0, 4), dtype=np.float32), []):
        target = codec.encode(empty, 320, 240)
        assert target.shape == (5, 5, 5) and target.dtype == np.float32
        assert not target.any()
        boxes, scores = codec.decode(target, 320, 240)
        assert boxes.shape == (0, 4) and scores.shape == (0,)
    assert codec.assign(np.zeros((0, 4)), 320, 240).shape == (0,)


def test_boxes_partly_outside_are_clipped():
    codec = GridCodec(7)
    boxes = np.array([[-10, -20, 30, 40], [200, 180, 260, 300]], dtype=np.float32)
    decoded, _ = codec.decode(codec.encode(boxes, 224, 224), 224, 224)
    np.testing.assert_allclose(sort_boxes(decoded), sort_boxes([[0, 0, 30, 40], [200, 180, 224, 224]]), atol=1e-3)


def test_boxes_without_area_inside_the_image_are_never_represented():
    codec = GridCodec(7)
    boxes = np.array(
        [[300, 10, 340, 50], [-50, -50, -10, -10], [10, 10, 10, 50], [20, 20, 60, 20], [50, 50, 90, 90]],
        dtype=np.float32,
    )
    assert codec.assign(boxes, 224, 224).tolist() == [4]
    assert (codec.encode(boxes, 224, 224)[..., 0] == 1).sum() == 1


def test_centre_on_the_right_and_bottom_edge_goes_to_the_last_cell():
    codec = GridCodec(7)
    # Centre exactly at (224, 224) before clipping; clipped, the face is [184, 184, 224, 224].
    target = codec.encode(np.array([[184, 184, 264, 264]]), 224, 224)
    assert np.argwhere(target[..., 0] == 1).tolist() == [[6, 6]]
    decoded, _ = codec.decode(target, 224, 224)
    np.testing.assert_allclose(decoded, [[184, 184, 224, 224]], atol=1e-3)
    # A one-pixel face in the bottom-right corner.
    target = codec.encode(np.array([[223, 223, 224, 224]]), 224, 224)
    assert np.argwhere(target[..., 0] == 1).tolist() == [[6, 6]]
    np.testing.assert_allclose(codec.decode(target, 224, 224)[0], [[223, 223, 224, 224]], atol=1e-3)


def test_faces_on_the_right_and_bottom_edges_of_a_tiny_image():
    codec = GridCodec(3)
    # 3x3 grid on a 30x30 image; both faces are centred on an image edge before clipping.
    target = codec.encode(np.array([[25, 0, 35, 10], [0, 25, 10, 35]]), 30, 30)
    assert sorted(map(tuple, np.argwhere(target[..., 0] == 1).tolist())) == [(0, 2), (2, 0)]


def test_centre_on_an_interior_cell_boundary_goes_to_the_next_cell():
    codec = GridCodec(7)
    target = codec.encode(np.array([[22, 54, 42, 74]]), 224, 224)  # centre (32, 64)
    assert np.argwhere(target[..., 0] == 1).tolist() == [[2, 1]]
    np.testing.assert_allclose(target[2, 1, 1:3], [0, 0], atol=1e-6)


def test_decode_threshold_and_score_order():
    codec = GridCodec(3)
    grid = np.zeros((3, 3, 5), dtype=np.float32)
    grid[0, 0] = [0.6, 0.5, 0.5, 0.1, 0.1]
    grid[1, 2] = [0.9, 0.5, 0.5, 0.2, 0.2]
    grid[2, 1] = [0.4, 0.5, 0.5, 0.3, 0.3]
    boxes, scores = codec.decode(grid, 300, 300)
    np.testing.assert_allclose(scores, [0.9, 0.6])
    np.testing.assert_allclose(boxes, [[220, 120, 280, 180], [35, 35, 65, 65]], atol=1e-3)
    boxes, scores = codec.decode(grid, 300, 300, threshold=0.3)
    np.testing.assert_allclose(scores, [0.9, 0.6, 0.4])
    np.testing.assert_allclose(boxes[2], [105, 205, 195, 295], atol=1e-3)


def test_decode_rejects_a_grid_of_the_wrong_shape():
    with pytest.raises(ValueError):
        GridCodec(7).decode(np.zeros((5, 5, 5)), 224, 224)
    with pytest.raises(ValueError):
        GridCodec(7).decode(np.zeros((7, 7, 4)), 224, 224)


def test_grid_size_must_be_positive():
    with pytest.raises(ValueError):
        GridCodec(0)
    assert GridCodec(1).shape == (1, 1, 5)


def test_cells_match_where_encode_puts_each_face():
    codec = GridCodec(7)
    boxes = np.array(
        [[0, 0, 32, 32], [70, 40, 130, 100], [184, 184, 264, 264], [300, 10, 340, 50], [10, 10, 10, 50]],
        dtype=np.float32,
    )
    cells, visible = codec.cells(boxes, 224, 224)
    assert cells.dtype == np.int64 and cells.shape == (5, 2)
    np.testing.assert_array_equal(visible, [True, True, True, False, False])
    # (column, row): centres (16, 16), (100, 70), clipped (204, 204)
    np.testing.assert_array_equal(cells[:3], [[0, 0], [3, 2], [6, 6]])
    target = codec.encode(boxes, 224, 224)
    occupied = {tuple(rc[::-1]) for rc in np.argwhere(target[..., 0] == 1).tolist()}
    assert occupied == {tuple(c) for c in cells[visible].tolist()}


def test_cells_with_one_image_size_per_box():
    codec = GridCodec(4)
    boxes = np.array([[60, 10, 80, 30], [60, 10, 80, 30], [150, 150, 250, 250]], dtype=np.float32)
    widths, heights = np.array([80, 400, 200]), np.array([40, 400, 200])
    cells, visible = codec.cells(boxes, widths, heights)
    for k in range(3):
        alone, seen = codec.cells(boxes[k : k + 1], widths[k], heights[k])
        np.testing.assert_array_equal(cells[k], alone[0])
        assert visible[k] == seen[0]
    # 80x40 image: centre (70, 20) -> column 3, row 2; 400x400: column 0, row 0;
    # 200x200: clipped to [150, 150, 200, 200], centre (175, 175) -> column 3, row 3
    np.testing.assert_array_equal(cells, [[3, 2], [0, 0], [3, 3]])
    assert visible.all()


def test_a_batch_encodes_as_its_images_one_by_one():
    rng = np.random.default_rng(11)
    codec = GridCodec(7)
    per_image, ignores = [], []
    for _ in range(12):  # crowded images: many faces share cells, some regions ignored, some images empty
        n = int(rng.integers(0, 30))
        corner = rng.uniform(-20, 210, (n, 2))
        per_image.append(np.concatenate([corner, corner + rng.uniform(1, 80, (n, 2))], axis=1).astype(np.float32))
        ignores.append(per_image[-1][: int(rng.integers(0, 4))] + 5)
    owners = np.repeat(np.arange(12), [len(b) for b in per_image])
    ignore_owners = np.repeat(np.arange(12), [len(b) for b in ignores])
    batch = codec.encode_batch(np.concatenate(per_image), owners, 12, 224, 224, np.concatenate(ignores), ignore_owners)
    for k in range(12):
        np.testing.assert_array_equal(batch[k], codec.encode(per_image[k], 224, 224, ignore=ignores[k]))
    assert (batch[..., 0] == 1).sum() > 50 and (batch[..., 0] == -1).sum() > 50
