"""A sample's pixels in TensorFlow ops: the twins of the NumPy steps, for the tf.data pipelines.

Decoding at a DCT ratio (:func:`decode_jpeg_at`, as :mod:`facegrid.data.images`
decodes), turning upright (:func:`orient`), cutting and resizing
(:func:`resize_region`, as :func:`facegrid.data.geometry.resize_region`),
flipping and colouring (:func:`adjust_color`, as
:func:`facegrid.data.augment.adjust_color`). Every pipeline builds a sample's
input from them through :func:`planned_input`, following the plan of
:meth:`SourceBatches.sample_plan <facegrid.data.tf.batches.SourceBatches.sample_plan>`.
"""

from __future__ import annotations

import tensorflow as tf

from facegrid.data.augment import LUMA
from facegrid.data.geometry import ANTIALIAS_SHRINK
from facegrid.data.images import DCT_RATIOS


def decode_jpeg_at(data: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
    """JPEG bytes decoded to stored uint8 RGB pixels at the DCT ratio ``DCT_RATIOS[ratio]``.

    TensorFlow takes the ratio as an attribute of the kernel, not as a
    tensor, so each ratio has a kernel of its own and ``ratio`` picks one.
    """
    branches = [
        (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE")) for r in DCT_RATIOS
    ]
    return tf.switch_case(ratio, branches)


def orient(pixels: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation (1..8) to stored pixels, as :mod:`facegrid.data.images` does."""
    branches = [
        lambda: pixels,
        lambda: tf.reverse(pixels, axis=[1]),
        lambda: tf.image.rot90(pixels, k=2),
        lambda: tf.reverse(pixels, axis=[0]),
        lambda: tf.transpose(pixels, [1, 0, 2]),
        lambda: tf.image.rot90(pixels, k=3),
        lambda: tf.image.rot90(tf.transpose(pixels, [1, 0, 2]), k=2),
        lambda: tf.image.rot90(pixels, k=1),
    ]
    return tf.switch_case(orientation - 1, branches)


def resize_region(pixels: tf.Tensor, region: tf.Tensor, size: int) -> tf.Tensor:
    """Cut ``region`` (whole pixels ``[x1, y1, x2, y2)``) out of uint8 pixels and resize it to ``size x size``.

    The filter of :func:`facegrid.data.geometry.resize_region`: half-pixel bilinear,
    area averaging when shrinking by ``ANTIALIAS_SHRINK`` or more.
    """
    part = pixels[region[1] : region[3], region[0] : region[2]]
    shrink = tf.cast(tf.reduce_max(tf.shape(part)[:2]), tf.float32) / size
    resized = tf.cond(
        shrink >= ANTIALIAS_SHRINK,
        lambda: tf.image.resize(part, (size, size), method="area"),
        lambda: tf.image.resize(part, (size, size)),
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def adjust_color(x: tf.Tensor, color: tf.Tensor) -> tf.Tensor:
    """:func:`facegrid.data.augment.adjust_color` on a tensor: ``color`` = saturation, contrast, brightness."""
    pixels = tf.cast(x, tf.float32)
    gray = tf.tensordot(pixels, tf.constant(LUMA), axes=1)[..., None]
    pixels = gray + (pixels - gray) * color[0]
    mean = tf.reduce_mean(gray)
    pixels = (pixels - mean) * color[1] + mean + color[2]
    return tf.cast(tf.clip_by_value(pixels + 0.5, 0.0, 255.0), tf.uint8)


def planned_input(pixels: tf.Tensor, sample: dict[str, tf.Tensor], size: int, augment: bool) -> tf.Tensor:
    """The uint8 ``size x size`` input of one planned sample, from its upright decoded ``pixels``.

    The sample's ``region`` is cut and resized; when augmenting it is then
    flipped and coloured as planned (``flip``, and ``color``: saturation,
    contrast, brightness).
    """
    x = resize_region(pixels, sample["region"], size)
    if augment:
        x = tf.cond(sample["flip"], lambda: tf.reverse(x, axis=[1]), lambda: x)
        x = adjust_color(x, sample["color"])
    x.set_shape([size, size, 3])
    return x
