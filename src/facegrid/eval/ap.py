"""Precision/recall curves and their AP, and a plain AP at an IoU against any WIDER-format annotation file.

:class:`PRCurve` is the curve both this AP and the official protocol
(:mod:`facegrid.eval.protocol`) report, its AP the area under the precision
envelope (:func:`voc_ap`, as ``VOCap.m`` computes it).

:func:`average_precision` scores detections against any annotation file,
with the faces a :class:`~facegrid.wider.index.FaceFilter` drops as ignored
faces, in the same way as the official protocol ignores faces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from facegrid.core.errors import FileLineError
from facegrid.eval.matching import IOU_THRESHOLD, Detections, match, resolve_predictions
from facegrid.wider.index import FaceFilter, Index
from facegrid.wider.results import image_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PRCurve:
    """A precision/recall curve and its average precision.

    Attributes:
        recall: ``[T]`` float64 recall at each threshold.
        precision: ``[T]`` float64 precision at each threshold; NaN where no
            detection counts at that threshold (0/0, as in the official tool).
        thresholds: ``[T]`` float64 score thresholds, decreasing; point ``t``
            counts the detections scoring at least ``thresholds[t]``.
        ap: area under the precision envelope (:func:`voc_ap`); NaN when no face counts.
        num_faces: faces that count, the denominator of recall.
    """

    recall: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray
    ap: float
    num_faces: int


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope of a PR curve (PASCAL VOC all-points, ``VOCap.m``).

    Precision is first made non-increasing from the right (each point takes the
    best precision at any higher recall), then summed over the recall steps. NaN
    precisions are skipped as MATLAB's ``max`` skips them.

    Args:
        recall: ``[T]`` recall, non-decreasing.
        precision: ``[T]`` precision at the same points.

    Returns:
        The AP; NaN if a recall is NaN.

    Example:
        >>> voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))  # 0.5 * 1 + 0.5 * 2/3
        0.8333333333333333
    """
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def pr_curve(recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray, num_faces: int) -> PRCurve:
    """The curve with its AP (:func:`voc_ap`); the AP is NaN, with a warning, when no face counts."""
    if num_faces == 0:
        log.warning("no face counts: AP is undefined (NaN)")
        ap = float("nan")
    else:
        ap = voc_ap(recall, precision)
    return PRCurve(recall, precision, thresholds, ap, num_faces)


def _ranked_curve(scores: np.ndarray, found: np.ndarray, num_faces: int) -> PRCurve:
    """PR curve over detections of a whole set, one point per distinct score."""
    order = np.argsort(-scores, kind="stable")
    scores, found = scores[order], found[order]
    # Detections with equal scores enter together, so their order cannot change the AP.
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if len(scores) else np.zeros(0, np.int64)
    found_at = np.cumsum(found)[last]
    precision = found_at / (last + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = found_at / float(num_faces)
    return pr_curve(recall, precision, scores[last], num_faces)


def average_precision(
    predictions: Mapping[str, Detections],
    index: Index,
    iou: float = IOU_THRESHOLD,
    face_filter: FaceFilter = FaceFilter(),
) -> PRCurve:
    """AP at an IoU threshold against any WIDER-format annotation file.

    Each image's detections, highest score first, go to the face they overlap
    most (plain IoU of xyxy boxes). Faces the filter drops (flagged invalid,
    zero-size, too small, ...) are ignored faces: a detection that goes to one
    is neither a true nor a false positive, as in the official protocol.
    Otherwise a detection finds its face if the IoU reaches ``iou`` and the
    face is not found yet, and is a false positive if not. All detections of
    the set are then ranked by score, and the AP is the area under the
    precision envelope (all points, :func:`voc_ap`), detections with equal
    scores entering together. Images without predictions count as having no
    detections. A zero-size face has no area, so no detection overlaps it:
    it is ignored but never absorbs a detection.

    Args:
        predictions: ``{image path: (boxes, scores)}`` with float32 ``[K, 4]``
            xyxy boxes in original-image pixels and ``[K]`` scores; the path as
            in the annotation file, with or without its image suffix
            (``"0--Parade/x.jpg"`` or ``"0--Parade/x"``).
        index: the annotations (:func:`facegrid.wider.annotations.read_annotations`).
        iou: IoU needed to find a face, in ``(0, 1]``.
        face_filter: which faces count; the others are ignored.

    Returns:
        The curve (one point per distinct score, decreasing) and its AP; NaN if no face counts.

    Raises:
        facegrid.core.errors.PathError: a predicted image is not in the index
            (the message names its file).
        facegrid.core.errors.FileLineError: the index lists an image twice.
        ValueError: ``iou`` is out of range, or detections are malformed.

    Example:
        >>> curve = average_precision(predictions, read_annotations("wider_face_val_bbx_gt.txt"))  # doctest: +SKIP
        >>> curve.ap  # doctest: +SKIP
        0.62
    """
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    position: dict[str, int] = {}
    for i, path in enumerate(index.paths.tolist()):
        key = image_key(path)
        if key in position:
            raise FileLineError(index.source, int(index.name_lines[i]), f"image {path!r} is listed twice")
        position[key] = i
    resolved = resolve_predictions(predictions, position, index.source or "the index")
    counts = face_filter.mask(index)
    kept_scores: list[np.ndarray] = [np.zeros(0)]
    kept_found: list[np.ndarray] = [np.zeros(0, dtype=bool)]
    for i, (boxes, scores) in resolved.items():
        order = np.argsort(-scores, kind="stable")
        image_counts = counts[index.offsets[i] : index.offsets[i + 1]]
        counted, found = match(boxes[order], index.image_boxes(i), image_counts, iou, plus_one=False)
        kept_scores.append(scores[order][counted])
        kept_found.append(found[counted])
    return _ranked_curve(np.concatenate(kept_scores), np.concatenate(kept_found), int(counts.sum()))
