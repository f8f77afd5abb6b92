"""One training example: an image file and its faces in, ``(x, y)`` out.

This is the per-image step shared by every input pipeline: decode at reduced
scale (cropped when augmenting), resize to the square network input, move the
boxes with the pixels, and encode them with the grid codec::

    image.jpg ──decode+crop+resize──▶ x uint8 [S, S, 3]
    boxes (original pixels) ──crop/flip──▶ codec.encode_batch ──▶ y float32 [G, G, 5] (or [N, 5])

:class:`ExampleSource` says which example each pipeline serves when: the
image order of every epoch and the seeded jitter of every sample. FaceSequence
and the tf.data pipeline both draw from it, so they serve the same examples.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegrid.core.codec import GridCodec, PyramidCodec, codec_for
from facegrid.core.config import Config
from facegrid.core.paths import image_path
from facegrid.data.augment import (
    NO_JITTER,
    Augment,
    Jitter,
    adjust_color,
    crop_boxes,
    flip_boxes,
)
from facegrid.data.geometry import FULL_IMAGE, load_crop
from facegrid.data.images import ImageInfo, probe
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import FaceFilter, Index

#: The target layout of the default settings (:attr:`Config.codec <facegrid.core.config.Config.codec>`).
_DEFAULT_CODEC = codec_for(Config.strides, Config.grid_size)


@dataclass(frozen=True)
class ExampleBuilder:
    """Builds ``(x, y)`` for one image.

    Attributes:
        input_size: side ``S`` of the square network input.
        codec: the codec that lays out ``y``: a :class:`~facegrid.core.codec.GridCodec`
            (``y [G, G, 5]``) or a :class:`~facegrid.core.codec.PyramidCodec` (``y [N, 5]``).
        augment: random transforms, or None for the plain image (validation).
    """

    input_size: int = Config.input_size
    codec: GridCodec | PyramidCodec = _DEFAULT_CODEC
    augment: Augment | None = None

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one ``y``: ``(G, G, 5)``, or ``(N, 5)`` for a pyramid over the ``S x S`` input."""
        return self.codec.target_shape(self.input_size, self.input_size)

    def __call__(
        self,
        path: str | os.PathLike,
        boxes: np.ndarray,
        rng: np.random.Generator | None = None,
        ignore: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Build one example.

        Args:
            path: the image file.
            boxes: ``[N, 4]`` float32 xyxy faces in original-image pixels.
            rng: source of the augmentation's randomness; required when augmenting.
            ignore: ``[M, 4]`` faces left out of training, in original-image
                pixels; they move with the pixels and become ignore cells.

        Returns:
            ``x`` uint8 ``[S, S, 3]`` and ``y`` float32 ``[G, G, 5]``.

        Raises:
            facegrid.core.errors.ImageError: the image cannot be read.
        """
        jitter = NO_JITTER
        if self.augment:
            info = probe(path)
            jitter = self.jitter(rng, info.width / info.height)
        return self.build(path, boxes, jitter, ignore)

    def build(
        self, path: str | os.PathLike, boxes: np.ndarray, jitter: Jitter = NO_JITTER, ignore: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Build one example with the augmentation choices already drawn (see :meth:`__call__`)."""
        x, size, jitter = self.pixels(path, jitter)
        return x, self.targets([boxes], [size], [jitter], [ignore])[0]

    def jitter(self, rng: np.random.Generator | None, aspect: float = 1.0) -> Jitter:
        """The augmentation choices for one sample of an image ``aspect`` times as wide as high (none unaugmented)."""
        return self.augment.sample(rng, aspect) if self.augment else NO_JITTER

    def pixels(
        self, path: str | os.PathLike, jitter: Jitter = NO_JITTER, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, tuple[int, int], Jitter]:
        """``x`` of one image: decoded, cropped, resized, flipped and coloured as ``jitter`` says.

        Args:
            path: the image file.
            jitter: the augmentation choices for this sample.
            out: a uint8 ``[S, S, 3]`` array to write ``x`` into (a slot of a batch).

        Returns:
            ``(x, (width, height), jitter)``: the pixels, the image's upright
            full-resolution size, and the jitter with its crop as actually
            taken (snapped to whole decoded pixels), which the boxes must follow.

        Raises:
            facegrid.core.errors.ImageError: the image cannot be read.
        """
        x, size, crop = load_crop(path, self.input_size, jitter.crop)
        jitter = dataclasses.replace(jitter, crop=crop)
        if jitter.flip:
            x = x[:, ::-1]
        x = adjust_color(x, jitter)
        if out is None:
            return np.ascontiguousarray(x), size, jitter
        out[...] = x
        return out, size, jitter

    def targets(
        self,
        boxes: list[np.ndarray],
        sizes: list[tuple[int, int]],
        jitters: list[Jitter],
        ignore: list[np.ndarray | None],
    ) -> np.ndarray:
        """The grid targets ``y`` ``[B, G, G, 5]`` of ``B`` images' faces, each after its jitter.

        One vectorised pass for a whole batch: a quarter of the cost of
        encoding image by image, and less time holding the GIL that the
        decoding threads share.

        Args:
            boxes: per image, ``[N, 4]`` float32 xyxy faces in original-image pixels.
            sizes: per image, its upright full-resolution ``(width, height)``.
            jitters: per image, the crop (as taken) and flip applied to its pixels.
            ignore: per image, ``[M, 4]`` faces left out of training (they
                become ignore cells), or None.
        """
        size = self.input_size
        moves = _Moves(sizes, jitters)
        faces, owners = moves.into_input(boxes, size)
        regions, region_owners = moves.into_input(ignore, size)
        return self.codec.encode_batch(faces, owners, len(sizes), size, size, regions, region_owners)


class _Moves:
    """How each image of a batch moves its boxes: its size, crop (as taken) and flip, as arrays."""

    def __init__(self, sizes: list[tuple[int, int]], jitters: list[Jitter]):
        self.scale = np.tile(np.asarray(sizes, dtype=np.float32).reshape(-1, 2), 2)  # per image: w, h, w, h
        self.crops = np.array([j.crop for j in jitters], dtype=np.float64).reshape(-1, 4)
        self.cropped = np.array([j.crop != FULL_IMAGE for j in jitters], dtype=bool)
        self.flipped = np.array([j.flip for j in jitters], dtype=bool)

    def into_input(self, boxes: list[np.ndarray | None], size: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes of each image (original pixels) in ``size x size`` network-input pixels, and each one's image."""
        boxes = [np.zeros((0, 4), np.float32) if b is None else np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        owners = np.repeat(np.arange(len(boxes)), [len(b) for b in boxes])
        if not len(owners):
            return np.zeros((0, 4), np.float32), owners
        relative = np.concatenate(boxes) / self.scale[owners]
        cropped = self.cropped[owners]
        if cropped.any():
            moved, kept = crop_boxes(relative[cropped], self.crops[owners[cropped]])
            relative = np.concatenate([relative[~cropped], moved])
            owners = np.concatenate([owners[~cropped], owners[cropped][kept]])
        flipped = self.flipped[owners]
        if flipped.any():
            relative[flipped] = flip_boxes(relative[flipped])
        return relative * size, owners


class ExampleSource:
    """An index's images as training examples, epoch by epoch.

    Every image is one example carrying all of its faces. With ``shuffle``
    the image order of epoch ``e`` is a permutation drawn from ``(seed, e)``;
    the jitter of image ``i`` in epoch ``e`` comes from ``(seed, e, i)``. Runs
    therefore repeat exactly, every epoch differs, and any pipeline (or any
    worker) can build any example on its own.

    Args:
        index: the images and faces.
        images: the folder the index's paths are relative to.
        builder: turns an image and its faces into ``(x, y)``.
        face_filter: which faces are targets; the others become ignore regions.
        shuffle: a new image order each epoch; else file order.
        seed: seeds orders and jitter.
        infos: image headers already read, by path (a packed set stores them
            beside each image's bytes); the others are read on first use.
    """

    def __init__(
        self,
        index: Index,
        images: str | os.PathLike,
        builder: ExampleBuilder,
        face_filter: FaceFilter = FaceFilter(),
        shuffle: bool = True,
        seed: int = 0,
        infos: Mapping[str, ImageInfo] | None = None,
    ):
        if not len(index):
            raise ValueError(f"{index.source or 'the index'} lists no images")
        self.index = index
        self.images = Path(images)
        self.builder = builder
        self.face_filter = face_filter
        self.trained = face_filter.mask(index)  # per face: a target (else an ignore region)
        self.shuffle = shuffle
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}  # this epoch's and the last: drawn once, not per image
        self._vetted: dict[str, Path] = {}  # image paths already checked to stay inside the folder
        self._infos: dict[str, ImageInfo] = dict(infos or {})  # image headers already read

    @classmethod
    def create(
        cls,
        annotations: str | os.PathLike | Index,
        images: str | os.PathLike,
        *,
        input_size: int = Config.input_size,
        codec: GridCodec | PyramidCodec = _DEFAULT_CODEC,
        shuffle: bool = True,
        augment: bool | Augment = False,
        seed: int = 0,
        face_filter: FaceFilter = FaceFilter(),
        infos: Mapping[str, ImageInfo] | None = None,
    ) -> ExampleSource:
        """The examples of an annotation file (or an index already read), as the pipelines' settings say.

        The pipelines (:class:`~facegrid.data.sequence.FaceSequence`,
        :mod:`facegrid.data.tf`) pass their settings on here through
        :func:`facegrid.data.screening.usable_examples`, which leaves out
        the images that cannot be used.

        Args:
            annotations: a ``wider_face_*_bbx_gt.txt`` file, or an
                :class:`~facegrid.wider.index.Index` already read.
            images: the folder the annotation paths are relative to
                (``WIDER_train/images``).
            input_size: side ``S`` of the square network input.
            codec: the target layout (default: :class:`~facegrid.core.config.Config`'s, a single grid).
            shuffle: draw a new image order each epoch; else file order.
            augment: ``True`` for the default :class:`~facegrid.data.augment.Augment`,
                an ``Augment`` to choose its settings, or ``False``. Keep it
                off for validation data.
            seed: seeds the image order and the augmentation.
            face_filter: which annotated faces become targets
                (:class:`~facegrid.wider.index.FaceFilter`; by default invalid and
                zero-size faces are left out). Faces left out become ignore
                regions, neither face nor background.
            infos: every image's header, by path, from a packed set
                (:func:`facegrid.data.tf.packed.read_packed`), which stores them.
        """
        builder = ExampleBuilder(
            input_size=input_size,
            codec=codec,
            augment=Augment() if augment is True else (augment or None),
        )
        index = annotations if isinstance(annotations, Index) else read_annotations(annotations)
        return cls(index, images, builder, face_filter, shuffle, seed, infos)

    def __len__(self) -> int:
        return len(self.index)

    def without(self, images) -> ExampleSource:
        """The same examples less the images ``images`` (indices), e.g. bad files."""
        keep = np.setdiff1d(np.arange(len(self.index)), np.fromiter(images, dtype=np.int64))
        rest = ExampleSource(
            self.index.take(keep), self.images, self.builder, self.face_filter, self.shuffle, self.seed
        )
        rest._vetted, rest._infos = self._vetted, self._infos
        return rest

    def order(self, epoch: int) -> np.ndarray:
        """Image indices in the order epoch ``epoch`` serves them (read-only)."""
        epoch = int(epoch)
        order = self._orders.get(epoch)
        if order is None:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.index))
            else:
                order = np.arange(len(self.index))
            order.flags.writeable = False
            self._orders = {epoch: order, **{e: o for e, o in self._orders.items() if e == epoch - 1}}
        return order

    def path(self, image: int) -> Path:
        """The file of image ``image``.

        Each distinct path is checked once (symbolic links resolved), then remembered.

        Raises:
            facegrid.core.errors.ImageError: its annotation path leads outside the
                images folder (see :func:`facegrid.core.paths.image_path`).
        """
        name = str(self.index.paths[image])
        path = self._vetted.get(name)
        if path is None:
            path = self._vetted[name] = image_path(self.images, name)
        return path

    def info(self, image: int) -> ImageInfo:
        """Size, orientation and kind of image ``image``'s file, read from its header once.

        Raises:
            facegrid.core.errors.ImageError: the path escapes the folder, or the file
                is missing, empty or not an image.
        """
        name = str(self.index.paths[image])
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = probe(self.path(image))
        return info

    def faces(self, image: int) -> tuple[np.ndarray, np.ndarray]:
        """``(targets, ignored)``: float32 xyxy boxes of image ``image``'s faces, split by the filter."""
        boxes = self.index.image_boxes(image)
        chosen = self.trained[self.index.offsets[image] : self.index.offsets[image + 1]]
        return boxes[chosen], boxes[~chosen]

    def jitter(self, epoch: int, image: int) -> Jitter:
        """The augmentation choices for image ``image`` in epoch ``epoch``."""
        if not self.builder.augment:
            return NO_JITTER
        info = self.info(image)
        return self.builder.jitter(np.random.default_rng([self.seed, int(epoch), int(image)]), info.width / info.height)

    def pixels(
        self, epoch: int, image: int, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, tuple[int, int], Jitter]:
        """``x`` of image ``image`` in epoch ``epoch``, with what its targets need (see :meth:`ExampleBuilder.pixels`).

        Raises:
            facegrid.core.errors.ImageError: the image cannot be read.
        """
        return self.builder.pixels(self.path(image), self.jitter(epoch, image), out)

    def targets(self, images, sizes: list[tuple[int, int]], jitters: list[Jitter]) -> np.ndarray:
        """``y`` ``[B, G, G, 5]`` of images ``images``, of upright sizes ``sizes``, after ``jitters``.

        The jitters are those the pixels were made with, crops as taken
        (see :meth:`pixels`).
        """
        faces = [self.faces(image) for image in images]
        return self.builder.targets([f for f, _ in faces], sizes, jitters, [i for _, i in faces])
