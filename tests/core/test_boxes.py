"""Box conventions and arithmetic (``facegrid.core.boxes``), on hand-computed cases."""

from __future__ import annotations

import numpy as np

from facegrid.core.boxes import area, centers, clip, from_wider, iou, nms


def test_from_wider_converts_xywh_to_xyxy():
    out = from_wider(np.array([[10, 20, 30, 40], [0, 0, 0, 0], [5, 7, 1, 2]], dtype=np.int32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[10, 20, 40, 60], [0, 0, 0, 0], [5, 7, 6, 9]])


def test_from_wider_accepts_lists_flat_rows_and_empty_input():
    np.testing.assert_array_equal(from_wider([1, 2, 3, 4]), [[1, 2, 4, 6]])
    empty = from_wider(np.zeros((0, 4), dtype=np.int32))
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_clip_to_image():
    boxes = np.array([[-5, -5, 10, 10], [90, 40, 130, 70], [10, 10, 20, 20], [200, 200, 300, 300]])
    out = clip(boxes, width=100, height=60)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 10, 10], [90, 40, 100, 60], [10, 10, 20, 20], [100, 60, 100, 60]])


def test_clip_fractional_limits():
    np.testing.assert_allclose(clip([[-0.2, 0.5, 1.5, 0.9]], 1.0, 1.0), [[0.0, 0.5, 1.0, 0.9]])


def test_area():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 5, 9], [10, 10, 5, 20], [1.5, 2, 3, 2.5]], dtype=np.float32)
    np.testing.assert_allclose(area(boxes), [200, 0, 0, 0.75])
    assert area(np.zeros((0, 4))).shape == (0,)


def test_centers():
    boxes = np.array([[0, 0, 10, 20], [3, 4, 4, 8]], dtype=np.float32)
    np.testing.assert_allclose(centers(boxes), [[5, 10], [3.5, 6]])
    assert centers(np.zeros((0, 4))).shape == (0, 2)


def test_wider_box_centre_and_area_together():
    # WIDER row 449 330 122 149 -> xyxy 449 330 571 479
    box = from_wider([[449, 330, 122, 149]])
    np.testing.assert_array_equal(box, [[449, 330, 571, 479]])
    np.testing.assert_allclose(centers(box), [[510, 404.5]])
    np.testing.assert_allclose(area(box), [122 * 149])
    # clipped to a 500x400 image: 449..500 x 330..400
    np.testing.assert_allclose(area(clip(box, 500, 400)), [51 * 70])


def test_clip_with_one_image_size_per_box():
    boxes = np.array([[-5, -5, 150, 150], [-5, -5, 150, 150], [10, 20, 30, 40]], dtype=np.float32)
    out = clip(boxes, np.array([100, 40, 640]), np.array([50, 200, 480]))
    np.testing.assert_array_equal(out, [[0, 0, 100, 50], [0, 0, 40, 150], [10, 20, 30, 40]])
    # the same as clipping each box to its own image
    for box, w, h, row in zip(boxes, [100, 40, 640], [50, 200, 480], out):
        np.testing.assert_array_equal(clip(box, w, h)[0], row)


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    expected = np.array([[25 / 175, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(iou(a, b), expected, rtol=1e-6)


def test_nms_keeps_best_of_each_cluster():
    b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.3], np.float32)
    # Box 1 (0.9) suppresses 0 (IoU 0.68) and 3; box 2 stands alone.
    assert nms(b, scores, 0.5).tolist() == [1, 2]
    assert nms(b, scores, 0.99).tolist() == [1, 2, 0, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_agrees_with_a_plain_greedy_loop():
    def greedy(boxes, scores, threshold):
        order = np.argsort(-scores, kind="stable")
        overlaps = iou(boxes[order], boxes[order])
        suppressed = np.zeros(len(order), bool)
        keep = []
        for i in range(len(order)):
            if not suppressed[i]:
                keep.append(order[i])
                suppressed |= overlaps[i] > threshold
        return keep

    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 200))
        corner = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(1, 60, (n, 2))], axis=1).astype(np.float32)
        scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)  # many ties
        threshold = float(rng.uniform(0.1, 0.9))
        assert nms(boxes, scores, threshold).tolist() == greedy(boxes, scores, threshold)
