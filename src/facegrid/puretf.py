"""The input pipeline as TensorFlow ops only: FaceSequence's batches, with no Python per example.

:class:`~facegrid.tfdata.FacePipeline` plans each example (crop, DCT ratio,
target) in NumPy through ``tf.numpy_function``, which a tf.data service
cannot ship to its workers. Here everything the plan needs is decided when the
pipeline is built, in NumPy, by the very functions the other pipelines call
(:func:`~facegrid.images.decoded_size`, :func:`~facegrid.images.pixel_region`,
:meth:`ExampleSource.order <facegrid.examples.ExampleSource.order>`), and
embedded in the graph as plain tensors: per image its path, DCT ratio, pixel
region, orientation, size and faces; per epoch its image order. The
per-example map is then TensorFlow ops alone::

    order(e) ──▶ image i ──▶ read_file ─▶ decode_jpeg at 1/ratio ─▶ orient ─▶ crop + bilinear resize ─▶ x
                         └──▶ faces[i] ─▶ input pixels ─▶ tf_targets.encode ─▶ y
    ─▶ batch (per epoch: the last batch holds the remainder) ─▶ epochs back to back ─▶ prefetch

Pixels agree with FaceSequence up to rounding (the same DCT scale and
half-pixel bilinear filter); targets are equal bit for bit
(:mod:`facegrid.tf_targets`). What it does not do yet: augmentation, the
pyramid layout, and images TensorFlow cannot decode at a DCT scale (PNG,
CMYK JPEG); the constructor refuses those, naming what to use instead.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import tensorflow as tf

from facegrid import boxes as box_ops
from facegrid import tf_targets
from facegrid.examples import ExampleSource
from facegrid.images import DCT_RATIOS, FULL_IMAGE, covering_size, decoded_size, pixel_region
from facegrid.index import Index
from facegrid.tfdata import orient, resize_region

log = logging.getLogger(__name__)


class PureTFPipeline:
    """A WIDER-FACE-format dataset as a ``tf.data.Dataset`` of ``(images, grid targets)`` batches, TensorFlow ops only.

    Arguments and batches are those of :class:`~facegrid.tfdata.FacePipeline`:
    uint8 ``x [B, S, S, 3]``, float32 ``y [B, G, G, 5]``, every image once per
    epoch, epoch ``e`` in the order drawn from ``(seed, e)``.

    Raises:
        ValueError: ``augment`` asked for, or an image that is not a JPEG
            TensorFlow decodes to RGB itself (use FacePipeline for those).
        TypeError: a codec :mod:`facegrid.tf_targets` cannot encode.
        facegrid.images.ImageError: with ``on_bad_image="raise"``, the first
            image that cannot be used.
    """

    def __init__(
        self,
        annotations: str | os.PathLike | Index,
        images: str | os.PathLike,
        *,
        batch_size: int = 16,
        parallel_calls: int = tf.data.AUTOTUNE,
        deterministic: bool = True,
        verify: bool = True,
        **settings,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source = ExampleSource.create(annotations, images, verify=verify, **settings)
        builder = source.builder
        if builder.augment:
            raise ValueError("PureTFPipeline does not augment; use FacePipeline for augmented data")
        if not tf_targets.supports(builder.codec):
            raise TypeError(f"PureTFPipeline cannot encode {type(builder.codec).__name__} targets; use FacePipeline")
        self.batch_size = batch_size
        self.parallel_calls = parallel_calls
        self.deterministic = deterministic
        self._tables = _image_tables(source)

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.source) / self.batch_size)

    @property
    def index(self) -> Index:
        return self.source.index

    def orders(self, first_epoch: int = 0, epochs: int = 1) -> tf.data.Dataset:
        """Image indices of epochs ``first_epoch ..``, one int32 ``[n]`` order per epoch (:meth:`ExampleSource.order`).

        The orders are drawn in NumPy now and travel as one constant
        ``[epochs, n]`` tensor: NumPy's generator has no TensorFlow twin.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        orders = np.stack([self.source.order(e) for e in range(first_epoch, first_epoch + epochs)]).astype(np.int32)
        return tf.data.Dataset.from_tensor_slices(orders)

    def dataset(self, first_epoch: int = 0, epochs: int = 1) -> tf.data.Dataset:
        """Epochs ``first_epoch .. first_epoch + epochs - 1`` back to back.

        Pass it to ``model.fit`` with ``steps_per_epoch=len(self)`` and the
        same ``epochs``. The count is fixed because each epoch's order is data
        computed here (:meth:`orders`).
        """
        return self.orders(first_epoch, epochs).flat_map(self.epoch).prefetch(tf.data.AUTOTUNE)

    def epoch(self, order: tf.Tensor) -> tf.data.Dataset:
        """The batches of one epoch whose image order is ``order`` (int32 ``[n]``)."""
        options = tf.data.Options()
        options.deterministic = self.deterministic
        return (
            tf.data.Dataset.from_tensor_slices(order)
            .map(self.example, num_parallel_calls=self.parallel_calls)
            .batch(self.batch_size)
            .with_options(options)
        )

    def example(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, y)`` of image ``image`` (an int32 index into the index): TensorFlow ops only."""
        tables = self._tables
        size = self.source.builder.input_size
        data = tf.io.read_file(tf.gather(tables["path"], image))
        branches = [
            (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
            for r in DCT_RATIOS
        ]
        pixels = tf.switch_case(tf.gather(tables["ratio"], image), branches)
        pixels = orient(pixels, tf.gather(tables["orientation"], image))
        x = resize_region(pixels, tf.gather(tables["region"], image), size)
        x.set_shape([size, size, 3])

        faces = tables["faces"][tables["offsets"][image] : tables["offsets"][image + 1]]
        trained = tables["trained"][tables["offsets"][image] : tables["offsets"][image + 1]]
        faces = tf_targets.into_input(faces, tf.gather(tables["size"], image), size)
        y = tf_targets.encode(
            self.source.builder.codec, tf.boolean_mask(faces, trained), tf.boolean_mask(faces, ~trained), size, size
        )
        return x, y


def _image_tables(source: ExampleSource) -> dict[str, tf.Tensor]:
    """Everything the per-example map reads, per image or per face, as constant tensors.

    Each image's DCT ratio and pixel region come from the functions
    FaceSequence decodes with, so both pipelines decode the same pixels.
    """
    size = source.builder.input_size
    index = source.index
    infos = [source.info(image) for image in range(len(index))]
    refused = [str(index.paths[image]) for image, info in enumerate(infos) if not info.jpeg]
    if refused:
        raise ValueError(
            f"{len(refused)} image(s) are not JPEGs TensorFlow decodes to RGB, e.g. {refused[0]}; use FacePipeline"
        )
    ratios, regions = [], []
    for info in infos:
        ratio, (width, height) = decoded_size(info, *covering_size(size, FULL_IMAGE))
        ratios.append(DCT_RATIOS.index(ratio))
        regions.append(pixel_region(FULL_IMAGE, width, height)[0])
    log.info("pure-TensorFlow pipeline: %d images, %d faces", len(index), index.num_faces)
    return {
        "path": tf.constant([str(source.path(image)) for image in range(len(index))]),
        "ratio": tf.constant(ratios, tf.int32),
        "region": tf.constant(regions, tf.int32),
        "orientation": tf.constant([info.orientation for info in infos], tf.int32),
        "size": tf.constant([(info.width, info.height) for info in infos], tf.float32),
        "faces": tf.constant(box_ops.from_wider(index.boxes)),
        "offsets": tf.constant(index.offsets, tf.int64),
        "trained": tf.constant(source.trained),
    }
