"""One training example: an image file and its faces in, ``(x, y)`` out.

This is the per-image step shared by every input pipeline: decode at reduced
scale (cropped when augmenting), resize to the square network input, move the
boxes with the pixels, and encode them with the grid codec::

    image.jpg ──decode+crop+resize──▶ x uint8 [S, S, 3]
    boxes (original pixels) ──crop/flip──▶ GridCodec.encode ──▶ y float32 [G, G, 5]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facegrid.augment import NO_JITTER, Augment, Jitter, adjust_color, crop_boxes, flip_boxes
from facegrid.grid import GridCodec
from facegrid.images import FULL_IMAGE, load_input


@dataclass(frozen=True)
class ExampleBuilder:
    """Builds ``(x, y)`` for one image.

    Attributes:
        input_size: side ``S`` of the square network input.
        codec: the grid codec that lays out ``y``.
        augment: random transforms, or None for the plain image (validation).
    """

    input_size: int = 224
    codec: GridCodec = GridCodec(7)
    augment: Augment | None = None

    def __call__(
        self,
        path: str | os.PathLike,
        boxes: np.ndarray,
        rng: np.random.Generator | None = None,
        ignore: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Build one example.

        Args:
            path: the image file.
            boxes: ``[N, 4]`` float32 xyxy faces in original-image pixels.
            rng: source of the augmentation's randomness; required when augmenting.
            ignore: ``[M, 4]`` faces left out of training, in original-image
                pixels; they move with the pixels and become ignore cells.

        Returns:
            ``x`` uint8 ``[S, S, 3]`` and ``y`` float32 ``[G, G, 5]``.

        Raises:
            facegrid.images.ImageError: the image cannot be read.
        """
        jitter = self.jitter(rng)
        x, (width, height) = load_input(path, self.input_size, jitter.crop)
        if jitter.flip:
            x = x[:, ::-1]
        x = adjust_color(x, jitter)
        return np.ascontiguousarray(x), self.target(boxes, width, height, jitter, ignore)

    def jitter(self, rng: np.random.Generator | None) -> Jitter:
        """The augmentation choices for one sample (none when not augmenting)."""
        return self.augment.sample(rng) if self.augment else NO_JITTER

    def target(
        self,
        boxes: np.ndarray,
        width: int,
        height: int,
        jitter: Jitter = NO_JITTER,
        ignore: np.ndarray | None = None,
    ) -> np.ndarray:
        """The grid target ``y`` of a ``width x height`` image's faces after ``jitter``.

        Args:
            boxes: ``[N, 4]`` float32 xyxy faces in original-image pixels.
            width, height: the upright image's full-resolution size.
            jitter: the crop and flip applied to the pixels.
            ignore: ``[M, 4]`` faces left out of training (become ignore cells).
        """
        scale = np.array([width, height, width, height], dtype=np.float32)
        relative = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
        ignored = np.zeros((0, 4), np.float32) if ignore is None else np.asarray(ignore, np.float32).reshape(-1, 4) / scale
        if jitter.crop != FULL_IMAGE:
            relative, ignored = crop_boxes(relative, jitter.crop), crop_boxes(ignored, jitter.crop)
        if jitter.flip:
            relative, ignored = flip_boxes(relative), flip_boxes(ignored)
        size = self.input_size
        return self.codec.encode(relative * size, size, size, ignore=ignored * size)
