"""Image geometry: which pixels of an image become the network input, and at what size.

A crop is chosen in fractions of the upright image, before anything is
decoded (:func:`covering_size` tells the decoder how large its output must
be), then snapped to whole pixels of what was decoded (:func:`pixel_region`),
so that every pipeline cuts the same pixels with a slice and the boxes follow
the crop as taken. The cut is resized by OpenCV, bilinear with half-pixel
centres, the convention of ``tf.image.resize`` too. After DCT scaling the
remaining shrink is under 2x along at least one side and rarely over 3x
along the other, where bilinear needs no antialiasing (shrinks of
:data:`ANTIALIAS_SHRINK` or more are area-averaged). This is several times
faster than an antialiased resize and keeps the decoder, not the resize, the
cost per image.

Training and single-grid detection stretch the crop to a square
(:func:`input_pixels`); pyramid detection keeps the aspect ratio and pads
with black to a multiple of the network's stride (:func:`fitted_pixels`).

The ``load_*`` functions take a file to the network input. They live here,
above :mod:`facegrid.data.images`, because all they add to a decode is
geometry: the size to decode at (the crop's covering size, the fitted size)
and the cut and resize after it. Decoding so never needs to know what the
pixels are for.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from facegrid.data.images import decode_data, probe_data, read_image_bytes

#: The whole image, as a relative crop ``[x1, y1, x2, y2]``.
FULL_IMAGE = (0.0, 0.0, 1.0, 1.0)

#: A region shrunk by this factor or more is area-averaged rather than sampled bilinearly.
ANTIALIAS_SHRINK = 3.0


def covering_size(size: int, crop: tuple[float, float, float, float]) -> tuple[int, int]:
    """``(width, height)`` an image must at least have for ``crop`` of it to cover ``size x size``."""
    x1, y1, x2, y2 = crop
    return math.ceil(size / max(x2 - x1, 1e-6)), math.ceil(size / max(y2 - y1, 1e-6))


def pixel_region(
    crop: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
    """A relative crop snapped to whole pixels of a ``width x height`` image, and the crop that region takes.

    Returns ``(region, taken)``: ``[x1, y1, x2, y2)`` in whole pixels, and the
    same region as fractions of the image, which the boxes must follow rather
    than the crop asked for. Cropping whole pixels lets every pipeline cut with
    a slice and resize with its own bilinear kernel, and still agree; both ask
    here, so they snap alike.
    """
    x1, y1 = min(round(crop[0] * width), width - 1), min(round(crop[1] * height), height - 1)
    x2, y2 = min(max(round(crop[2] * width), x1 + 1), width), min(max(round(crop[3] * height), y1 + 1), height)
    return (x1, y1, x2, y2), (x1 / width, y1 / height, x2 / width, y2 / height)


def resize_region(pixels: np.ndarray, region: tuple[int, int, int, int], size: int | tuple[int, int]) -> np.ndarray:
    """Cut ``region`` out of ``pixels`` and resize it to ``size x size`` (or to ``(width, height)``).

    Bilinear with half-pixel centres (as ``tf.image.resize``); a region
    shrunk by :data:`ANTIALIAS_SHRINK` or more is area-averaged instead, so
    that it is not aliased (as ``tf.image.resize(method="area")``).

    Args:
        pixels: uint8 ``[H, W, 3]``.
        region: ``[x1, y1, x2, y2)`` in whole pixels of ``pixels`` (see :func:`pixel_region`).
        size: side of the square output, or its ``(width, height)``.
    """
    x1, y1, x2, y2 = region
    width, height = (size, size) if isinstance(size, int) else size
    shrink = max((x2 - x1) / width, (y2 - y1) / height)
    method = cv2.INTER_AREA if shrink >= ANTIALIAS_SHRINK else cv2.INTER_LINEAR
    return cv2.resize(pixels[y1:y2, x1:x2], (width, height), interpolation=method)


def input_pixels(
    pixels: np.ndarray, size: int, crop: tuple[float, float, float, float] = FULL_IMAGE
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Cut ``crop`` out of decoded uint8 RGB ``pixels`` and resize it to the ``size x size`` network input.

    What :func:`load_crop` does once a file is decoded, for pixels already in
    memory (video frames): the crop snapped to whole pixels
    (:func:`pixel_region`), then :func:`resize_region`.

    Returns:
        ``(input, crop taken)``.
    """
    region, taken = pixel_region(crop, pixels.shape[1], pixels.shape[0])
    return resize_region(pixels, region, size), taken


def fitted_size(width: int, height: int, longer_side: int) -> tuple[int, int]:
    """``(width, height)`` of an image resized, aspect ratio kept, so that its longer side is ``longer_side``."""
    scale = longer_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def padded_size(width: int, height: int, multiple: int = 32) -> tuple[int, int]:
    """``(width, height)`` rounded up to multiples of ``multiple``: what a network with that total stride takes."""
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def fitted_pixels(
    pixels: np.ndarray, longer_side: int, multiple: int = 32, original: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize decoded uint8 RGB ``pixels`` as :func:`load_fitted` does, padded with black.

    What :func:`load_fitted` does once a file is decoded, for pixels already
    in memory (video frames) too, so both follow one resize rule.

    Args:
        pixels: uint8 ``[H, W, 3]``.
        longer_side: the longer side of the resized image.
        multiple: the padded input's sides are multiples of this.
        original: the full-resolution ``(width, height)`` the fitted size is
            computed from, where ``pixels`` were decoded smaller (a JPEG at a
            DCT scale); by default their own size.

    Returns:
        ``(input, (fitted_width, fitted_height))``: the padded input and the
        size of the image inside it.
    """
    width, height = original or (pixels.shape[1], pixels.shape[0])
    fitted = fitted_size(width, height, longer_side)
    resized = resize_region(pixels, (0, 0, pixels.shape[1], pixels.shape[0]), fitted)
    padded_width, padded_height = padded_size(*fitted, multiple)
    out = np.zeros((padded_height, padded_width, 3), dtype=np.uint8)
    out[: fitted[1], : fitted[0]] = resized
    return out, fitted


def load_input(
    path: str | os.PathLike, size: int, crop: tuple[float, float, float, float] = FULL_IMAGE
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode, crop and resize an image to the ``size x size`` network input.

    The image is stretched to a square (no letterbox), so a box maps to the
    input by scaling x and y separately.

    Args:
        path: the image file.
        size: side of the square output, in pixels.
        crop: region to keep, ``[x1, y1, x2, y2]`` as fractions of the upright
            image (snapped to whole decoded pixels, see :func:`load_crop`).

    Returns:
        ``(pixels, (width, height))``: uint8 ``[size, size, 3]`` RGB and the
        upright full-resolution size of the file.

    Raises:
        facegrid.core.errors.ImageError: missing, empty, truncated or not an image.
    """
    pixels, original, _ = load_crop(path, size, crop)
    return pixels, original


def load_crop(
    path: str | os.PathLike, size: int, crop: tuple[float, float, float, float]
) -> tuple[np.ndarray, tuple[int, int], tuple[float, float, float, float]]:
    """Like :func:`load_input`, and also return the crop actually taken.

    The file is decoded just large enough for the crop to cover the input
    (:func:`covering_size`); the crop is snapped to whole pixels of the decoded
    image (:func:`pixel_region`), and boxes must move with that crop, not the
    one asked for.

    Returns:
        ``(pixels, (width, height), crop)``.
    """
    decoded, original = decode_data(read_image_bytes(path), path, covering_size(size, crop))
    pixels, taken = input_pixels(decoded, size, crop)
    return pixels, original, taken


def load_fitted(
    path: str | os.PathLike, longer_side: int, multiple: int = 32
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Decode an image and resize it, aspect ratio kept, to a longer side of ``longer_side``, padded with black.

    The image lies in the top-left corner of uint8 ``[H', W', 3]`` pixels whose
    sides are multiples of ``multiple``; a box maps to the input by one scale
    factor per axis (``fitted / original``). The file is decoded just large
    enough to cover the fitted size, which its header tells.

    Returns:
        ``(pixels, (width, height), (fitted_width, fitted_height))``: the padded
        input, the upright full-resolution size of the file, and the size the
        image was resized to inside the input.

    Raises:
        facegrid.core.errors.ImageError: missing, empty, truncated or not an image.
    """
    data = read_image_bytes(path)
    info = probe_data(data, path)
    decoded, original = decode_data(data, path, fitted_size(info.width, info.height, longer_side))
    pixels, fitted = fitted_pixels(decoded, longer_side, multiple, original)
    return pixels, original, fitted
