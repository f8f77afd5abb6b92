"""Box-aware training augmentation: random crop and scale, horizontal flip, colour jitter.

Geometry is expressed in relative coordinates (fractions of the image), so a
crop can be chosen before the image is decoded and the decoder can pick its
DCT scale for just that region. Boxes move with the pixels: a face is kept if
its centre lies inside the crop and is clipped to it; faces whose centre falls
outside are dropped from that sample's target.

All random choices for a sample are drawn at once (:meth:`Augment.sample`,
from the ``numpy.random.Generator`` passed in) into a :class:`Jitter`, which
is then applied to pixels and boxes. So a sample is reproducible from its
seed, and every input pipeline (NumPy or tf.data) applies the very same
choices. Augmentation is off unless asked for and is never applied to
validation data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegrid.core import boxes as box_ops
from facegrid.core.config import Config, check_crop_scale
from facegrid.data.geometry import FULL_IMAGE

#: ITU-R BT.601 luma weights: the gray that saturation jitter keeps.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Jitter:
    """The random choices made for one training sample.

    Attributes:
        crop: region kept, ``[x1, y1, x2, y2]`` in fractions of the image.
        flip: mirror left to right.
        saturation: factor on the distance of each pixel from its gray.
        contrast: factor on the distance from the image's mean gray.
        brightness: shift added to every pixel, in levels of 0..255.
    """

    crop: tuple[float, float, float, float] = FULL_IMAGE
    flip: bool = False
    saturation: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0

    @property
    def changes_color(self) -> bool:
        return (self.saturation, self.contrast, self.brightness) != (1.0, 1.0, 0.0)


#: No augmentation: the whole image, as it is.
NO_JITTER = Jitter()


@dataclass(frozen=True)
class Augment:
    """Random transforms for one training sample.

    Crops are square in pixels, as the field trains its detectors: the side
    is a fraction of the image's shorter side, so faces keep their shape
    when the crop is resized to the square network input.

    Attributes:
        crop_scale: range of the crop's side as a fraction of the image's
            shorter side; ``(1.0, 1.0)`` disables cropping.
        max_aspect_change: the crop's width-to-height ratio (in pixels) is
            drawn within this factor of square; 1 keeps crops square.
        flip: probability of a horizontal flip.
        brightness: pixels are shifted by up to this fraction of 255.
        contrast: contrast is scaled by a factor in ``1 ± contrast``.
        saturation: saturation is scaled by a factor in ``1 ± saturation``.
    """

    crop_scale: tuple[float, float] = Config.crop_scale
    max_aspect_change: float = 1.0
    flip: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.25
    saturation: float = 0.25

    def __post_init__(self):
        check_crop_scale(self.crop_scale)
        if self.max_aspect_change < 1:
            raise ValueError(f"max_aspect_change must be >= 1. Received: max_aspect_change={self.max_aspect_change}")

    def sample_crop(self, rng: np.random.Generator, aspect: float = 1.0) -> tuple[float, float, float, float]:
        """A random crop ``[x1, y1, x2, y2]`` in fractions of an image whose width is ``aspect`` times its height."""
        low, high = self.crop_scale
        if low >= 1.0:
            return FULL_IMAGE
        side = rng.uniform(low, high)  # of the shorter side
        stretch = np.exp(rng.uniform(-0.5, 0.5) * np.log(self.max_aspect_change))  # sqrt of width / height in pixels
        w = min(side * min(1.0, 1.0 / aspect) * stretch, 1.0)  # the shorter side over the width, times side
        h = min(side * min(1.0, aspect) / stretch, 1.0)
        x1 = rng.uniform(0.0, 1.0 - w)
        y1 = rng.uniform(0.0, 1.0 - h)
        return (x1, y1, x1 + w, y1 + h)

    def sample(self, rng: np.random.Generator, aspect: float = 1.0) -> Jitter:
        """Draw every random choice for one sample (crop, flip, colour) of an image of that aspect (width / height)."""
        crop = self.sample_crop(rng, aspect)
        flip = bool(rng.random() < self.flip)
        return Jitter(
            crop=crop,
            flip=flip,
            saturation=float(rng.uniform(1 - self.saturation, 1 + self.saturation)),
            contrast=float(rng.uniform(1 - self.contrast, 1 + self.contrast)),
            brightness=float(rng.uniform(-self.brightness, self.brightness) * 255.0),
        )


def augmentation(config: Config) -> Augment | None:
    """The training augmentation of ``config``: an :class:`Augment` of its ``crop_scale``; None with ``augment`` off."""
    return Augment(crop_scale=config.crop_scale) if config.augment else None


def adjust_color(pixels: np.ndarray, jitter: Jitter) -> np.ndarray:
    """Apply a jitter's saturation, contrast and brightness to uint8 ``[H, W, 3]`` pixels.

    Gray (BT.601 luma) is kept for saturation; contrast pivots on the image's
    mean gray; results are rounded and clipped to uint8.
    """
    if not jitter.changes_color:
        return pixels
    x = pixels.astype(np.float32)
    gray = x @ LUMA
    x = gray[..., None] + (x - gray[..., None]) * np.float32(jitter.saturation)
    mean = gray.mean()
    x = (x - mean) * np.float32(jitter.contrast) + mean + np.float32(jitter.brightness)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def crop_boxes(boxes: np.ndarray, crop) -> tuple[np.ndarray, np.ndarray]:
    """Map relative ``[N, 4]`` xyxy boxes into a relative crop's frame.

    Faces whose centre lies outside the crop are dropped; the rest are clipped
    to it. Input and output are fractions of the image and of the crop.

    Args:
        boxes: ``[N, 4]`` relative xyxy boxes.
        crop: ``[x1, y1, x2, y2]`` for every box, or ``[N, 4]``, one crop per
            box (boxes of several images at once).

    Returns:
        ``(moved, kept)``: the kept boxes in the crop's frame, and the ``[N]``
        bool mask of the boxes kept.
    """
    crop = np.asarray(crop, dtype=np.float64)
    centre = box_ops.centers(boxes)
    edges = crop.astype(np.float32)  # compared in the boxes' precision
    kept = ((centre >= edges[..., :2]) & (centre < edges[..., 2:])).all(axis=-1)
    if crop.ndim == 2:
        crop = crop[kept]
    origin = np.tile(crop[..., :2], 2).astype(np.float32)
    extent = np.tile(crop[..., 2:] - crop[..., :2], 2).astype(np.float32)
    return box_ops.clip((boxes[kept] - origin) / extent, 1.0, 1.0), kept


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Mirror relative ``[N, 4]`` xyxy boxes left to right."""
    return np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)
