"""Matching, shared by the official protocol and the plain AP: predictions to their images, detections to faces.

:func:`resolve_predictions` files each prediction under its image, refusing
keys of no image; :func:`match` gives each score-ordered detection the face
it overlaps most, as both :func:`facegrid.eval.protocol.wider_protocol` and
:func:`facegrid.eval.ap.average_precision` count them (ignored faces absorb
detections without counting them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from facegrid.core.boxes import checked_detections
from facegrid.core.errors import PathError
from facegrid.wider.results import image_key

#: Detections of one image: float32 ``[K, 4]`` xyxy boxes and ``[K]`` scores.
Detections = tuple[np.ndarray, np.ndarray]

#: IoU a detection needs with a face to find it (the official ``IoU_thresh``).
IOU_THRESHOLD = 0.5

# Detections compared with all faces at once, in blocks of this many rows (bounds memory).
_BLOCK = 1024


def _best_overlap(boxes: np.ndarray, faces: np.ndarray, plus_one: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each box, the face it overlaps most (first on ties) and that IoU.

    ``plus_one`` counts a box's edge pixels as ``boxoverlap.m`` does: width is ``x2 - x1 + 1``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    best = np.zeros(len(boxes), dtype=np.int64)
    best_iou = np.zeros(len(boxes), dtype=np.float64)
    if not len(faces):
        return best, best_iou
    pad = 1.0 if plus_one else 0.0
    face_area = (faces[:, 2] - faces[:, 0] + pad) * (faces[:, 3] - faces[:, 1] + pad)
    for start in range(0, len(boxes), _BLOCK):
        b = boxes[start : start + _BLOCK]
        iw = np.minimum(b[:, None, 2], faces[None, :, 2]) - np.maximum(b[:, None, 0], faces[None, :, 0]) + pad
        ih = np.minimum(b[:, None, 3], faces[None, :, 3]) - np.maximum(b[:, None, 1], faces[None, :, 1]) + pad
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        box_area = (b[:, 2] - b[:, 0] + pad) * (b[:, 3] - b[:, 1] + pad)
        union = box_area[:, None] + face_area[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        columns = iou.argmax(axis=1)
        best[start : start + len(b)] = columns
        best_iou[start : start + len(b)] = iou[np.arange(len(b)), columns]
    return best, best_iou


def match(
    boxes: np.ndarray, faces: np.ndarray, counts: np.ndarray, iou_threshold: float, plus_one: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-ordered detections to faces.

    Args:
        boxes: ``[K, 4]`` detections, highest score first.
        faces: ``[G, 4]`` faces.
        counts: ``[G]`` bool, true for the faces that count (the others are ignored).
        iou_threshold: IoU a detection needs with its best face to find it.
        plus_one: IoU in the +1-pixel convention.

    Returns:
        ``(counted, found)``, ``[K]`` bool each: ``counted`` is false for
        detections whose best face is ignored; ``found`` is true for the first
        detection to find each face that counts.
    """
    best, best_iou = _best_overlap(boxes, faces, plus_one)
    hit = best_iou >= iou_threshold
    counted = np.ones(len(best), dtype=bool)
    counted[hit] = counts[best[hit]]
    candidates = np.flatnonzero(hit & counted)
    _, first = np.unique(best[candidates], return_index=True)
    found = np.zeros(len(best), dtype=bool)
    found[candidates[first]] = True
    return counted, found


def resolve_predictions(
    predictions: Mapping[str, Detections], position: Mapping[str, int], source: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each prediction's checked detections (:func:`~facegrid.core.boxes.checked_detections`), by its image's position.

    Args:
        predictions: ``{image path or key: (boxes, scores)}``.
        position: ``{key: position}`` of every image that can be scored
            (keys as :func:`~facegrid.wider.results.image_key` gives them).
        source: what lists the images (a file, a folder), for the messages.

    Raises:
        facegrid.core.errors.PathError: a prediction's image is not listed.
        ValueError: two predictions name the same image, or detections are malformed.
    """
    resolved: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    key_at: dict[int, str] = {}
    unknown: list[str] = []
    for key, dets in predictions.items():
        i = position.get(image_key(key))
        if i is None:
            unknown.append(key)
        elif i in resolved:
            raise ValueError(f"prediction keys {key_at[i]!r} and {key!r} name the same image")
        else:
            resolved[i] = checked_detections(key, *dets)
            key_at[i] = key
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise PathError(source, f"does not list {len(unknown)} of the {len(predictions)} predicted image(s): {shown}")
    return resolved
