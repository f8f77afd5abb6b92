"""Images a pipeline cannot use: stop with the path, or leave them out and say so.

Every pipeline serves the examples of :func:`usable_examples`: an
:class:`~facegrid.data.examples.ExampleSource` screened here, so this module
stands on :mod:`facegrid.data.examples` and never the other way round.
Every pipeline takes ``on_bad_image``:

* ``"raise"`` (the default): the first bad image stops everything with an
  :class:`~facegrid.core.errors.ImageError` naming its path and the reason.
* ``"skip"``: each bad image is logged once, counted, and left out; the
  count is reported at the end of every epoch. Batches keep their shape.

An image is bad when its annotation path leads outside the images folder, or
it is missing, empty, truncated, not an image, has more pixels than
:data:`facegrid.data.images.MAX_PIXELS`, or one of its face boxes lies wholly
outside it. :func:`screen` finds all of that (truncation only when asked to
decode every byte) before the first batch, so that no run dies in its 37th
epoch over one file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from facegrid.core.config import Config, check_policy
from facegrid.core.errors import ImageError, MissingImageError, PathError
from facegrid.core.paths import nearby_images_folder
from facegrid.data.examples import ExampleSource
from facegrid.data.images import ImageInfo, verify_image
from facegrid.wider.index import Index

log = logging.getLogger(__name__)


class BadImages:
    """The bad images met so far, each logged once when first met. Thread-safe."""

    def __init__(self):
        self._errors: dict[str, ImageError] = {}
        self._lock = threading.Lock()

    def add(self, error: ImageError) -> None:
        with self._lock:
            if error.path in self._errors:
                return
            self._errors[error.path] = error
        log.warning("skipped %s", error)

    def __contains__(self, path: str) -> bool:
        return str(path) in self._errors

    def __len__(self) -> int:
        return len(self._errors)

    @property
    def errors(self) -> list[ImageError]:
        return list(self._errors.values())

    def __getstate__(self):  # process workers get a copy without the lock
        return {"errors": dict(self._errors)}

    def __setstate__(self, state):
        self._errors = state["errors"]
        self._lock = threading.Lock()


def wholly_outside(xywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """Which ``x1 y1 w h`` boxes have an area but share no pixel with a ``width x height`` image.

    Zero-size rows are not faces (WIDER writes ``0 0 0 0`` for "no face").
    Such an image is bad here and an error of ``facegrid data check``: both
    take this one test, so that a dataset the check passes also trains.
    """
    x1, y1, w, h = xywh.T
    disjoint = (x1 >= width) | (y1 >= height) | (x1 + w <= 0) | (y1 + h <= 0)
    return disjoint & (w > 0) & (h > 0)


def screen(source: ExampleSource, *, verify: bool, workers: int = 8) -> dict[int, ImageError]:
    """The bad images of ``source``, by image index.

    Every distinct file is looked at once: its path (never opened if it
    escapes the images folder), its header (missing, empty, not an image, too
    many pixels) and its faces (a box wholly outside it). With ``verify``,
    every byte is decoded too (at the smallest DCT scale), which also finds
    truncated and corrupt files, at about a millisecond per image.
    """
    index = source.index
    names, first, file_of = np.unique(index.paths, return_index=True, return_inverse=True)

    def look(image: int) -> ImageError | tuple[int, int]:
        try:
            info = source.info(image)
            if verify:
                verify_image(source.path(image))
        except ImageError as error:
            return error
        return info.width, info.height

    with ThreadPoolExecutor(max_workers=workers) as pool:
        looks = list(pool.map(look, first.tolist()))
    bad: dict[int, ImageError] = {}
    for image in range(len(index)):
        found = looks[file_of[image]]
        if isinstance(found, ImageError):
            bad[image] = found
            continue
        error = outside_error(index, image, source.images / str(index.paths[image]), *found)
        if error is not None:
            bad[image] = error
    return bad


def outside_error(index, image: int, path, width: int, height: int) -> ImageError | None:
    """The error of image ``image`` of ``index`` (``path``, ``width x height``) if a face box lies wholly outside it."""
    rows = slice(index.offsets[image], index.offsets[image + 1])
    outside = np.flatnonzero(wholly_outside(index.boxes[rows], width, height))
    if not len(outside):
        return None
    line = int(index.face_lines[rows][outside[0]])
    box = index.boxes[rows][outside[0]].tolist()
    return ImageError(path, f"face box {box} ({index.where(line)}) lies outside the {width}x{height} image")


def none_usable(index, images, bad: dict[int, ImageError]) -> PathError:
    """The error for an index of which no image in ``images`` can be used, naming the folder meant if one is nearby."""
    reason = f"none of the {len(bad):,} images {index.source or 'the index'} lists can be used (first: {bad[0]})"
    if all(isinstance(error, MissingImageError) for error in bad.values()):
        nearby = nearby_images_folder(images, index.paths.tolist())
        if nearby is not None:
            reason += f"; they are under {nearby}"
    return PathError(images, reason)


def usable_examples(
    annotations: str | os.PathLike | Index,
    images: str | os.PathLike,
    *,
    on_bad_image: str = Config.on_bad_image,
    verify: bool = False,
    infos: Mapping[str, ImageInfo] | None = None,
    **settings,
) -> tuple[ExampleSource, BadImages]:
    """The examples of an annotation file less its bad images (see :func:`screen`), and the record of those left out.

    ``on_bad_image`` says whether a bad image raises or is left out, then
    recorded in the :class:`BadImages` returned, which the pipeline goes on
    adding to as it meets more. A packed set's images (``infos`` given) were
    screened when it was packed, so they are not screened again.

    Args:
        annotations, images, infos, **settings: as for
            :meth:`ExampleSource.create <facegrid.data.examples.ExampleSource.create>`.
        on_bad_image: ``"raise"`` or ``"skip"`` (see the module docstring).
        verify: decode every image once while screening (with it every byte
            is checked; without it, headers only).

    Raises:
        ImageError: with ``on_bad_image="raise"``, the first bad image in file order.
        facegrid.core.errors.PathError: no image at all can be used, whatever the
            policy (the images folder is most likely the wrong one).
    """
    source = ExampleSource.create(annotations, images, infos=infos, **settings)
    bad_images = BadImages()
    bad = {} if infos is not None else screen(source, verify=verify)
    if not bad:
        return source, bad_images
    if len(bad) == len(source):
        raise none_usable(source.index, source.images, bad)
    if check_policy(on_bad_image) == "raise":
        raise bad[min(bad)]
    for image in sorted(bad):
        bad_images.add(bad[image])
    log.warning("left out %d of %d images that cannot be used", len(bad), len(source))
    return source.without(bad), bad_images
