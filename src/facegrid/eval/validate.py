"""A detector scored on WIDER FACE validation images with the official protocol, as a submission would be.

Training's per-epoch WIDER scores and the ``val`` command run the same
steps, so that an epoch's numbers are those ``val`` reports for that epoch's
model:

1. :func:`detect_at_floor`: every image through the detector, keeping every
   box down to the submission floor
   (:data:`~facegrid.wider.results.SCORE_FLOOR`), so that the whole PR curve
   counts;
2. :func:`wider_scores`: each image's boxes as its result file would hold
   them (:func:`~facegrid.wider.results.as_submitted`), scored by
   :func:`~facegrid.eval.protocol.evaluate_wider` on the images detected.

Those scores equal what ``evaluate`` gives on the result files ``detect``
writes for the same images at the same batch size. :func:`validate` does
the whole of ``val``: it finds the images below a folder
(:func:`validation_set`, which refuses images the ground truth does not
list), detects and scores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from facegrid.core.errors import ImageError, PathError
from facegrid.eval.protocol import WiderResult, evaluate_wider
from facegrid.infer.detector import Detections, Detector
from facegrid.infer.inputs import find_images, submission_keys
from facegrid.wider.ground_truth import (
    WiderGroundTruth,
    load_wider_ground_truth,
    refuse_unlisted,
)
from facegrid.wider.results import SCORE_FLOOR, as_submitted


@dataclass(frozen=True, eq=False)
class ValidationSet:
    """The validation images found below a folder, their result keys, and the ground truth that lists them all.

    Attributes:
        images: the image files, sorted by path.
        keys: each image's ``"<event>/<name>"``, in the same order.
        ground_truth: the official ground truth.
    """

    images: tuple[Path, ...]
    keys: tuple[str, ...]
    ground_truth: WiderGroundTruth


def validation_set(images_folder: str | os.PathLike, ground_truth_folder: str | os.PathLike) -> ValidationSet:
    """The images below ``images_folder`` (as ``<event>/<name>``) and the official ground truth, checked together.

    Reads no image and needs no model, so that a wrong folder is refused
    before a model is loaded.

    Raises:
        facegrid.core.errors.PathError: ``images_folder`` is no folder or
            holds no image, an image is not at ``<event>/<name>`` below it,
            the ground truth cannot be used, or it does not list every image.
        FileNotFoundError: a ground truth file is missing.
    """
    if not Path(images_folder).is_dir():
        raise PathError(images_folder, "no such folder")
    found = find_images([images_folder])
    keys = submission_keys(found)
    truth = load_wider_ground_truth(ground_truth_folder)
    refuse_unlisted(truth, keys, f"images in {images_folder}")
    return ValidationSet(tuple(path for path, _ in found), tuple(keys), truth)


def detect_at_floor(
    detector: Detector,
    images: Sequence[str | os.PathLike],
    batch_size: int = 1,
    on_unreadable: Callable[[ImageError], None] | None = None,
    progress: Callable[[Detections | None], None] | None = None,
) -> list[Detections | None]:
    """Detect in every image, keeping every box down to the submission floor whatever ``detector``'s own threshold.

    Args:
        detector: the detector; it is left as it is (a copy of it detects).
        images: the image files.
        batch_size: images run through the model at once (see
            :meth:`~facegrid.infer.detector.Detector.detect`).
        on_unreadable: called with the error of each image that cannot be
            read, whose result is then None; without it, such an image raises.
        progress: called after each batch with each of its images' result, in order.

    Returns:
        Per image, in the order given, its detections or None.

    Raises:
        facegrid.core.errors.ImageError: an image cannot be read (without ``on_unreadable``).
    """
    floored = detector.floored(SCORE_FLOOR)
    found: list[Detections | None] = []
    for start in range(0, len(images), batch_size):
        results = floored.detect(images[start : start + batch_size], batch_size=batch_size, on_unreadable=on_unreadable)
        if progress is not None:
            for result in results:
                progress(result)
        found.extend(results)
    return found


def wider_scores(
    keys: Sequence[str], found: Sequence[Detections | None], ground_truth: str | os.PathLike | WiderGroundTruth
) -> WiderResult:
    """The official protocol's AP and curves for detections, each image's boxes as its result file would hold them.

    Args:
        keys: each image's annotation path or ``"<event>/<name>"``.
        found: each image's detections (:func:`detect_at_floor`), or None
            for an image left out (unreadable): it is not evaluated, faces and all.
        ground_truth: the ``eval_tools/ground_truth`` folder, or its loaded ground truth.

    Raises:
        facegrid.core.errors.PathError: the ground truth does not list an
            image detected, or cannot be used.
        ValueError: ``keys`` and ``found`` differ in length, or no image was detected.
    """
    pairs = zip(keys, found, strict=True)
    submitted = {key: as_submitted(key, dets.boxes, dets.scores) for key, dets in pairs if dets is not None}
    return evaluate_wider(submitted, ground_truth)


def validate(
    detector: Detector,
    images_folder: str | os.PathLike,
    ground_truth_folder: str | os.PathLike,
    batch_size: int = 1,
    progress: Callable[[Detections | None], None] | None = None,
) -> WiderResult:
    """Score ``detector`` on the validation images below ``images_folder`` with the official protocol.

    With ``batch_size`` 1 each image is detected at its own input; a larger
    batch pads its images to the largest one's, as ``detect`` does.

    Args:
        detector: the detector (its own score threshold does not matter).
        images_folder: the images, as ``<event>/<name>`` below it.
        ground_truth_folder: the official ``eval_tools/ground_truth`` folder.
        batch_size: images run through the model at once.
        progress: called with each image's detections as they come.

    Returns:
        AP and curve per setting, and the images evaluated.

    Raises:
        facegrid.core.errors.PathError: see :func:`validation_set`.
        facegrid.core.errors.ImageError: an image cannot be read.

    Example:
        >>> result = validate(Detector.load(), val_images("widerface"), val_ground_truth("widerface"))  # doctest: +SKIP
        >>> result.ap  # doctest: +SKIP
        {'easy': 0.81, 'medium': 0.74, 'hard': 0.42}
    """
    chosen = validation_set(images_folder, ground_truth_folder)
    found = detect_at_floor(detector, chosen.images, batch_size, progress=progress)
    return wider_scores(chosen.keys, found, chosen.ground_truth)
