"""Dataset checks: what is wrong, or merely odd, in an annotation file and its images.

Findings come in two severities:

* **errors** lose data if ignored: an image the file lists that is missing
  or cannot be decoded, or whose face box lies wholly outside it (training
  refuses such an image, see :func:`facegrid.data.screening.wholly_outside`);
* **warnings** are quirks that facegrid handles but a user should know about:
  faces flagged invalid, zero-size boxes, boxes reaching outside their image,
  images listed twice, the tolerated file-format deviations.

Each kind is counted, and the first few places are kept as examples
(``FILE:LINE`` or an image path). When not one listed image is in the images
folder, the report says so, and names the subfolder or parent that holds them
if there is one (:func:`facegrid.core.paths.nearby_images_folder`).

:func:`check_packed` checks a folder :mod:`facegrid.data.tf.pack` wrote instead: each
shard against the manifest (present, sha256, example count), every example
parsed, and every image's bytes decoded to the size stored beside them. Only
it loads TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegrid.core.errors import (
    ImageError,
    MissingImageError,
    PathError,
    RefusedPathError,
)
from facegrid.core.paths import escape_reason, image_path, nearby_images_folder
from facegrid.data.images import verify_data, verify_image
from facegrid.data.screening import wholly_outside
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import Index

log = logging.getLogger(__name__)

EXAMPLES_PER_KIND = 5

#: The report's kind for each type of image error; any other is an unreadable image.
_IMAGE_ERROR_KINDS = {MissingImageError: "missing_image", RefusedPathError: "refused_path"}


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`.

    Attributes:
        no_image_found: images were opened and not one of them exists.
        nearby_images: then, the subfolder or parent of the images folder
            that holds them, if one does.
    """

    annotations: str
    images_dir: str | None
    images: int = 0
    faces: int = 0
    no_image_found: bool = False
    nearby_images: str | None = None
    warnings: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, severity: Counter, kind: str, where: str) -> None:
        severity[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_PER_KIND:
            self.examples[kind].append(where)

    @property
    def ok(self) -> bool:
        """True when nothing would lose data."""
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "annotations": self.annotations,
            "images_dir": self.images_dir,
            "images": self.images,
            "faces": self.faces,
            "no_image_found": self.no_image_found,
            "nearby_images": self.nearby_images,
            "warnings": dict(sorted(self.warnings.items())),
            "errors": dict(sorted(self.errors.items())),
            "examples": {kind: list(places) for kind, places in sorted(self.examples.items())},
        }


def _check_annotations(index: Index, report: CheckReport) -> None:
    for note in index.notes:
        report.add(report.warnings, note.kind, f"{index.where(note.line)}: {note.message}")
    lines = index.face_lines
    for k in np.flatnonzero(index.attribute("invalid") == 1).tolist():
        report.add(report.warnings, "invalid_face", index.where(int(lines[k])))
    for k in np.flatnonzero((index.boxes[:, 2:] <= 0).any(axis=1)).tolist():
        w, h = index.boxes[k, 2:].tolist()
        report.add(report.warnings, "zero_size_box", f"{index.where(int(lines[k]))}: w={w} h={h}")
    for image, name in enumerate(index.paths.tolist()):
        reason = escape_reason(name)
        if reason is not None:
            report.add(
                report.errors, "refused_path", f"{index.where(int(index.name_lines[image]))}: {name!r}: {reason}"
            )
    _, first, counts = np.unique(index.paths, return_index=True, return_counts=True)
    for k in np.flatnonzero(counts > 1).tolist():
        image = int(first[k])
        report.add(
            report.warnings, "duplicate_image", f"{index.where(int(index.name_lines[image]))}: {index.paths[image]}"
        )


def _open_image(images: Path, name: str) -> tuple[int, int] | ImageError:
    try:
        return verify_image(image_path(images, name))
    except ImageError as error:
        return error


def _check_images(index: Index, images: Path, report: CheckReport, workers: int, progress: bool) -> None:
    names = index.paths.tolist()
    paths = [images / name for name in names]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_open_image, [images] * len(names), names)
        for i, result in enumerate(tqdm(results, total=len(paths), desc="images", unit="img", disable=not progress)):
            where = f"{paths[i]} ({index.where(int(index.name_lines[i]))})"
            if isinstance(result, ImageError):
                if isinstance(result, RefusedPathError) and escape_reason(names[i]) is not None:
                    continue  # already reported from the annotation file alone
                kind = _IMAGE_ERROR_KINDS.get(type(result), "unreadable_image")
                report.add(report.errors, kind, where if kind == "missing_image" else f"{where}: {result.reason}")
                continue
            width, height = result
            xywh = index.boxes[index.offsets[i] : index.offsets[i + 1]]
            lost = wholly_outside(xywh, width, height)
            reaching = (xywh[:, 0] < 0) | (xywh[:, 1] < 0)
            reaching |= (xywh[:, 0] + xywh[:, 2] > width) | (xywh[:, 1] + xywh[:, 3] > height)
            for k in np.flatnonzero(lost).tolist():
                line = int(index.face_lines[index.offsets[i] + k])
                report.add(
                    report.errors,
                    "box_wholly_outside_image",
                    f"{paths[i]} ({index.where(line)}): box {xywh[k].tolist()} lies wholly outside the "
                    f"{width}x{height} image",
                )
            for k in np.flatnonzero(reaching & ~lost).tolist():
                line = int(index.face_lines[index.offsets[i] + k])
                report.add(
                    report.warnings,
                    "box_outside_image",
                    f"{index.where(line)}: box {xywh[k].tolist()} vs image {width}x{height}",
                )
    if len(index) and report.errors["missing_image"] == len(index):
        report.no_image_found = True
        nearby = nearby_images_folder(images, names)
        report.nearby_images = None if nearby is None else str(nearby)


def check_dataset(
    annotations: str | os.PathLike,
    images: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Check an annotation file and, optionally, every image it lists.

    Args:
        annotations: the WIDER-FACE-format annotation file.
        images: the folder its paths are relative to; when given, every image
            is decoded (at the smallest DCT scale, which still reads all its data).
        workers: threads decoding images; defaults to the number of CPUs.
        progress: show a progress bar on stderr while images are opened.

    Returns:
        The report. Problems in the data are reported, never raised.

    Raises:
        facegrid.wider.annotations.AnnotationError: the file is not valid WIDER FACE format.
        OSError: the annotation file cannot be read.
    """
    index = read_annotations(annotations)
    report = CheckReport(str(annotations), None if images is None else str(images))
    report.images, report.faces = len(index), index.num_faces
    _check_annotations(index, report)
    if images is not None:
        _check_images(index, Path(images), report, workers or os.cpu_count() or 1, progress)
    log.info("checked %s: %d images, %d faces", annotations, report.images, report.faces)
    return report


def _check_example(serialized: bytes, where: str) -> tuple[int, tuple[str, str] | None]:
    """The faces of one packed example, and its error (kind, place) if it has one."""
    from facegrid.data.tf.records import parse

    try:
        record = parse(serialized)
    except ValueError as error:
        return 0, ("unparsable_example", f"{where}: {error}")
    where = f"{where} ({record.path})"
    try:
        size = verify_data(record.image, where)
    except ImageError as error:
        return len(record.boxes), ("unreadable_image", str(error))
    if size != (record.width, record.height):
        stored = f"{record.width}x{record.height}"
        return len(record.boxes), ("image_size_mismatch", f"{where}: decodes to {size[0]}x{size[1]}, stored {stored}")
    return len(record.boxes), None


def _check_shard(path: Path, pool, ahead: int, report: CheckReport, bar) -> tuple[int, int, PathError | None]:
    """Check every example of one shard; returns how many it holds and their faces, and why it cannot be read whole."""
    from facegrid.data.tf.pack import ordered_map, shard_records

    unread = []

    def numbered():  # the examples up to a damaged record, which is kept for the report
        try:
            yield from enumerate(shard_records(path))
        except PathError as error:
            unread.append(error)

    examples = faces = 0
    checked = ordered_map(pool, lambda item: _check_example(item[1], f"{path}#{item[0]}"), numbered(), ahead)
    for found, problem in checked:
        bar.update()
        examples, faces = examples + 1, faces + found
        if problem is not None:
            report.add(report.errors, *problem)
    return examples, faces, (unread or [None])[0]


def check_packed(folder: str | os.PathLike, *, workers: int | None = None, progress: bool = False) -> CheckReport:
    """Check a packed folder: every shard against ``manifest.json``, every example, every image.

    Returns:
        The report (``annotations`` is the folder); the manifest's counts, and
        errors for a missing shard, a wrong sha256 or example count, a damaged
        record or a shard TensorFlow cannot read (the examples before are
        checked; its shard's count is not compared), an example not of
        :mod:`facegrid.data.tf.records`' layout, an image that does not decode, or
        decodes to another size.

    Raises:
        facegrid.core.errors.PathError: the folder holds no manifest facegrid wrote
            (see :func:`facegrid.data.tf.pack.read_manifest`), or not one image can be
            read from it.
    """
    from facegrid.core.errors import DamagedShardError
    from facegrid.core.files import sha256_file
    from facegrid.data.tf.pack import MANIFEST, READ_AHEAD, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    report = CheckReport(str(folder), None, images=manifest.images, faces=manifest.faces)
    examples, faces, workers = 0, 0, workers or os.cpu_count() or 1
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=manifest.images, desc="examples", unit="img", disable=not progress) as bar,
    ):
        for shard in manifest.shards:
            path = folder / shard.file
            if not path.is_file():
                report.add(report.errors, "missing_shard", str(path))
                continue
            if sha256_file(path) != shard.sha256:
                report.add(report.errors, "shard_sha256_mismatch", f"{path}: not the sha256 of the manifest")
            count, found, unread = _check_shard(path, pool, READ_AHEAD * workers, report, bar)
            if unread is not None:
                kind = "corrupt_record" if isinstance(unread, DamagedShardError) else "unreadable_shard"
                report.add(report.errors, kind, str(unread))
            elif count != shard.examples:
                report.add(
                    report.errors, "shard_count_mismatch", f"{path}: {count:,} examples, manifest {shard.examples:,}"
                )
            examples, faces = examples + count, faces + found
    if not examples:
        kind = next(iter(report.errors), None)
        raise PathError(
            folder,
            "holds no image: "
            + (
                f"not one example can be read from its shards ({kind}: {report.examples[kind][0]})"
                if kind
                else "its shards hold no example"
            ),
        )
    if (examples, faces) != (manifest.images, manifest.faces) and not report.errors:
        report.add(
            report.errors,
            "manifest_count_mismatch",
            f"{folder / MANIFEST}: shards hold {examples:,} images, {faces:,} faces; "
            f"manifest {manifest.images:,}, {manifest.faces:,}",
        )
    log.info("checked %s: %d shards, %d examples", folder, len(manifest.shards), examples)
    return report
