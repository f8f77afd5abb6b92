"""Unpacking a zip archive into a folder, refusing members that would land outside it.

An archive fetched from a mirror is data from elsewhere: a member named
``/etc/x``, ``../x`` or ``C:\\x`` would write outside the folder it is
unpacked into. :mod:`zipfile` quietly rewrites such names; here the whole
archive is refused instead, before anything is written, so that a doctored
copy is noticed rather than half-used.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from facegrid.errors import PathError
from facegrid.paths import escape_reason


def unpack(archive: str | os.PathLike, into: str | os.PathLike) -> int:
    """Extract every member of the zip ``archive`` below the folder ``into``.

    Returns:
        The number of members extracted.

    Raises:
        facegrid.errors.PathError: ``archive`` is not a readable zip file, or
            one of its members is absolute or climbs out with ``..``; then
            nothing is extracted.
    """
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for member in members:
                reason = escape_reason(member.filename, "archive members", "the folder unpacked into")
                if reason is not None:
                    raise PathError(archive, f"member {member.filename!r} refused ({reason}); nothing unpacked")
            Path(into).mkdir(parents=True, exist_ok=True)
            zipped.extractall(into, members)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:  # not a zip, or damaged inside
        raise PathError(archive, f"not a readable zip archive ({error})") from None
    return len(members)
