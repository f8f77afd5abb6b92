"""FaceSequence: a WIDER-FACE-format dataset as a ``keras.utils.PyDataset``.

The "Sequence dataset" way of feeding Keras: the dataset knows its length,
builds each batch on demand from disk (so datasets larger than memory
stream), and draws a new seeded image order every epoch. Pass it straight to
``model.fit``; ``workers`` and ``use_multiprocessing`` parallelise batch
building in threads or processes. Prefer threads: JPEG decoding and resizing
run outside the GIL. Worker processes hand their batches to the trainer in
shared memory (:mod:`facegrid.data.shared_batches`) rather than through a pipe, yet
Keras starts them afresh every epoch and they cost more system time
(``benchmarks/pipeline.py`` measures both).
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from facegrid.core.config import Config, check_policy
from facegrid.core.errors import ImageError
from facegrid.data import shared_batches
from facegrid.data.augment import Jitter
from facegrid.data.examples import ExampleBuilder
from facegrid.data.screening import usable_examples
from facegrid.wider.index import Index


class FaceSequence(keras.utils.PyDataset):
    """Batches of ``(images, grid targets)`` read from a WIDER-FACE-format dataset.

    One sample per image, carrying all of that image's faces; every image
    appears exactly once per epoch, the last batch holding the remainder.
    With ``shuffle=True`` the image order of epoch ``e`` is a permutation drawn
    from ``(seed, e)``, so runs repeat exactly and each epoch differs. Keras
    calls :meth:`on_epoch_end` after every epoch (workers, threads or
    processes, then see the new order) and once more before the first, after
    reading a batch or two to learn the output signature: inside ``model.fit``
    the first trained epoch is served in the order of ``e = 1``.

    Args:
        annotations, images: the dataset, as for :meth:`ExampleSource.create
            <facegrid.data.examples.ExampleSource.create>`.
        batch_size: images per batch.
        workers, use_multiprocessing, max_queue_size: as for
            ``keras.utils.PyDataset``. Skipped images met by worker processes
            are logged there and not counted here.
        on_bad_image: ``"raise"`` or ``"skip"`` (see :mod:`facegrid.data.screening`).
        **settings: what the examples are (``input_size``, ``codec``,
            ``shuffle``, ``augment``, ``seed``, ``face_filter``): the keyword
            arguments of :meth:`ExampleSource.create
            <facegrid.data.examples.ExampleSource.create>`, which documents
            them. Every image's header is read when the sequence is built
            (:func:`facegrid.data.screening.usable_examples`), so missing and
            unusable files show up before the first batch; truncated ones
            when they are decoded.

    Attributes:
        bad_images: the images left out as unusable so far
            (:class:`~facegrid.data.screening.BadImages`).

    Each item is ``(x, y)``:

    * ``x``: uint8 ``[B, S, S, 3]`` RGB. The model maps it to ``[-1, 1]``
      itself (``facegrid.model.network.PIXEL_SCALE`` and ``PIXEL_OFFSET``), which
      keeps batches four times smaller than float32 on their way from workers.
    * ``y``: float32 ``[B, G, G, 5]`` (or ``[B, N, 5]`` for a pyramid codec),
      laid out as :mod:`facegrid.core.codec` describes (1 face, 0 background, -1 ignore).

    Example:
        >>> train = FaceSequence("wider_face_split/wider_face_train_bbx_gt.txt",
        ...                      "WIDER_train/images", augment=True, workers=2)  # doctest: +SKIP
        >>> model.fit(train, epochs=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        annotations: str | os.PathLike | Index,
        images: str | os.PathLike,
        *,
        batch_size: int = Config.batch_size,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        on_bad_image: str = Config.on_bad_image,
        **settings,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.on_bad_image = check_policy(on_bad_image)
        self.source, self.bad_images = usable_examples(
            annotations, images, on_bad_image=on_bad_image, verify=False, **settings
        )
        self.batch_size = batch_size
        self.epoch = 0
        self._pid = os.getpid()
        if self.use_multiprocessing and shared_batches.AVAILABLE:
            shared_batches.prepare_parent()

    @property
    def index(self) -> Index:
        return self.source.index

    @property
    def builder(self) -> ExampleBuilder:
        return self.source.builder

    @property
    def order(self) -> np.ndarray:
        """Image indices in the order this epoch serves them."""
        return self.source.order(self.epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range for {len(self)} batches")
        epoch = self.epoch
        positions = range(i * self.batch_size, min((i + 1) * self.batch_size, len(self.source)))
        size = self.builder.input_size
        x = np.empty((len(positions), size, size, 3), dtype=np.uint8)
        images, sizes, jitters = [], [], []
        for k, position in enumerate(positions):
            image, original, jitter = self._pixels(epoch, position, x[k])
            images.append(image)
            sizes.append(original)
            jitters.append(jitter)
        batch = (x, self.source.targets(images, sizes, jitters))
        if os.getpid() == self._pid or not shared_batches.AVAILABLE:
            return batch
        return shared_batches.SharedBatch(batch)  # built in a worker process: cross to the trainer in shared memory

    def _pixels(self, epoch: int, position: int, out: np.ndarray) -> tuple[int, tuple[int, int], Jitter]:
        """Decode the image at ``position`` of the epoch's order into ``out``; when
        skipping, a bad image gives way to the next readable one in that order.

        Returns the image served, its upright size and its jitter (crop as taken).
        """
        order = self.source.order(epoch)
        for step in range(len(order)):
            image = int(order[(position + step) % len(order)])
            try:
                _, original, jitter = self.source.pixels(epoch, image, out)
                return image, original, jitter
            except ImageError as error:
                if self.on_bad_image == "raise":
                    raise
                self.bad_images.add(error)
        raise ImageError(self.source.images, "no readable image left in the dataset")

    def on_epoch_end(self) -> None:
        """Advance to the next epoch (and so to its image order)."""
        self.epoch += 1
