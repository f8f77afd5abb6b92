"""A detection run: what ``facegrid detect`` does, callable from Python.

:func:`plan_detection` turns files and folders into the images and videos to
read and the files to write, and refuses, before any model loads, what
would give nothing or lose something: inputs without an image, a video
OpenCV cannot open (or leaves it out, under ``on_bad_image="skip"``),
result files for images that are not ``<event>/<name>``, and any output that
is an input or, unless ``overwrite``, exists (:mod:`facegrid.core.files`).

:func:`run_detection` then detects in each image and frame, writes the
annotated copies and WIDER result files as it goes, and yields what it
found, one :class:`ImageDone`, :class:`FrameDone` or :class:`VideoDone` at a
time, so that a caller can print or count as the run proceeds.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from facegrid.core.draw import annotated_image
from facegrid.core.errors import ImageError, PathError, VideoError
from facegrid.core.files import check_outputs, make_folder, write_atomically
from facegrid.data.images import read_image
from facegrid.infer.detector import Detections, Detector
from facegrid.infer.inputs import (
    annotated_names,
    find_images,
    is_video,
    submission_keys,
)
from facegrid.infer.video import FrameDetections, VideoInfo, detect_video, probe_video
from facegrid.wider.results import SCORE_FLOOR, result_path, write_image_result


@dataclass(frozen=True)
class PlannedInput:
    """One image or video of a run, and where its outputs go.

    Attributes:
        path: the file read.
        target: its annotated copy, or None.
        key: its WIDER result key ``<event>/<name>``, or None.
        video: what its container says, for a video; None for an image.
    """

    path: Path
    target: Path | None
    key: str | None
    video: VideoInfo | None


@dataclass(frozen=True)
class DetectionPlan:
    """What a run reads and writes, checked (see :func:`plan_detection`).

    Attributes:
        inputs: the images and videos to read, in order.
        skipped: the videos left out as unreadable (``on_bad_image="skip"``).
        wider_submission: the folder of WIDER result files, or None.
    """

    inputs: list[PlannedInput]
    skipped: list[PathError]
    wider_submission: Path | None

    @property
    def frames(self) -> int | None:
        """Images and video frames to read; None where a video's container states no frame count."""
        counts = [item.video.frames if item.video else 1 for item in self.inputs]
        return sum(counts) if all(counts) else None

    @property
    def kind(self) -> str:
        """What the run reads: ``"image"``, ``"frame"`` (videos only) or ``"image|frame"``."""
        kinds = {item.video is not None for item in self.inputs}
        return "frame" if kinds == {True} else "image" if kinds == {False} else "image|frame"


def plan_detection(
    inputs: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    wider_submission: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    overwrite: bool = False,
    on_bad_image: str = "raise",
) -> DetectionPlan:
    """Check a detection run before a model loads: what it reads, what it writes, and that nothing is lost.

    Args:
        inputs: image and video files, and folders searched recursively.
        out: the folder of annotated copies (each at its path below the folder it was found in).
        wider_submission: the folder of WIDER result files.
        model: the model file to run, an input too (the bundled model if None).
        overwrite: replace outputs that exist (never an input).
        on_bad_image: ``"skip"`` leaves out a video OpenCV cannot open; ``"raise"`` refuses it.

    Raises:
        facegrid.core.errors.PathError: no image among the inputs; with
            ``wider_submission``, an input that is no ``<event>/<name>``
            image or shares a result file with another; an output that is
            an input, or exists and not ``overwrite``.
        facegrid.core.errors.VideoError: a video that cannot be read, under ``"raise"``.
    """
    from facegrid.core.config import model_settings_file
    from facegrid.core.resources import default_model_path

    found = find_images(inputs, videos=True)
    keys = submission_keys(found) if wider_submission is not None else [None] * len(found)
    targets = [Path(out) / name for name in annotated_names(found)] if out is not None else [None] * len(found)
    model = Path(model) if model is not None else default_model_path()
    check_outputs(
        [target for target in targets if target is not None]
        + [result_path(wider_submission, key) for key in keys if key is not None],
        [path for path, _ in found] + [model, model_settings_file(model)],
        overwrite,
    )
    planned, skipped = [], []
    for (path, _), target, key in zip(found, targets, keys):
        video = None
        if is_video(path):
            try:
                video = probe_video(path)
            except VideoError as error:
                if on_bad_image != "skip":
                    raise
                skipped.append(error)
                continue
        planned.append(PlannedInput(path, target, key, video))
    return DetectionPlan(planned, skipped, None if wider_submission is None else Path(wider_submission))


@dataclass(frozen=True)
class ImageDone:
    """An image detected: its faces scoring the run's threshold or more, and its annotated copy if written."""

    found: Detections
    target: Path | None


@dataclass(frozen=True)
class FrameDone:
    """A video frame detected (its annotated frame is written once the video is complete)."""

    frame: FrameDetections


@dataclass(frozen=True)
class VideoDone:
    """A video detected to its last frame, and its annotated copy if written."""

    path: Path
    frames: int
    faces: int
    target: Path | None


def run_detection(
    detector: Detector,
    plan: DetectionPlan,
    *,
    batch_size: int = 8,
    on_unreadable: Callable[[ImageError], None] | None = None,
) -> Iterator[ImageDone | FrameDone | VideoDone]:
    """Detect in every image and video of ``plan``, writing its outputs as each is done.

    Faces are reported and drawn from ``detector.score_threshold`` up; a
    WIDER result file holds every box down to
    :data:`~facegrid.wider.results.SCORE_FLOOR`, as the format wants.

    Args:
        detector: the detector to run (not changed).
        plan: from :func:`plan_detection`.
        batch_size: images (frames) run through the model at once.
        on_unreadable: called with the error of an image that cannot be
            read, which is then left out; without it, such an image raises.

    Raises:
        facegrid.core.errors.ImageError: an image cannot be read (without ``on_unreadable``).
        facegrid.core.errors.VideoError: a video cannot be read, or its annotated copy written.
    """
    threshold = detector.score_threshold
    scoring = detector
    if plan.wider_submission is not None:
        floored = detector.floored(SCORE_FLOOR)
        scoring = floored if floored.score_threshold < threshold else detector
    for video, group in itertools.groupby(plan.inputs, key=lambda item: item.video is not None):
        if video:
            for item in group:
                yield from _video(detector, item, batch_size)
            continue
        group = list(group)
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            results = scoring.detect([item.path for item in chunk], batch_size=batch_size, on_unreadable=on_unreadable)
            for item, found in zip(chunk, results):
                if found is not None:
                    yield _image(item, found, threshold, plan.wider_submission)


def _image(item: PlannedInput, found: Detections, threshold: float, wider_submission: Path | None) -> ImageDone:
    """Write one image's result file and annotated copy; its faces from ``threshold`` up."""
    if wider_submission is not None:
        write_image_result(wider_submission, item.key, found.boxes, found.scores)
    shown = found.scores >= threshold
    found = Detections(found.path, found.size, found.boxes[shown], found.scores[shown])
    if item.target is not None:
        make_folder(item.target.parent)
        drawn = annotated_image(read_image(item.path), found.boxes, found.scores)
        write_atomically(item.target, lambda tmp: drawn.save(tmp, format="JPEG", quality=90))
    return ImageDone(found, item.target)


def _video(detector: Detector, item: PlannedInput, batch_size: int) -> Iterator[FrameDone | VideoDone]:
    faces = frames = 0
    for frame in detect_video(detector, item.path, item.target, batch_size=batch_size, info=item.video):
        faces += len(frame.found.scores)
        frames += 1
        yield FrameDone(frame)
    yield VideoDone(item.path, frames, faces, item.target)
