"""Paths read from files, kept inside their folder.

Files name other files relative to a folder: an annotation file its images,
relative to the images folder; a packed set's manifest its shards, relative
to its own folder. Such files travel between people, so
:func:`escape_reason` owns the one rule for every such path: it is refused,
and never opened, when it is empty, holds a NUL byte, is absolute, climbs out
with ``..``, or leads outside the folder through a symbolic link.

Giving the images folder one level too high or too low (``WIDER_val`` for
``WIDER_val/images``) is the usual way to find none of the images;
:func:`nearby_images_folder` finds the folder meant.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from facegrid.core.errors import RefusedPathError

#: Annotation paths :func:`nearby_images_folder` looks up, spread over the file.
NEARBY_SAMPLE = 20

#: Subfolders of the images folder :func:`nearby_images_folder` looks in, at most.
NEARBY_CHILDREN = 100


def escape_reason(
    name: str, what: str = "image paths", folder: str = "the images folder", *, root: str | os.PathLike | None = None
) -> str | None:
    """Why a relative path read from a file would leave its folder, or None.

    On its face alone (``root`` None): empty, a NUL byte, absolute, ``..``.
    The path is read both as POSIX and as Windows, so that ``..\\x`` and
    ``C:\\x`` are caught on any system. Given the folder ``root``, also a
    path that resolves (through symbolic links) to a place outside it.
    ``what`` and ``folder`` name the paths and the folder in the reason
    (annotation image paths by default).
    """
    if not name:
        return "empty path"
    if "\0" in name:
        return f"a NUL byte in the path: {what} cannot hold one"
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor:
            return f"absolute path: {what} must be relative to {folder}"
        if ".." in pure.parts:
            return f"'..' in the path: {what} must stay inside {folder}"
    if root is not None:
        real = os.path.realpath(root)
        try:
            inside = os.path.commonpath([os.path.realpath(Path(root) / name), real]) == real
        except ValueError:  # a lone surrogate, which no file name encodes
            return "not a file name this system can encode"
        if not inside:
            return f"leads outside {folder} through a symbolic link"
    return None


def image_path(images: str | os.PathLike, name: str) -> Path:
    """The file an annotation path names inside the ``images`` folder.

    Raises:
        facegrid.core.errors.RefusedPathError: :func:`escape_reason` refuses the
            path. Nothing is opened.
    """
    reason = escape_reason(name, root=images)
    if reason is not None:
        raise RefusedPathError(Path(images) / name, f"refused: {reason}")
    return Path(images) / name


def nearby_images_folder(images: str | os.PathLike, names: list[str]) -> Path | None:
    """The subfolder or parent of ``images`` holding most of the images ``names`` lists, or None if none holds any.

    Only :data:`NEARBY_SAMPLE` names, spread over the list, are looked up in
    at most :data:`NEARBY_CHILDREN` subfolders and the parent, so that the
    answer costs milliseconds however long the list.
    """
    images = Path(images)
    step = max(len(names) // NEARBY_SAMPLE, 1)
    sample = [name for name in names[::step][:NEARBY_SAMPLE] if escape_reason(name) is None]
    try:
        children = sorted(p for p in images.iterdir() if p.is_dir())[:NEARBY_CHILDREN]
    except OSError:
        children = []
    candidates = children + ([images.parent] if images.parent != images else [])
    hits = {folder: sum((folder / name).is_file() for name in sample) for folder in candidates}
    best = max(hits, key=hits.get, default=None)
    return best if best is not None and hits[best] else None
