"""Scores that read as confidence: the map from a model's raw scores to the chance that a detection is a face.

A pyramid model's raw score estimates the IoU of its box with a face (its
score loss is quality focal loss), so even a clear face scores about 0.7.
Platt scaling of the raw score's logit turns it into the share of detections
at that score that find a face (IoU 0.5, as the WIDER protocol counts) on
images the model did not train on. The map is monotone: rankings, and so
every AP, stay as they are. Fitting it is :func:`facegrid.eval.calibration.fit_calibration`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))``, elementwise."""
    with np.errstate(divide="ignore"):  # 0 and 1 map to -inf and inf, and back
        return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))``, elementwise, without overflow or lost digits at either end."""
    small = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


@dataclass(frozen=True)
class ScoreCalibration:
    """``confidence = sigmoid(slope * logit(raw) + offset)``; slope 1 and offset 0 leave scores as they are.

    Raises:
        ValueError: ``slope`` is not a positive number, or ``offset`` not a finite one.
    """

    slope: float = 1.0
    offset: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.slope) and self.slope > 0):
            raise ValueError(f"a score calibration's slope must be a positive number, got {self.slope}")
        if not math.isfinite(self.offset):
            raise ValueError(f"a score calibration's offset must be a finite number, got {self.offset}")

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """The confidences of raw scores in [0, 1], float32."""
        raw = np.asarray(raw, dtype=np.float64)
        return sigmoid(self.slope * logit(raw) + self.offset).astype(np.float32)

    def confidence(self, raw: float) -> float:
        """The confidence of one raw score, in float64 (so that :meth:`raw` gives the score back)."""
        return float(sigmoid(self.slope * logit(np.float64(raw)) + self.offset))

    def raw(self, confidence: float) -> float:
        """The raw score whose confidence is ``confidence`` (in [0, 1]): a threshold in the model's own terms."""
        return float(sigmoid((logit(np.float64(confidence)) - self.offset) / self.slope))


#: The calibration that reports the network's raw scores as they are.
RAW_SCORES = ScoreCalibration()
