"""One training example: an image file and its faces in, ``(x, y)`` out.

This is the per-image step shared by every input pipeline: decode at reduced
scale (cropped when augmenting), resize to the square network input, move the
boxes with the pixels, and encode them with the grid codec::

    image.jpg ──decode+crop+resize──▶ x uint8 [S, S, 3]
    boxes (original pixels) ──crop/flip──▶ GridCodec.encode ──▶ y float32 [G, G, 5]

:class:`ExampleSource` says which example each pipeline serves when: the
image order of every epoch and the seeded jitter of every sample. FaceSequence
and the tf.data pipeline both draw from it, so they serve the same examples.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegrid.augment import NO_JITTER, Augment, Jitter, adjust_color, crop_boxes, flip_boxes
from facegrid.bad_images import BadImages, leave_out_bad_images
from facegrid.grid import GridCodec
from facegrid.images import FULL_IMAGE, ImageInfo, load_crop, probe
from facegrid.index import FaceFilter, Index
from facegrid.paths import image_path
from facegrid.wider import read_annotations


@dataclass(frozen=True)
class ExampleBuilder:
    """Builds ``(x, y)`` for one image.

    Attributes:
        input_size: side ``S`` of the square network input.
        codec: the grid codec that lays out ``y``.
        augment: random transforms, or None for the plain image (validation).
    """

    input_size: int = 224
    codec: GridCodec = GridCodec(7)
    augment: Augment | None = None

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
            facegrid.images.ImageError: the image cannot be read.
        """
        return self.build(path, boxes, self.jitter(rng), ignore)

    def build(
        self, path: str | os.PathLike, boxes: np.ndarray, jitter: Jitter = NO_JITTER, ignore: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Build one example with the augmentation choices already drawn (see :meth:`__call__`)."""
        x, (width, height), crop = load_crop(path, self.input_size, jitter.crop)
        jitter = dataclasses.replace(jitter, crop=crop)
        if jitter.flip:
            x = x[:, ::-1]
        x = adjust_color(x, jitter)
        return np.ascontiguousarray(x), self.target(boxes, width, height, jitter, ignore)

    def jitter(self, rng: np.random.Generator | None) -> Jitter:
        """The augmentation choices for one sample (none when not augmenting)."""
        return self.augment.sample(rng) if self.augment else NO_JITTER

    def target(
        self,
        boxes: np.ndarray,
        width: int,
        height: int,
        jitter: Jitter = NO_JITTER,
        ignore: np.ndarray | None = None,
    ) -> np.ndarray:
        """The grid target ``y`` of a ``width x height`` image's faces after ``jitter``.

        Args:
            boxes: ``[N, 4]`` float32 xyxy faces in original-image pixels.
            width, height: the upright image's full-resolution size.
            jitter: the crop and flip applied to the pixels.
            ignore: ``[M, 4]`` faces left out of training (become ignore cells).
        """
        scale = np.array([width, height, width, height], dtype=np.float32)
        relative = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
        ignored = np.zeros((0, 4), np.float32) if ignore is None else np.asarray(ignore, np.float32).reshape(-1, 4) / scale
        if jitter.crop != FULL_IMAGE:
            relative, ignored = crop_boxes(relative, jitter.crop), crop_boxes(ignored, jitter.crop)
        if jitter.flip:
            relative, ignored = flip_boxes(relative), flip_boxes(ignored)
        size = self.input_size
        return self.codec.encode(relative * size, size, size, ignore=ignored * size)


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
    """

    def __init__(
        self,
        index: Index,
        images: str | os.PathLike,
        builder: ExampleBuilder,
        face_filter: FaceFilter = FaceFilter(),
        shuffle: bool = True,
        seed: int = 0,
    ):
        if not len(index):
            raise ValueError(f"{index.source or 'the index'} lists no images")
        self.index = index
        self.images = Path(images)
        self.builder = builder
        self.face_filter = face_filter
        self.targets = face_filter.mask(index)
        self.shuffle = shuffle
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}  # this epoch's and the last: drawn once, not per image
        self._vetted: dict[str, Path] = {}  # image paths already checked to stay inside the folder
        self._infos: dict[str, ImageInfo] = {}  # image headers already read
        self.bad_images = BadImages()  # images left out as unusable

    @classmethod
    def create(
        cls,
        annotations: str | os.PathLike | Index,
        images: str | os.PathLike,
        *,
        input_size: int = 224,
        grid_size: int = 7,
        shuffle: bool = True,
        augment: bool | Augment = False,
        seed: int = 0,
        face_filter: FaceFilter = FaceFilter(),
        on_bad_image: str = "raise",
        verify: bool = False,
    ) -> ExampleSource:
        """The usable examples of an annotation file (or an index already read), with the pipelines' arguments.

        Every image is screened first (:func:`facegrid.bad_images.screen`; with
        ``verify`` every byte decoded); ``on_bad_image`` says whether a bad one
        raises or is left out, recorded in :attr:`bad_images`.
        """
        builder = ExampleBuilder(
            input_size=input_size,
            codec=GridCodec(grid_size),
            augment=Augment() if augment is True else (augment or None),
        )
        index = annotations if isinstance(annotations, Index) else read_annotations(annotations)
        return leave_out_bad_images(cls(index, images, builder, face_filter, shuffle, seed), on_bad_image, verify=verify)

    def __len__(self) -> int:
        return len(self.index)

    def without(self, images) -> ExampleSource:
        """The same examples less the images ``images`` (indices), e.g. bad files."""
        keep = np.setdiff1d(np.arange(len(self.index)), np.fromiter(images, dtype=np.int64))
        rest = ExampleSource(self.index.take(keep), self.images, self.builder, self.face_filter, self.shuffle, self.seed)
        rest._vetted, rest._infos, rest.bad_images = self._vetted, self._infos, self.bad_images
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
            facegrid.images.ImageError: its annotation path leads outside the
                images folder (see :func:`facegrid.paths.image_path`).
        """
        name = str(self.index.paths[image])
        path = self._vetted.get(name)
        if path is None:
            path = self._vetted[name] = image_path(self.images, name)
        return path

    def info(self, image: int) -> ImageInfo:
        """Size, orientation and kind of image ``image``'s file, read from its header once.

        Raises:
            facegrid.images.ImageError: the path escapes the folder, or the file
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
        chosen = self.targets[self.index.offsets[image] : self.index.offsets[image + 1]]
        return boxes[chosen], boxes[~chosen]

    def jitter(self, epoch: int, image: int) -> Jitter:
        """The augmentation choices for image ``image`` in epoch ``epoch``."""
        if not self.builder.augment:
            return NO_JITTER
        return self.builder.jitter(np.random.default_rng([self.seed, int(epoch), int(image)]))

    def example(self, epoch: int, image: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of image ``image`` in epoch ``epoch``, decoded with NumPy.

        Raises:
            facegrid.images.ImageError: the image cannot be read.
        """
        faces, ignored = self.faces(image)
        return self.builder.build(self.path(image), faces, self.jitter(epoch, image), ignored)

    def target(self, epoch: int, image: int, width: int, height: int, jitter: Jitter | None = None) -> np.ndarray:
        """``y`` of image ``image`` in epoch ``epoch``, for a ``width x height`` image.

        ``jitter`` saves drawing the sample's jitter again when the caller has it.
        """
        faces, ignored = self.faces(image)
        jitter = self.jitter(epoch, image) if jitter is None else jitter
        return self.builder.target(faces, width, height, jitter, ignored)
