"""The input pipeline as tf.data: FaceSequence's examples, decoded by TensorFlow's own ops.

It serves the same examples as :class:`~facegrid.data.sequence.FaceSequence` (the
same :class:`~facegrid.data.examples.ExampleSource`: image order per epoch, jitter
per sample, grid targets from the same codec), but the pixels are read,
decoded, cropped and resized by TensorFlow kernels in tf.data's thread pool,
with no Python and no GIL on the way::

    epoch e ──order(e)──▶ image i ─┬─ plan (NumPy, microseconds): jitter, DCT ratio, y
                                   └─ read_file ─▶ decode_jpeg at 1/ratio ─▶ orient
                                      ─▶ crop + bilinear resize ─▶ flip ─▶ colour ─▶ x
    ─▶ batch (per epoch: the last batch holds the remainder) ─▶ epochs back to back ─▶ prefetch

Pixels agree with FaceSequence up to rounding: JPEGs are decoded at the same
DCT scale (1/1, 1/2, 1/4 or 1/8) and resized with the same half-pixel bilinear
filter.
Files TensorFlow cannot decode that way (PNG, CMYK JPEG, other formats) are
read by :func:`facegrid.data.images.read_image` instead.

Each image's size, orientation and kind are read once, from its first bytes,
when the pipeline is built. An epoch is a plain dataset of image indices, so
the same graph can be sharded, fed by a tf.data service or distributed by a
``tf.distribute`` strategy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os

import numpy as np
import tensorflow as tf

from facegrid.core.config import Config
from facegrid.data.augment import LUMA
from facegrid.data.geometry import ANTIALIAS_SHRINK, covering_size, pixel_region
from facegrid.data.images import DCT_RATIOS, decoded_size, read_image
from facegrid.data.screening import usable_examples
from facegrid.wider.index import Index

log = logging.getLogger(__name__)

#: Images planned (jitter, DCT ratio, target) per call into NumPy.
PLAN_CHUNK = 64

class SourceBatches:
    """What the tf.data pipelines share: an :class:`~facegrid.data.examples.ExampleSource` served in batches.

    Args:
        annotations, images, settings: as for :func:`facegrid.data.screening.usable_examples`.
        batch_size: images a batch; the last batch of an epoch holds the remainder.
        parallel_calls: examples prepared at once.
        deterministic: batches in the same order every run (tf.data's ``deterministic``).
        verify: decode every image once up front, so that a bad one is met before training.

    Attributes:
        source: the examples served, less the images that cannot be used.
        bad_images: those left out (:class:`~facegrid.data.screening.BadImages`).
    """

    def __init__(
        self,
        annotations: str | os.PathLike | Index,
        images: str | os.PathLike,
        *,
        batch_size: int = Config.batch_size,
        parallel_calls: int = tf.data.AUTOTUNE,
        deterministic: bool = True,
        verify: bool = True,
        **settings,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source, self.bad_images = usable_examples(annotations, images, verify=verify, **settings)
        self.batch_size = batch_size
        self.parallel_calls = parallel_calls
        self.deterministic = deterministic

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.source) / self.batch_size)

    @property
    def index(self) -> Index:
        return self.source.index


class FacePipeline(SourceBatches):
    """A WIDER-FACE-format dataset as a ``tf.data.Dataset`` of ``(images, grid targets)`` batches.

    Arguments mean what they mean for :class:`~facegrid.data.sequence.FaceSequence`,
    and the batches are the same: uint8 ``x [B, S, S, 3]``, float32
    ``y [B, G, G, 5]``, every image once per epoch, epoch ``e`` in the order
    drawn from ``(seed, e)``.

    Args:
        annotations, images: the dataset, as for :meth:`ExampleSource.create
            <facegrid.data.examples.ExampleSource.create>`.
        batch_size: images per batch.
        parallel_calls: images decoded at once (``tf.data.AUTOTUNE``: as many as helps).
        deterministic: batches in exactly the order planned, even when images
            finish decoding out of order (costs a little speed when off).
        verify: decode every image once (at the smallest DCT scale, about a
            millisecond each) when the pipeline is built, so that a truncated
            or corrupt file is found then, named, and never stops training.
            Without it only headers are read up front.
        **settings: what the examples are (``input_size``, ``codec``,
            ``shuffle``, ``augment``, ``seed``, ``face_filter``), and
            ``on_bad_image``: the keyword arguments of
            :func:`facegrid.data.screening.usable_examples`.

    Raises:
        facegrid.data.images.ImageError: with ``on_bad_image="raise"``, the first
            image that cannot be used.

    Example:
        >>> pipeline = FacePipeline("wider_face_train_bbx_gt.txt", "WIDER_train/images",
        ...                         augment=True)  # doctest: +SKIP
        >>> model.fit(pipeline.dataset(), steps_per_epoch=len(pipeline), epochs=10)  # doctest: +SKIP
    """

    def __init__(self, annotations: str | os.PathLike | Index, images: str | os.PathLike, **options):
        super().__init__(annotations, images, **options)
        index = self.source.index
        _, first, file_of = np.unique(index.paths, return_index=True, return_inverse=True)
        self._file_of = file_of.astype(np.int32)
        files = [str(self.source.path(image)) for image in first.tolist()]
        infos = [self.source.info(image) for image in first.tolist()]  # read while screening
        self._infos = infos
        self._orientation = np.array([info.orientation for info in infos], np.int32)
        self._jpeg = np.array([info.jpeg for info in infos], bool)
        self._files = tf.constant(files)
        log.info(
            "tf.data pipeline: %d images (%d files, %d decoded outside TensorFlow), batches of %d",
            len(index), len(files), int((~self._jpeg).sum()), self.batch_size,
        )

    def dataset(self, first_epoch: int = 0, epochs: int | None = None) -> tf.data.Dataset:
        """Epochs ``first_epoch, first_epoch + 1, ...`` back to back (endless when ``epochs`` is None).

        Pass it to ``model.fit`` with ``steps_per_epoch=len(self)``: Keras then
        keeps one iterator across epochs, and each epoch gets its own order.
        """
        last = first_epoch + epochs if epochs is not None else np.iinfo(np.int64).max
        return tf.data.Dataset.range(first_epoch, last).flat_map(self.epoch).prefetch(tf.data.AUTOTUNE)

    def epoch(self, epoch: int | tf.Tensor) -> tf.data.Dataset:
        """The batches of one epoch, in the order of :meth:`ExampleSource.order`."""
        epoch = tf.cast(epoch, tf.int64)
        options = tf.data.Options()
        options.deterministic = self.deterministic
        return (
            tf.data.Dataset.range(0, len(self.source), PLAN_CHUNK)
            .map(lambda start: self._plan(epoch, start))
            .prefetch(1)  # plan the next chunk while this one decodes
            .unbatch()
            .map(self._example, num_parallel_calls=self.parallel_calls)
            .batch(self.batch_size)
            .with_options(options)
        )

    # ------------------------------------------------------------------ plan: NumPy, a chunk at a time

    def _plan(self, epoch: tf.Tensor, start: tf.Tensor) -> dict[str, tf.Tensor]:
        names = ("file", "ratio", "region", "flip", "color", "y")
        dtypes = (tf.int32, tf.int32, tf.int32, tf.bool, tf.float32, tf.float32)
        planned = tf.numpy_function(self._plan_chunk, [epoch, start], dtypes, stateful=False)
        builder = self.source.builder
        shapes = ([None], [None], [None, 4], [None], [None, 3], [None, *builder.target_shape])
        for tensor, shape in zip(planned, shapes):
            tensor.set_shape(shape)
        return dict(zip(names, planned))

    def _plan_chunk(self, epoch: np.int64, start: np.int64):
        """For images ``start ..`` of the epoch's order: file, DCT ratio, pixel region, flip, colour, target."""
        images = self.source.order(epoch)[start : start + PLAN_CHUNK]
        size = self.source.builder.input_size
        files = self._file_of[images]
        ratios = np.empty(len(images), np.int32)
        regions = np.empty((len(images), 4), np.int32)
        flips = np.empty(len(images), bool)
        colors = np.empty((len(images), 3), np.float32)
        sizes, jitters = [], []
        for k, (image, file) in enumerate(zip(images.tolist(), files.tolist())):
            info = self._infos[file]
            jitter = self.source.jitter(epoch, image)
            ratio, (width, height) = decoded_size(info, *covering_size(size, jitter.crop))
            regions[k], taken = pixel_region(jitter.crop, width, height)
            jitters.append(dataclasses.replace(jitter, crop=taken))
            sizes.append((info.width, info.height))
            ratios[k] = DCT_RATIOS.index(ratio)
            flips[k] = jitter.flip
            colors[k] = jitter.saturation, jitter.contrast, jitter.brightness
        ys = self.source.targets(images.tolist(), sizes, jitters)
        return files, ratios, regions, flips, colors, ys

    # ------------------------------------------------------------------ pixels: TensorFlow

    def _example(self, plan: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        builder = self.source.builder
        size = builder.input_size
        x = resize_region(self._decode(plan["file"], plan["ratio"]), plan["region"], size)
        if builder.augment:
            x = tf.cond(plan["flip"], lambda: tf.reverse(x, axis=[1]), lambda: x)
            x = adjust_color(x, plan["color"])
        x.set_shape([size, size, 3])
        return x, plan["y"]

    def _decode(self, file: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
        """Upright uint8 RGB pixels of one file, JPEGs at DCT ratio ``DCT_RATIOS[ratio]``."""
        path = tf.gather(self._files, file)

        def tensorflow_jpeg():
            data = tf.io.read_file(path)
            branches = [
                (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
                for r in DCT_RATIOS
            ]
            pixels = tf.switch_case(ratio, branches)
            if (self._orientation != 1).any():
                pixels = orient(pixels, tf.gather(self._orientation, file))
            return pixels

        def facegrid_reader():
            pixels = tf.numpy_function(lambda p: read_image(p.decode()), [path], tf.uint8, stateful=False)
            pixels.set_shape([None, None, 3])
            return pixels

        if self._jpeg.all():
            return tensorflow_jpeg()
        if not self._jpeg.any():
            return facegrid_reader()
        return tf.cond(tf.gather(self._jpeg, file), tensorflow_jpeg, facegrid_reader)


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
    """:func:`facegrid.data.augment.adjust_color` on a TensorFlow tensor: ``color`` = saturation, contrast, brightness."""
    pixels = tf.cast(x, tf.float32)
    gray = tf.tensordot(pixels, tf.constant(LUMA), axes=1)[..., None]
    pixels = gray + (pixels - gray) * color[0]
    mean = tf.reduce_mean(gray)
    pixels = (pixels - mean) * color[1] + mean + color[2]
    return tf.cast(tf.clip_by_value(pixels + 0.5, 0.0, 255.0), tf.uint8)
