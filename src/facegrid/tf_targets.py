"""The codecs' target encoding as TensorFlow ops, for input pipelines that run no Python per example.

:func:`into_input` moves an image's boxes into the network input with its
crop and flip, and :func:`encode` gives, for those faces, the very target
that ``codec.encode`` (:mod:`facegrid.grid`) gives: the same float32 values,
bit for bit. The per-size constants (the grid's cell centres) come from the
codec itself, computed in NumPy once per input size and embedded in the
graph, and every operation is the float32 operation of the NumPy code in the
same order, so that rounding agrees too; ``tests/test_tf_targets.py`` holds
the encoders to the same answers on the real annotations.
Divisions are the one exception (:func:`_divide`): a traced graph may turn a
division by a constant into a multiplication by its reciprocal, which rounds
differently.

Only :class:`~facegrid.grid.GridCodec` is encoded here so far; a pipeline
asked for another codec's targets raises.
"""

from __future__ import annotations

import tensorflow as tf

from facegrid.grid import CHANNELS, GridCodec, PyramidCodec


def supports(codec: GridCodec | PyramidCodec) -> bool:
    """Whether :func:`encode` can lay out this codec's targets."""
    return isinstance(codec, GridCodec)


def into_input(
    boxes: tf.Tensor, image_size: tf.Tensor, input_size: int, crop: tf.Tensor, cropped: tf.Tensor, flip: tf.Tensor
) -> tf.Tensor:
    """One image's boxes in pixels of the ``S x S`` input, moved with its pixels as ``ExampleBuilder`` moves them.

    Fractions of the image; with ``cropped``, those whose centre lies in
    ``crop`` in its frame, clipped to it (:func:`facegrid.augment.crop_boxes`),
    the others dropped; mirrored with ``flip`` (:func:`facegrid.augment.flip_boxes`);
    times the input's side.

    Args:
        boxes: float32 ``[N, 4]`` xyxy boxes in pixels of the image.
        image_size: float32 ``[2]``, the image's upright ``(width, height)``.
        input_size: ``S``.
        crop: float64 ``[4]``, the crop as taken (fractions of the image).
        cropped: bool, whether a crop was taken at all.
        flip: bool, whether the pixels were mirrored.
    """
    relative = _divide(boxes, tf.tile(image_size, [2]))

    def crop_them():
        centre = (relative[:, :2] + relative[:, 2:]) * 0.5
        edges = tf.cast(crop, tf.float32)  # compared in the boxes' precision
        kept = tf.reduce_all((centre >= edges[:2]) & (centre < edges[2:]), axis=1)
        origin = tf.tile(tf.cast(crop[:2], tf.float32), [2])
        extent = tf.tile(tf.cast(crop[2:] - crop[:2], tf.float32), [2])
        return tf.minimum(tf.maximum(_divide(tf.boolean_mask(relative, kept) - origin, extent), 0.0), 1.0)

    relative = tf.cond(cropped, crop_them, lambda: relative)
    mirrored = tf.stack([1.0 - relative[:, 2], relative[:, 1], 1.0 - relative[:, 0], relative[:, 3]], axis=1)
    return tf.where(flip, mirrored, relative) * input_size


def encode(codec: GridCodec, boxes: tf.Tensor, ignore: tf.Tensor, width: int, height: int) -> tf.Tensor:
    """float32 ``[G, G, 5]``: the target ``codec.encode(boxes, width, height, ignore)`` gives.

    Args:
        codec: the grid whose layout to write.
        boxes: float32 ``[F, 4]`` xyxy faces in pixels of the ``width x height`` input.
        ignore: float32 ``[M, 4]`` xyxy regions that are neither face nor background.
        width, height: the input size in pixels (fixed for a pipeline).

    Raises:
        TypeError: a codec other than a :class:`~facegrid.grid.GridCodec`.
    """
    if not supports(codec):
        raise TypeError(f"no TensorFlow encoder for {type(codec).__name__}; use a GridCodec")
    grid = codec.grid_size
    cx, cy = (tf.constant(c) for c in codec.cell_centres(width, height))
    regions = tf.concat([boxes, ignore], axis=0)
    inside_x = (cx[None, :] > regions[:, 0:1]) & (cx[None, :] < regions[:, 2:3])  # [R, G]
    inside_y = (cy[None, :] > regions[:, 1:2]) & (cy[None, :] < regions[:, 3:4])
    covered = tf.reduce_any(inside_y[:, :, None] & inside_x[:, None, :], axis=0)  # [G, G]
    objectness = tf.where(covered, -1.0, 0.0)
    target = tf.concat([objectness[..., None], tf.zeros([grid, grid, len(CHANNELS) - 1])], axis=-1)

    limits = tf.constant([width, height, width, height], tf.float32)
    clipped = tf.minimum(tf.maximum(boxes, 0.0), limits)  # np.clip
    size = tf.constant([width, height], tf.float32)
    scaled = _divide((clipped[:, :2] + clipped[:, 2:]) * 0.5, size) * grid
    cells = tf.cast(tf.minimum(tf.floor(scaled), grid - 1), tf.int32)  # column, row
    sides = tf.maximum(clipped[:, 2:] - clipped[:, :2], 0.0)
    area = sides[:, 0] * sides[:, 1]

    # one face per cell: the largest by clipped area, the last listed among equals
    candidates = tf.where(area > 0)[:, 0]
    cell_id = tf.gather(cells[:, 1] * grid + cells[:, 0], candidates)
    areas = tf.gather(area, candidates)
    largest = tf.math.unsorted_segment_max(areas, cell_id, grid * grid)
    contender = tf.where(areas == tf.gather(largest, cell_id), candidates, -1)
    winner = tf.math.unsorted_segment_max(contender, cell_id, grid * grid)
    kept = tf.boolean_mask(winner, winner >= 0)

    kept_cells = tf.gather(cells, kept)
    values = tf.concat(
        [
            tf.ones_like(tf.gather(area, kept))[:, None],
            tf.gather(scaled, kept) - tf.cast(kept_cells, tf.float32),
            _divide(tf.gather(clipped, kept)[:, 2:] - tf.gather(clipped, kept)[:, :2], size),
        ],
        axis=1,
    )
    return tf.tensor_scatter_nd_update(target, tf.reverse(kept_cells, axis=[1]), values)


def _divide(numerator: tf.Tensor, denominator: tf.Tensor) -> tf.Tensor:
    """float32 ``numerator / denominator`` rounded as NumPy's float32 division rounds it.

    Divided in float64 and rounded once to float32: with 53 bits against 24
    that is the correctly rounded float32 quotient. Where graph optimisation
    multiplies by the reciprocal instead, the float64 product is off by an ulp
    of float64 at most, which moves the float32 result only for a quotient
    within ``2**-29`` (relative) of a float32 rounding midpoint.
    """
    quotient = tf.cast(numerator, tf.float64) / tf.cast(denominator, tf.float64)
    return tf.cast(quotient, tf.float32)
