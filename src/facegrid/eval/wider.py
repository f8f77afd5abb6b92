"""Detection quality: the official WIDER FACE protocol, and a plain AP for any annotation file.

:func:`evaluate_wider` re-implements the official WIDER FACE validation
protocol (the MATLAB ``eval_tools``: ``read_pred.m``, ``norm_score.m``,
``evaluation.m``, ``boxoverlap.m``, ``VOCap.m``) on the official ground truth
``.mat`` files, and reports AP in the easy, medium and hard settings. Step by
step, as the official tool does it:

1. Each image's detections are sorted by score, highest first (``read_pred.m``).
2. The scores of the whole submission are rescaled to ``[0, 1]`` by min-max
   (``norm_score.m``), in single precision as MATLAB computes it there (see
   :func:`normalize_scores`).
3. Each detection, in score order, goes to the face it overlaps most (IoU in
   the +1-pixel convention of ``boxoverlap.m``, with ``x2 = x + w``). At IoU
   ``>= 0.5``: if that face does not count in the setting, the detection is
   ignored, neither true nor false positive; otherwise it finds the face, once.
   Every other detection is a false positive.
4. At each of 1000 score thresholds ``1 - t/1000`` every image contributes its
   detections scoring at least the threshold and the faces they found. Summed
   over the images, precision is found faces over detections not ignored, and
   recall is found faces over the faces that count in the setting.
5. AP is the area under the precision envelope (``VOCap.m``).

Faces that count: a setting's ``gt_list`` names, per image, the faces that
count in it; every other face of the image is ignored.

Where this differs from the official tool, and why: it evaluates the images
asked for rather than always all 3,226 (see :func:`evaluate_wider`), so that
a part of the validation set can be scored fairly; when every score is the
same it counts every detection rather than dividing by zero (see
:func:`normalize_scores`); and detection boxes arrive as float32, the
library's convention, where MATLAB reads doubles, so an IoU within about
``1e-6`` of 0.5 may fall on the other side.

:func:`average_precision` is a plain AP at an IoU threshold for any
WIDER-format annotation file, with the faces a
:class:`~facegrid.wider.index.FaceFilter` drops as ignored faces in the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from facegrid.core.boxes import checked_detections, from_wider
from facegrid.core.errors import FileLineError, PathError
from facegrid.core.figures import new_figure, save_figure
from facegrid.wider.index import FaceFilter, Index
from facegrid.wider.results import image_key

log = logging.getLogger(__name__)

#: The official settings, in the order the tool reports them.
SETTINGS = ("easy", "medium", "hard")

#: IoU a detection needs with a face to find it (the official ``IoU_thresh``).
IOU_THRESHOLD = 0.5

#: Number of score thresholds of the official curve (``thresh_num``).
NUM_THRESHOLDS = 1000

#: The official ground truth files, in ``eval_tools/ground_truth/``.
GT_FACES_FILE = "wider_face_val.mat"
GT_SETTING_FILE = "wider_{setting}_val.mat"

#: Detections of one image: float32 ``[K, 4]`` xyxy boxes and ``[K]`` scores.
Detections = tuple[np.ndarray, np.ndarray]

# Detections compared with all faces at once, in blocks of this many rows (bounds memory).
_BLOCK = 1024


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


@dataclass(frozen=True, eq=False)
class WiderGroundTruth:
    """The official WIDER FACE validation ground truth, as loaded from its ``.mat`` files.

    Attributes:
        source: the folder it was loaded from ("" if built in memory).
        keys: ``"<event>/<name>"`` of every image, in the files' order.
        boxes: per image, float32 ``[G, 4]`` xyxy faces (``x2 = x + w``).
        keep: per setting (:data:`SETTINGS`), per image, int64 0-based indices
            of the faces that count in that setting.
    """

    source: str
    keys: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    keep: dict[str, tuple[np.ndarray, ...]]

    def unlisted(self, images: Iterable[str]) -> list[str]:
        """Those of ``images`` (annotation paths or keys, matched by :func:`image_key`) it cannot score, as given."""
        listed = set(self.keys)
        return [image for image in images if image_key(image) not in listed]


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


def _curve_ap(recall: np.ndarray, precision: np.ndarray, num_faces: int) -> float:
    if num_faces == 0:
        log.warning("no face counts: AP is undefined (NaN)")
        return float("nan")
    return voc_ap(recall, precision)


def _detections(key: object, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 ``[K, 4]`` boxes and float64 ``[K]`` scores."""
    boxes, scores = checked_detections(key, *detections)
    return boxes, scores


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


def _match(
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
        boxes, scores = _detections(f"image {i}", dets)
        order = np.argsort(-scores, kind="stable")
        scores = scores[order]
        counts = np.zeros(len(faces), dtype=bool)
        counts[keep] = True
        counted, found = _match(boxes[order], faces, counts, IOU_THRESHOLD, plus_one=True)
        # Scores are sorted, so the detections at a threshold are a prefix of them.
        upto = np.searchsorted(-scores, -thresholds, side="right")
        counted_total += np.concatenate([[0], np.cumsum(counted)])[upto]
        found_total += np.concatenate([[0], np.cumsum(found)])[upto]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = found_total / counted_total
        recall = found_total / num_faces
    return PRCurve(recall, precision, thresholds, _curve_ap(recall, precision, num_faces), num_faces)


def _mat(path: Path, names: list[str]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"official WIDER FACE ground truth file not found: {path}")
    try:
        data = scipy.io.loadmat(path, variable_names=names)
    except Exception as error:  # scipy's reader meets foreign bytes with any error (IndexError, ValueError, ...)
        raise PathError(path, f"not a readable MATLAB file ({error})") from None
    missing = [name for name in names if name not in data]
    if missing:
        raise PathError(path, f"no variable {', '.join(missing)}; is it an official ground truth file?")
    return data


def _cells(array: np.ndarray) -> list:
    return list(np.asarray(array, dtype=object).ravel())


def _text(cell: np.ndarray) -> str:
    return str(np.asarray(cell).ravel()[0])


def load_wider_ground_truth(gt_dir: str | os.PathLike) -> WiderGroundTruth:
    """Load the official validation ground truth from ``eval_tools/ground_truth/``.

    Faces come from ``wider_face_val.mat`` (``event_list``, ``file_list``,
    ``face_bbx_list``); the faces that count per setting from the ``gt_list``
    of ``wider_easy_val.mat``, ``wider_medium_val.mat`` and
    ``wider_hard_val.mat``. Load once and pass the result to
    :func:`evaluate_wider` to evaluate several submissions.

    Args:
        gt_dir: the folder holding the four ``.mat`` files.

    Returns:
        The ground truth (3,226 images for the official files).

    Raises:
        FileNotFoundError: a ``.mat`` file is missing.
        facegrid.core.errors.PathError: a file is not a MATLAB file, lacks a
            variable, or the files disagree (the message names the file).

    Example:
        >>> gt = load_wider_ground_truth("widerface/eval_tools/ground_truth")  # doctest: +SKIP
        >>> len(gt.keys)  # doctest: +SKIP
        3226
    """
    gt_dir = Path(gt_dir)
    faces = _mat(gt_dir / GT_FACES_FILE, ["event_list", "file_list", "face_bbx_list"])
    keys: list[str] = []
    boxes: list[np.ndarray] = []
    for event, files, event_boxes in zip(
        _cells(faces["event_list"]), _cells(faces["file_list"]), _cells(faces["face_bbx_list"])
    ):
        for name, xywh in zip(_cells(files), _cells(event_boxes)):
            keys.append(f"{_text(event)}/{_text(name)}")
            boxes.append(from_wider(np.asarray(xywh).reshape(-1, 4)))
    keep: dict[str, tuple[np.ndarray, ...]] = {}
    for setting in SETTINGS:
        path = gt_dir / GT_SETTING_FILE.format(setting=setting)
        events = _cells(_mat(path, ["gt_list"])["gt_list"])
        lists = [np.asarray(k, dtype=np.int64).ravel() - 1 for event in events for k in _cells(event)]
        if len(lists) != len(keys):
            raise PathError(path, f"gt_list covers {len(lists)} images but {GT_FACES_FILE} lists {len(keys)}")
        for key, indices, image_boxes in zip(keys, lists, boxes):
            if indices.size and (indices.min() < 0 or indices.max() >= len(image_boxes)):
                raise PathError(path, f"{key}: face numbers {(indices + 1).tolist()} beyond its {len(image_boxes)}")
        keep[setting] = tuple(lists)
    log.info("loaded WIDER FACE ground truth from %s: %d images, %d faces", gt_dir, len(keys), sum(map(len, boxes)))
    return WiderGroundTruth(str(gt_dir), tuple(keys), tuple(boxes), keep)


def _resolve(
    predictions: Mapping[str, Detections], position: Mapping[str, int], source: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Map each prediction key to its image's position; raise for keys of no image."""
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
            resolved[i] = _detections(key, dets)
            key_at[i] = key
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise PathError(source, f"does not list {len(unknown)} of the {len(predictions)} predicted image(s): {shown}")
    return resolved


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
            :func:`load_wider_ground_truth` result.
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
    source = gt.source or "the ground truth"
    resolved = _resolve(predictions, position, source)
    if images is None:
        chosen = sorted(resolved)
    else:
        listed = {key: position.get(image_key(key)) for key in images}
        unknown = [key for key, i in listed.items() if i is None]
        if unknown:
            raise PathError(source, f"does not list {len(unknown)} image(s) asked for: {', '.join(map(repr, unknown[:5]))}")
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
    return PRCurve(recall, precision, scores[last], _curve_ap(recall, precision, num_faces), num_faces)


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
    resolved = _resolve(predictions, position, index.source or "the index")
    counts = face_filter.mask(index)
    kept_scores: list[np.ndarray] = [np.zeros(0)]
    kept_found: list[np.ndarray] = [np.zeros(0, dtype=bool)]
    for i, (boxes, scores) in resolved.items():
        order = np.argsort(-scores, kind="stable")
        image_counts = counts[index.offsets[i] : index.offsets[i + 1]]
        counted, found = _match(boxes[order], index.image_boxes(i), image_counts, iou, plus_one=False)
        kept_scores.append(scores[order][counted])
        kept_found.append(found[counted])
    return _ranked_curve(np.concatenate(kept_scores), np.concatenate(kept_found), int(counts.sum()))


def plot_pr(
    curves: Mapping[str, PRCurve | tuple[np.ndarray, np.ndarray]], out_png: str | os.PathLike, title: str
) -> None:
    """Save precision/recall curves, each labelled with its AP, in the format the suffix of ``out_png`` names.

    Args:
        curves: ``{label: curve}``, each a :class:`PRCurve` or ``(recall, precision)``.
        out_png: the PNG to write.
        title: the figure title.

    Example:
        >>> plot_pr(result.curves, "pr.png", "WIDER FACE val")  # doctest: +SKIP
    """
    fig = new_figure((6.4, 5.2))
    ax = fig.add_subplot()
    for label, curve in curves.items():
        recall, precision = (curve.recall, curve.precision) if isinstance(curve, PRCurve) else curve
        ax.plot(recall, precision, linewidth=2, label=f"{label} (AP {voc_ap(recall, precision):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=120)
