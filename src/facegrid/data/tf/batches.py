"""What every tf.data pipeline stands on: the screened examples, served in batches, each sample planned alike.

:class:`~facegrid.data.tf.pipeline.FacePipeline` plans its samples a chunk
at a time while it serves them, the pure-TensorFlow pipelines
(:mod:`facegrid.data.tf.puretf`) all of them when they are built; both ask
:meth:`SourceBatches.sample_plan`, so that they decode and cut every sample
as the other does, and as :func:`facegrid.data.geometry.load_crop` does for
FaceSequence.
"""

from __future__ import annotations

import dataclasses
import math
import os

import tensorflow as tf

from facegrid.core.config import Config
from facegrid.data.augment import Jitter
from facegrid.data.geometry import covering_size, pixel_region
from facegrid.data.images import DCT_RATIOS, decoded_size
from facegrid.data.screening import usable_examples
from facegrid.wider.index import Index


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

    def sample_plan(self, epoch: int, image: int) -> tuple[int, tuple[int, int, int, int], Jitter]:
        """How image ``image`` is decoded and cut in epoch ``epoch``, known before a byte of it is read.

        Returns:
            ``(ratio, region, jitter)``: the index in
            :data:`~facegrid.data.images.DCT_RATIOS` of the DCT ratio whose
            decode covers the jitter's crop at the input size, the crop snapped
            to whole pixels of that decode (``[x1, y1, x2, y2)``), and the jitter
            drawn for the sample with its crop as taken, which the boxes follow.
        """
        jitter = self.source.jitter(epoch, image)
        ratio, (width, height) = decoded_size(
            self.source.info(image), *covering_size(self.source.builder.input_size, jitter.crop)
        )
        region, taken = pixel_region(jitter.crop, width, height)
        return DCT_RATIOS.index(ratio), region, dataclasses.replace(jitter, crop=taken)
