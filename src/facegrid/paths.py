"""Image paths from annotation files, kept inside the images folder.

An annotation file names each image relative to an images folder, and such
files travel between people. A path is therefore refused, and the file never
opened, when it is absolute, climbs out with ``..``, or leads outside the
folder through a symbolic link.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from facegrid.images import ImageError


def escape_reason(name: str) -> str | None:
    """Why an annotation path would leave its images folder on its face (absolute, ``..``), or None."""
    if not name:
        return "empty image path"
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor:
            return "absolute path: image paths must be relative to the images folder"
        if ".." in pure.parts:
            return "'..' in the path: image paths must stay inside the images folder"
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
