"""The layout of a packed image: the features of its ``tf.train.Example``, written and read here only.

A packed set (:mod:`facegrid.data.tf.pack`) holds one Example per image. The image
file's bytes are kept exactly as stored, never re-encoded, so that a packed
image decodes to the pixels its file decodes to; its upright size and EXIF
orientation stand beside them, so that a reader can plan a decode (DCT scale,
crop) without parsing the header again. Faces keep the annotation's integers:
boxes ``x1 y1 w h`` as WIDER writes them, and the six attributes, each in a
feature of its own.

Every feature key is defined in this module, and :func:`serialize` and
:func:`parse` are the only code that knows the layout, so that the writer and
every reader agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from facegrid.wider.index import ATTRIBUTES

#: The image's path relative to the images folder, as the annotation file writes it (UTF-8).
PATH = "image/path"
#: The image's position in the annotation file (0-based): its identity within the packed set.
POSITION = "image/position"
#: The image file's bytes as stored.
ENCODED = "image/encoded"
#: Upright full-resolution size, after the EXIF orientation is applied.
WIDTH = "image/width"
HEIGHT = "image/height"
#: The EXIF orientation tag (1 = stored upright).
ORIENTATION = "image/orientation"
#: Face boxes ``x1 y1 w h``, four integers a face, one face after another.
BOXES = "faces/box"
#: One feature per face attribute, in the order of :data:`facegrid.wider.index.ATTRIBUTES`.
ATTRIBUTE_KEYS = tuple(f"faces/{name}" for name in ATTRIBUTES)


@dataclass(frozen=True, eq=False)
class Record:
    """One packed image with its faces.

    Attributes:
        path: relative path, as in the annotation file.
        position: the image's place among the annotation file's images (0-based).
        image: the file's bytes as stored.
        width, height: upright full-resolution size.
        orientation: the EXIF orientation tag.
        boxes: ``[N, 4]`` int32 ``x1 y1 w h``.
        attributes: ``[N, 6]`` uint8, columns named by :data:`facegrid.wider.index.ATTRIBUTES`.
    """

    path: str
    position: int
    image: bytes
    width: int
    height: int
    orientation: int
    boxes: np.ndarray
    attributes: np.ndarray


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, dtype=np.int64).reshape(-1)))


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize(record: Record) -> bytes:
    """``record`` as a serialized Example; the same record always gives the same bytes (features in key order)."""
    feature = {
        PATH: _bytes(record.path.encode("utf-8")),
        POSITION: _ints([record.position]),
        ENCODED: _bytes(record.image),
        WIDTH: _ints([record.width]),
        HEIGHT: _ints([record.height]),
        ORIENTATION: _ints([record.orientation]),
        BOXES: _ints(record.boxes),
        **{key: _ints(record.attributes[:, k]) for k, key in enumerate(ATTRIBUTE_KEYS)},
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def _one(values, key: str):
    if len(values) != 1:
        raise ValueError(f"feature {key!r} holds {len(values)} values, not one")
    return values[0]


def parse(serialized: bytes) -> Record:
    """The :class:`Record` a serialized Example of this layout holds.

    Raises:
        ValueError: not an Example, a feature missing, or features that disagree
            (a box count not a multiple of four, an attribute list of another length).
    """
    try:
        feature = tf.train.Example.FromString(serialized).features.feature
    except DecodeError as error:
        raise ValueError(f"not a tf.train.Example ({error})") from None
    missing = [
        key
        for key in (PATH, POSITION, ENCODED, WIDTH, HEIGHT, ORIENTATION, BOXES, *ATTRIBUTE_KEYS)
        if key not in feature
    ]
    if missing:
        raise ValueError(f"no feature {missing[0]!r}")
    boxes = np.asarray(feature[BOXES].int64_list.value, dtype=np.int64)
    if len(boxes) % 4:
        raise ValueError(f"feature {BOXES!r} holds {len(boxes)} values, not four a face")
    columns = [np.asarray(feature[key].int64_list.value, dtype=np.int64) for key in ATTRIBUTE_KEYS]
    for key, column in zip(ATTRIBUTE_KEYS, columns):
        if len(column) != len(boxes) // 4:
            raise ValueError(f"feature {key!r} holds {len(column)} values for {len(boxes) // 4} faces")
    try:
        path = _one(feature[PATH].bytes_list.value, PATH).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"feature {PATH!r} is not UTF-8") from None
    return Record(
        path=path,
        position=int(_one(feature[POSITION].int64_list.value, POSITION)),
        image=_one(feature[ENCODED].bytes_list.value, ENCODED),
        width=int(_one(feature[WIDTH].int64_list.value, WIDTH)),
        height=int(_one(feature[HEIGHT].int64_list.value, HEIGHT)),
        orientation=int(_one(feature[ORIENTATION].int64_list.value, ORIENTATION)),
        boxes=boxes.reshape(-1, 4).astype(np.int32),
        attributes=np.stack(columns, axis=1).reshape(-1, len(ATTRIBUTES)).astype(np.uint8),
    )


def parse_image(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(file bytes, position)`` of a serialized Example, in TensorFlow ops (for input pipelines)."""
    features = tf.io.parse_single_example(
        serialized,
        {ENCODED: tf.io.FixedLenFeature([], tf.string), POSITION: tf.io.FixedLenFeature([], tf.int64)},
    )
    return features[ENCODED], features[POSITION]
