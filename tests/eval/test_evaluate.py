"""The official WIDER FACE protocol, the plain AP, their plots and validation (``facegrid.eval``), and the ground truth.

Modules: ``facegrid.eval.protocol``, ``facegrid.eval.ap``, ``facegrid.eval.plots``, ``facegrid.eval.validate``,
``facegrid.wider.ground_truth``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facegrid.core.errors import FileLineError, ImageError, PathError
from facegrid.eval.ap import PRCurve, average_precision, voc_ap
from facegrid.eval.plots import plot_pr
from facegrid.eval.protocol import (
    NUM_THRESHOLDS,
    evaluate_wider,
    normalize_scores,
    wider_protocol,
)
from facegrid.eval.validate import detect_at_floor, validate, wider_scores
from facegrid.infer.detector import Detections
from facegrid.wider.annotations import read_annotations
from facegrid.wider.ground_truth import (
    SETTINGS,
    WiderGroundTruth,
    load_wider_ground_truth,
    refuse_unlisted,
)
from facegrid.wider.index import ATTRIBUTES, FaceFilter, Index
from facegrid.wider.results import (
    SCORE_FLOOR,
    image_key,
    read_submission,
    write_image_result,
)


def box(x, y, w=10, h=10) -> list[float]:
    """A WIDER ``x y w h`` box as xyxy."""
    return [x, y, x + w, y + h]


def boxes(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def dets(*pairs) -> tuple[np.ndarray, np.ndarray]:
    """Detections from ``(xyxy, score)`` pairs."""
    return boxes(*[b for b, _ in pairs]), np.array([s for _, s in pairs], dtype=np.float64)


def at(curve: PRCurve, threshold: float) -> tuple[float, float]:
    """(recall, precision) of a WIDER curve at one official threshold."""
    t = int(round((1 - threshold) * NUM_THRESHOLDS)) - 1
    assert math.isclose(curve.thresholds[t], threshold)
    return curve.recall[t], curve.precision[t]


A, B, C = box(0, 0), box(100, 0), box(300, 0)  # far apart: IoU 0 with one another


# ---------------------------------------------------------------- voc_ap


def test_voc_ap_envelope():
    # precision 1 up to recall 0.5, then the envelope is 2/3 up to recall 1
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)
    # NaN precision (no detection yet) is skipped like MATLAB's max skips it
    assert voc_ap(np.array([0.0, 0.0, 0.5]), np.array([np.nan, np.nan, 1.0])) == pytest.approx(0.5)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------- normalize_scores


def test_normalize_scores_min_max_over_whole_submission():
    out = normalize_scores([dets((A, 0.2), (B, 0.6)), None, dets((A, 1.0)), (np.zeros((0, 4)), np.zeros(0))])
    assert out[1] is None
    assert out[0][1].dtype == np.float32
    np.testing.assert_allclose(out[0][1], [0.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out[2][1], [1.0])
    assert out[3][1].shape == (0,)
    np.testing.assert_array_equal(out[0][0], boxes(A, B))  # boxes untouched


def test_normalize_scores_single_precision_like_matlab():
    # MATLAB rescales in single: 0.997 becomes 0.99699998, just under the 0.997 threshold.
    normalized = normalize_scores([dets((A, 0.997), (B, 0.0)), dets((C, 1.0))])
    assert normalized[0][1][0] == np.float32(0.997)
    curve = wider_protocol([boxes(A, B), boxes(C)], [[0, 1], [0]], normalized)
    assert at(curve, 0.997)[0] == pytest.approx(1 / 3)  # only C (score 1) is counted there
    assert at(curve, 0.996)[0] == pytest.approx(2 / 3)


def test_normalize_scores_negative_scores_use_realmin_as_maximum():
    # norm_score.m starts the maximum at realmin('single'): with scores -4 and -2,
    # the maximum used is ~1e-38, so -2 maps to 2/4 = 0.5, not 1
    ((_, scores),) = normalize_scores([dets((A, -4.0), (B, -2.0))])
    np.testing.assert_allclose(scores, [0.0, 0.5])


def test_normalize_scores_all_equal(caplog):
    with caplog.at_level(logging.WARNING, logger="facegrid.eval.protocol"):
        ((_, scores),) = normalize_scores([dets((A, 0.7), (B, 0.7))])
    np.testing.assert_array_equal(scores, [1.0, 1.0])
    assert "all detection scores equal" in caplog.text


def test_normalize_scores_without_scores():
    assert normalize_scores([None, None]) == [None, None]


# ---------------------------------------------------------------- wider_protocol, by hand


def test_tp_fp_tp():
    # 2 faces that count; detections: TP 0.9, FP 0.8, TP 0.7.
    #   thresholds in (0.8, 0.9]: 1 detection, 1 found -> R 1/2, P 1
    #   thresholds in (0.7, 0.8]: 2 detections, 1 found -> R 1/2, P 1/2
    #   thresholds <= 0.7:        3 detections, 2 found -> R 1,   P 2/3
    # envelope: P 1 up to R 1/2, then 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    curve = wider_protocol([boxes(A, B)], [[0, 1]], [dets((A, 0.9), (C, 0.8), (B, 0.7))])
    assert curve.ap == pytest.approx(5 / 6)
    assert curve.num_faces == 2
    assert len(curve.recall) == len(curve.precision) == len(curve.thresholds) == NUM_THRESHOLDS
    recall, precision = at(curve, 0.999)
    assert recall == 0 and np.isnan(precision)  # nothing scores that high: 0/0
    assert at(curve, 0.9) == (0.5, 1.0)
    assert at(curve, 0.75) == (0.5, 0.5)
    assert at(curve, 0.0) == pytest.approx((1.0, 2 / 3))


def test_false_positive_first():
    # 1 face; FP 0.9 then TP 0.8: (R 0, P 0), then (R 1, P 1/2) -> AP = 1 * 1/2
    curve = wider_protocol([boxes(A)], [[0]], [dets((C, 0.9), (A, 0.8))])
    assert curve.ap == pytest.approx(0.5)


def test_face_found_once():
    # 1 face, two detections of it: the second is a false positive, but after
    # recall 1, so the envelope keeps P 1 -> AP 1; the curve ends at P 1/2
    curve = wider_protocol([boxes(A)], [[0]], [dets((A, 0.9), (A, 0.8))])
    assert curve.ap == pytest.approx(1.0)
    assert at(curve, 0.0) == (1.0, 0.5)


def test_detection_of_ignored_face_is_neither_tp_nor_fp():
    # A counts, B is ignored. The 0.9 detection on B is not counted: AP 1, one face.
    curve = wider_protocol([boxes(A, B)], [[0]], [dets((B, 0.9), (A, 0.8))])
    assert curve.ap == pytest.approx(1.0)
    assert curve.num_faces == 1
    recall, precision = at(curve, 0.85)
    assert recall == 0 and np.isnan(precision)  # only the ignored detection so far
    # Without face B in the ground truth the same detection is a false positive: AP 1/2.
    assert wider_protocol([boxes(A)], [[0]], [dets((B, 0.9), (A, 0.8))]).ap == pytest.approx(0.5)
    # Near B but below IoU 0.5 it is a false positive too.
    assert wider_protocol([boxes(A, B)], [[0]], [dets((box(106, 0), 0.9), (A, 0.8))]).ap == pytest.approx(0.5)


def test_detection_goes_to_its_best_face_even_if_ignored():
    # Face A counts, face B (shifted 2 px) is ignored. A detection exactly on B
    # overlaps A with IoU 99/143 = 0.69 too, but goes to B (its best face) and
    # is ignored, so A is never found.
    curve = wider_protocol([boxes(A, box(2, 0))], [[0]], [dets((box(2, 0), 0.9))])
    assert curve.ap == 0.0
    assert at(curve, 0.0) == (0.0, pytest.approx(np.nan, nan_ok=True))


def test_iou_uses_plus_one_pixel_convention():
    # Face x y w h = 0 0 9 9 covers 10 x 10 pixels; a 0 0 19 9 detection covers
    # 20 x 10 pixels, all of the face's: IoU = 100 / 200 = 0.5, enough (>= 0.5).
    # (Without the +1 convention the IoU would be 81 / 171 = 0.47.)
    curve = wider_protocol([boxes(box(0, 0, 9, 9))], [[0]], [dets((box(0, 0, 19, 9), 0.9))])
    assert curve.ap == pytest.approx(1.0)
    curve = wider_protocol([boxes(box(0, 0, 9, 9))], [[0]], [dets((box(0, 0, 20, 9), 0.9))])
    assert curve.ap == 0.0  # 100 / 210


def test_image_without_detections_counts_its_faces():
    # 2 images of 1 face each; only the first has a detection -> R 1/2 at P 1 -> AP 1/2
    curve = wider_protocol([boxes(A), boxes(B)], [[0], [0]], [dets((A, 0.9)), None])
    assert curve.ap == pytest.approx(0.5)
    assert curve.num_faces == 2


def test_image_without_faces_is_skipped_as_officially():
    # evaluation.m skips images whose ground truth is empty, detections included:
    # the 0.9 false positive on the face-less image does not count.
    curve = wider_protocol([boxes(A), boxes()], [[0], []], [dets((A, 0.5)), dets((B, 0.9))])
    assert curve.ap == pytest.approx(1.0)


def test_unsorted_detections_score_as_sorted():
    # Two detections of face A, listed low score first. Taken in file order the
    # 0.2 one would find A and the 0.9 one would be a duplicate (AP 1/2);
    # read_pred.m sorts first, so the 0.9 one finds A and the AP is 1.
    near_a = box(1, 1)
    unsorted = wider_protocol([boxes(A)], [[0]], [dets((near_a, 0.2), (A, 0.9), (C, 0.5))])
    ordered = wider_protocol([boxes(A)], [[0]], [dets((A, 0.9), (C, 0.5), (near_a, 0.2))])
    assert unsorted.ap == pytest.approx(1.0)
    np.testing.assert_array_equal(unsorted.recall, ordered.recall)
    np.testing.assert_array_equal(unsorted.precision, ordered.precision)


def test_no_face_counts(caplog):
    with caplog.at_level(logging.WARNING, logger="facegrid.eval.ap"):
        curve = wider_protocol([boxes(A)], [[]], [dets((A, 0.9))])
    assert math.isnan(curve.ap) and curve.num_faces == 0
    assert "AP is undefined" in caplog.text


def test_wider_protocol_rejects_bad_input():
    with pytest.raises(ValueError, match="one entry per image"):
        wider_protocol([boxes(A)], [[0], [0]], [None])
    with pytest.raises(ValueError, match="out of range"):
        wider_protocol([boxes(A)], [[1]], [None])
    with pytest.raises(ValueError, match="shape"):
        wider_protocol([boxes(A)], [[0]], [(boxes(A), np.array([0.1, 0.2]))])


# ---------------------------------------------------------------- wider_protocol vs a transcription


def reference_protocol(gt_boxes, keep_indices, detections):
    """evaluation.m and image_evaluation.m transcribed statement by statement (slow)."""

    def boxoverlap(g, p):
        w = min(g[2], p[2]) - max(g[0], p[0]) + 1
        h = min(g[3], p[3]) - max(g[1], p[1]) + 1
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / ((g[2] - g[0] + 1) * (g[3] - g[1] + 1) + (p[2] - p[0] + 1) * (p[3] - p[1] + 1) - inter)

    curve = np.zeros((NUM_THRESHOLDS, 2))
    count_face = 0
    for faces, keep, det in zip(gt_boxes, keep_indices, detections):
        count_face += len(keep)
        if len(faces) == 0 or det is None or len(det[1]) == 0:
            continue
        order = sorted(range(len(det[1])), key=lambda k: -det[1][k])  # stable, like MATLAB's sort
        pred = [list(det[0][k]) for k in order]
        score = [det[1][k] for k in order]
        ignore = [0] * len(faces)
        for k in keep:
            ignore[k] = 1
        recall_list = [0] * len(faces)
        proposal_list = [1] * len(pred)
        pred_recall = [0] * len(pred)
        for h, p in enumerate(pred):
            overlaps = [boxoverlap(g, p) for g in faces]
            idx = overlaps.index(max(overlaps))
            if overlaps[idx] >= 0.5:
                if ignore[idx] == 0:
                    recall_list[idx] = -1
                    proposal_list[h] = -1
                elif recall_list[idx] == 0:
                    recall_list[idx] = 1
            pred_recall[h] = recall_list.count(1)
        for t in range(1, NUM_THRESHOLDS + 1):
            thresh = 1 - t / NUM_THRESHOLDS
            above = [k for k, s in enumerate(score) if s >= thresh]
            if above:
                r_index = above[-1]
                curve[t - 1, 0] += proposal_list[: r_index + 1].count(1)
                curve[t - 1, 1] += pred_recall[r_index]
    with np.errstate(invalid="ignore", divide="ignore"):
        return curve[:, 1] / curve[:, 0], curve[:, 1] / count_face


coordinate = st.integers(0, 30)
size = st.integers(0, 12)
wider_box = st.tuples(coordinate, coordinate, size, size).map(lambda b: box(*b))


@st.composite
def protocol_images(draw):
    images = []
    for _ in range(draw(st.integers(1, 3))):
        faces = draw(st.lists(wider_box, max_size=4))
        keep = draw(st.lists(st.sampled_from(range(len(faces))), unique=True) if faces else st.just([]))
        pairs = draw(st.lists(st.tuples(wider_box, st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0])), max_size=5))
        images.append((boxes(*faces), keep, dets(*pairs) if pairs else None))
    return images


@settings(max_examples=60, deadline=None)
@given(protocol_images())
def test_matches_transcription_of_official_code(images):
    faces, keeps, detections = zip(*images)
    curve = wider_protocol(faces, keeps, detections)
    precision, recall = reference_protocol(faces, keeps, detections)
    np.testing.assert_allclose(curve.precision, precision, equal_nan=True)
    np.testing.assert_allclose(curve.recall, recall, equal_nan=True)


# ---------------------------------------------------------------- evaluate_wider, in memory


@pytest.fixture
def tiny_gt() -> WiderGroundTruth:
    # e/a: face A counts everywhere, face T (tiny) only in hard; e/b and e/c: one face each
    keep_all = (np.array([0]), np.array([0]), np.array([0]))
    return WiderGroundTruth(
        source="",
        keys=("e/a", "e/b", "e/c"),
        boxes=(boxes(A, box(50, 50, 3, 3)), boxes(B), boxes(C)),
        keep={"easy": keep_all, "medium": keep_all, "hard": (np.array([0, 1]), np.array([0]), np.array([0]))},
    )


def test_subset_restricts_ground_truth(tiny_gt):
    result = evaluate_wider({"e/a.jpg": dets((A, 0.9), (box(50, 50, 3, 3), 0.4))}, tiny_gt)
    assert result.images == ("e/a",)
    assert result.ap == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0})
    assert {s: c.num_faces for s, c in result.curves.items()} == {"easy": 1, "medium": 1, "hard": 2}
    # The tiny face's detection is ignored in easy: its faces that count are all found at P 1.
    assert at(result.curves["easy"], 0.0) == (1.0, 1.0)


def test_listed_images_without_predictions_are_misses(tiny_gt):
    result = evaluate_wider({"e/a": dets((A, 0.9))}, tiny_gt, images=["e/a", "e/b.jpg"])
    assert result.images == ("e/a", "e/b")
    assert result.ap["easy"] == pytest.approx(0.5)  # 1 of 2 faces, at precision 1
    assert result.curves["hard"].num_faces == 3


def test_predictions_outside_listed_images_are_not_evaluated(tiny_gt):
    predictions = {"e/a": dets((A, 0.9)), "e/b": dets((C, 0.95))}  # e/b's detection is a false positive
    assert evaluate_wider(predictions, tiny_gt).ap["easy"] == pytest.approx(0.25)
    result = evaluate_wider(predictions, tiny_gt, images=["e/a"])
    assert result.images == ("e/a",) and result.ap["easy"] == pytest.approx(1.0)


def test_evaluate_wider_rejects(tiny_gt):
    with pytest.raises(PathError, match="does not list 1 of the 1 predicted image.*'e/zzz'"):
        evaluate_wider({"e/zzz": dets((A, 1.0))}, tiny_gt)
    with pytest.raises(PathError, match="does not list 1 image.* asked for: 'e/zzz'"):
        evaluate_wider({}, tiny_gt, images=["e/zzz"])
    with pytest.raises(ValueError, match="no images to evaluate"):
        evaluate_wider({}, tiny_gt)
    with pytest.raises(ValueError, match="name the same image"):
        evaluate_wider({"e/a": dets((A, 1.0)), "e/a.jpg": dets((A, 1.0))}, tiny_gt)
    with pytest.raises(ValueError, match="e/a: box 0 has x2 < x1"):
        evaluate_wider({"e/a": dets(([5, 0, 4, 9], 1.0))}, tiny_gt)


def test_images_the_ground_truth_does_not_list_are_refused_naming_the_first(tiny_gt):
    refuse_unlisted(tiny_gt, ["e/a.jpg", "e/c"], "images")  # listed; e/b, not asked for, is no concern
    with pytest.raises(PathError) as info:
        refuse_unlisted(tiny_gt, ["e/a", "x/y.jpg", "x/z.jpg"], "images in val")
    assert str(info.value) == (
        "the ground truth: does not list 2 of the 3 images in val, such as x/y.jpg: "
        "are they WIDER FACE validation images?"
    )


def test_ground_truth_files_that_are_not_matlab_files_name_the_file(tmp_path):
    (tmp_path / "wider_face_val.mat").write_bytes(b"MATLAB 5.0 MAT-file, but then nothing")
    with pytest.raises(PathError, match="wider_face_val.mat: not a readable MATLAB file"):
        load_wider_ground_truth(tmp_path)
    with pytest.raises(FileNotFoundError, match="ground truth file not found"):
        load_wider_ground_truth(tmp_path / "absent")


# ---------------------------------------------------------------- evaluate_wider, official ground truth


@pytest.fixture(scope="module")
def official(wider):
    gt_dir = wider / "eval_tools" / "ground_truth"
    if not gt_dir.is_dir():
        pytest.skip(f"official ground truth not found at {gt_dir}")
    return load_wider_ground_truth(gt_dir)


@pytest.fixture(scope="module")
def shared_val_keys(wider, official) -> list[str]:
    """Keys of the validation images present in the shared data (394)."""
    folder = wider / "WIDER_val" / "images"
    keys = sorted(image_key(p.relative_to(folder).as_posix()) for p in folder.glob("*/*.jpg"))
    if not keys:
        pytest.skip(f"no validation images in {folder}")
    return keys


def gt_as_predictions(official, keys, scores="distinct"):
    position = {key: i for i, key in enumerate(official.keys)}
    rng = np.random.default_rng(0)
    out = {}
    for key in keys:
        faces = official.boxes[position[key]]
        out[key] = (faces, rng.random(len(faces)) if scores == "distinct" else np.ones(len(faces)))
    return out


def test_official_ground_truth_loads(official):
    assert len(official.keys) == 3226
    assert official.keys[0] == "0--Parade/0_Parade_marchingband_1_465"
    assert sum(len(b) for b in official.boxes) == 39708
    np.testing.assert_array_equal(official.boxes[0][0], [345, 211, 349, 215])  # 345 211 4 4
    counts = {s: sum(len(k) for k in official.keep[s]) for s in SETTINGS}
    assert counts == {"easy": 7211, "medium": 13319, "hard": 31958}
    assert all(k.min(initial=0) >= 0 for s in SETTINGS for k in official.keep[s])  # 0-based now


def test_official_ground_truth_matches_annotation_file(official, split_file, wider):
    sample = wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    index = read_annotations(sample if sample.is_file() else split_file("val"))
    position = {key: i for i, key in enumerate(official.keys)}
    for i, path in enumerate(index.paths.tolist()):
        np.testing.assert_array_equal(index.image_boxes(i), official.boxes[position[image_key(path)]])


@pytest.mark.parametrize("scores", ["distinct", "constant"])
def test_ground_truth_as_predictions_scores_one(official, shared_val_keys, scores):
    result = evaluate_wider(gt_as_predictions(official, shared_val_keys, scores), official)
    assert result.ap == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0}, abs=1e-12)
    assert len(result.images) == len(shared_val_keys)
    # only the faces of the images evaluated count
    position = {key: i for i, key in enumerate(official.keys)}
    for s in SETTINGS:
        expected = sum(len(official.keep[s][position[k]]) for k in shared_val_keys)
        assert result.curves[s].num_faces == expected


def test_absent_images_would_be_misses_if_listed(official, shared_val_keys):
    predictions = gt_as_predictions(official, shared_val_keys)
    everything = evaluate_wider(predictions, official, images=official.keys)
    assert len(everything.images) == 3226
    assert everything.curves["easy"].num_faces == 7211
    for s in SETTINGS:  # the recall reached is the subset's share of the faces
        share = evaluate_wider(predictions, official).curves[s].num_faces / everything.curves[s].num_faces
        assert everything.ap[s] == pytest.approx(share)


def test_submission_folder_round_trip(official, shared_val_keys, tmp_path):
    for key, (faces, scores) in gt_as_predictions(official, shared_val_keys).items():
        write_image_result(tmp_path, f"{key}.jpg", faces, scores)
    result = evaluate_wider(read_submission(tmp_path), official)
    assert result.ap == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0}, abs=1e-12)


def realistic_predictions(official, keys, seed=1):
    """Jittered faces, duplicates and false positives with overlapping score ranges."""
    rng = np.random.default_rng(seed)
    position = {key: i for i, key in enumerate(official.keys)}
    out = {}
    for key in keys:
        faces = official.boxes[position[key]]
        side = np.maximum(faces[:, 2:] - faces[:, :2], 1)
        shift = rng.normal(0, 0.15, faces.shape) * np.tile(side, 2)
        found = faces + shift.astype(np.float32)
        found[:, 2:] = np.maximum(found[:, 2:], found[:, :2])
        xy = rng.uniform(0, 900, (20, 2))
        false = np.concatenate([xy, xy + rng.uniform(5, 80, (20, 2))], axis=1).astype(np.float32)
        all_boxes = np.concatenate([found, found[: len(found) // 3], false])
        scores = np.concatenate([rng.uniform(0.3, 1, len(found)), rng.uniform(0, 0.6, len(found) // 3 + 20)])
        out[key] = (all_boxes, scores)
    return out


def test_unsorted_submission_scores_as_sorted(official, shared_val_keys, tmp_path):
    predictions = realistic_predictions(official, shared_val_keys)
    rng = np.random.default_rng(2)
    for key, (pred_boxes, scores) in predictions.items():
        write_image_result(tmp_path / "sorted", f"{key}.jpg", pred_boxes, scores)
        # the same rows, shuffled, written by hand
        order = rng.permutation(len(scores))
        rows = [f"{b[0]} {b[1]} {b[2] - b[0]} {b[3] - b[1]} {s}" for b, s in zip(pred_boxes[order], scores[order])]
        path = tmp_path / "shuffled" / f"{key}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([path.stem, str(len(rows)), *rows]) + "\n")
    ordered = evaluate_wider(read_submission(tmp_path / "sorted"), official)
    shuffled = evaluate_wider(read_submission(tmp_path / "shuffled"), official)
    assert all(0.2 < ap < 0.95 for ap in ordered.ap.values())
    assert shuffled.ap == pytest.approx(ordered.ap, abs=1e-6)


# ---------------------------------------------------------------- validate


class TableDetector:
    """Stands in for a Detector: each image's detections from a table (a missing one is unreadable), every call kept."""

    def __init__(self, table):
        self.table, self.calls, self.score_threshold = table, [], 0.5

    def floored(self, raw_floor):  # its scores are raw ones
        floored = copy.copy(self)
        floored.score_threshold = raw_floor
        return floored

    def detect(self, paths, batch_size=8, on_unreadable=None):
        self.calls.append((len(paths), batch_size, self.score_threshold))
        results = []
        for path in map(Path, paths):
            key = f"{path.parent.name}/{path.stem}"
            if key in self.table:
                results.append(Detections(str(path), (1024, 768), *self.table[key]))
            else:
                on_unreadable(ImageError(path, "not an image"))
                results.append(None)
        return results


def empty_images(root, keys):
    """A folder of empty files at ``<event>/<name>.jpg`` for ``keys``: the table detector never reads them."""
    for key in keys:
        (root / f"{key}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{key}.jpg").touch()
    return root


def test_validate_scores_what_evaluate_scores_on_the_result_files(official, tmp_path):
    keys = list(official.keys[:7])
    table = {
        key: (found.astype(np.float32), scores.astype(np.float32))
        for key, (found, scores) in realistic_predictions(official, keys).items()
    }
    for key, (found, scores) in table.items():
        write_image_result(tmp_path / "pred", f"{key}.jpg", found, scores)
    detector, seen = TableDetector(table), []
    images = empty_images(tmp_path / "images", keys)
    result = validate(detector, images, official.source, batch_size=3, progress=seen.append)
    assert result.ap == evaluate_wider(read_submission(tmp_path / "pred"), official).ap  # to the last bit
    assert result.images == tuple(keys)
    assert detector.calls == [(3, 3, SCORE_FLOOR), (3, 3, SCORE_FLOOR), (1, 3, SCORE_FLOOR)]  # batches, at the floor
    assert detector.score_threshold == 0.5  # the detector given is left as it was
    assert [found.path for found in seen] == [str(path) for path in sorted(images.rglob("*.jpg"))]


def test_validate_refuses_images_the_ground_truth_does_not_list_before_detecting(official, tmp_path):
    images = empty_images(tmp_path / "images", [official.keys[0], "0--Parade/not_wider"])
    detector = TableDetector({})
    with pytest.raises(PathError) as info:
        validate(detector, images, official.source)
    assert str(info.value) == (
        f"{official.source}: does not list 1 of the 2 images in {images}, such as "
        "0--Parade/not_wider: are they WIDER FACE validation images?"
    )
    assert detector.calls == []
    with pytest.raises(PathError, match="absent: no such folder"):
        validate(detector, tmp_path / "absent", official.source)


def test_an_unreadable_image_is_left_out_of_the_wider_scores_faces_and_all(official, tmp_path):
    keys = list(official.keys[:4])
    table = {
        key: (official.boxes[i], np.linspace(0.9, 0.5, len(official.boxes[i]), dtype=np.float32))
        for i, key in enumerate(keys)
        if i != 1
    }
    unreadable = []
    found = detect_at_floor(
        TableDetector(table), [tmp_path / f"{key}.jpg" for key in keys], 2, on_unreadable=unreadable.append
    )
    assert found[1] is None and [error.path for error in unreadable] == [str(tmp_path / f"{keys[1]}.jpg")]
    result = wider_scores(keys, found, official)
    assert result.images == (keys[0], keys[2], keys[3]) and result.ap["easy"] == pytest.approx(1.0)


# ---------------------------------------------------------------- average_precision


def make_index(faces_per_image, rows, invalid=None) -> Index:
    """An index of images ``img0.jpg, img1.jpg, ...`` with WIDER ``x y w h`` rows."""
    rows = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
    attributes = np.zeros((len(rows), len(ATTRIBUTES)), dtype=np.uint8)
    if invalid is not None:
        attributes[:, ATTRIBUTES.index("invalid")] = invalid
    counts = np.asarray(faces_per_image, dtype=np.int64)
    return Index(
        source="mem.txt",
        paths=np.array([f"ev/img{i}.jpg" for i in range(len(counts))]),
        name_lines=np.arange(len(counts), dtype=np.int32) + 1,
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        boxes=rows,
        attributes=attributes,
        face_lines=np.arange(len(rows), dtype=np.int32) + 1,
    )


XA, XB, XC = [0, 0, 10, 10], [100, 0, 10, 10], [300, 0, 10, 10]  # WIDER x y w h rows


def test_plain_ap_perfect_and_extra_low_false_positive():
    index = make_index([2, 1], [XA, XB, XC])
    perfect = {"ev/img0.jpg": dets((A, 0.9), (B, 0.8)), "ev/img1": dets((C, 0.7))}
    assert average_precision(perfect, index).ap == pytest.approx(1.0)
    # a false positive scoring below every true positive comes after recall 1: AP stays 1
    extra = dict(perfect, **{"ev/img1": dets((C, 0.7), (box(500, 500), 0.01))})
    curve = average_precision(extra, index)
    assert curve.ap == pytest.approx(1.0)
    assert curve.precision[-1] == pytest.approx(3 / 4)


def test_plain_ap_hand_computed_across_images():
    # img0 has face A, img1 face B. Ranked over the set:
    #   0.95 FP (img1)        -> R 0,   P 0
    #   0.90 TP (img0, A)     -> R 1/2, P 1/2
    #   0.60 TP (img1, B)     -> R 1,   P 2/3
    # envelope: 2/3 from R 0 to 1 -> AP = 2/3
    index = make_index([1, 1], [XA, XB])
    curve = average_precision({"ev/img0": dets((A, 0.9)), "ev/img1": dets((C, 0.95), (B, 0.6))}, index)
    assert curve.ap == pytest.approx(2 / 3)
    np.testing.assert_allclose(curve.recall, [0, 0.5, 1])
    np.testing.assert_allclose(curve.precision, [0, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.thresholds, [0.95, 0.9, 0.6])
    assert curve.num_faces == 2


def test_plain_ap_tp_fp_tp_within_image():
    # as test_tp_fp_tp: AP = 1/2 * 1 + 1/2 * 2/3
    index = make_index([2], [XA, XB])
    assert average_precision({"ev/img0": dets((A, 0.9), (C, 0.8), (B, 0.7))}, index).ap == pytest.approx(5 / 6)


def test_plain_ap_ties_enter_together():
    # A TP and a FP with the same score form one point (R 1/2, P 1/2): AP 1/4 in either order.
    index = make_index([2], [XA, XB])
    first = average_precision({"ev/img0": dets((A, 0.5), (C, 0.5))}, index)
    second = average_precision({"ev/img0": dets((C, 0.5), (A, 0.5))}, index)
    assert first.ap == second.ap == pytest.approx(0.25)
    assert len(first.recall) == 1


def test_plain_ap_filtered_faces_are_ignored():
    # A is valid, B is flagged invalid: the default filter drops B, so the 0.9
    # detection on B is neither TP nor FP, and A alone counts.
    index = make_index([2], [XA, XB], invalid=[0, 1])
    predictions = {"ev/img0": dets((B, 0.9), (A, 0.8))}
    curve = average_precision(predictions, index)
    assert curve.ap == pytest.approx(1.0) and curve.num_faces == 1
    np.testing.assert_allclose(curve.thresholds, [0.8])  # the ignored detection is not on the curve
    # keeping invalid faces, B counts: a detection of A alone finds half the faces
    keep_invalid = FaceFilter(drop_invalid=False)
    assert average_precision({"ev/img0": dets((A, 0.8))}, index, face_filter=keep_invalid).ap == pytest.approx(0.5)
    # a size filter ignores small faces the same way
    small = make_index([2], [XA, [100, 0, 4, 4]])
    predictions = {"ev/img0": dets((box(100, 0, 4, 4), 0.9), (A, 0.8))}
    curve = average_precision(predictions, small, face_filter=FaceFilter(min_size=8))
    assert curve.ap == pytest.approx(1.0) and curve.num_faces == 1


def test_plain_ap_iou_threshold():
    # the detection covers A shifted 2 px right: IoU = 80 / 120 = 2/3
    index = make_index([1], [XA])
    predictions = {"ev/img0": dets((box(2, 0), 0.9))}
    assert average_precision(predictions, index, iou=0.5).ap == pytest.approx(1.0)
    assert average_precision(predictions, index, iou=0.7).ap == 0.0
    with pytest.raises(ValueError, match="iou must be in"):
        average_precision(predictions, index, iou=0)


def test_plain_ap_rejects():
    index = make_index([1], [XA])
    with pytest.raises(PathError, match="mem.txt: does not list 1 of the 1 predicted image.*: 'ev/zzz.jpg'"):
        average_precision({"ev/zzz.jpg": dets((A, 1.0))}, index)
    twice = make_index([1, 1], [XA, XA])
    twice = dataclasses.replace(twice, paths=np.array(["ev/img0.jpg", "ev/img0.png"]))
    with pytest.raises(FileLineError, match="mem.txt:2: image 'ev/img0.png' is listed twice"):
        average_precision({}, twice)


def test_plain_ap_without_faces(caplog):
    index = make_index([1], [[0, 0, 0, 0]])  # the val files' zero-size dummy face
    with caplog.at_level(logging.WARNING, logger="facegrid.eval.ap"):
        curve = average_precision({"ev/img0": dets((A, 0.9))}, index)
    assert math.isnan(curve.ap) and curve.num_faces == 0


def test_plain_ap_on_shared_val(wider):
    path = wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    index = read_annotations(path)
    kept = FaceFilter().mask(index)
    rng = np.random.default_rng(0)
    predictions = {}
    for i, image in enumerate(index.paths.tolist()):
        faces = index.image_boxes(i)
        # every face with area (valid or flagged invalid) detected, at random scores
        real = (faces[:, 2:] > faces[:, :2]).all(axis=1)
        predictions[image] = (faces[real], rng.random(int(real.sum())))
    curve = average_precision(predictions, index)
    assert curve.num_faces == int(kept.sum())
    assert curve.ap == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- plot_pr


def test_plot_pr_writes_png(tmp_path):
    wider_curve = wider_protocol([boxes(A, B)], [[0, 1]], [dets((A, 0.9), (C, 0.8), (B, 0.7))])
    out = tmp_path / "pr.png"
    plot_pr({"hard": wider_curve, "plain": (np.array([0.5, 1.0]), np.array([1.0, 0.5]))}, out, "val")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
