"""Where the WIDER FACE release keeps what: its folders, its splits, and the ground truth beside its annotations.

The official archives unpack into one dataset folder, ``DATA``::

    DATA/wider_face_split/wider_face_{train,val}_bbx_gt.txt   annotations of the splits whose faces are published
    DATA/WIDER_{train,val,test}/images/<event>/<name>.jpg    images of each split
    DATA/eval_tools/ground_truth/*.mat                       the official validation ground truth

Every module that needs one of these names takes it from here, so that the
layout is written down once.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The release's splits, in its own order.
SPLITS = ("train", "val", "test")

#: The folder of the annotation files, relative to the dataset folder.
ANNOTATIONS_FOLDER = "wider_face_split"

#: The folder of the official ground truth ``.mat`` files, relative to the dataset folder.
GROUND_TRUTH_FOLDER = "eval_tools/ground_truth"


def annotations_file(split: str) -> str:
    """The annotation file of ``split`` (``train`` or ``val``), relative to the dataset folder.

    ``val`` gives ``wider_face_split/wider_face_val_bbx_gt.txt``.
    """
    return f"{ANNOTATIONS_FOLDER}/wider_face_{split}_bbx_gt.txt"


def images_folder(split: str) -> str:
    """The images folder of ``split``, relative to the dataset folder (``WIDER_val/images``)."""
    return f"WIDER_{split}/images"


def val_images(data: str | os.PathLike) -> Path:
    """The validation images of the dataset folder ``data``: ``DATA/WIDER_val/images``."""
    return Path(data) / images_folder("val")


def val_ground_truth(data: str | os.PathLike) -> Path:
    """The official ground truth of the dataset folder ``data``: ``DATA/eval_tools/ground_truth``."""
    return Path(data) / GROUND_TRUTH_FOLDER


def ground_truth_beside(annotations: str | os.PathLike) -> Path:
    """Where the official ground truth lies for an annotation file laid out as the release lays them out.

    ``DATA/wider_face_split/FILE`` gives ``DATA/eval_tools/ground_truth``,
    absolute; whether it is there is the caller's to find out.
    """
    return val_ground_truth(Path(annotations).absolute().parent.parent)
