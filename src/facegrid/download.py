"""Dataset releases to download: their archives, where to fetch them, and putting each in place.

A :class:`Release` lists its :class:`Archive` files and the mirrors (base
URLs) that serve them; :data:`RELEASES` holds the one facegrid knows,
``widerface``: the five archives of the official WIDER FACE release, which
unpack into the layout the rest of facegrid reads (``wider_face_split/``,
``WIDER_{train,val,test}/images/``, ``eval_tools/ground_truth/``).

An archive's address is each mirror's base URL followed by its name, in the
order given, then its own addresses on the dataset's home site
(:attr:`Archive.homes`). :func:`install_archive` fetches it with
:func:`facegrid.fetch.fetch_file` into ``DIR/archives/``, checks it against
its pinned SHA-256, unpacks it with :func:`facegrid.unpack.unpack`, and
records the digest unpacked in ``DIR/archives/NAME.sha256``: a later run
finds that stamp and the unpacked files and does nothing.

**The pinned digests are not filled in.** This module was written on a
machine that reaches neither the WIDER FACE site nor the dataset hub, so no
digest or size could be read from a real copy, and none is guessed: every
WIDER FACE entry has ``sha256=None`` and ``size=None``, and the mirror and
home addresses are as published, untested from here. Someone who can reach
the hosts should download each archive, verify it against a trusted copy,
and fill in ``sha256`` (``sha256sum NAME``) and ``size`` below. Until then an
unpinned archive is refused unless ``trust_unpinned`` is given (the
command's ``--trust-unpinned``); the copy then taken is reported with its
digest, to compare and pin.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from facegrid.errors import PathError
from facegrid.fetch import FetchError, fetch_file, sha256_file
from facegrid.unpack import unpack

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
    """What became of one archive: ``ok`` (its files are in place) and a one-line ``message`` naming it."""

    ok: bool
    message: str


_WIDER_HOME = "http://shuoyang1213.me/WIDERFACE/support/"

#: The releases ``facegrid download`` knows. Digests and sizes: see the module's docstring.
RELEASES = {
    "widerface": Release(
        archives=(
            Archive("wider_face_split.zip", "wider_face_split/wider_face_val_bbx_gt.txt",
                    homes=(_WIDER_HOME + "bbx_annotation/wider_face_split.zip",)),
            Archive("eval_tools.zip", "eval_tools/ground_truth/wider_face_val.mat",
                    homes=(_WIDER_HOME + "eval_script/eval_tools.zip",)),
            Archive("WIDER_val.zip", "WIDER_val/images"),
            Archive("WIDER_train.zip", "WIDER_train/images"),
            Archive("WIDER_test.zip", "WIDER_test/images"),
        ),
        mirrors=("https://huggingface.co/datasets/CUHK-CSE/wider_face/resolve/main/data/",),
    ),
}


def archive_urls(archive: Archive, mirrors: Sequence[str]) -> list[str]:
    """The addresses tried for ``archive``: each mirror's base URL with its name, then its homes."""
    return [base.rstrip("/") + "/" + archive.name for base in mirrors] + list(archive.homes)


def install_archive(
    archive: Archive,
    to: str | os.PathLike,
    mirrors: Sequence[str],
    *,
    trust_unpinned: bool = False,
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
        notice: called with one line for each failure on the way (a mirror
            that fails, a stale copy deleted); the outcome says the rest.
        timeout, progress: as :func:`facegrid.fetch.fetch_file` takes them.

    Returns:
        What became of it. Failures to fetch or unpack are outcomes, not
        exceptions.

    Raises:
        OSError: ``to`` cannot be written.
    """
    to, pinned = Path(to), archive.sha256 and archive.sha256.lower()
    folder = to / ARCHIVES_FOLDER
    path, stamp, provided = folder / archive.name, folder / f"{archive.name}.sha256", to / archive.provides
    stamped = (stamp.read_text(errors="replace").partition(" ")[0] or None) if stamp.is_file() else None
    if stamped is not None and provided.exists() and pinned in (None, stamped):
        return Outcome(True, f"{archive.name}: already in place ({provided})")
    if pinned is None and not trust_unpinned:
        return Outcome(False, f"{archive.name}: refused: facegrid's manifest pins no sha256 for it "
                              "(--trust-unpinned takes the copy a mirror serves)")
    folder.mkdir(parents=True, exist_ok=True)
    digest, origin = _kept_copy_digest(path, pinned, notice), "downloaded before"
    if digest is None:
        try:
            url, digest = fetch_file(archive_urls(archive, mirrors), path, sha256=pinned, size=archive.size,
                                     timeout=timeout, progress=progress, notice=notice)
        except FetchError:
            return Outcome(False, f"{archive.name}: not fetched: no address gave a good copy")
        origin = f"from {url}"
    try:
        unpack(path, to / archive.into)
    except PathError as error:
        return Outcome(False, str(error))
    if not provided.exists():
        return Outcome(False, f"{archive.name}: unpacked, but {provided} is not there: not the layout expected")
    stamp.write_text(f"{digest}  {archive.name}\n")
    checked = "sha256 verified" if pinned else f"sha256 {digest} (none pinned; taken on trust)"
    return Outcome(True, f"{archive.name}: {origin}, {checked}, unpacked into {to / archive.into}")


def _kept_copy_digest(path: Path, pinned: str | None, notice: Callable[[str], None]) -> str | None:
    """The digest of an archive an earlier run downloaded to ``path``, if it is usable; None if there is none or it was not."""
    if not path.is_file():
        return None
    digest = sha256_file(path)
    if pinned is None or digest == pinned:
        return digest
    path.unlink()
    notice(f"{path.name}: {path}: sha256 {digest} is not the pinned {pinned}; copy deleted")
    return None
