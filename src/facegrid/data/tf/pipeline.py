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

import logging
import os

import numpy as np
import tensorflow as tf

from facegrid.data.images import read_image
from facegrid.data.tf.batches import SourceBatches
from facegrid.data.tf.pixels import decode_jpeg_at, orient, planned_input
from facegrid.wider.index import Index

log = logging.getLogger(__name__)

#: Images planned (jitter, DCT ratio, target) per call into NumPy.
PLAN_CHUNK = 64


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
        facegrid.core.errors.ImageError: with ``on_bad_image="raise"``, the first
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
        self._orientation = np.array([info.orientation for info in infos], np.int32)
        self._jpeg = np.array([info.jpeg for info in infos], bool)
        self._files = tf.constant(files)
        log.info(
            "tf.data pipeline: %d images (%d files, %d decoded outside TensorFlow), batches of %d",
            len(index),
            len(files),
            int((~self._jpeg).sum()),
            self.batch_size,
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
        files = self._file_of[images]
        ratios = np.empty(len(images), np.int32)
        regions = np.empty((len(images), 4), np.int32)
        flips = np.empty(len(images), bool)
        colors = np.empty((len(images), 3), np.float32)
        sizes, jitters = [], []
        for k, image in enumerate(images.tolist()):
            ratios[k], regions[k], jitter = self.sample_plan(epoch, image)
            info = self.source.info(image)
            jitters.append(jitter)
            sizes.append((info.width, info.height))
            flips[k] = jitter.flip
            colors[k] = jitter.saturation, jitter.contrast, jitter.brightness
        ys = self.source.targets(images.tolist(), sizes, jitters)
        return files, ratios, regions, flips, colors, ys

    # ------------------------------------------------------------------ pixels: TensorFlow

    def _example(self, plan: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        builder = self.source.builder
        pixels = self._decode(plan["file"], plan["ratio"])
        return planned_input(pixels, plan, builder.input_size, builder.augment is not None), plan["y"]

    def _decode(self, file: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
        """Upright uint8 RGB pixels of one file, JPEGs at DCT ratio ``DCT_RATIOS[ratio]`` (:func:`decode_jpeg_at`)."""
        path = tf.gather(self._files, file)

        def tensorflow_jpeg():
            pixels = decode_jpeg_at(tf.io.read_file(path), ratio)
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
