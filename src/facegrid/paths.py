"""Image paths from annotation files, kept inside the images folder.

An annotation file names each image relative to an images folder, and such
files travel between people. A path is therefore refused, and the file never
opened, when it is absolute, climbs out with ``..``, or leads outside the
folder through a symbolic link.

Giving the images folder one level too high or too low (``WIDER_val`` for
``WIDER_val/images``) is the usual way to find none of the images;
:func:`nearby_images_folder` finds the folder meant.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from facegrid.images import ImageError

#: Annotation paths :func:`nearby_images_folder` looks up, spread over the file.
NEARBY_SAMPLE = 20

#: Subfolders of the images folder :func:`nearby_images_folder` looks in, at most.
NEARBY_CHILDREN = 100


def escape_reason(name: str, what: str = "image paths", folder: str = "the images folder") -> str | None:
    """Why a relative path read from a file would leave its folder on its face (absolute, ``..``), or None.

    The path is read both as POSIX and as Windows, so that ``..\\x`` and
    ``C:\\x`` are caught on any system. ``what`` and ``folder`` name the
    paths and the folder in the reason (annotation image paths by default;
    archive members in :mod:`facegrid.unpack`).
    """
    if not name:
        return "empty path"
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor:
            return f"absolute path: {what} must be relative to {folder}"
        if ".." in pure.parts:
            return f"'..' in the path: {what} must stay inside {folder}"
    return None


def image_path(images: str | os.PathLike, name: str) -> Path:
    """The file an annotation path names inside the ``images`` folder.

    Raises:
        ImageError: the path is absolute, contains ``..``, or resolves (through
            symbolic links) to a place outside ``images``. Nothing is opened.
    """
    path = Path(images) / name
    reason = escape_reason(name)
    if reason is None:
        root = os.path.realpath(images)
        if os.path.commonpath([os.path.realpath(path), root]) != root:
            reason = "leads outside the images folder through a symbolic link"
    if reason is not None:
        raise ImageError(path, f"refused: {reason}")
    return path


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
