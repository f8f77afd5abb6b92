"""Even parts: how a global batch is shared between replicas, workers and trainers, and a stream cut into steps.

Part ``p`` of ``P`` of ``n`` images holds images ``n * p // P`` to
``n * (p + 1) // P``: the parts differ by one image at most, and none is
empty while there are ``P`` images or more (TensorFlow's own split fills the
first parts first, and its oneDNN convolutions mishandle an empty batch).
"""

from __future__ import annotations

import tensorflow as tf


def _start(n, p, parts):
    """Where part ``p`` of ``parts`` of ``n`` images starts (``p == parts``: the end); ints or tensors."""
    return n * p // parts


def even_parts(
    images: tf.Tensor, targets: tf.Tensor, parts: int, first: int = 0, count: int | None = None
) -> tf.data.Dataset:
    """Parts ``first`` to ``first + count - 1`` (all ``parts`` by default) of the batch ``(images, targets)``."""
    size = tf.shape(images, out_type=tf.int64)[0]

    def part(p):
        start, end = _start(size, p, parts), _start(size, p + 1, parts)
        return images[start:end], targets[start:end]

    return tf.data.Dataset.range(first, first + (parts if count is None else count)).map(part)


def even_batches(dataset: tf.data.Dataset, count: int, parts: int) -> tf.data.Dataset:
    """The ``count`` elements of ``dataset`` in ``parts`` batches, the even parts of them all, in order.

    What serves a stream whose length does not divide into the batches
    wanted, such as a worker's shards of a packed set, in a given number of
    steps while keeping every element.

    Raises:
        ValueError: fewer elements than parts, or no part.
    """
    if not 1 <= parts <= count:
        raise ValueError(f"parts must be 1 to the {count} elements, got {parts}")
    starts = tf.constant([_start(count, p, parts) for p in range(1, parts)], tf.int64)
    sizes = tf.constant([_start(count, p + 1, parts) - _start(count, p, parts) for p in range(parts)], tf.int64)

    def part_of(position, element):
        return tf.searchsorted(starts, tf.reshape(position, [1]), side="right", out_type=tf.int64)[0]

    def size_of(part):
        return sizes[part]

    def element(position, element):
        return element

    def batched(part, elements):
        return elements.map(element).batch(_start(count, 1, parts) + 1)

    return dataset.enumerate().group_by_window(part_of, batched, window_size_func=size_of)
