"""The input pipeline as TensorFlow ops only: FaceSequence's batches, with no Python per example.

:class:`~facegrid.data.tf.pipeline.FacePipeline` plans each example (crop, DCT ratio,
target) in NumPy through ``tf.numpy_function``, which a tf.data service
cannot ship to its workers. Here everything the plan needs is decided when the
pipeline is built, in NumPy, by the very functions the other pipelines call
(:meth:`ExampleSource.order <facegrid.data.examples.ExampleSource.order>` and
:meth:`SourceBatches.sample_plan <facegrid.data.tf.batches.SourceBatches.sample_plan>`),
and embedded in the graph as plain tensors: per image its path, orientation,
size and faces; per epoch and sample its image, DCT ratio, pixel region,
crop as taken, flip and colour (:meth:`PureTFPipeline.plans`). The
per-example map is then TensorFlow ops alone (:meth:`PlannedBatches.build`)::

    plan(e) ─▶ sample ─┬─ read_file ─▶ decode_jpeg at 1/ratio ─▶ orient ─▶ crop + resize ─▶ flip ─▶ colour ─▶ x
                       └─ faces[image] ─▶ crop, flip, input pixels ─▶ tf_targets.encode ─▶ y
    ─▶ batch (per epoch: the last batch holds the remainder) ─▶ epochs back to back ─▶ prefetch

Pixels agree with FaceSequence up to rounding (the same DCT scale and
half-pixel bilinear filter); targets are equal bit for bit
(:mod:`facegrid.data.tf.targets`), grid or pyramid. What it does not do yet:
images TensorFlow cannot decode at a DCT scale (PNG, CMYK JPEG); the
constructor refuses those, naming what to use instead.

:class:`PackedPipeline` builds the same examples from a packed set's shards
(:mod:`facegrid.data.tf.pack`): the image bytes come from the records instead of the
files, and the plan is looked up by the image's place in the annotation
file, so that each image gives the example it gives over the folder while
the shards' order and a shuffle buffer decide the epoch's order. Both
pipelines build on :class:`PlannedBatches`, which holds what they share.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from facegrid.core import boxes as box_ops
from facegrid.core.errors import PathError
from facegrid.data.examples import ExampleSource
from facegrid.data.geometry import FULL_IMAGE
from facegrid.data.tf import records
from facegrid.data.tf import targets as tf_targets
from facegrid.data.tf.batches import SourceBatches
from facegrid.data.tf.pixels import decode_jpeg_at, orient, planned_input
from facegrid.data.tf.split import even_batches
from facegrid.wider.index import Index

if TYPE_CHECKING:
    from facegrid.data.tf.packed import PackedSet

log = logging.getLogger(__name__)


class PlannedBatches(SourceBatches):
    """What the pure-TensorFlow pipelines share: every sample planned in NumPy up front, built by TensorFlow ops alone.

    Args:
        annotations, images, **options: as for
            :class:`~facegrid.data.tf.batches.SourceBatches`.
        files: the images are read from their files (not from a packed set's records).
        instead: what to use instead, told when an image is not a JPEG TensorFlow decodes to RGB itself.

    Raises:
        facegrid.core.errors.PathError: an image that is not a JPEG TensorFlow
            decodes to RGB itself.
        TypeError: a codec :mod:`facegrid.data.tf.targets` cannot encode.
    """

    def __init__(
        self,
        annotations: str | os.PathLike | Index,
        images: str | os.PathLike,
        *,
        files: bool,
        instead: str,
        **options,
    ):
        super().__init__(annotations, images, **options)
        self._tables = _image_tables(self.source, files, instead)

    def build(self, data: tf.Tensor, sample: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, y)`` of one planned sample whose image file's bytes are ``data``."""
        tables, image = self._tables, sample["image"]
        builder = self.source.builder
        size = builder.input_size
        pixels = orient(decode_jpeg_at(data, sample["ratio"]), tf.gather(tables["orientation"], image))
        x = planned_input(pixels, sample, size, builder.augment is not None)

        faces = tables["faces"][tables["offsets"][image] : tables["offsets"][image + 1]]
        trained = tables["trained"][tables["offsets"][image] : tables["offsets"][image + 1]]
        move = dict(
            image_size=tf.gather(tables["size"], image),
            input_size=size,
            crop=sample["crop"],
            cropped=sample["cropped"],
            flip=sample["flip"],
        )
        targets = tf_targets.into_input(tf.boolean_mask(faces, trained), **move)
        ignored = tf_targets.into_input(tf.boolean_mask(faces, ~trained), **move)
        return x, tf_targets.encode(builder.codec, targets, ignored, size, size)

    def _epoch_plans(self, first_epoch: int, epochs: int, by_image: bool = False) -> dict[str, list[np.ndarray]]:
        """Per epoch, per sample in serving order (or, ``by_image``, per image): what :meth:`build` reads.

        Each sample's row is its :meth:`~facegrid.data.tf.batches.SourceBatches.sample_plan`:
        the DCT ratio whose decode covers its crop, the crop snapped to whole
        decoded pixels, and its jitter, crop as taken.
        """
        plans = {key: [] for key in ("image", "ratio", "region", "crop", "cropped", "flip", "color")}
        for epoch in range(first_epoch, first_epoch + epochs):
            order = np.arange(len(self.source)) if by_image else self.source.order(epoch)
            rows = {key: [] for key in plans}
            for image in order.tolist():
                ratio, region, jitter = self.sample_plan(epoch, image)
                rows["ratio"].append(ratio)
                rows["region"].append(region)
                rows["crop"].append(jitter.crop)
                rows["cropped"].append(jitter.crop != FULL_IMAGE)
                rows["flip"].append(jitter.flip)
                rows["color"].append((jitter.saturation, jitter.contrast, jitter.brightness))
            rows["image"] = order
            dtypes = dict(
                image=np.int32,
                ratio=np.int32,
                region=np.int32,
                crop=np.float64,
                cropped=bool,
                flip=bool,
                color=np.float32,
            )
            for key, column in rows.items():
                plans[key].append(np.asarray(column, dtypes[key]))
        return plans


class PureTFPipeline(PlannedBatches):
    """A WIDER-FACE-format dataset as a ``tf.data.Dataset`` of ``(images, targets)`` batches, TensorFlow ops only.

    Arguments and batches are those of :class:`~facegrid.data.tf.pipeline.FacePipeline`:
    uint8 ``x [B, S, S, 3]``, float32 ``y [B, G, G, 5]`` (a pyramid's
    ``[B, N, 5]``), every image once per
    epoch, epoch ``e`` in the order drawn from ``(seed, e)``, sample ``i`` of
    it jittered as drawn from ``(seed, e, i)``.

    Raises:
        facegrid.core.errors.PathError: an image that is not a JPEG TensorFlow
            decodes to RGB itself (use FacePipeline for those).
        TypeError: a codec :mod:`facegrid.data.tf.targets` cannot encode.
        facegrid.core.errors.ImageError: with ``on_bad_image="raise"``, the first
            image that cannot be used.
    """

    def __init__(self, annotations: str | os.PathLike | Index, images: str | os.PathLike, **options):
        super().__init__(annotations, images, files=True, instead="use FacePipeline (pipeline='tfdata')", **options)

    def plans(self, first_epoch: int = 0, epochs: int = 1) -> tf.data.Dataset:
        """One element per epoch ``first_epoch ..``: a dict of ``[n, ...]`` tensors, a row per sample in serving order.

        ``image`` (int32), ``ratio`` (index into :data:`~facegrid.data.images.DCT_RATIOS`),
        ``region`` (int32 ``[4]``, decoded pixels), ``crop`` (float64 ``[4]``,
        as taken), ``cropped``, ``flip`` (bool) and ``color`` (float32 ``[3]``:
        saturation, contrast, brightness). Drawn in NumPy now, by the source
        FaceSequence draws from: NumPy's generators have no TensorFlow twin,
        so the epochs are a fixed number.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        return tf.data.Dataset.from_tensor_slices(
            {key: np.stack(column) for key, column in self._epoch_plans(first_epoch, epochs).items()}
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

    def batch_of(self, epoch: int) -> Callable[[tf.Tensor], tf.data.Dataset]:
        """``k ->`` epoch ``epoch``'s ``k``-th batch alone, as a dataset: the unit a tf.data service worker builds.

        Batch ``k`` of :meth:`dataset`'s epoch ``epoch``, pixels and targets
        (see :func:`facegrid.scale.service.shared_epoch`).
        """
        plan = {key: tf.constant(column) for key, [column] in self._epoch_plans(epoch, 1).items()}
        size = self.batch_size
        options = tf.data.Options()
        options.deterministic = self.deterministic

        def batch(k: tf.Tensor) -> tf.data.Dataset:
            rows = {key: column[k * size : (k + 1) * size] for key, column in plan.items()}
            return (
                tf.data.Dataset.from_tensor_slices(rows)
                .map(self.example, num_parallel_calls=self.parallel_calls)
                .batch(size)
                .with_options(options)
            )

        return batch

    def example(self, sample: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, y)`` of one planned sample (a row of an element of :meth:`plans`): TensorFlow ops only."""
        return self.build(tf.io.read_file(tf.gather(self._tables["path"], sample["image"])), sample)


def _image_tables(source: ExampleSource, files: bool, instead: str) -> dict[str, tf.Tensor]:
    """What the per-example map reads per image or per face, as constant tensors (with ``files``, the image files).

    Raises:
        TypeError: targets :mod:`facegrid.data.tf.targets` cannot encode.
        facegrid.core.errors.PathError: an image that is not a JPEG TensorFlow
            decodes to RGB itself, naming the folder (``source.images``), the
            first such image, and what to do ``instead``.
    """
    if not tf_targets.supports(source.builder.codec):
        codec = type(source.builder.codec).__name__
        raise TypeError(f"the pure-TensorFlow pipelines cannot encode {codec} targets; use FacePipeline")
    index = source.index
    infos = [source.info(image) for image in range(len(index))]
    refused = [str(index.paths[image]) for image, info in enumerate(infos) if not info.jpeg]
    if refused:
        raise PathError(
            source.images,
            f"{len(refused)} image(s) are not JPEGs TensorFlow decodes to RGB, e.g. "
            f"{refused[0]}: the pure-TensorFlow pipelines read JPEGs only; {instead}",
        )
    log.info("pure-TensorFlow pipeline: %d images, %d faces", len(index), index.num_faces)
    paths = {"path": tf.constant([str(source.path(image)) for image in range(len(index))])} if files else {}
    return {
        **paths,
        "orientation": tf.constant([info.orientation for info in infos], tf.int32),
        "size": tf.constant([(info.width, info.height) for info in infos], tf.float32),
        "faces": tf.constant(box_ops.from_wider(index.boxes)),
        "offsets": tf.constant(index.offsets, tf.int64),
        "trained": tf.constant(source.trained),
    }


#: Examples a packed pipeline shuffles among by default: at WIDER's ~100 KB an image, about 100 MB of bytes.
SHUFFLE_BUFFER = 1024

#: Shards read at once, one example from each in turn.
CYCLE_LENGTH = 4

#: The last entry of the seed an epoch's shard order is drawn from; image indices (the jitter's) never reach it.
_SHARD_ORDER_STREAM = 2**40


class PackedPipeline(PlannedBatches):
    """A packed set (``facegrid data pack``) as a ``tf.data.Dataset`` of ``(images, targets)`` batches, TF ops only.

    Every image is served once an epoch. The shards are read front to back,
    :data:`CYCLE_LENGTH` at a time, in an order drawn from ``(seed, epoch)``,
    and their examples mixed in a shuffle buffer seeded from the same draw,
    so an epoch's order is not FaceSequence's; each image's sample is,
    though: the jitter of image ``i`` in epoch ``e`` is drawn from
    ``(seed, e, i)`` exactly as over the images folder, so that an image
    gives the ``(x, y)`` it gives there (:func:`facegrid.data.tf.packed.read_packed`
    keeps the annotation file's numbering). With ``shuffle=False`` the shards
    are read in order and nothing is shuffled.

    Split across ``num_input_pipelines`` readers (hosts, tf.data service
    workers), pipeline ``input_pipeline_id`` reads the shards whose number
    it is modulo their count, so the readers of one epoch together serve
    every image exactly once; give each the same seed. tf.data's auto-sharding
    by file (``AutoShardPolicy.FILE``) splits the shards the same way, with an
    epoch's shards dealt anew each epoch.

    Args:
        folder: the packed folder, or a packed set already read (:func:`~facegrid.data.tf.packed.read_packed`).
        batch_size, parallel_calls, deterministic: as for
            :class:`~facegrid.data.tf.pipeline.FacePipeline`.
        shuffle_buffer: examples shuffled among (see :data:`SHUFFLE_BUFFER`).
        num_input_pipelines, input_pipeline_id: this reader's share (see above;
            ``tf.distribute.InputContext`` names them so).
        **settings: ``input_size``, ``codec``, ``shuffle``, ``augment``,
            ``seed``, ``face_filter``, as for
            :meth:`ExampleSource.create <facegrid.data.examples.ExampleSource.create>`.

    Raises:
        ValueError: a share that does not exist, or more readers than shards.
        facegrid.core.errors.PathError: a folder that is no packed set, holds no
            image, or whose shards disagree with its manifest
            (:func:`facegrid.data.tf.packed.read_packed`); an image TensorFlow cannot
            decode at a DCT scale.
    """

    def __init__(
        self,
        folder: str | os.PathLike | PackedSet,
        *,
        shuffle_buffer: int = SHUFFLE_BUFFER,
        num_input_pipelines: int = 1,
        input_pipeline_id: int = 0,
        **options,
    ):
        from facegrid.data.tf.packed import PackedSet, read_packed

        packed = folder if isinstance(folder, PackedSet) else read_packed(folder)
        shards = len(packed.files)
        if not 1 <= num_input_pipelines <= shards:
            raise ValueError(f"num_input_pipelines must be 1 to the {shards} shard(s), got {num_input_pipelines}")
        if not 0 <= input_pipeline_id < num_input_pipelines:
            raise ValueError(f"input_pipeline_id must be 0 to {num_input_pipelines - 1}, got {input_pipeline_id}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        super().__init__(
            packed.index,
            packed.folder,
            infos=packed.infos,
            verify=False,
            files=False,
            instead="train from the images folder with FacePipeline (pipeline='tfdata'), or pack JPEGs only",
            **options,
        )
        self.packed = packed
        self.shuffle_buffer = shuffle_buffer
        self._options = options
        self._shards = np.arange(input_pipeline_id, shards, num_input_pipelines)
        self._examples = sum(packed.manifest.shards[k].examples for k in self._shards.tolist())
        image_at = np.full(int(packed.positions[-1]) + 1, -1, np.int32)
        image_at[packed.positions] = np.arange(len(packed.positions), dtype=np.int32)
        self._image_at = tf.constant(image_at)

    @property
    def examples(self) -> int:
        """Images an epoch of this pipeline's shards holds."""
        return self._examples

    def __len__(self) -> int:
        """Batches per epoch of this pipeline's shards."""
        return math.ceil(self._examples / self.batch_size)

    def share(self, readers: int, reader: int) -> PackedPipeline:
        """Reader ``reader`` of ``readers`` of this packed set, with its settings.

        One worker's part of a run over several workers, each reading its own
        shards (see the class's docstring).
        """
        return PackedPipeline(
            self.packed,  # read once
            shuffle_buffer=self.shuffle_buffer,
            num_input_pipelines=readers,
            input_pipeline_id=reader,
            **self._options,
        )

    def dataset(self, first_epoch: int = 0, epochs: int = 1, batches: int | None = None) -> tf.data.Dataset:
        """Epochs ``first_epoch .. first_epoch + epochs - 1`` back to back (pass ``steps_per_epoch=len(self)``).

        With ``batches``, each epoch comes in exactly that many batches, the
        even parts of this pipeline's images (:func:`~facegrid.data.tf.split.even_batches`),
        so that readers whose shards hold different numbers of images take
        the same number of steps an epoch and every image is still served.

        Raises:
            ValueError: no epoch, or more ``batches`` than images.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        epoch_datasets = [self.epoch(epoch, batches) for epoch in range(first_epoch, first_epoch + epochs)]
        dataset = epoch_datasets[0]
        for more in epoch_datasets[1:]:
            dataset = dataset.concatenate(more)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def epoch(self, epoch: int, batches: int | None = None) -> tf.data.Dataset:
        """The batches of epoch ``epoch``: of ``batch_size`` images, or ``batches`` of them as even as may be."""
        columns = self._epoch_plans(epoch, 1, by_image=True)
        plan = {key: tf.constant(column) for key, [column] in columns.items()}
        options = tf.data.Options()
        options.deterministic = self.deterministic

        def example(serialized):
            data, position = records.parse_image(serialized)
            image = tf.gather(self._image_at, position)
            return self.build(data, {key: tf.gather(column, image) for key, column in plan.items()})

        examples = self.records(epoch).map(example, num_parallel_calls=self.parallel_calls)
        if batches is None:
            return examples.batch(self.batch_size).with_options(options)
        return even_batches(examples, self._examples, batches).with_options(options)

    def positions(self, epoch: int) -> tf.data.Dataset:
        """The annotation-file positions of the images epoch ``epoch`` serves, in serving order."""
        return self.records(epoch).map(lambda serialized: records.parse_image(serialized)[1])

    def records(self, epoch: int) -> tf.data.Dataset:
        """The serialized examples of epoch ``epoch`` in serving order: this pipeline's shards interleaved, shuffled."""
        shards = self._shards
        seed = None
        if self.source.shuffle:
            rng = np.random.default_rng([self.source.seed, int(epoch), _SHARD_ORDER_STREAM])
            shards, seed = rng.permutation(shards), int(rng.integers(2**62))
        files = tf.data.Dataset.from_tensor_slices([str(self.packed.files[k]) for k in shards.tolist()])
        serialized = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(CYCLE_LENGTH, len(shards)),
            block_length=1,
            num_parallel_calls=min(CYCLE_LENGTH, len(shards)),
            deterministic=True,
        )
        if seed is not None:
            serialized = serialized.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        return serialized
