"""A packed set (:mod:`facegrid.data.tf.pack`) read back as an index of its images, for pipelines over its shards.

A pipeline over shards still plans every sample before it reads one (the
image order of an epoch aside, which the shards' own order and a shuffle
buffer decide): it needs every image's faces and header. Both are stored in
the shards beside the image bytes, so :func:`read_packed` reads them once,
front to back, and gives the :class:`~facegrid.wider.index.Index` the annotation
file would give less the images left out when packing: the same images in
the same order, so that the same seed draws the same jitter for each of them
as it does over the images folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegrid.core.errors import PathError
from facegrid.data.images import ImageInfo, probe_data
from facegrid.data.tf import records
from facegrid.data.tf.pack import MANIFEST, Manifest, read_manifest, shard_records
from facegrid.wider.index import ATTRIBUTES, Index

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PackedSet:
    """What a pipeline over a packed folder plans from.

    Attributes:
        folder: the packed folder.
        manifest: its ``manifest.json``.
        files: the shard files, in the manifest's order.
        index: its images in annotation order, with their faces (no line
            numbers: ``name_lines`` and ``face_lines`` are 0).
        positions: ``[M]`` int64, each index image's place in the annotation
            file (:data:`facegrid.data.tf.records.POSITION`), ascending.
        infos: each image's header, by path (from the stored size and
            orientation, and the bytes' own header for their kind).
    """

    folder: Path
    manifest: Manifest
    files: tuple[Path, ...]
    index: Index
    positions: np.ndarray
    infos: dict[str, ImageInfo]


def read_packed(folder: str | os.PathLike) -> PackedSet:
    """Read a packed folder's index: every shard once, front to back.

    Raises:
        facegrid.core.errors.PathError: no manifest (see
            :func:`facegrid.data.tf.pack.read_manifest`), a shard missing or damaged
            (:class:`facegrid.data.tf.pack.DamagedShardError`), an example that is not
            of :mod:`facegrid.data.tf.records`' layout, the same image packed twice, an
            image placed past the annotation file's, counts (a shard's, or
            the images and faces of all) that disagree with the manifest (run
            ``facegrid data check`` on it for the whole list), or not one
            example in the shards.
        facegrid.core.errors.ImageError: image bytes that are no image.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = tuple(folder / shard.file for shard in manifest.shards)
    found: list[records.Record] = []
    for path, shard in zip(files, manifest.shards):
        if not path.is_file():
            raise PathError(path, "missing: the manifest lists it")
        before = len(found)
        for k, serialized in enumerate(shard_records(path)):
            found.append(_parsed(serialized, f"{path}: example {k}"))
        if len(found) - before != shard.examples:
            raise PathError(path, f"holds {len(found) - before} examples, the manifest says {shard.examples}")
    found.sort(key=lambda record: record.position)
    positions = np.array([record.position for record in found], np.int64)
    counts = np.array([len(record.boxes) for record in found], np.int64)
    _check_whole(folder, manifest, found, positions, counts)
    boxes = np.concatenate([record.boxes for record in found]).reshape(-1, 4).astype(np.int32)
    index = Index(
        source=str(folder),
        paths=np.array([record.path for record in found], dtype=np.dtypes.StringDType()),
        name_lines=np.zeros(len(found), np.int32),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        boxes=boxes,
        attributes=np.concatenate([record.attributes for record in found])
        .reshape(-1, len(ATTRIBUTES))
        .astype(np.uint8),
        face_lines=np.zeros(len(boxes), np.int32),
    )
    infos = {record.path: _info(record, folder) for record in found}
    log.info("read packed set %s: %d images, %d faces in %d shards", folder, len(index), index.num_faces, len(files))
    return PackedSet(folder, manifest, files, index, positions, infos)


def _check_whole(
    folder: Path, manifest: Manifest, found: list[records.Record], positions: np.ndarray, counts: np.ndarray
) -> None:
    """Refuse packed images (in annotation order, with their ``positions`` and face ``counts``) that are not one set.

    Raises:
        facegrid.core.errors.PathError: no image; an image placed outside the
            annotation file's, or packed twice; totals that are not the manifest's.
    """
    if not found:
        raise PathError(folder, "holds no image: its shards hold no example")
    listed = manifest.images + manifest.skipped_images  # the annotation file's images
    if not 0 <= positions[0] <= positions[-1] < listed:
        outside = found[0] if positions[0] < 0 else found[-1]
        raise PathError(
            folder,
            f"image {outside.path} is placed at {outside.position}, outside the "
            f"{listed} images of the annotation file packed",
        )
    twice = np.flatnonzero(np.diff(positions) == 0)
    if len(twice):
        raise PathError(folder, f"image {found[twice[0]].path} (position {positions[twice[0]]}) is packed twice")
    if (len(found), counts.sum()) != (manifest.images, manifest.faces):
        raise PathError(
            folder / MANIFEST,
            f"says {manifest.images:,} images, {manifest.faces:,} faces; "
            f"its shards hold {len(found):,}, {counts.sum():,}",
        )


def _parsed(serialized: bytes, where: str) -> records.Record:
    try:
        return records.parse(serialized)
    except ValueError as error:
        raise PathError(where, f"not a facegrid example ({error})") from None


def _info(record: records.Record, folder: Path) -> ImageInfo:
    """The header of a packed image: its stored size and orientation, its kind from its bytes."""
    kind = probe_data(record.image, f"{folder} ({record.path})")
    return ImageInfo(record.width, record.height, record.orientation, kind.jpeg)
