"""One batch cut into even parts: how a global batch is shared between replicas, workers and trainers.

Part ``p`` of ``P`` holds images ``n * p // P`` to ``n * (p + 1) // P`` of a
batch of ``n``: the parts differ by one image at most, and none is empty
while the batch holds ``P`` images or more (TensorFlow's own split fills the
first parts first, and its oneDNN convolutions mishandle an empty batch).
"""

from __future__ import annotations

import tensorflow as tf


def even_parts(
    images: tf.Tensor, targets: tf.Tensor, parts: int, first: int = 0, count: int | None = None
) -> tf.data.Dataset:
    """Parts ``first`` to ``first + count - 1`` (all ``parts`` by default) of the batch ``(images, targets)``."""
    size = tf.shape(images, out_type=tf.int64)[0]

    def part(p):
        start, end = size * p // parts, size * (p + 1) // parts
        return images[start:end], targets[start:end]

    return tf.data.Dataset.range(first, first + (parts if count is None else count)).map(part)
