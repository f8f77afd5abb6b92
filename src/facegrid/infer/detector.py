"""Detector: images in, face boxes in original-image pixels with scores out.

A pyramid model (:class:`~facegrid.core.codec.PyramidCodec`) sees each image with
its aspect ratio kept: the longer side resized to the detection size, the
other padded to a multiple of 32 (:func:`facegrid.data.geometry.load_fitted`). A
single-grid model sees it stretched to a square, as it was trained
(:func:`facegrid.data.geometry.load_input`). Frames already in memory (video) go
through the same resize (:func:`~facegrid.data.geometry.fitted_pixels`,
:func:`~facegrid.data.geometry.input_pixels`) and everything after it. The codec decodes the prediction, the
boxes are scaled back to the image's own pixels, and non-maximum suppression
removes duplicates from neighbouring cells.

Keras models and their exports (:mod:`facegrid.infer.runtimes`) go through the same
preprocessing, decoding and suppression; only the network's runtime differs.
Nothing here imports TensorFlow unless a Keras model or a SavedModel is loaded.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegrid.core import boxes as box_ops
from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.config import Config, check_input_side, model_config, settings_path
from facegrid.core.errors import ImageError, ModelFileError
from facegrid.core.resources import default_model_path
from facegrid.core.scores import RAW_SCORES, ScoreCalibration
from facegrid.data.geometry import fitted_pixels, input_pixels, load_fitted, load_input
from facegrid.infer.runtimes import is_exported, load_exported

log = logging.getLogger(__name__)


@dataclass
class Detections:
    """Faces found in one image.

    Attributes:
        path: the image file.
        size: its upright ``(width, height)``.
        boxes: float32 ``[K, 4]`` xyxy in original-image pixels.
        scores: float32 ``[K]``, highest first.
    """

    path: str
    size: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray

    def to_dict(self) -> dict:
        """A JSON-ready record: path, size and ``[x1, y1, x2, y2, score]`` rows."""
        return {
            "path": self.path,
            "width": self.size[0],
            "height": self.size[1],
            "faces": [
                {"box": [round(v, 1) for v in box], "score": round(score, 4)}
                for box, score in zip(self.boxes.tolist(), self.scores.tolist())
            ],
        }


class Detector:
    """Runs a facegrid model on image files or RGB frames in memory.

    Args:
        model: a facegrid detector: a Keras model, or an exported one from
            :mod:`facegrid.infer.runtimes` (uint8 images in; ``[B, G, G, 5]`` grids or
            ``[B, N, 5]`` pyramid cells out, through ``predict_on_batch``).
        input_size: side ``S`` images are resized to (a multiple of 32): the
            square of a single-grid model, the longer side for a pyramid.
        score_threshold: keep detections scoring at least this.
        nms_iou: suppress a box overlapping a better one by more than this IoU.
        codec: the model's target layout; None for a single grid, whose size
            is read off each prediction.
        top_k: candidates kept, best first, before non-maximum suppression
            (at a low score threshold a pyramid leaves a thousand or more).
        calibration: the map from the network's raw scores to the reported
            ones, which ``score_threshold`` is in (default: raw scores).

    Example:
        >>> detector = Detector.load()  # the bundled model (int8 LiteRT where installed)  # doctest: +SKIP
        >>> [d.boxes for d in detector.detect(["group.jpg"])]  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        input_size: int,
        score_threshold: float = Config.score_threshold,
        nms_iou: float = Config.nms_iou,
        codec: PyramidCodec | None = None,
        top_k: int = 750,
        calibration: ScoreCalibration = RAW_SCORES,
    ):
        self.model = model
        self.calibration = calibration
        self.top_k = top_k
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.codec = codec

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        input_size: int | None = None,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        threads: int | None = None,
        **kwargs,
    ) -> Detector:
        """Load a detector: a ``.keras`` model or an export; when ``path`` is None, the bundled one
        (:func:`~facegrid.core.resources.default_model_path`: int8 LiteRT where LiteRT is installed, else Keras).

        Exports (``.tflite``, ``.onnx``, a SavedModel folder; see
        :mod:`facegrid.deploy.export`) run through their own runtime
        (:mod:`facegrid.infer.runtimes`): LiteRT and ONNX Runtime without TensorFlow.
        The detection input size, score threshold and NMS IoU are the ones
        given, else those of the model's configuration (its score calibration too) (``NAME.toml`` beside
        the model, or the run folder's ``config.toml``), else
        :class:`~facegrid.core.config.Config`'s defaults. Models load in Keras safe
        mode: a file carrying arbitrary code is refused.

        Args:
            threads: CPU threads of an exported model's runtime (default: all
                cores); a Keras model runs on TensorFlow's own threads.
        """
        if input_size is not None:
            check_input_side("the detection size", input_size)
        path = Path(path) if path is not None else default_model_path()
        config = model_config(path)
        if is_exported(path):
            if config is None:
                raise ModelFileError(path, f"no settings beside it ({settings_path(path).name}) say its layout")
            model = load_exported(path, config.strides, threads)
            if model.fixed_size is not None:  # exported for one square input: that is the detection size
                side = max(model.fixed_size)
                if input_size not in (None, side):
                    raise ValueError(f"{path}: exported for {side} x {side} inputs only, not {input_size}")
                input_size = side
            return cls._loaded(path, cls.for_config(model, config, input_size, score_threshold, nms_iou, **kwargs))
        from facegrid.model.network import check_settings, load_detector

        model = load_detector(path)
        if config is not None:
            check_settings(model, config, path)
        if config is None and len(model.output_shape) == 3:
            raise ValueError(
                f"{path}: no configuration beside it says its pyramid's strides ({settings_path(path).name})"
            )
        if input_size is None and config is None:  # a bare model: its own fixed input size, if it has one
            if model.input_shape[1] is None:
                raise ValueError(f"{path}: no configuration beside it says its input size; pass input_size")
            input_size = int(model.input_shape[1])
        detector = cls.for_config(
            model,
            config or Config(),
            input_size=input_size,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            **kwargs,
        )
        return cls._loaded(path, detector)

    @staticmethod
    def _loaded(path: Path, detector: Detector) -> Detector:
        log.info(
            "%s: %s, detecting at %d pixels (longer side), score threshold %g",
            path,
            detector.runtime,
            detector.input_size,
            detector.score_threshold,
        )
        return detector

    def floored(self, raw_floor: float) -> Detector:
        """A copy that keeps every box whose raw score (before calibration) is ``raw_floor`` or more.

        A WIDER submission's floor is on the network's own scores, so that
        the precision-recall curve it gives is the same whatever the calibration.
        """
        floored = copy.copy(self)
        floored.score_threshold = self.calibration.confidence(raw_floor)
        return floored

    @property
    def runtime(self) -> str:
        """What runs the network: LiteRT, ONNX Runtime, TensorFlow (SavedModel), or Keras on TensorFlow."""
        return getattr(self.model, "RUNTIME", "Keras on TensorFlow")

    @classmethod
    def for_config(
        cls,
        model,
        config: Config,
        input_size: int | None = None,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        **kwargs,
    ) -> Detector:
        """A detector for ``model`` with the layout, detection size and thresholds of ``config`` (unless given)."""
        return cls(
            model,
            config.detection_input_size if input_size is None else input_size,
            score_threshold=config.score_threshold if score_threshold is None else score_threshold,
            nms_iou=config.nms_iou if nms_iou is None else nms_iou,
            codec=config.codec if config.strides else None,
            calibration=config.calibration,
            **kwargs,
        )

    def _load(self, image) -> tuple[np.ndarray, tuple[int, int], tuple[int, int] | None]:
        """One image's input, its upright ``(width, height)``, and for a pyramid its fitted size."""
        if isinstance(image, np.ndarray):
            size = (image.shape[1], image.shape[0])
            if self.codec is None:
                return input_pixels(image, self.input_size)[0], size, None
            pixels, fitted = fitted_pixels(image, self.input_size)
            return pixels, size, fitted
        if self.codec is None:
            return *load_input(image, self.input_size), None
        return load_fitted(image, self.input_size)

    def prepare(self, images) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int]] | None]:
        """The model's input, as at training: uint8 ``[B, H, W, 3]``.

        Args:
            images: image files, or uint8 RGB ``[H, W, 3]`` arrays (video
                frames), resized by the same rule as decoded files.

        Returns:
            ``(pixels, sizes, fitted)``: the batch, each image's upright
            ``(width, height)``, and for a pyramid the size each image has
            inside its input (None for a single grid, which stretches).
        """
        loaded = [self._load(image) for image in images]
        if self.codec is None:
            return np.stack([pixels for pixels, _, _ in loaded]), [size for _, size, _ in loaded], None
        fixed = getattr(self.model, "fixed_size", None)  # an export for one input size takes only that
        height, width = fixed or (max(px.shape[0] for px, _, _ in loaded), max(px.shape[1] for px, _, _ in loaded))
        batch = np.zeros((len(loaded), height, width, 3), np.uint8)  # images of one batch share the largest input
        for slot, (pixels, _, _) in zip(batch, loaded):
            if pixels.shape[0] > height or pixels.shape[1] > width:
                raise ValueError(f"detection size {self.input_size} does not fit the model's {width} x {height} input")
            slot[: pixels.shape[0], : pixels.shape[1]] = pixels
        return batch, [size for _, size, _ in loaded], [fitted for _, _, fitted in loaded]

    def predict_grids(self, pixels: np.ndarray) -> np.ndarray:
        """Raw predictions (``[B, G, G, 5]`` grids or ``[B, N, 5]`` cells) for uint8 ``[B, H, W, 3]`` inputs."""
        return np.asarray(self.model.predict_on_batch(pixels))

    def decode(
        self,
        grid: np.ndarray,
        width: int,
        height: int,
        input_size: tuple[int, int] | None = None,
        fitted: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and (calibrated) scores in pixels of a ``width x height`` image, after NMS.

        Args:
            grid: one prediction.
            width, height: the image's own size.
            input_size: for a pyramid, the ``(width, height)`` of the input the
                prediction was made on (padding included).
            fitted: for a pyramid, the size the image had inside that input.
        """
        threshold = self.calibration.raw(self.score_threshold)
        if self.codec is None:
            boxes, scores = GridCodec(grid.shape[0]).decode(grid, width, height, threshold=threshold)
        else:
            boxes, scores = self.codec.decode(grid, *input_size, threshold=threshold)
            boxes = boxes * np.tile(np.array([width / fitted[0], height / fitted[1]], np.float32), 2)
        boxes, scores = box_ops.clip(boxes[: self.top_k], width, height), self.calibration(scores[: self.top_k])
        keep = box_ops.nms(boxes, scores, self.nms_iou)
        return boxes[keep], scores[keep]

    def _detect_batch(self, images, names: list[str]) -> list[Detections]:
        pixels, sizes, fitted = self.prepare(images)
        predictions = self.predict_grids(pixels)
        if fitted is None:
            return [Detections(n, size, *self.decode(g, *size)) for n, size, g in zip(names, sizes, predictions)]
        input_size = (pixels.shape[2], pixels.shape[1])
        return [
            Detections(n, size, *self.decode(c, *size, input_size=input_size, fitted=f))
            for n, size, f, c in zip(names, sizes, fitted, predictions)
        ]

    def _batch_size(self, batch_size: int) -> int:
        """``batch_size``, or 1 for a model that takes one image at a time (no padding to a batch's largest)."""
        return 1 if getattr(self.model, "batch_fixed", False) else batch_size

    def detect(
        self, paths, batch_size: int = 8, on_unreadable: Callable[[ImageError], None] | None = None
    ) -> list[Detections | None]:
        """Detect faces in each image file.

        Args:
            paths: the image files.
            batch_size: images run through the model at once.
            on_unreadable: called with the error of each image that cannot be
                read, whose result is then None (the others are still
                detected); without it, such an image raises.

        Raises:
            facegrid.core.errors.ImageError: an image cannot be read (without ``on_unreadable``).
        """
        paths = [str(p) for p in paths]
        batch_size = self._batch_size(batch_size)
        results = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            try:
                results.extend(self._detect_batch(chunk, chunk))
            except ImageError:
                if on_unreadable is None:
                    raise
                for path in chunk:  # find the unreadable image(s), keep the rest
                    try:
                        results.extend(self._detect_batch([path], [path]))
                    except ImageError as error:
                        on_unreadable(error)
                        results.append(None)
        return results

    def detect_frames(self, frames: Sequence[np.ndarray], name: str, batch_size: int = 8) -> list[Detections]:
        """Detect faces in frames already in memory, such as a video's.

        Each frame goes through the preprocessing, decoding and suppression
        of an image file of the same pixels.

        Args:
            frames: uint8 RGB ``[H, W, 3]`` arrays.
            name: what each result's ``path`` says (the video file).
            batch_size: frames run through the model at once.
        """
        batch_size = self._batch_size(batch_size)
        results = []
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            results.extend(self._detect_batch(chunk, [name] * len(chunk)))
        return results
