"""The official WIDER FACE validation ground truth: its ``.mat`` files loaded, and images it cannot score refused.

The release's ``eval_tools/ground_truth`` folder (see
:mod:`facegrid.wider.layout`) holds four MATLAB files: ``wider_face_val.mat``
with every validation image and its faces, and one file per setting
(:data:`SETTINGS`) naming, per image, the faces that count in it. The
official protocol (:mod:`facegrid.eval.protocol`) scores against what
:func:`load_wider_ground_truth` makes of them.

SciPy is imported only when a file is read: naming the files costs nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegrid.core.boxes import from_wider
from facegrid.core.errors import PathError
from facegrid.wider.results import image_key

log = logging.getLogger(__name__)

#: The official settings, in the order the tool reports them; each has its own file.
SETTINGS = ("easy", "medium", "hard")

#: The official ground truth files, in ``eval_tools/ground_truth/``.
GT_FACES_FILE = "wider_face_val.mat"
GT_SETTING_FILE = "wider_{setting}_val.mat"


@dataclass(frozen=True, eq=False)
class WiderGroundTruth:
    """The official WIDER FACE validation ground truth, as loaded from its ``.mat`` files.

    Attributes:
        source: the folder it was loaded from ("" if built in memory).
        keys: ``"<event>/<name>"`` of every image, in the files' order.
        boxes: per image, float32 ``[G, 4]`` xyxy faces (``x2 = x + w``).
        keep: per setting (:data:`SETTINGS`), per image, int64 0-based indices
            of the faces that count in that setting.
    """

    source: str
    keys: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    keep: dict[str, tuple[np.ndarray, ...]]

    @property
    def where(self) -> str:
        """What messages name it by: its folder, or "the ground truth" when built in memory."""
        return self.source or "the ground truth"

    def unlisted(self, images: Iterable[str]) -> list[str]:
        """Those of ``images`` (annotation paths or keys, matched by :func:`image_key`) it cannot score, as given."""
        listed = set(self.keys)
        return [image for image in images if image_key(image) not in listed]


def _mat(path: Path, names: list[str]) -> dict:
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"official WIDER FACE ground truth file not found: {path}")
    try:
        data = scipy.io.loadmat(path, variable_names=names)
    except Exception as error:  # scipy's reader meets foreign bytes with any error (IndexError, ValueError, ...)
        raise PathError(path, f"not a readable MATLAB file ({error})") from None
    missing = [name for name in names if name not in data]
    if missing:
        raise PathError(path, f"no variable {', '.join(missing)}; is it an official ground truth file?")
    return data


def _cells(array: np.ndarray) -> list:
    return list(np.asarray(array, dtype=object).ravel())


def _text(cell: np.ndarray) -> str:
    return str(np.asarray(cell).ravel()[0])


def load_wider_ground_truth(gt_dir: str | os.PathLike) -> WiderGroundTruth:
    """Load the official validation ground truth from ``eval_tools/ground_truth/``.

    Faces come from ``wider_face_val.mat`` (``event_list``, ``file_list``,
    ``face_bbx_list``); the faces that count per setting from the ``gt_list``
    of ``wider_easy_val.mat``, ``wider_medium_val.mat`` and
    ``wider_hard_val.mat``. Load once and pass the result to
    :func:`facegrid.eval.protocol.evaluate_wider` to evaluate several submissions.

    Args:
        gt_dir: the folder holding the four ``.mat`` files.

    Returns:
        The ground truth (3,226 images for the official files).

    Raises:
        FileNotFoundError: a ``.mat`` file is missing.
        facegrid.core.errors.PathError: a file is not a MATLAB file, lacks a
            variable, or the files disagree (the message names the file).

    Example:
        >>> gt = load_wider_ground_truth("widerface/eval_tools/ground_truth")  # doctest: +SKIP
        >>> len(gt.keys)  # doctest: +SKIP
        3226
    """
    gt_dir = Path(gt_dir)
    faces = _mat(gt_dir / GT_FACES_FILE, ["event_list", "file_list", "face_bbx_list"])
    keys: list[str] = []
    boxes: list[np.ndarray] = []
    for event, files, event_boxes in zip(
        _cells(faces["event_list"]), _cells(faces["file_list"]), _cells(faces["face_bbx_list"])
    ):
        for name, xywh in zip(_cells(files), _cells(event_boxes)):
            keys.append(f"{_text(event)}/{_text(name)}")
            boxes.append(from_wider(np.asarray(xywh).reshape(-1, 4)))
    keep: dict[str, tuple[np.ndarray, ...]] = {}
    for setting in SETTINGS:
        path = gt_dir / GT_SETTING_FILE.format(setting=setting)
        events = _cells(_mat(path, ["gt_list"])["gt_list"])
        lists = [np.asarray(k, dtype=np.int64).ravel() - 1 for event in events for k in _cells(event)]
        if len(lists) != len(keys):
            raise PathError(path, f"gt_list covers {len(lists)} images but {GT_FACES_FILE} lists {len(keys)}")
        for key, indices, image_boxes in zip(keys, lists, boxes):
            if indices.size and (indices.min() < 0 or indices.max() >= len(image_boxes)):
                raise PathError(path, f"{key}: face numbers {(indices + 1).tolist()} beyond its {len(image_boxes)}")
        keep[setting] = tuple(lists)
    log.info("loaded WIDER FACE ground truth from %s: %d images, %d faces", gt_dir, len(keys), sum(map(len, boxes)))
    return WiderGroundTruth(str(gt_dir), tuple(keys), tuple(boxes), keep)


def refuse_unlisted(ground_truth: WiderGroundTruth, images: Sequence[str], described: str) -> None:
    """Refuse images the ground truth does not list: it cannot score them, so they are no WIDER FACE validation images.

    Images it lists beyond ``images`` are no concern: the protocol scores
    the images evaluated (see :func:`facegrid.eval.protocol.evaluate_wider`).

    Args:
        ground_truth: the official ground truth (:func:`load_wider_ground_truth`).
        images: annotation paths or ``"<event>/<name>"`` keys.
        described: what ``images`` are, for the message (``"validation images"``).

    Raises:
        facegrid.core.errors.PathError: naming the ground truth's folder, how
            many of the images it does not list, and the first of them.
    """
    unknown = ground_truth.unlisted(images)
    if unknown:
        raise PathError(
            ground_truth.where,
            f"does not list {len(unknown):,} of the {len(images):,} {described}, such as {unknown[0]}: "
            "are they WIDER FACE validation images?",
        )
