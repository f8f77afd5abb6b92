"""Videos: frames read with OpenCV, faces detected in each, annotated frames written back.

A video goes through :class:`facegrid.infer.detector.Detector` frame by frame, each
frame as an image of the same pixels would (:meth:`~facegrid.infer.detector.Detector.detect_frames`),
in batches. The annotated copy is an MPEG-4 file (``mp4v``, which every
OpenCV build writes) at the source's frame rate and size, whatever the
source's container. A frame's time is its number over the frame rate the
container states, so a variable-rate video's times are approximate.

:func:`probe_video` opens a video and reads its first frame, so that one
OpenCV cannot read is refused (:class:`VideoError`) before a model loads.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facegrid.core.draw import annotated_image
from facegrid.core.errors import VideoError
from facegrid.core.files import staged
from facegrid.infer.detector import Detections

log = logging.getLogger(__name__)

#: Codec of annotated videos.
FOURCC = "mp4v"

#: Frame rate assumed for a video whose container states none.
FALLBACK_FPS = 25.0


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says of it.

    Attributes:
        fps: frames per second (:data:`FALLBACK_FPS` where none is stated).
        width, height: frame size in pixels.
        frames: the frame count the container states; 0 where it states none.
    """

    fps: float
    width: int
    height: int
    frames: int


@dataclass
class FrameDetections:
    """Faces found in one frame of a video.

    Attributes:
        frame: the frame's number, from 0.
        time: its time in seconds (``frame / fps``).
        found: its detections; ``found.path`` is the video.
    """

    frame: int
    time: float
    found: Detections

    def to_dict(self) -> dict:
        """A JSON-ready record: path, frame number, time, size and faces."""
        record = self.found.to_dict()
        return {"path": record.pop("path"), "frame": self.frame, "time": round(self.time, 3), **record}


def _opencv_name(path: str | os.PathLike) -> str:
    """``path`` for OpenCV, which takes UTF-8 names only and crashes the process on others."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise VideoError(path, "OpenCV opens only files whose names are UTF-8 text: rename it") from None
    return str(path)


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(_opencv_name(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(path, "not a video OpenCV can open")
    return capture


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open a video and read its first frame: its frame rate, size and stated frame count.

    Raises:
        VideoError: OpenCV cannot open the file or read a frame of it.
    """
    capture = _open(path)
    try:
        ok, frame = capture.read()
        if not ok:
            raise VideoError(path, "OpenCV opens it but reads no frame")
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        capture.release()
    if not (math.isfinite(fps) and fps > 0):
        log.warning("%s states no frame rate; taking %g frames per second", path, FALLBACK_FPS)
        fps = FALLBACK_FPS
    frames = int(frames) if math.isfinite(frames) and frames > 0 else 0
    return VideoInfo(float(fps), frame.shape[1], frame.shape[0], frames)


def read_frames(path: str | os.PathLike, batch_size: int) -> Iterator[list[np.ndarray]]:
    """A video's frames as uint8 RGB ``[H, W, 3]`` arrays, in lists of up to ``batch_size``.

    Raises:
        VideoError: OpenCV cannot open the file.
    """
    capture = _open(path)
    try:
        batch: list[np.ndarray] = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        capture.release()


def detect_video(
    detector,
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    batch_size: int = 8,
    info: VideoInfo | None = None,
) -> Iterator[FrameDetections]:
    """Detect faces in every frame of a video, and with ``out`` write the annotated video there.

    Args:
        detector: a :class:`facegrid.infer.detector.Detector`; its score threshold
            decides the faces reported and drawn.
        path: the video.
        out: the annotated copy (MPEG-4, ``mp4v``); its folder is created. It is
            written under a temporary name and takes its own once complete.
        batch_size: frames run through the model at once.
        info: the video's :func:`probe_video`, if known already.

    Yields:
        Each frame's :class:`FrameDetections`, in order, once the frame is
        written.

    Raises:
        VideoError: the video cannot be read, or ``out`` cannot be written.
    """
    info = info or probe_video(path)
    if out is None:
        yield from _detect_frames(detector, path, None, batch_size, info)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with staged(out) as tmp:  # the annotated copy takes its name only once every frame is in it
        writer = cv2.VideoWriter(
            _opencv_name(tmp), cv2.VideoWriter_fourcc(*FOURCC), info.fps, (info.width, info.height)
        )
        if not writer.isOpened():
            raise VideoError(out, f"OpenCV cannot write an {FOURCC} video there")
        try:
            yield from _detect_frames(detector, path, writer, batch_size, info)
        finally:
            writer.release()


def _detect_frames(detector, path, writer: cv2.VideoWriter | None, batch_size: int, info: VideoInfo):
    """Detect in each frame of ``path``, drawing the frame into ``writer`` if given; yields :class:`FrameDetections`."""
    number = 0
    for frames in read_frames(path, batch_size):
        for pixels, found in zip(frames, detector.detect_frames(frames, str(path), batch_size)):
            if writer is not None:
                drawn = np.asarray(annotated_image(pixels, found.boxes, found.scores))
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            yield FrameDetections(number, number / info.fps, found)
            number += 1
    log.info("%s: %d frames", path, number)
