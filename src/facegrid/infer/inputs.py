"""The images (and videos) a detection run reads, and the names its outputs get.

Files and folders given on the command line become a list of images, each
with the folder it was found under (None for a file given directly): in a
folder, the files of :data:`facegrid.core.suffixes.IMAGE_SUFFIXES`. A
detection run takes videos too (:data:`VIDEO_SUFFIXES`, found in folders
alike). Every check here is made before a model loads, so that a mistake
costs nothing:

* inputs that hold no image at all are refused, rather than detecting in
  nothing and reporting success;
* each image gets its own annotated copy: its path under its folder, ``.jpg``
  added unless it is a JPEG already (``.mp4`` for a video, which is written
  as MPEG-4), and ``-2``, ``-3``, ... before the suffix where two inputs
  would still share a name (``a/1.jpg`` and ``b/1.jpg`` given as files);
* each image gets its own WIDER result file ``<event>/<name>.txt``, which
  needs the image at ``<event>/<name>`` under a folder given; an image
  elsewhere, two images of one key (``x.jpg`` beside ``x.png``), or a video,
  are refused, naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePath

from facegrid.core.errors import PathError
from facegrid.core.suffixes import IMAGE_SUFFIXES
from facegrid.wider.results import image_key

log = logging.getLogger(__name__)

#: Suffixes of the videos a detection run reads (through OpenCV).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

#: Suffixes an annotated copy keeps (it is written as JPEG).
JPEG_SUFFIXES = (".jpg", ".jpeg")

#: Suffix of an annotated video (written as MPEG-4, which OpenCV writes everywhere).
VIDEO_OUTPUT_SUFFIX = ".mp4"


def is_video(path: Path) -> bool:
    """Whether a detection run reads ``path`` as a video (by its suffix)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def _no_images(folders: list[Path], suffixes: tuple[str, ...]) -> PathError:
    others = sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())
    kind = "image or video" if suffixes != IMAGE_SUFFIXES else "image"
    reason = f"no {kind} files ({' '.join(suffixes)})"
    if others:
        reason += f", only {len(others):,} other file(s) such as {others[0].name}"
    return PathError(", ".join(map(str, folders)), reason)


def find_images(inputs, videos: bool = False) -> list[tuple[Path, Path | None]]:
    """Expand files and folders (recursively) into ``(image, folder it was found under)``.

    Files given directly have no folder, and are taken whatever their
    suffix. Folders yield their images (and with ``videos`` their videos)
    sorted by path; one without any is logged.

    Raises:
        facegrid.core.errors.PathError: no input holds an image (only folders
            without image files were given).
    """
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES if videos else IMAGE_SUFFIXES
    found = []
    empty = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
            found.extend((p, item) for p in images)
            if not images:
                empty.append(item)
        else:
            found.append((item, None))
    if not found:
        raise _no_images(empty, suffixes)
    for folder in empty:
        log.warning("%s holds no image files", folder)
    return found


def _relative(image: Path, folder: Path | None) -> PurePath:
    return image.relative_to(folder) if folder is not None else PurePath(image.name)


def annotated_names(found: list[tuple[Path, Path | None]]) -> list[PurePath]:
    """A distinct relative path for each image's annotated copy (JPEG; MPEG-4 for a video), in the order given.

    The same inputs always give the same names (see the module docstring).
    """
    names: list[PurePath] = []
    taken: set[PurePath] = set()
    for image, folder in found:
        relative = _relative(image, folder)
        if is_video(image):
            if relative.suffix.lower() != VIDEO_OUTPUT_SUFFIX:
                relative = relative.with_name(relative.name + VIDEO_OUTPUT_SUFFIX)
        elif relative.suffix.lower() not in JPEG_SUFFIXES:
            relative = relative.with_name(relative.name + ".jpg")
        name, copy = relative, 1
        while name in taken:
            copy += 1
            name = relative.with_name(f"{relative.stem}-{copy}{relative.suffix}")
        taken.add(name)
        names.append(name)
    return names


def _not_in_event_folder(image: Path, folder: Path | None) -> PathError:
    if folder is None:
        reason = "given as a file, so its event is unknown: a WIDER result file needs the image found under a folder"
    elif image.parent == folder:
        reason = f"not in an event folder of {folder}: give the folder that holds the event folders ({folder.parent})"
    else:
        reason = (
            f"not <event>/<name> under {folder}: give the folder that holds the event folders ({image.parent.parent})"
        )
    return PathError(image, reason)


def submission_keys(found: list[tuple[Path, Path | None]]) -> list[str]:
    """Each image's WIDER result key ``<event>/<name>``, in the order given.

    Raises:
        facegrid.core.errors.PathError: an image is not at ``<event>/<name>``
            under a folder given, or two images have one key (so one result
            file would replace the other), or an image is a video.
    """
    keys: list[str] = []
    owner: dict[str, Path] = {}
    for image, folder in found:
        if is_video(image):
            raise PathError(image, "a video has no WIDER result file: those are for images")
        relative = _relative(image, folder)
        if folder is None or len(relative.parts) != 2:
            raise _not_in_event_folder(image, folder)
        key = image_key(relative.as_posix())
        if key in owner:
            raise PathError(image, f"its result file {key}.txt would replace that of {owner[key]}")
        owner[key] = image
        keys.append(key)
    return keys
