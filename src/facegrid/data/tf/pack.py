"""Pack a WIDER-FACE-format dataset into TFRecord shards, with a manifest to check them against.

Training from an images folder opens one small file per image per epoch; a
packed set is a few large files read front to back, which suits network
file systems, object stores and ``tf.data`` interleaving. Each image becomes
one Example (layout: :mod:`facegrid.data.tf.records`) holding the file's bytes as
stored, its size, orientation and faces.

Shards are named as TensorFlow Datasets names them
(``widerface-train.tfrecord-00000-of-00016``). Image ``i`` of the annotation
file goes to shard ``i mod N``, so every shard mixes the file's events (which
it lists one after another), and within a shard images keep file order.
Threads read and verify the files; the shards are written one after another,
each in that order, so the same input gives byte-identical shards. A pack
writes them, and the manifest, into a hidden staging folder of its own inside
the output folder (``.facegrid-pack-*``), and moves them into place once every
one is complete, ``manifest.json`` last: a pack killed midway leaves no file
that looks like a finished shard, only staging that the next pack into the
folder recognises as facegrid's and removes. Two packs never write into one
folder at once: each holds a lock on it (``.facegrid-pack.lock``) meanwhile.

A packed set is read through :func:`read_manifest` and :func:`shard_records`
alone, which turn whatever a folder holds (a damaged manifest, shard names
leading outside the folder, a damaged record) into facegrid's errors.

An image training would refuse (:mod:`facegrid.data.screening`: its path leaves
the images folder; it is missing, empty, truncated, not an image; a face box
lies wholly outside it) stops the pack under ``on_bad_image="raise"``, or is
left out under ``"skip"`` and listed in the manifest.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import math
import os
import re
import reprlib
import shutil
import tempfile
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

import facegrid
from facegrid.core.config import check_policy
from facegrid.core.errors import (
    DamagedShardError,
    ImageError,
    OutputExistsError,
    PathError,
    reason_of,
)
from facegrid.core.files import check_outputs, sha256_file
from facegrid.core.paths import escape_reason, image_path
from facegrid.data.images import read_verified
from facegrid.data.screening import none_usable, outside_error
from facegrid.data.tf import records
from facegrid.wider.index import Index
from facegrid.wider.layout import SPLITS

log = logging.getLogger(__name__)

#: The manifest's file name in a packed folder.
MANIFEST = "manifest.json"

#: Name of the lock file a pack holds in its output folder while it writes there.
LOCK = ".facegrid-pack.lock"

#: Start of the name of a pack's staging folder inside its output folder.
STAGING = ".facegrid-pack-"

#: Image bytes a shard holds at most by default (so, past one shard, 100-200 MB each).
SHARD_BYTES = 200 * 10**6

#: Images read ahead of the writer, per thread: enough to keep every thread busy, little memory.
READ_AHEAD = 4

_NAME_PART = re.compile(r"[A-Za-z0-9_]+")
_SHARD_FILE = re.compile(r".+\.tfrecord-\d{5}-of-\d{5}")

#: A value read from a manifest as its message quotes it: whole, unless it is long.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 120


@dataclass(frozen=True)
class Shard:
    """One shard as the manifest lists it: file name, example count, byte size, sha256 (hex)."""

    file: str
    examples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says of a packed set.

    Attributes:
        facegrid_version: the facegrid that packed it.
        annotations: the annotation file's name (without its folder).
        images, faces: examples packed, and their face rows.
        skipped: the images left out, ``{"image": path as annotated, "reason": ...}``.
        skipped_images: how many.
    """

    facegrid_version: str
    name: str
    split: str
    annotations: str
    images: int
    faces: int
    skipped_images: int
    skipped: list[dict]
    shards: list[Shard]

    @property
    def bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)


def split_of(annotations: str | os.PathLike) -> str:
    """The split an annotation file's name tells (a word of it), else ``train``.

    The words are the release's splits (:data:`facegrid.wider.layout.SPLITS`):
    ``wider_face_val_bbx_gt.txt`` tells ``val``.
    """
    words = re.split(r"[^a-z0-9]+", Path(annotations).name.lower())
    return next((word for word in words if word in SPLITS), "train")


def check_name_parts(name: str, split: str) -> None:
    """Refuse a name or split a shard name cannot hold (ValueError): only letters, digits and '_' keep it one word."""
    for what, value in (("name", name), ("split", split)):
        if not _NAME_PART.fullmatch(value):
            raise ValueError(f"{what} {value!r}: use only letters, digits and '_'")


def shard_names(name: str, split: str, shards: int) -> list[str]:
    """File names of ``shards`` shards: ``<name>-<split>.tfrecord-00000-of-00016`` and on.

    Raises:
        ValueError: see :func:`check_name_parts`.
    """
    check_name_parts(name, split)
    return [f"{name}-{split}.tfrecord-{k:05d}-of-{shards:05d}" for k in range(shards)]


def default_shards(index: Index, images: str | os.PathLike) -> int:
    """Enough shards for :data:`SHARD_BYTES` or fewer each, from the sizes of the files.

    At least one, and at most one an image.
    """
    total = 0
    for name in index.paths.tolist():
        with contextlib.suppress(ImageError, OSError):  # a bad image: reported when it is read
            total += os.path.getsize(image_path(images, name))
    return max(1, min(math.ceil(total / SHARD_BYTES), len(index)))


def ordered_map(pool: ThreadPoolExecutor, function, items, ahead: int):
    """``function`` of each of ``items``, in order, run by ``pool`` at most ``ahead`` items before it is taken."""
    pending = collections.deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _field_types(cls) -> dict[str, type]:
    """The fields of a dataclass, each with the JSON type it is read from (``list`` for ``list[Shard]``)."""
    return {name: typing.get_origin(hint) or hint for name, hint in typing.get_type_hints(cls).items()}


def _fields(value, types: dict[str, type], where: str) -> dict:
    """``value`` if it is a JSON object of exactly the fields ``types`` names, each of its type (``int``: a count).

    Raises:
        ValueError: it is not, naming ``where``.
    """
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {_QUOTE.repr(value)}, not an object")
    missing, unknown = sorted(types.keys() - value.keys()), sorted(value.keys() - types.keys())
    if missing or unknown:
        raise ValueError(
            f"{where}: no field {missing[0]!r}" if missing else f"{where}: unknown field {_QUOTE.repr(unknown[0])}"
        )
    for key, kind in types.items():
        item = value[key]
        if kind is int and (type(item) is not int or item < 0):
            raise ValueError(f"{where}: {key!r} is {_QUOTE.repr(item)}, not a count")
        if not isinstance(item, kind):
            raise ValueError(f"{where}: {key!r} is {_QUOTE.repr(item)}, not a {kind.__name__}")
    return value


def _parse_manifest(text: str, folder: Path) -> Manifest:
    """The :class:`Manifest` ``text`` holds, its shard names confined to ``folder`` (ValueError if it is not one)."""
    fields = _fields(json.loads(text), _field_types(Manifest), "the manifest")
    for k, entry in enumerate(fields["skipped"]):
        _fields(entry, {"image": str, "reason": str}, f"skipped image {k}")
    shards = [Shard(**_fields(entry, _field_types(Shard), f"shard {k}")) for k, entry in enumerate(fields["shards"])]
    seen = set()
    for k, shard in enumerate(shards):
        reason = escape_reason(shard.file, "shard names", "the packed folder", root=folder)
        if reason is None and shard.file in seen:
            reason = "listed twice"
        if reason is not None:
            raise ValueError(f"shard {k}, {_QUOTE.repr(shard.file)}, refused: {reason}")
        seen.add(shard.file)
    return Manifest(**{**fields, "shards": shards})


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """The :class:`Manifest` of a packed folder, every field checked, every shard name inside the folder.

    Raises:
        facegrid.core.errors.PathError: the folder holds no manifest, one facegrid
            did not write (a field missing, unknown or of another type, a shard
            name that would lead outside the folder), or one of a set that
            holds no image.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise PathError(folder, f"no {MANIFEST}: not a folder facegrid data pack wrote")
    try:
        manifest = _parse_manifest(path.read_text(encoding="utf-8"), folder)
    except OSError as error:
        raise PathError(path, f"cannot read: {error.strerror or error}") from None
    except (ValueError, RecursionError) as error:  # JSON's (nesting too deep too), undecodable bytes, the fields'
        raise PathError(path, f"not a facegrid manifest ({error})") from None
    if not manifest.images or not manifest.shards:
        raise PathError(folder, f"holds no image: its {MANIFEST} lists none")
    return manifest


def shard_records(path: str | os.PathLike) -> Iterator[bytes]:
    """The serialized examples of a shard, front to back.

    Raises:
        DamagedShardError: a record TensorFlow cannot read, after the examples
            before it have been given.
        facegrid.core.errors.PathError: the file cannot be read at all.
    """
    records_read = tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    examples = 0
    while True:
        try:
            serialized = next(records_read)
        except StopIteration:
            return
        except tf.errors.DataLossError as error:
            raise DamagedShardError(path, examples, reason_of(error)) from None
        except tf.errors.OpError as error:
            raise PathError(path, f"cannot read: {reason_of(error)}") from None
        examples += 1
        yield serialized


def _load(index: Index, images: Path, image: int) -> tuple[bytes, int] | ImageError:
    """Image ``image`` as a serialized Example and its face count, or why it cannot be packed."""
    name = str(index.paths[image])
    try:
        path = image_path(images, name)
        data, info = read_verified(path)
    except ImageError as error:
        return error
    error = outside_error(index, image, path, info.width, info.height)
    if error is not None:
        return error
    rows = slice(index.offsets[image], index.offsets[image + 1])
    record = records.Record(
        name, image, data, info.width, info.height, info.orientation, index.boxes[rows], index.attributes[rows]
    )
    return records.serialize(record), int(rows.stop - rows.start)


@contextlib.contextmanager
def _writing(path: Path):
    """Turn a failure to write ``path``, the operating system's or TensorFlow's, into a PathError naming it."""
    try:
        yield
    except OSError as error:
        raise PathError(path, f"cannot write: {error.strerror or error}") from None
    except tf.errors.OpError as error:
        raise PathError(path, f"cannot write: {reason_of(error).removeprefix(f'{path}; ')}") from None


def _write_shard(path: Path, loaded, images, policy: str, skipped: dict[int, ImageError], bar) -> tuple[int, int]:
    """Write the loaded examples of ``images`` to ``path``; returns the examples and faces written."""
    examples = faces = 0
    with _writing(path), tf.io.TFRecordWriter(str(path)) as writer:
        for image, found in zip(images, loaded):
            bar.update()
            if isinstance(found, ImageError):
                if policy == "raise":
                    raise found
                skipped[image] = found
                continue
            writer.write(found[0])
            examples, faces = examples + 1, faces + found[1]
    return examples, faces


def _write_shards(
    index: Index,
    images: Path,
    paths: list[Path],
    policy: str,
    skipped: dict[int, ImageError],
    workers: int,
    progress: bool,
) -> list[tuple[int, int]]:
    """Write image ``i`` of ``index`` to shard ``paths[i mod N]``; returns each shard's examples and faces."""
    members = [range(k, len(index), len(paths)) for k in range(len(paths))]
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(index), desc="packing", unit="img", disable=not progress) as bar,
    ):
        loaded = ordered_map(
            pool,
            lambda image: _load(index, images, image),
            itertools.chain.from_iterable(members),
            READ_AHEAD * workers,
        )
        return [_write_shard(path, loaded, shard, policy, skipped, bar) for path, shard in zip(paths, members)]


@contextlib.contextmanager
def _locked(out: Path):
    """Make the folder ``out`` if need be and hold its pack lock meanwhile, so that no other pack writes there.

    Raises:
        facegrid.core.errors.PathError: ``out`` is not a folder, cannot be written,
            or another pack holds its lock.
    """
    if out.exists() and not out.is_dir():
        raise PathError(out, "not a folder")
    lock = out / LOCK
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115 (held, locked, for the whole pack below)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PathError(out, "another data pack is writing into it; wait for it to end") from None
        if not _still_there(handle, lock):  # the pack before removed it as it ended
            raise PathError(out, "another data pack has just written into it; pack again")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def _still_there(handle, path: Path) -> bool:
    """Whether the open file ``handle`` is still the file at ``path``."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _leftovers(out: Path) -> list[Path]:
    """The staging folders of earlier packs into ``out``: interrupted ones, as none runs while the lock is held."""
    return [path for path in out.iterdir() if path.name.startswith(STAGING) and path.is_dir() and not path.is_symlink()]


def _check_free(out: Path, overwrite: bool) -> None:
    """Refuse, unless ``overwrite``, a folder that holds anything but a pack's lock.

    Raises:
        facegrid.core.errors.OutputExistsError: it holds a packed set, or other files.
    """
    held = sorted(path.name for path in out.iterdir() if path.name != LOCK)
    if overwrite or not held:
        return
    if MANIFEST in held:
        raise OutputExistsError(out, f"holds a packed set ({MANIFEST})")
    raise OutputExistsError(out, f"not empty: it holds {held[0]!r}")


def _publish(out: Path, staging: Path, manifest: Manifest) -> None:
    """Put the staged shards in place of an earlier pack's (if any), then the manifest."""
    with _writing(out / MANIFEST):
        (out / MANIFEST).unlink(missing_ok=True)
    for old in out.iterdir():
        if _SHARD_FILE.fullmatch(old.name):
            with _writing(old):
                old.unlink()
    for file in [shard.file for shard in manifest.shards] + [MANIFEST]:
        with _writing(out / file):
            (staging / file).replace(out / file)


def _manifest(
    index: Index,
    name: str,
    split: str,
    staging: Path,
    names: list[str],
    written: list[tuple[int, int]],
    skipped: dict[int, ImageError],
) -> Manifest:
    """The manifest of the shards ``names`` written into ``staging``, holding ``written`` examples and faces."""
    shards = [
        Shard(file, examples, (staging / file).stat().st_size, sha256_file(staging / file))
        for file, (examples, _) in zip(names, written)
    ]
    return Manifest(
        facegrid.__version__,
        name,
        split,
        Path(index.source).name,
        images=sum(examples for examples, _ in written),
        faces=sum(faces for _, faces in written),
        skipped_images=len(skipped),
        skipped=[{"image": str(index.paths[image]), "reason": skipped[image].reason} for image in sorted(skipped)],
        shards=shards,
    )


def pack_dataset(
    index: Index,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    shards: int | None = None,
    name: str = "widerface",
    split: str | None = None,
    workers: int | None = None,
    on_bad_image: str = "raise",
    overwrite: bool = False,
    progress: bool = False,
) -> Manifest:
    """Pack the images of ``index`` (read from ``images``) into TFRecord shards and ``manifest.json`` in ``out``.

    Args:
        index: the annotation file's index (:func:`facegrid.wider.annotations.read_annotations`).
        images: the folder its paths are relative to.
        out: the folder to write; refused if it holds anything (staging an
            interrupted pack left aside, which is removed), unless ``overwrite``:
            then the packed set in it is replaced and other files are kept.
            Never the images folder, nor a folder holding an input.
        shards: number of shards [default: :func:`default_shards`].
        name, split: the shard names' parts; ``split`` defaults to :func:`split_of` the annotation file.
        workers: threads reading files [default: CPUs].
        on_bad_image: ``"raise"`` or ``"skip"`` (see :mod:`facegrid.data.screening`).
        progress: show a progress bar on stderr.

    Returns:
        The manifest written.

    Raises:
        ValueError: a name or split that is not a plain word, more shards than images.
        facegrid.core.errors.OverwritesInputError: ``out`` is, or holds, the images
            folder or the annotation file.
        facegrid.core.errors.OutputExistsError: ``out`` is not empty and not ``overwrite``.
        facegrid.core.errors.PathError: ``out`` cannot be written, or another pack
            writes there; or not one image can be packed.
        facegrid.core.errors.ImageError: with ``on_bad_image="raise"``, the first bad image met.
    """
    check_policy(on_bad_image)
    out, images, workers = Path(out), Path(images), workers or os.cpu_count() or 1
    if shards is not None and shards > len(index):
        raise ValueError(f"shards={shards}: more than the {len(index)} images to pack")
    split = split or split_of(index.source)
    check_name_parts(name, split)
    # an existing folder is judged by what it holds (_check_free); here only that it is none of the inputs
    check_outputs([out], [images] + ([index.source] if index.source else []), overwrite=True)
    with _locked(out):
        for stale in _leftovers(out):
            log.info("removing %s, left by an interrupted pack", stale)
            with _writing(stale):
                shutil.rmtree(stale)
        _check_free(out, overwrite)
        shards = shards or default_shards(index, images)
        names = shard_names(name, split, shards)
        with _writing(out):
            staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
        try:
            skipped: dict[int, ImageError] = {}
            written = _write_shards(
                index, images, [staging / file for file in names], on_bad_image, skipped, workers, progress
            )
            if not any(examples for examples, _ in written):
                raise none_usable(index, images, skipped)
            manifest = _manifest(index, name, split, staging, names, written, skipped)
            with _writing(staging / MANIFEST):
                (staging / MANIFEST).write_text(
                    json.dumps(dataclasses.asdict(manifest), indent=2) + "\n", encoding="utf-8"
                )
            _publish(out, staging, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("packed %d images, %d faces into %d shards in %s", manifest.images, manifest.faces, shards, out)
    return manifest
