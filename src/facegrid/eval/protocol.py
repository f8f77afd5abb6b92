"""The official WIDER FACE validation protocol: AP in the easy, medium and hard settings.

:func:`evaluate_wider` re-implements the official WIDER FACE validation
protocol (the MATLAB ``eval_tools``: ``read_pred.m``, ``norm_score.m``,
``evaluation.m``, ``boxoverlap.m``, ``VOCap.m``) on the official ground truth
``.mat`` files (:mod:`facegrid.wider.ground_truth`), and reports AP in the
easy, medium and hard settings (:data:`~facegrid.wider.ground_truth.SETTINGS`).
Step by step, as the official tool does it:

1. Each image's detections are sorted by score, highest first (``read_pred.m``).
2. The scores of the whole submission are rescaled to ``[0, 1]`` by min-max
   (``norm_score.m``), in single precision as MATLAB computes it there (see
   :func:`normalize_scores`).
3. Each detection, in score order, goes to the face it overlaps most (IoU in
   the +1-pixel convention of ``boxoverlap.m``, with ``x2 = x + w``;
   :func:`~facegrid.eval.matching.match`). At IoU ``>= 0.5``: if that face
   does not count in the setting, the detection is ignored, neither true nor
   false positive; otherwise it finds the face, once.
   Every other detection is a false positive.
4. At each of 1000 score thresholds ``1 - t/1000`` every image contributes its
   detections scoring at least the threshold and the faces they found. Summed
   over the images, precision is found faces over detections not ignored, and
   recall is found faces over the faces that count in the setting.
5. AP is the area under the precision envelope (``VOCap.m``,
   :func:`~facegrid.eval.ap.voc_ap`).

Faces that count: a setting's ``gt_list`` names, per image, the faces that
count in it; every other face of the image is ignored.

Where this differs from the official tool, and why: it evaluates the images
asked for rather than always all 3,226 (see :func:`evaluate_wider`), so that
a part of the validation set can be scored fairly; when every score is the
same it counts every detection rather than dividing by zero (see
:func:`normalize_scores`); and detection boxes arrive as float32, the
library's convention, where MATLAB reads doubles, so an IoU within about
``1e-6`` of 0.5 may fall on the other side.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from facegrid.core.boxes import checked_detections
from facegrid.core.errors import PathError
from facegrid.eval.ap import PRCurve, pr_curve
from facegrid.eval.matching import IOU_THRESHOLD, Detections, match, resolve_predictions
from facegrid.wider.ground_truth import (
    SETTINGS,
    WiderGroundTruth,
    load_wider_ground_truth,
)
from facegrid.wider.results import image_key

log = logging.getLogger(__name__)

#: Number of score thresholds of the official curve (``thresh_num``).
NUM_THRESHOLDS = 1000


@dataclass(frozen=True, eq=False)
class WiderResult:
    """The official protocol's outcome.

    Attributes:
        ap: AP per setting, ``{"easy": ..., "medium": ..., "hard": ...}``.
        curves: the precision/recall curve per setting.
        images: ``"<event>/<name>"`` of the images evaluated, in ground-truth order.
    """

    ap: dict[str, float]
    curves: dict[str, PRCurve]
    images: tuple[str, ...]


def normalize_scores(detections: Sequence[Detections | None]) -> list[Detections | None]:
    """Rescale the scores of a whole submission to ``[0, 1]``, as ``norm_score.m`` does.

    ``score' = (score - min) / (max - min)`` over every score of every image.
    The official running maximum starts at ``realmin('single')`` and the
    minimum at ``realmax('single')``, which makes MATLAB hold both, and so
    every rescaled score, in single precision; this function computes in
    float32 likewise, so that each score falls on the same side of the 1000
    thresholds as in the official tool. One consequence of those starting
    values is kept too: when every score is negative, the maximum used is
    ``realmin('single')``, not the largest score.

    When every score is the same the official tool divides zero by zero and
    counts no detection at all; here every score becomes 1 instead, with a
    warning, so that each detection counts at every threshold.

    Args:
        detections: per image, ``(boxes, scores)`` or None (no result file).

    Returns:
        The same list with float32 rescaled scores; boxes and None entries unchanged.
    """
    scores = [np.asarray(d[1], dtype=np.float32).ravel() for d in detections if d is not None]
    scores = [s for s in scores if s.size]
    if not scores:
        return list(detections)
    low = min(np.finfo(np.float32).max, min(s.min() for s in scores))
    high = max(np.finfo(np.float32).tiny, max(s.max() for s in scores))
    low, high = np.float32(low), np.float32(high)
    if high == low:
        log.warning("all detection scores equal %g: counting every detection at every threshold", low)
    out: list[Detections | None] = []
    for d in detections:
        if d is None:
            out.append(None)
            continue
        s = np.asarray(d[1], dtype=np.float32)
        rescaled = np.ones_like(s) if high == low else (s - low) / (high - low)
        out.append((d[0], rescaled.astype(np.float32)))
    return out


def wider_protocol(
    gt_boxes: Sequence[np.ndarray],
    keep_indices: Sequence[np.ndarray],
    detections: Sequence[Detections | None],
) -> PRCurve:
    """The official per-setting evaluation (``evaluation.m``) on prepared inputs.

    This is the core of :func:`evaluate_wider`, exposed so that the protocol
    can be run on ground truth built by hand. Scores are compared as given:
    rescale a submission's scores first (:func:`normalize_scores`).

    As in the official tool, an image without any face contributes nothing,
    not even false positives, and an image without detections contributes
    only its faces that count (all missed).

    Args:
        gt_boxes: per image, ``[G, 4]`` xyxy faces (``x2 = x + w``).
        keep_indices: per image, 0-based indices of the faces that count in
            this setting (the official ``gt_list`` minus 1); other faces are ignored.
        detections: per image, ``(boxes [K, 4] xyxy, scores [K] in [0, 1])``
            in any order, or None.

    Returns:
        The curve at the 1000 official thresholds ``1 - t/1000``, and its AP.

    Raises:
        ValueError: the three sequences differ in length, a face index is out
            of range, or detections are malformed.

    Example:
        >>> faces = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)]
        >>> dets = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9]))]
        >>> wider_protocol(faces, [np.array([0, 1])], dets).ap
        0.5
    """
    if not len(gt_boxes) == len(keep_indices) == len(detections):
        raise ValueError(
            f"need one entry per image in each sequence, got {len(gt_boxes)} face arrays, "
            f"{len(keep_indices)} keep-index arrays and {len(detections)} detection entries"
        )
    thresholds = 1.0 - np.arange(1, NUM_THRESHOLDS + 1) / NUM_THRESHOLDS
    counted_total = np.zeros(NUM_THRESHOLDS, dtype=np.int64)
    found_total = np.zeros(NUM_THRESHOLDS, dtype=np.int64)
    num_faces = 0
    for i, (faces, keep, dets) in enumerate(zip(gt_boxes, keep_indices, detections)):
        faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
        keep = np.asarray(keep, dtype=np.int64).ravel()
        if keep.size and (keep.min() < 0 or keep.max() >= len(faces)):
            raise ValueError(f"image {i}: face indices {keep.tolist()} out of range for {len(faces)} faces")
        num_faces += keep.size
        if dets is None or not len(faces):
            continue
        boxes, scores = checked_detections(f"image {i}", *dets)
        order = np.argsort(-scores, kind="stable")
        scores = scores[order]
        counts = np.zeros(len(faces), dtype=bool)
        counts[keep] = True
        counted, found = match(boxes[order], faces, counts, IOU_THRESHOLD, plus_one=True)
        # Scores are sorted, so the detections at a threshold are a prefix of them.
        upto = np.searchsorted(-scores, -thresholds, side="right")
        counted_total += np.concatenate([[0], np.cumsum(counted)])[upto]
        found_total += np.concatenate([[0], np.cumsum(found)])[upto]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = found_total / counted_total
        recall = found_total / num_faces
    return pr_curve(recall, precision, thresholds, num_faces)


def evaluate_wider(
    predictions: Mapping[str, Detections],
    ground_truth: str | os.PathLike | WiderGroundTruth,
    images: Iterable[str] | None = None,
) -> WiderResult:
    """Evaluate detections with the official WIDER FACE protocol (easy, medium, hard).

    The ground truth is restricted to the images evaluated: with
    ``images=None`` those are the images that have predictions, so evaluating
    on a part of the validation set (such as the 394 images of a sample)
    counts only that part's faces; an explicit ``images`` list evaluates
    exactly those images, and the faces of one without predictions are
    missed. Scores are rescaled over the images evaluated, as the official tool
    rescales over the images it reads.

    Args:
        predictions: ``{"<event>/<name>": (boxes, scores)}``, float32 ``[K, 4]``
            xyxy boxes in original-image pixels and ``[K]`` scores in any order
            and any range (:func:`facegrid.wider.results.read_submission` gives
            this). Keys may carry the image suffix (``.jpg``).
        ground_truth: the ``eval_tools/ground_truth`` folder, or its
            :func:`~facegrid.wider.ground_truth.load_wider_ground_truth` result.
        images: the ``"<event>/<name>"`` keys to evaluate; None for the predicted ones.

    Returns:
        AP and curve per setting, and the images evaluated.

    Raises:
        facegrid.core.errors.PathError: a predicted or listed image is not in the
            ground truth, or a ground truth file cannot be used.
        ValueError: nothing is to be evaluated, or detections are malformed.
        FileNotFoundError: a ground truth file is missing.

    Example:
        >>> result = evaluate_wider(read_submission("pred"), "eval_tools/ground_truth")  # doctest: +SKIP
        >>> result.ap  # doctest: +SKIP
        {'easy': 0.81, 'medium': 0.74, 'hard': 0.42}
    """
    gt = ground_truth if isinstance(ground_truth, WiderGroundTruth) else load_wider_ground_truth(ground_truth)
    position = {key: i for i, key in enumerate(gt.keys)}
    resolved = resolve_predictions(predictions, position, gt.where)
    if images is None:
        chosen = sorted(resolved)
    else:
        listed = {key: position.get(image_key(key)) for key in images}
        unknown = [key for key, i in listed.items() if i is None]
        if unknown:
            shown = ", ".join(map(repr, unknown[:5]))
            raise PathError(gt.where, f"does not list {len(unknown)} image(s) asked for: {shown}")
        chosen = sorted(set(listed.values()))
    if not chosen:
        raise ValueError("no images to evaluate: no predictions and no images listed")
    absent = sum(i not in resolved for i in chosen)
    outside = len(resolved) - (len(chosen) - absent)
    log.info("WIDER FACE protocol on %d of %d images, %d without predictions", len(chosen), len(gt.keys), absent)
    if outside:
        log.info("%d predicted image(s) are not among the images listed and are not evaluated", outside)
    detections = normalize_scores([resolved.get(i) for i in chosen])
    faces = [gt.boxes[i] for i in chosen]
    curves = {s: wider_protocol(faces, [gt.keep[s][i] for i in chosen], detections) for s in SETTINGS}
    return WiderResult({s: c.ap for s, c in curves.items()}, curves, tuple(gt.keys[i] for i in chosen))
