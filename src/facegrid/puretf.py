"""The input pipeline as TensorFlow ops only: FaceSequence's batches, with no Python per example.

:class:`~facegrid.tfdata.FacePipeline` plans each example (crop, DCT ratio,
target) in NumPy through ``tf.numpy_function``, which a tf.data service
cannot ship to its workers. Here everything the plan needs is decided when the
pipeline is built, in NumPy, by the very functions the other pipelines call
(:meth:`ExampleSource.order <facegrid.examples.ExampleSource.order>` and
:meth:`~facegrid.examples.ExampleSource.jitter`,
:func:`~facegrid.images.decoded_size`, :func:`~facegrid.images.pixel_region`),
and embedded in the graph as plain tensors: per image its path, orientation,
size and faces; per epoch and sample its image, DCT ratio, pixel region,
crop as taken, flip and colour (:meth:`PureTFPipeline.plans`). The
per-example map is then TensorFlow ops alone::

    plan(e) ─▶ sample ─┬─ read_file ─▶ decode_jpeg at 1/ratio ─▶ orient ─▶ crop + resize ─▶ flip ─▶ colour ─▶ x
                       └─ faces[image] ─▶ crop, flip, input pixels ─▶ tf_targets.encode ─▶ y
    ─▶ batch (per epoch: the last batch holds the remainder) ─▶ epochs back to back ─▶ prefetch

Pixels agree with FaceSequence up to rounding (the same DCT scale and
half-pixel bilinear filter); targets are equal bit for bit
(:mod:`facegrid.tf_targets`), grid or pyramid. What it does not do yet:
images TensorFlow cannot decode at a DCT scale (PNG, CMYK JPEG); the
constructor refuses those, naming what to use instead.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from facegrid import boxes as box_ops
from facegrid import tf_targets
from facegrid.examples import ExampleSource
from facegrid.images import DCT_RATIOS, FULL_IMAGE, covering_size, decoded_size, pixel_region
from facegrid.index import Index
from facegrid.tfdata import SourceBatches, adjust_color, orient, resize_region

log = logging.getLogger(__name__)


class PureTFPipeline(SourceBatches):
    """A WIDER-FACE-format dataset as a ``tf.data.Dataset`` of ``(images, grid targets)`` batches, TensorFlow ops only.

    Arguments and batches are those of :class:`~facegrid.tfdata.FacePipeline`:
    uint8 ``x [B, S, S, 3]``, float32 ``y [B, G, G, 5]``, every image once per
    epoch, epoch ``e`` in the order drawn from ``(seed, e)``, sample ``i`` of
    it jittered as drawn from ``(seed, e, i)``.

    Raises:
        ValueError: an image that is not a JPEG TensorFlow decodes to RGB
            itself (use FacePipeline for those).
        TypeError: a codec :mod:`facegrid.tf_targets` cannot encode.
        facegrid.images.ImageError: with ``on_bad_image="raise"``, the first
            image that cannot be used.
    """

    def __init__(self, annotations: str | os.PathLike | Index, images: str | os.PathLike, **options):
        super().__init__(annotations, images, **options)
        if not tf_targets.supports(self.source.builder.codec):
            codec = type(self.source.builder.codec).__name__
            raise TypeError(f"PureTFPipeline cannot encode {codec} targets; use FacePipeline")
        self._tables = _image_tables(self.source)

    def plans(self, first_epoch: int = 0, epochs: int = 1) -> tf.data.Dataset:
        """One element per epoch ``first_epoch ..``: a dict of ``[n, ...]`` tensors, a row per sample in serving order.

        ``image`` (int32), ``ratio`` (index into :data:`~facegrid.images.DCT_RATIOS`),
        ``region`` (int32 ``[4]``, decoded pixels), ``crop`` (float64 ``[4]``,
        as taken), ``cropped``, ``flip`` (bool) and ``color`` (float32 ``[3]``:
        saturation, contrast, brightness). Drawn in NumPy now, by the source
        FaceSequence draws from: NumPy's generators have no TensorFlow twin,
        so the epochs are a fixed number.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        return tf.data.Dataset.from_tensor_slices(
            {key: np.stack(column) for key, column in _epoch_plans(self.source, first_epoch, epochs).items()}
        )

    def dataset(self, first_epoch: int = 0, epochs: int = 1) -> tf.data.Dataset:
        """Epochs ``first_epoch .. first_epoch + epochs - 1`` back to back.

        Pass it to ``model.fit`` with ``steps_per_epoch=len(self)`` and the
        same ``epochs``.
        """
        return self.plans(first_epoch, epochs).flat_map(self.epoch).prefetch(tf.data.AUTOTUNE)

    def epoch(self, plan: dict[str, tf.Tensor]) -> tf.data.Dataset:
        """The batches of one epoch planned by ``plan`` (an element of :meth:`plans`)."""
        options = tf.data.Options()
        options.deterministic = self.deterministic
        return (
            tf.data.Dataset.from_tensor_slices(plan)
            .map(self.example, num_parallel_calls=self.parallel_calls)
            .batch(self.batch_size)
            .with_options(options)
        )

    def example(self, sample: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, y)`` of one planned sample (a row of an element of :meth:`plans`): TensorFlow ops only."""
        tables, image = self._tables, sample["image"]
        builder = self.source.builder
        size = builder.input_size
        data = tf.io.read_file(tf.gather(tables["path"], image))
        branches = [
            (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
            for r in DCT_RATIOS
        ]
        pixels = orient(tf.switch_case(sample["ratio"], branches), tf.gather(tables["orientation"], image))
        x = resize_region(pixels, sample["region"], size)
        if builder.augment:
            x = tf.cond(sample["flip"], lambda: tf.reverse(x, axis=[1]), lambda: x)
            x = adjust_color(x, sample["color"])
        x.set_shape([size, size, 3])

        faces = tables["faces"][tables["offsets"][image] : tables["offsets"][image + 1]]
        trained = tables["trained"][tables["offsets"][image] : tables["offsets"][image + 1]]
        move = dict(
            image_size=tf.gather(tables["size"], image), input_size=size,
            crop=sample["crop"], cropped=sample["cropped"], flip=sample["flip"],
        )
        targets = tf_targets.into_input(tf.boolean_mask(faces, trained), **move)
        ignored = tf_targets.into_input(tf.boolean_mask(faces, ~trained), **move)
        return x, tf_targets.encode(builder.codec, targets, ignored, size, size)


def _epoch_plans(source: ExampleSource, first_epoch: int, epochs: int) -> dict[str, list[np.ndarray]]:
    """Per epoch, per sample in serving order: what :meth:`PureTFPipeline.example` reads (see ``plans``).

    The decode plan of :class:`~facegrid.tfdata.FacePipeline`, from the same
    functions: the jitter drawn for the sample, the DCT ratio whose decode
    covers its crop, and the crop snapped to whole decoded pixels.
    """
    size = source.builder.input_size
    plans = {key: [] for key in ("image", "ratio", "region", "crop", "cropped", "flip", "color")}
    for epoch in range(first_epoch, first_epoch + epochs):
        order = source.order(epoch)
        rows = {key: [] for key in plans}
        for image in order.tolist():
            info, jitter = source.info(image), source.jitter(epoch, image)
            ratio, (width, height) = decoded_size(info, *covering_size(size, jitter.crop))
            region, taken = pixel_region(jitter.crop, width, height)
            rows["ratio"].append(DCT_RATIOS.index(ratio))
            rows["region"].append(region)
            rows["crop"].append(taken)
            rows["cropped"].append(taken != FULL_IMAGE)
            rows["flip"].append(jitter.flip)
            rows["color"].append((jitter.saturation, jitter.contrast, jitter.brightness))
        rows["image"] = order
        dtypes = dict(
            image=np.int32, ratio=np.int32, region=np.int32, crop=np.float64, cropped=bool, flip=bool, color=np.float32
        )
        for key, column in rows.items():
            plans[key].append(np.asarray(column, dtypes[key]))
    return plans


def _image_tables(source: ExampleSource) -> dict[str, tf.Tensor]:
    """What the per-example map reads per image or per face, as constant tensors."""
    index = source.index
    infos = [source.info(image) for image in range(len(index))]
    refused = [str(index.paths[image]) for image, info in enumerate(infos) if not info.jpeg]
    if refused:
        raise ValueError(
            f"{len(refused)} image(s) are not JPEGs TensorFlow decodes to RGB, e.g. {refused[0]}; use FacePipeline"
        )
    log.info("pure-TensorFlow pipeline: %d images, %d faces", len(index), index.num_faces)
    return {
        "path": tf.constant([str(source.path(image)) for image in range(len(index))]),
        "orientation": tf.constant([info.orientation for info in infos], tf.int32),
        "size": tf.constant([(info.width, info.height) for info in infos], tf.float32),
        "faces": tf.constant(box_ops.from_wider(index.boxes)),
        "offsets": tf.constant(index.offsets, tf.int64),
        "trained": tf.constant(source.trained),
    }
