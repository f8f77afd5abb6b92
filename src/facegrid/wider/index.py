"""The annotation index: every image and every face of a dataset as compact arrays.

An :class:`Index` holds one row per image and one row per face, in NumPy
arrays rather than a Python object per face, so that the 159,420 faces of
WIDER FACE train cost a few megabytes and slicing, filtering and shuffling
stay vectorised. Faces of image ``i`` are rows ``offsets[i]:offsets[i + 1]``.

:class:`FaceFilter` decides which faces become training targets. Filtering
never removes an image: an image whose faces are all filtered out stays in the
index and trains as background.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from facegrid.core import boxes as box_ops

#: Names of the six attribute columns, in the order of the WIDER FACE file
#: (``x1 y1 w h blur expression illumination invalid occlusion pose``).
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")

#: Largest legal value of each attribute, from the official readme.txt legend.
ATTRIBUTE_MAX = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}


@dataclass(frozen=True)
class Note:
    """Something harmless the reader tolerated, with the line where it was seen."""

    kind: str
    line: int
    message: str


@dataclass(frozen=True, eq=False)
class Index:
    """Images and faces of one annotation file.

    Attributes:
        source: the annotation file this index was read from ("" if built in memory).
        paths: ``[M]`` image paths relative to the images folder, as written in the file.
        name_lines: ``[M]`` int32, 1-based line of each image's path line.
        offsets: ``[M + 1]`` int64; faces of image ``i`` are ``offsets[i]:offsets[i + 1]``.
        boxes: ``[N, 4]`` int32 ``x1 y1 w h`` exactly as in the file.
        attributes: ``[N, 6]`` uint8, columns named by :data:`ATTRIBUTES`.
        face_lines: ``[N]`` int32, 1-based line of each face row.
        notes: harmless quirks met while reading (see :class:`Note`).
    """

    source: str
    paths: np.ndarray
    name_lines: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    attributes: np.ndarray
    face_lines: np.ndarray
    notes: tuple[Note, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_faces(self) -> int:
        """Number of face rows (dummy rows of face-less images are not faces)."""
        return len(self.boxes)

    def faces_per_image(self) -> np.ndarray:
        """``[M]`` int64 count of faces of each image."""
        return np.diff(self.offsets)

    def attribute(self, name: str) -> np.ndarray:
        """The ``[N]`` column of one attribute, e.g. ``index.attribute("blur")``."""
        return self.attributes[:, ATTRIBUTES.index(name)]

    def image_boxes(self, i: int) -> np.ndarray:
        """Faces of image ``i`` as float32 xyxy boxes in original-image pixels."""
        return box_ops.from_wider(self.boxes[self.offsets[i] : self.offsets[i + 1]])

    def where(self, line: int) -> str:
        """``FILE:LINE`` for messages about a place in the annotation file."""
        return f"{self.source}:{line}"

    def take(self, images: np.ndarray) -> Index:
        """A new index of the given images (any order, repeats allowed), with all their faces."""
        images = np.asarray(images, dtype=np.int64).reshape(-1)
        starts, stops = self.offsets[images], self.offsets[images + 1]
        counts = stops - starts
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return dataclasses.replace(
            self,
            paths=self.paths[images],
            name_lines=self.name_lines[images],
            offsets=offsets,
            boxes=self.boxes[rows],
            attributes=self.attributes[rows],
            face_lines=self.face_lines[rows],
        )

    def select_faces(self, keep: np.ndarray) -> Index:
        """A new index with only the faces where ``keep`` is true; every image stays."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.num_faces,):
            raise ValueError(f"keep must have shape ({self.num_faces},), got {keep.shape}")
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        return dataclasses.replace(
            self,
            offsets=kept_before[self.offsets].astype(np.int64),
            boxes=self.boxes[keep],
            attributes=self.attributes[keep],
            face_lines=self.face_lines[keep],
        )


def holdout_split(index: Index, holdout: int, seed: int = 0) -> tuple[Index, Index]:
    """``(rest, held)``: ``holdout`` of ``index``'s images drawn with ``seed``, and the others, each in file order.

    The same file, count and seed give the same split, so a hold-out that
    picked a model's epoch can be drawn again to fit its score calibration.

    Raises:
        ValueError: ``holdout`` is not between 1 and the number of images less one.
    """
    if not 0 < holdout < len(index):
        raise ValueError(f"a hold-out of {holdout} image(s) from {len(index)} leaves no images on one side")
    order = np.random.default_rng(seed).permutation(len(index))
    return index.take(np.sort(order[holdout:])), index.take(np.sort(order[:holdout]))


@dataclass(frozen=True)
class FaceFilter:
    """Which annotated faces become training targets.

    The defaults drop only faces that cannot be a correct target: those the
    annotators flagged invalid and boxes with zero width or height. Tiny and
    heavily blurred faces are kept unless asked otherwise.

    Attributes:
        drop_invalid: drop faces whose ``invalid`` flag is 1.
        drop_zero_size: drop boxes with ``w <= 0`` or ``h <= 0``.
        min_size: drop faces whose shorter side is below this many original-image pixels.
        max_blur: drop faces blurrier than this (0 clear, 1 normal, 2 heavy); None keeps all.
        max_occlusion: drop faces more occluded than this (0 none, 1 partial, 2 heavy);
            None keeps all.

    Example:
        >>> FaceFilter(min_size=10, max_blur=1).apply(index)  # doctest: +SKIP
    """

    drop_invalid: bool = True
    drop_zero_size: bool = True
    min_size: float = 0.0
    max_blur: int | None = None
    max_occlusion: int | None = None

    def mask(self, index: Index) -> np.ndarray:
        """``[N]`` bool, true for each face this filter keeps."""
        keep = np.ones(index.num_faces, dtype=bool)
        sides = index.boxes[:, 2:]
        if self.drop_invalid:
            keep &= index.attribute("invalid") == 0
        if self.drop_zero_size:
            keep &= (sides > 0).all(axis=1)
        if self.min_size > 0:
            keep &= sides.min(axis=1) >= self.min_size
        if self.max_blur is not None:
            keep &= index.attribute("blur") <= self.max_blur
        if self.max_occlusion is not None:
            keep &= index.attribute("occlusion") <= self.max_occlusion
        return keep

    def apply(self, index: Index) -> Index:
        """The index with only the kept faces (all images stay)."""
        return index.select_faces(self.mask(index))
