"""Fitting a score calibration: labels as the WIDER protocol counts detections, the fit, the reliability table."""

from __future__ import annotations

import numpy as np
import pytest

from facegrid.core.scores import ScoreCalibration
from facegrid.eval.calibration import fit_calibration, labelled_scores, reliability
from facegrid.infer.detector import Detections
from facegrid.wider.index import ATTRIBUTES, Index


def _index(rows: list[list[int]], invalid: list[int]) -> Index:
    """One image, ``img0.jpg``, with WIDER ``x y w h`` rows."""
    attributes = np.zeros((len(rows), len(ATTRIBUTES)), np.uint8)
    attributes[:, ATTRIBUTES.index("invalid")] = invalid
    return Index(
        source="holdout.txt",
        paths=np.array(["img0.jpg"]),
        name_lines=np.array([1], np.int32),
        offsets=np.array([0, len(rows)], np.int64),
        boxes=np.array(rows, np.int32),
        attributes=attributes,
        face_lines=np.arange(len(rows), dtype=np.int32) + 3,
    )


def test_detections_are_labelled_as_the_protocol_counts_them():
    index = _index([[0, 0, 10, 10], [100, 0, 10, 10]], invalid=[0, 1])  # the second face is flagged invalid
    boxes = np.array(
        [
            [0, 0, 10, 10],  # a duplicate on the face, scored lower: not found
            [100, 0, 110, 10],  # on the invalid face: left out
            [1, 0, 11, 10],  # finds the face (IoU 0.82), the best score first
            [300, 0, 310, 10],  # on nothing
        ],
        np.float32,
    )
    scores = np.array([0.4, 0.9, 0.7, 0.2], np.float32)
    got_scores, found = labelled_scores([Detections("img0.jpg", (400, 100), boxes, scores)], index)
    np.testing.assert_allclose(got_scores, [0.7, 0.4, 0.2])  # best first, the ignored one gone
    assert found.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="1 detection result"):
        labelled_scores([Detections("img0.jpg", (400, 100), boxes, scores)], index.take(np.array([0, 0])))


def test_the_fit_recovers_the_calibration_that_drew_the_labels():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 0.99, 40_000)
    truth = ScoreCalibration(3.0, 1.5)
    found = rng.uniform(size=scores.size) < truth(scores)
    fitted = fit_calibration(scores, found)
    assert fitted.slope == pytest.approx(3.0, abs=0.1) and fitted.offset == pytest.approx(1.5, abs=0.1)
    rows = reliability(scores, found, fitted, (0.0, 0.2, 0.5, 1.0))
    assert [row.count for row in rows] == [int((scores < 0.2).sum()), int(((scores >= 0.2) & (scores < 0.5)).sum()),
                                           int((scores >= 0.5).sum())]  # fmt: skip
    for row in rows:  # a fitted calibration reads as the share found
        assert row.confidence == pytest.approx(row.found, abs=0.02)
    with pytest.raises(ValueError, match="needs detections that find faces and ones that do not; 3 of 3"):
        fit_calibration(np.array([0.2, 0.5, 0.9]), np.ones(3, bool))
