"""Dataset releases to download: their archives, where to fetch them, and putting each in place.

A :class:`Release` lists its :class:`Archive` files and the mirrors (base
URLs) that serve them; :data:`RELEASES` holds the one facegrid knows,
``widerface``: the five archives of the official WIDER FACE release, which
unpack into the layout the rest of facegrid reads (:mod:`facegrid.wider.layout`).

An archive's address is each mirror's base URL followed by its name, in the
order given, then its own addresses on the dataset's home site
(:attr:`Archive.homes`). :func:`install_archive` fetches it with
:func:`facegrid.wider.fetch.fetch_file` into ``DIR/archives/``, checks it against
its pinned SHA-256, unpacks it with :func:`facegrid.wider.unpack.unpack`, and
records the digest unpacked in ``DIR/archives/NAME.sha256``: a later run
finds that stamp and the unpacked files and does nothing. A stamp that is
not one facegrid wrote counts as none.

**Where the pinned digests come from.** The digests and sizes below are
copied from published records, not computed here: the machine where they
were pinned reaches neither the WIDER FACE site nor the dataset hub, so no
copy could be downloaded to check them, and the addresses are likewise
untested from there. For the four archives the hub holds
(``wider_face_split.zip`` and ``WIDER_{train,val,test}.zip``) three records
agree: TensorFlow Datasets' ``tensorflow_datasets/datasets/wider_face/checksums.tsv``
(copies fetched from Google Drive and the mmlab site), the Hugging Face
``datasets`` library's ``datasets/wider_face/dataset_infos.json``, and the
Git LFS pointers in ``data/`` of the hub's ``CUHK-CSE/wider_face``
repository. ``eval_tools.zip`` is on neither library's list nor on the hub:
its digest and size are the ones the ``liopeer/cv_lakehouse`` project
records for the site's copy (``src/cv_lakehouse/sources/wider_face.py``),
and another project's published record gives the same two. The mirror is
that hub repository (the library's record names it by its former name,
``wider_face``, which the hub redirects); the homes are the WIDER FACE site
and its former address at CUHK's mmlab, which serve the two small archives
themselves (the hub has no ``eval_tools.zip``, so its 404 there is
expected). An archive left without a pinned digest is refused unless
``trust_unpinned`` is given (the command's ``--trust-unpinned``); the copy
then taken is reported with its digest, to compare and pin.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from facegrid.core.errors import FetchError, OutputExistsError, PathError
from facegrid.core.files import make_folder, sha256_file, write_text_atomically
from facegrid.wider.fetch import address_problem, fetch_file
from facegrid.wider.ground_truth import GT_FACES_FILE
from facegrid.wider.layout import GROUND_TRUTH_FOLDER, annotations_file, images_folder
from facegrid.wider.unpack import unpack

log = logging.getLogger(__name__)

#: Folder, inside the dataset folder, of the downloaded archives, their ``.part`` files and stamps.
ARCHIVES_FOLDER = "archives"


@dataclass(frozen=True)
class Archive:
    """One file of a release.

    Attributes:
        name: the file name the mirrors serve it under (``WIDER_val.zip``).
        provides: a path, relative to the dataset folder, that unpacking it
            creates (``WIDER_val/images``); checked after unpacking, and with
            the stamp what tells a later run that nothing is left to do.
        sha256: the pinned digest (hex) of a verified copy; None where none
            has been pinned.
        size: its size in bytes, where known.
        into: the folder, relative to the dataset folder, it unpacks into
            (the official archives hold their own top folder, so ``""``).
        homes: its own addresses outside the mirrors, tried after them.
    """

    name: str
    provides: str
    sha256: str | None = None
    size: int | None = None
    into: str = ""
    homes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    """A dataset's archives and the base URLs of the mirrors serving them, tried in order."""

    archives: tuple[Archive, ...]
    mirrors: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What became of one archive: ``ok`` (its files are in place) and a one-line ``message`` naming it.

    ``unpinned``: refused because facegrid pins no digest for it (taking it
    on trust must be asked for: ``trust_unpinned``).
    """

    ok: bool
    message: str
    unpinned: bool = False


#: The WIDER FACE site's folder of downloads, then the same folder at its former address.
_WIDER_HOMES = ("http://shuoyang1213.me/WIDERFACE/support/", "http://mmlab.ie.cuhk.edu.hk/projects/WIDERFace/support/")


def _homes(path: str) -> tuple[str, ...]:
    """The addresses of ``path`` (relative to the site's download folder) at each of :data:`_WIDER_HOMES`."""
    return tuple(home + path for home in _WIDER_HOMES)


#: The releases ``facegrid download`` knows. Digests and sizes: see the module's docstring.
RELEASES = {
    "widerface": Release(
        archives=(
            Archive(
                "wider_face_split.zip",
                annotations_file("val"),
                sha256="c7561e4f5e7a118c249e0a5c5c902b0de90bbf120d7da9fa28d99041f68a8a5c",
                size=3_591_642,
                homes=_homes("bbx_annotation/wider_face_split.zip"),
            ),
            Archive(
                "eval_tools.zip",
                f"{GROUND_TRUTH_FOLDER}/{GT_FACES_FILE}",
                sha256="1cf49c8243fa8a1632efe7f6aa09fd7a3994ac838c9008bdbc9dd1d547bb234a",
                size=8_447_003,
                homes=_homes("eval_script/eval_tools.zip"),
            ),
            Archive(
                "WIDER_val.zip",
                images_folder("val"),
                sha256="f9efbd09f28c5d2d884be8c0eaef3967158c866a593fc36ab0413e4b2a58a17a",
                size=362_752_168,
            ),
            Archive(
                "WIDER_train.zip",
                images_folder("train"),
                sha256="e23b76129c825cafae8be944f65310b2e1ba1c76885afe732f179c41e5ed6d59",
                size=1_465_602_149,
            ),
            Archive(
                "WIDER_test.zip",
                images_folder("test"),
                sha256="3b0313e11ea292ec58894b47ac4c0503b230e12540330845d70a7798241f88d3",
                size=1_844_140_520,
            ),
        ),
        mirrors=("https://huggingface.co/datasets/CUHK-CSE/wider_face/resolve/main/data/",),
    ),
}


def archive_urls(archive: Archive, mirrors: Sequence[str]) -> list[str]:
    """The addresses tried for ``archive``: each mirror's base URL with its name, then its homes."""
    return [base.rstrip("/") + "/" + archive.name for base in mirrors] + list(archive.homes)


def install_release(
    release: Release,
    to: str | os.PathLike,
    *,
    mirrors: Sequence[str] = (),
    only: Sequence[str] = (),
    **options,
) -> Iterator[Outcome]:
    """Put each archive of ``release`` (or each one ``only`` names) in place below ``to``, an outcome at a time.

    Args:
        mirrors: base URLs tried before the release's own.
        only: names of the archives wanted; all when empty.
        **options: as :func:`install_archive` takes them.

    Raises:
        ValueError: a mirror that is no usable http(s) address, or a name
            ``only`` gives that the release has not; both before anything is fetched.
    """
    for url in mirrors:
        problem = address_problem(url)
        if problem is not None:
            raise ValueError(f"mirror {url!r}: {problem}")
    names = [archive.name for archive in release.archives]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"no archive {unknown[0]!r} in the release (it has {', '.join(names)})")
    for archive in release.archives:
        if not only or archive.name in only:
            yield install_archive(archive, to, tuple(mirrors) + release.mirrors, **options)


def install_archive(
    archive: Archive,
    to: str | os.PathLike,
    mirrors: Sequence[str],
    *,
    trust_unpinned: bool = False,
    overwrite: bool = False,
    timeout: float = 30.0,
    progress: bool = False,
    notice: Callable[[str], None] = log.warning,
) -> Outcome:
    """Put ``archive``'s files in place below the dataset folder ``to``.

    Nothing is done when an earlier run unpacked the copy pinned (its stamp
    and :attr:`Archive.provides` are there). Otherwise an archive already in
    ``to/archives/`` is used if its digest is the pinned one (deleted if
    not), else it is downloaded from :func:`archive_urls`; then unpacked.
    An archive without a pinned digest is refused, before anything is
    fetched, unless ``trust_unpinned``.

    Args:
        overwrite: replace files below ``to`` that differ from the
            archive's members (else the archive is refused, naming one).
        notice: called with one line for each failure on the way (a mirror
            that fails, a stale copy deleted); the outcome says the rest.
        timeout, progress: as :func:`facegrid.wider.fetch.fetch_file` takes them.

    Returns:
        What became of it. Failures of the archive (no address gave a good
        copy, it cannot be unpacked) are outcomes, not exceptions.

    Raises:
        facegrid.core.errors.OutputExistsError: a file below ``to`` differs from
            the member that goes there, and not ``overwrite``.
        facegrid.core.errors.PathError: ``to`` cannot be written, or something
            facegrid keeps in ``to/archives/`` is a folder.
    """
    to, pinned = Path(to), archive.sha256 and archive.sha256.lower()
    folder = to / ARCHIVES_FOLDER
    path, stamp, provided = folder / archive.name, folder / f"{archive.name}.sha256", to / archive.provides
    stamped = _stamped_digest(stamp)
    if stamped is not None and provided.exists() and pinned in (None, stamped):
        return Outcome(True, f"{archive.name}: already in place ({provided})")
    if pinned is None and not trust_unpinned:
        return Outcome(False, f"{archive.name}: refused: facegrid's manifest pins no sha256 for it", unpinned=True)
    make_folder(folder)
    digest, origin = _kept_copy_digest(path, pinned, notice), "downloaded before"
    if digest is None:
        try:
            url, digest = fetch_file(
                archive_urls(archive, mirrors),
                path,
                sha256=pinned,
                size=archive.size,
                timeout=timeout,
                progress=progress,
                notice=notice,
            )
        except FetchError:
            return Outcome(False, f"{archive.name}: not fetched: no address gave a good copy")
        origin = f"from {url}"
    try:
        unpack(path, to / archive.into, overwrite=overwrite)
    except OutputExistsError:
        raise  # a file of the user's is in the way: replacing it is the caller's to ask
    except PathError as error:
        return Outcome(False, str(error))
    if not provided.exists():
        return Outcome(False, f"{archive.name}: unpacked, but {provided} is not there: not the layout expected")
    try:
        write_text_atomically(stamp, f"{digest}  {archive.name}\n")
    except OSError as error:
        raise PathError(stamp, f"cannot write: {error.strerror or error}") from None
    checked = "sha256 verified" if pinned else f"sha256 {digest} (none pinned; taken on trust)"
    return Outcome(True, f"{archive.name}: {origin}, {checked}, unpacked into {to / archive.into}")


def _stamped_digest(stamp: Path) -> str | None:
    """The digest the stamp ``stamp`` records as unpacked; None where there is none, or it is not one facegrid wrote."""
    try:
        with open(stamp, "rb") as file:
            head = file.read(65)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise PathError(stamp, f"cannot read: {error.strerror or error}") from None
    return head[:64].decode() if re.fullmatch(rb"[0-9a-f]{64}\s?", head) else None


def _kept_copy_digest(path: Path, pinned: str | None, notice: Callable[[str], None]) -> str | None:
    """The digest of an archive an earlier run downloaded to ``path``, if usable; None if there is none or it is not."""
    if not path.is_file():
        return None
    digest = sha256_file(path)
    if pinned is None or digest == pinned:
        return digest
    try:
        path.unlink()
    except OSError as error:
        raise PathError(path, f"cannot delete: {error.strerror or error}") from None
    notice(f"{path.name}: {path}: sha256 {digest} is not the pinned {pinned}; copy deleted")
    return None
