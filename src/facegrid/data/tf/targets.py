"""The codecs' target encoding as TensorFlow ops, for input pipelines that run no Python per example.

:func:`into_input` moves an image's boxes into the network input with its
crop and flip, and :func:`encode` gives, for those faces, the very target
that ``codec.encode`` (:mod:`facegrid.core.codec`) gives, for a
:class:`~facegrid.core.codec.GridCodec` and a :class:`~facegrid.core.codec.PyramidCodec`
alike: the same float32 values, bit for bit. The per-size constants (the
cell centres and strides) come from the codec itself, computed in NumPy once
per input size and embedded in the graph, and every operation is the
float32 operation of the NumPy code in the same order, so that rounding
agrees too; ``tests/data/tf/test_targets.py`` holds the encoders to the same
answers on the real annotations.

Two steps differ in form, not in result:

* Divisions (:func:`_divide`): a traced graph may turn a division by a
  constant into a multiplication by its reciprocal, which rounds differently.
* A pyramid face's level (:func:`_level_bounds`): NumPy's float32 ``log2``
  and TensorFlow's may round apart, so no logarithm is taken in the graph.
  The level depends only on the product of the face's sides, and grows with
  it; the smallest product ``level_of`` itself puts on each level is found in
  NumPy when the graph is built, and the graph compares products with those.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from facegrid.core.codec import CHANNELS, PYRAMID_CHANNELS, GridCodec, PyramidCodec

#: ``level_of`` floors each side of a face at this (float32) before multiplying them.
_SIDE_FLOOR = np.float32(1e-6)


def supports(codec: GridCodec | PyramidCodec) -> bool:
    """Whether :func:`encode` can lay out this codec's targets.

    Every grid; every pyramid but one whose finest level ends on faces of
    under ``1e-6`` square pixels (``faces_per_stride`` below about ``1e-3``),
    where the level bounds could not be probed (:func:`_level_bounds`).
    """
    if isinstance(codec, GridCodec):
        return True
    return isinstance(codec, PyramidCodec) and _level_of_product(codec, np.array([_SIDE_FLOOR]))[0] == 0


def into_input(
    boxes: tf.Tensor, image_size: tf.Tensor, input_size: int, crop: tf.Tensor, cropped: tf.Tensor, flip: tf.Tensor
) -> tf.Tensor:
    """One image's boxes in pixels of the ``S x S`` input, moved with its pixels as ``ExampleBuilder`` moves them.

    Fractions of the image; with ``cropped``, those whose centre lies in
    ``crop`` in its frame, clipped to it (:func:`facegrid.data.augment.crop_boxes`),
    the others dropped; mirrored with ``flip`` (:func:`facegrid.data.augment.flip_boxes`);
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


def encode(codec: GridCodec | PyramidCodec, boxes: tf.Tensor, ignore: tf.Tensor, width: int, height: int) -> tf.Tensor:
    """float32 ``[G, G, 5]`` or ``[N, 5]``: the target ``codec.encode(boxes, width, height, ignore)`` gives.

    Args:
        codec: the grid or pyramid whose layout to write.
        boxes: float32 ``[F, 4]`` xyxy faces in pixels of the ``width x height`` input.
        ignore: float32 ``[M, 4]`` xyxy regions that are neither face nor background.
        width, height: the input size in pixels (fixed for a pipeline).

    Raises:
        TypeError: a codec :func:`supports` refuses.
    """
    if not supports(codec):
        raise TypeError(f"no TensorFlow encoder for {codec!r}; use a GridCodec or a PyramidCodec")
    if isinstance(codec, PyramidCodec):
        return _encode_pyramid(codec, boxes, ignore, width, height)
    return _encode_grid(codec, boxes, ignore, width, height)


def _encode_grid(codec: GridCodec, boxes: tf.Tensor, ignore: tf.Tensor, width: int, height: int) -> tf.Tensor:
    """``GridCodec.encode_batch`` of one image, as TensorFlow ops."""
    grid = codec.grid_size
    cx, cy = (tf.constant(c) for c in codec.cell_centres(width, height))
    regions = tf.concat([boxes, ignore], axis=0)
    inside_x = (cx[None, :] > regions[:, 0:1]) & (cx[None, :] < regions[:, 2:3])  # [R, G]
    inside_y = (cy[None, :] > regions[:, 1:2]) & (cy[None, :] < regions[:, 3:4])
    covered = tf.reduce_any(inside_y[:, :, None] & inside_x[:, None, :], axis=0)  # [G, G]
    objectness = tf.where(covered, -1.0, 0.0)
    target = tf.concat([objectness[..., None], tf.zeros([grid, grid, len(CHANNELS) - 1])], axis=-1)

    clipped = _clip(boxes, width, height)
    size = tf.constant([width, height], tf.float32)
    scaled = _divide((clipped[:, :2] + clipped[:, 2:]) * 0.5, size) * grid
    cells = tf.cast(tf.minimum(tf.floor(scaled), grid - 1), tf.int32)  # column, row
    sides = tf.maximum(clipped[:, 2:] - clipped[:, :2], 0.0)
    area = sides[:, 0] * sides[:, 1]

    # one face per cell: the largest by clipped area, the last listed among equals
    candidates = tf.where(area > 0)[:, 0]
    cell_id = tf.gather(cells[:, 1] * grid + cells[:, 0], candidates)
    winner = _last_best(tf.gather(area, candidates), candidates, cell_id, grid * grid)
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


def _encode_pyramid(codec: PyramidCodec, boxes: tf.Tensor, ignore: tf.Tensor, width: int, height: int) -> tf.Tensor:
    """``PyramidCodec.encode_batch`` of one image, as TensorFlow ops: ignore regions, then the positives on top."""
    centres, strides, _ = codec.cell_table(width, height)
    count = len(centres)
    cx, cy = tf.constant(centres[:, 0]), tf.constant(centres[:, 1])
    inside = (
        (cx[None, :] > ignore[:, 0:1])
        & (cx[None, :] < ignore[:, 2:3])
        & (cy[None, :] > ignore[:, 1:2])
        & (cy[None, :] < ignore[:, 3:4])
    )  # [M, N]
    score = tf.where(tf.reduce_any(inside, axis=0), -1.0, 0.0)
    target = tf.concat([score[:, None], tf.zeros([count, len(PYRAMID_CHANNELS) - 1])], axis=1)

    clipped = _clip(boxes, width, height)
    sides = clipped[:, 2:] - clipped[:, :2]
    positive = tf.maximum(sides, 0.0)
    area = positive[:, 0] * positive[:, 1]  # box_ops.area
    visible = tf.where(area > 0)[:, 0]
    box, side, area = tf.gather(clipped, visible), tf.gather(sides, visible), tf.gather(area, visible)

    # rule 3: a cell claimed by several faces goes to the smallest, the last listed among equals
    cell, face = _claims(codec, box, side, width, height)
    winner = _last_best(-tf.gather(area, face), face, cell, count)
    won = tf.where(winner >= 0)[:, 0]
    face = tf.gather(winner, won)
    box, stride = tf.gather(box, face), tf.gather(tf.constant(strides), won)[:, None]
    values = tf.concat(
        [
            tf.ones_like(stride),
            _divide((box[:, :2] + box[:, 2:]) * 0.5 - tf.gather(tf.constant(centres), won), stride),
            _divide(tf.gather(side, face), stride),
        ],
        axis=1,
    )
    return tf.tensor_scatter_nd_update(target, won[:, None], values)


def _claims(
    codec: PyramidCodec, box: tf.Tensor, side: tf.Tensor, width: int, height: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(cell, face)`` int64 pairs of rules 1 and 2 for clipped visible faces: ``[V, 4]`` boxes, ``[V, 2]`` sides.

    ``cell`` numbers the cells of one ``width x height`` input, ``face`` indexes
    ``box``. Each face's level is gathered into per-face constants, so the
    ``(2 * reach + 1)**2`` cells around every face are tested at once, in the
    dtypes of ``PyramidCodec._positives``: float64 where it mixes integer
    cells with float32 boxes.
    """
    shapes = np.array(codec.level_shapes(width, height), np.int64)  # rows, columns
    starts = np.cumsum(shapes[:, 0] * shapes[:, 1]) - shapes[:, 0] * shapes[:, 1]
    reach = int(np.ceil(codec.radius))
    dx, dy = (tf.constant(d.ravel()) for d in np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1)))

    level = _levels(codec, side)
    stride = tf.gather(tf.constant(np.array(codec.strides, np.float32)), level)[:, None]
    rows, cols = (tf.gather(tf.constant(shapes[:, k]), level)[:, None] for k in (0, 1))
    centre = (box[:, :2] + box[:, 2:]) * 0.5
    home = tf.minimum(tf.cast(tf.floor(_divide(centre, stride)), tf.int64), tf.concat([cols, rows], axis=1) - 1)
    col, row = home[:, 0:1] + dx[None, :], home[:, 1:2] + dy[None, :]  # [V, K]

    stride, box, centre = tf.cast(stride, tf.float64), tf.cast(box, tf.float64), tf.cast(centre, tf.float64)
    cx, cy = (tf.cast(col, tf.float64) + 0.5) * stride, (tf.cast(row, tf.float64) + 0.5) * stride
    within = tf.gather(tf.constant(codec.radius * np.array(codec.strides, np.float64)), level)[:, None]
    inside = (
        (cx > box[:, 0:1])
        & (cx < box[:, 2:3])
        & (cy > box[:, 1:2])
        & (cy < box[:, 3:4])
        & (tf.abs(cx - centre[:, 0:1]) <= within)
        & (tf.abs(cy - centre[:, 1:2]) <= within)
    )
    chosen = inside | ((dx == 0) & (dy == 0))[None, :]  # the home cell always
    chosen &= (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    pairs = tf.where(chosen)  # (face, slot)
    cell = tf.gather(tf.constant(starts), level)[:, None] + row * cols + col
    return tf.gather_nd(cell, pairs), pairs[:, 0]


def _levels(codec: PyramidCodec, side: tf.Tensor) -> tf.Tensor:
    """int64 ``[V]``: ``codec.level_of`` of faces of ``[V, 2]`` sides, from their product and :func:`_level_bounds`."""
    floored = tf.maximum(side, _SIDE_FLOOR)
    product = floored[:, 0] * floored[:, 1]
    bounds = tf.constant(_level_bounds(codec))
    return tf.reduce_sum(tf.cast(product[:, None] >= bounds[None, :], tf.int64), axis=1)


@functools.lru_cache(maxsize=16)
def _level_bounds(codec: PyramidCodec) -> np.ndarray:
    """float32 ``[L - 1]``: per level but the finest, the smallest side product ``level_of`` puts there or above.

    ``level_of`` takes the stride nearest to ``sqrt(product) / faces_per_stride``
    on a log scale, a level that never falls as the product grows: bisecting
    the positive float32 numbers (in the order of their bit patterns) with
    ``level_of``'s own answers finds each bound in NumPy's own rounding, not
    in that of any ``log2`` here (``tests/data/tf/test_targets.py`` checks every
    product near each bound). The bisection starts from the smallest product
    there is to probe (:data:`_SIDE_FLOOR`), on the finest level (:func:`supports`).
    """
    ends = np.array([_SIDE_FLOOR, np.finfo(np.float32).max], np.float32).view(np.int32).astype(np.int64)
    wanted = np.arange(1, len(codec.strides))
    low, high = np.repeat(ends[0], len(wanted)), np.repeat(ends[1], len(wanted))
    while np.any(high - low > 1):
        middle = (low + high) // 2
        above = _level_of_product(codec, middle.astype(np.int32).view(np.float32)) >= wanted
        low, high = np.where(above, low, middle), np.where(above, middle, high)
    return high.astype(np.int32).view(np.float32)


def _level_of_product(codec: PyramidCodec, products: np.ndarray) -> np.ndarray:
    """``codec.level_of`` of faces whose floored sides multiply to float32 ``products`` (none under the floor)."""
    probes = np.zeros((len(products), 4), np.float32)
    probes[:, 2], probes[:, 3] = products, 1.0  # sides (product, 1)
    return codec.level_of(probes)


def _clip(boxes: tf.Tensor, width: int, height: int) -> tf.Tensor:
    """``box_ops.clip``: ``[N, 4]`` xyxy boxes clipped to the ``width x height`` input, as ``np.clip`` does."""
    return tf.minimum(tf.maximum(boxes, 0.0), tf.constant([width, height, width, height], tf.float32))


def _last_best(score: tf.Tensor, ids: tf.Tensor, segments: tf.Tensor, count: int) -> tf.Tensor:
    """int64 ``[count]``: per segment, the largest of ``ids`` among its entries of the highest ``score``; -1 for none.

    With ``ids`` rising in the order the NumPy codecs list their entries, that
    is the entry a stable sort by segment, then ``score``, puts last in its
    segment: the one ``np.lexsort`` keeps.
    """
    best = tf.math.unsorted_segment_max(score, segments, count)
    contender = tf.where(score == tf.gather(best, segments), ids, -1)
    return tf.maximum(tf.math.unsorted_segment_max(contender, segments, count), -1)


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
