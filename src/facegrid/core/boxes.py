"""Box conventions and box arithmetic, in NumPy.

This module is the one place that defines how facegrid represents a box:

* Inside the library a box is ``float32 [x1, y1, x2, y2]`` in pixels of the
  upright original image (EXIF orientation applied), with ``x1 <= x2`` and
  ``y1 <= y2``. Arrays of boxes have shape ``[N, 4]``.
* WIDER FACE files store ``x1 y1 w h`` as integers; :func:`from_wider` turns
  that into ``x1, y1, x1 + w, y1 + h``.
"""

from __future__ import annotations

import cv2
import numpy as np


def from_wider(xywh: np.ndarray) -> np.ndarray:
    """Convert WIDER ``[x1, y1, w, h]`` rows to float32 ``[x1, y1, x2, y2]``.

    Args:
        xywh: array of shape ``[N, 4]`` (any numeric dtype).

    Returns:
        float32 array of shape ``[N, 4]``.

    Example:
        >>> from_wider(np.array([[10, 20, 30, 40]]))
        array([[10., 20., 40., 60.]], dtype=float32)
    """
    xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def clip(boxes: np.ndarray, width, height) -> np.ndarray:
    """Clip ``[N, 4]`` xyxy boxes to the image ``[0, width] x [0, height]``.

    ``width`` and ``height`` are scalars, or ``[N]`` arrays giving each box its own image.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if np.ndim(width) == 0 and np.ndim(height) == 0:
        return np.clip(boxes, 0.0, np.array([width, height, width, height], dtype=np.float32))
    w, h = np.asarray(width, dtype=np.float32), np.asarray(height, dtype=np.float32)
    limits = np.stack(np.broadcast_arrays(w, h, w, h), axis=-1)
    return np.clip(boxes, 0.0, limits)


def area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``[N, 4]`` xyxy boxes; inverted boxes count as zero."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    sides = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0)
    return sides[:, 0] * sides[:, 1]


def centers(boxes: np.ndarray) -> np.ndarray:
    """Centre points ``[N, 2]`` (x, y) of ``[N, 4]`` xyxy boxes."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) * 0.5


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` ``[N, 4]`` with every box in ``b`` ``[M, 4]``.

    Returns:
        float32 ``[N, M]``; pairs with zero union get 0.
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Visits boxes from the highest score down (ties in input order) and drops
    each box whose IoU with an already kept box exceeds ``iou_threshold``.
    OpenCV's ``NMSBoxes`` does the work: detection hands it a thousand
    candidates or more per image at a low score threshold, a few
    milliseconds in C++ where a NumPy IoU matrix took tens.

    Returns:
        int64 indices of the kept boxes, highest score first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    rank = np.empty(len(order))
    rank[order] = np.arange(len(order), 0, -1)  # strictly decreasing along our order: OpenCV visits it as is
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh, rank, 0.0, float(iou_threshold))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def checked_detections(where: object, boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    """Detections as float32 ``[K, 4]`` xyxy boxes and float64 ``[K]`` scores, or ValueError.

    Args:
        where: names the image in the error message.
        boxes, scores: array-likes; an empty ``boxes`` of any shape means no detection.

    Raises:
        ValueError: wrong shapes, non-finite values, or a box with ``x2 < x1`` or ``y2 < y1``.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape [K, 4], got {boxes.shape}")
    if scores.shape != (len(boxes),):
        raise ValueError(f"{where}: scores must have shape ({len(boxes)},), got {scores.shape}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"{where}: boxes and scores must be finite")
    inverted = (boxes[:, 2:] < boxes[:, :2]).any(axis=1)
    if inverted.any():
        k = int(np.argmax(inverted))
        raise ValueError(f"{where}: box {k} has x2 < x1 or y2 < y1: {boxes[k].tolist()}")
    return boxes, scores
