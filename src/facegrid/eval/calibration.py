"""Fitting a model's score calibration on held-out images, and the table that shows how well it reads.

Each detection of a held-out image is labelled as the WIDER protocol counts
it: it finds a face (the first detection, best score first, to overlap a
face by IoU 0.5) or it does not; detections whose best face is flagged
invalid are left out, as the protocol ignores them. A logistic regression of
those labels on the logit of the raw scores gives the
:class:`~facegrid.core.scores.ScoreCalibration` (Platt scaling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from facegrid.core.scores import ScoreCalibration, logit, sigmoid
from facegrid.eval.matching import IOU_THRESHOLD, match
from facegrid.wider.index import Index

#: Raw scores are clipped this far from 0 and 1 before their logit (a score of exactly 0 or 1 has none).
_EDGE = 1e-6


def labelled_scores(detections: Sequence, index: Index) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, found)`` of every counted detection of ``index``'s images.

    Args:
        detections: per image of ``index``, in its order, an object with
            ``boxes`` (xyxy, image pixels) and ``scores``
            (:class:`~facegrid.infer.detector.Detections`), raw scores for fitting.
        index: the held-out images' faces.

    Raises:
        ValueError: the detections are not one per image of ``index``.
    """
    if len(detections) != len(index):
        raise ValueError(f"{len(detections)} detection result(s) for the {len(index)} image(s) of {index.source}")
    valid = index.attribute("invalid") == 0
    scores, found = [], []
    for i, result in enumerate(detections):
        order = np.argsort(-result.scores, kind="stable")
        faces = slice(index.offsets[i], index.offsets[i + 1])
        counted, hit = match(result.boxes[order], index.image_boxes(i), valid[faces], IOU_THRESHOLD, plus_one=False)
        scores.append(result.scores[order][counted])
        found.append(hit[counted])
    return np.concatenate(scores).astype(np.float64), np.concatenate(found)


def fit_calibration(scores: np.ndarray, found: np.ndarray) -> ScoreCalibration:
    """The calibration whose confidence best predicts ``found`` from raw ``scores`` (maximum likelihood).

    Raises:
        ValueError: the detections do not include both faces found and boxes that found none.
    """
    found = np.asarray(found, dtype=bool)
    if found.all() or not found.any():
        raise ValueError(
            f"fitting a score calibration needs detections that find faces and ones that do not; "
            f"{found.sum()} of {found.size} found one"
        )
    x = logit(np.clip(np.asarray(scores, dtype=np.float64), _EDGE, 1 - _EDGE))
    y = found.astype(np.float64)

    def loss_and_gradient(p):
        z = p[0] * x + p[1]
        error = sigmoid(z) - y
        return np.sum(np.logaddexp(0.0, z) - y * z), np.array([error @ x, error.sum()])

    fitted = minimize(loss_and_gradient, np.array([1.0, 0.0]), jac=True, method="BFGS")
    slope, offset = fitted.x
    return ScoreCalibration(float(slope), float(offset))


@dataclass(frozen=True)
class ReliabilityRow:
    """Detections whose raw score lies in ``[low, high)``: how many, their mean confidence, and the share found."""

    low: float
    high: float
    count: int
    confidence: float
    found: float


def reliability(
    scores: np.ndarray, found: np.ndarray, calibration: ScoreCalibration, edges: Sequence[float]
) -> list[ReliabilityRow]:
    """Per bin of raw score between consecutive ``edges``, the mean confidence against the share that found a face.

    A calibration reads as confidence where the two agree. Empty bins are left out.
    """
    scores, found = np.asarray(scores, dtype=np.float64), np.asarray(found, dtype=bool)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (scores >= low) & (scores < high) if high < edges[-1] else (scores >= low) & (scores <= high)
        if inside.any():
            rows.append(
                ReliabilityRow(
                    low,
                    high,
                    int(inside.sum()),
                    float(np.mean(calibration(scores[inside]))),
                    float(np.mean(found[inside])),
                )
            )
    return rows
