"""Detector: images in, face boxes in original-image pixels with scores out.

Each image is decoded and resized exactly as in training (:func:`facegrid.images.load_input`),
the model predicts a grid, :class:`~facegrid.grid.GridCodec` decodes it at the
image's own size, and non-maximum suppression removes duplicates from
neighbouring cells.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import keras
import numpy as np

from facegrid import boxes as box_ops
from facegrid.config import load_config
from facegrid.grid import GridCodec
from facegrid.images import load_input
from facegrid.model import load_detector

log = logging.getLogger(__name__)

#: File name of the model bundled with facegrid, inside the package's ``models/`` folder.
BUNDLED_MODEL = "facegrid-wider.keras"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def bundled_model_path() -> Path:
    """Path of the detector shipped with facegrid (see its model card beside it)."""
    return Path(str(resources.files("facegrid") / "models" / BUNDLED_MODEL))


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
    """Runs a facegrid model on image files.

    Args:
        model: a facegrid detector (uint8 ``[B, S, S, 3]`` in, ``[B, G, G, 5]`` out).
        input_size: side ``S`` images are resized to (a multiple of 32).
        score_threshold: keep detections scoring at least this.
        nms_iou: suppress a box overlapping a better one by more than this IoU.

    Example:
        >>> detector = Detector.load()  # the bundled model  # doctest: +SKIP
        >>> [d.boxes for d in detector.detect(["group.jpg"])]  # doctest: +SKIP
    """

    def __init__(self, model: keras.Model, input_size: int, score_threshold: float = 0.5, nms_iou: float = 0.4):
        self.model = model
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    @classmethod
    def load(
        cls, path: str | os.PathLike | None = None, input_size: int | None = None, **kwargs
    ) -> Detector:
        """Load a ``.keras`` detector (the bundled one when ``path`` is None).

        The detection input size comes from ``input_size``, else from the
        model's configuration (``NAME.toml`` beside ``NAME.keras``, or the run
        folder's ``config.toml``). Models load in Keras safe mode: a file
        carrying arbitrary code is refused.
        """
        path = Path(path) if path is not None else bundled_model_path()
        model = load_detector(path)
        if input_size is None:
            sidecars = [path.with_suffix(".toml"), path.parent / "config.toml"]
            found = next((p for p in sidecars if p.is_file()), None)
            if found is not None:
                input_size = load_config(found).detection_input_size
            elif model.input_shape[1] is not None:
                input_size = int(model.input_shape[1])
            else:
                raise ValueError(f"{path}: no configuration beside it says its input size; pass input_size")
        return cls(model, input_size, **kwargs)

    def predict_grids(self, pixels: np.ndarray) -> np.ndarray:
        """Raw ``[B, G, G, 5]`` grids for uint8 ``[B, S, S, 3]`` inputs."""
        return np.asarray(self.model.predict_on_batch(pixels))

    def decode(self, grid: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores in pixels of a ``width x height`` image, after NMS."""
        codec = GridCodec(grid.shape[0])
        boxes, scores = codec.decode(grid, width, height, threshold=self.score_threshold)
        boxes = box_ops.clip(boxes, width, height)
        keep = box_ops.nms(boxes, scores, self.nms_iou)
        return boxes[keep], scores[keep]

    def detect(self, paths, batch_size: int = 8) -> list[Detections]:
        """Detect faces in each image file.

        Raises:
            facegrid.images.ImageError: an image cannot be read.
        """
        paths = [str(p) for p in paths]
        results = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            loaded = [load_input(p, self.input_size) for p in chunk]
            grids = self.predict_grids(np.stack([pixels for pixels, _ in loaded]))
            for path, (_, size), grid in zip(chunk, loaded, grids):
                boxes, scores = self.decode(grid, *size)
                results.append(Detections(path, size, boxes, scores))
        return results


def find_images(inputs) -> list[tuple[Path, Path | None]]:
    """Expand files and folders (recursively) into ``(image, folder it was found under)``.

    Files given directly have no folder. Folders yield their images sorted by path.
    """
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found.extend((p, item) for p in images)
        else:
            found.append((item, None))
    return found
