"""Unpacking a zip archive into a folder, all checks first: nothing outside it, nothing over a file of the user's.

An archive fetched from a mirror is data from elsewhere, so everything is
checked before the first member is written, and the whole archive refused
if one check fails:

* a member named ``/etc/x``, ``../x`` or ``C:\\x`` would write outside the
  folder (:mod:`zipfile` quietly rewrites such names; here they are refused,
  so that a doctored copy is noticed rather than half-used);
* the members must fit in the space free there (a small archive may unpack
  to far more: a zip bomb);
* a file already where a member goes must be that member (same size and
  CRC-32: an earlier unpack, interrupted, leaves such files) unless
  replacing is asked for; a folder where the archive has a file, or a file
  where it has a folder, is never replaced.

Members are written under a temporary name and renamed into place
(:func:`facegrid.core.files.write_atomically`), so that an interrupted unpack
leaves whole members only, which the next run recognises.
"""

from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from pathlib import Path

from facegrid.core.errors import PathError
from facegrid.core.files import check_outputs, make_folder, write_atomically
from facegrid.core.paths import escape_reason

#: Bytes read at a time when copying a member out, or comparing a file with one.
BLOCK = 1 << 20


def unpack(archive: str | os.PathLike, into: str | os.PathLike, *, overwrite: bool = False) -> int:
    """Extract every member of the zip ``archive`` below the folder ``into``.

    Members already there as the archive has them are left as they are.

    Returns:
        The number of files written.

    Raises:
        facegrid.core.errors.OutputExistsError: a file is where a member goes,
            unlike it, and not ``overwrite``; nothing is extracted.
        facegrid.core.errors.OverwritesInputError: a member would replace
            ``archive`` itself; nothing is extracted.
        facegrid.core.errors.PathError: ``archive`` is not a readable zip file,
            one of its members is encrypted, absolute or climbs out with
            ``..``, they need more space than is free, or a file or folder
            is in the way of one: then nothing is extracted; or a member
            cannot be written.
    """
    archive, into = Path(archive), Path(into)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for member in members:
                _refuse_unsafe(archive, member)
            writes = _plan(archive, members, into)
            check_outputs([target for _, target in writes], [archive], overwrite)
            needed, free = sum(member.file_size for member, _ in writes), _free_bytes(into)
            if needed > free:
                raise PathError(
                    archive, f"unpacks to {needed:,} bytes, more than the {free:,} free at {into}; nothing unpacked"
                )
            for member, target in writes:
                _extract(zipped, member, target)
            for member in members:  # folders the archive lists, empty ones included
                if member.is_dir():
                    make_folder(into / member.filename)
    except (
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
    ) as error:  # not a zip, damaged, unknown method
        raise PathError(archive, f"not a readable zip archive ({error})") from None
    except OSError as error:  # the archive itself: a folder, unreadable
        raise PathError(archive, f"cannot read: {error.strerror or error}") from None
    return len(writes)


def _refuse_unsafe(archive: Path, member: zipfile.ZipInfo) -> None:
    """Refuse a member that would land outside the folder, or that cannot be read without a password."""
    reason = escape_reason(member.filename, "archive members", "the folder unpacked into")
    if reason is None and member.flag_bits & 0x1:
        reason = "encrypted"
    if reason is not None:
        raise PathError(archive, f"member {member.filename!r} refused ({reason}); nothing unpacked")


def _plan(archive: Path, members: list[zipfile.ZipInfo], into: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    """The files to write and where: every file member, but those already there as the archive has them.

    Raises:
        facegrid.core.errors.PathError: a folder is where the archive has a file,
            or a file where it has a folder.
    """
    writes, folders = [], set()
    for member in members:
        target = into / member.filename
        _refuse_files_on_the_way(archive, member, target if member.is_dir() else target.parent, into, folders)
        if member.is_dir():
            continue
        if target.is_dir():
            raise PathError(
                target, f"is a folder, where {archive.name} has the file {member.filename!r}; nothing unpacked"
            )
        if not _holds(target, member):
            writes.append((member, target))
    return writes


def _refuse_files_on_the_way(archive: Path, member, folder: Path, into: Path, seen: set[Path]) -> None:
    """Refuse a file standing at ``folder`` or at one of its parents up to ``into`` (``seen``: folders found fine)."""
    for path in (folder, *folder.parents):
        if path in seen:
            return
        if path.exists() and not path.is_dir():
            raise PathError(
                path, f"is a file, where {archive.name} has a folder (for {member.filename!r}); nothing unpacked"
            )
        seen.add(path)
        if path == into:
            return


def _holds(target: Path, member: zipfile.ZipInfo) -> bool:
    """Whether ``target`` is a file of ``member``'s size and CRC-32."""
    if not target.is_file() or target.stat().st_size != member.file_size:
        return False
    crc = 0
    try:
        with open(target, "rb") as file:
            while block := file.read(BLOCK):
                crc = zlib.crc32(block, crc)
    except OSError as error:
        raise PathError(target, f"cannot read: {error.strerror or error}") from None
    return crc == member.CRC


def _free_bytes(folder: Path) -> int:
    """Bytes free to an ordinary user on the file system ``folder`` is (or will be) on."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return shutil.disk_usage(existing).free


def _extract(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    """Write ``member`` at ``target`` (its folders made) through a temporary file renamed into place."""

    def copy(tmp: Path) -> None:
        with zipped.open(member) as source, open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, BLOCK)

    make_folder(target.parent)
    try:
        write_atomically(target, copy)
    except OSError as error:
        raise PathError(target, f"cannot write: {error.strerror or error}") from None
