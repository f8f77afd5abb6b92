"""The target layouts in TensorFlow ops (``facegrid.data.tf.targets``) hold to the NumPy codecs' answers."""

from __future__ import annotations

import numpy as np
import pytest

from facegrid.core import boxes as box_ops
from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.data.augment import NO_JITTER, Augment
from facegrid.data.examples import ExampleBuilder
from facegrid.data.tf import targets as tf_targets
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import FaceFilter

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def train_faces(split_file):
    """A random sample of 400 images of the real train annotation file: all faces, split by the default filter."""
    index = read_annotations(split_file("train"))
    chosen = np.sort(np.random.default_rng(14).choice(len(index), 400, replace=False))
    trained = FaceFilter().mask(index)
    images = []
    for image in chosen.tolist():
        boxes = index.image_boxes(image)
        mask = trained[index.offsets[image] : index.offsets[image + 1]]
        images.append((boxes[mask], boxes[~mask]))
    return images


def assert_same_bits(got: tf.Tensor, expected: np.ndarray):
    """float32 arrays equal bit for bit (``assert_array_equal`` would let ``-0.0`` pass for ``0.0``)."""
    got = got.numpy()
    assert got.dtype == expected.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("grid_size", [1, 7, 26])
def test_every_grid_encoder_gives_the_same_targets_on_real_annotations(train_faces, grid_size):
    """``encode``, ``encode_batch`` and the TensorFlow encoder agree bit for bit, image by image."""
    codec = GridCodec(grid_size)
    width, height = 1024, 768  # WIDER photos are 1024 wide; taller ones' lower faces are clipped away
    encoder = tf.function(lambda b, i: tf_targets.encode(codec, b, i, width, height), reduce_retracing=True)
    faces = [f for f, _ in train_faces]
    ignored = [i for _, i in train_faces]
    batch = codec.encode_batch(
        np.concatenate(faces),
        np.repeat(np.arange(len(faces)), [len(f) for f in faces]),
        len(faces),
        width,
        height,
        np.concatenate(ignored),
        np.repeat(np.arange(len(ignored)), [len(i) for i in ignored]),
    )
    crowded = 0
    for k, (boxes, ignore) in enumerate(train_faces):
        expected = codec.encode(boxes, width, height, ignore)
        np.testing.assert_array_equal(batch[k], expected)
        assert_same_bits(encoder(tf.constant(boxes), tf.constant(ignore)), expected)
        crowded += len(codec.assign(boxes, width, height)) < len(boxes)
    assert crowded > (0 if grid_size == 26 else 100)  # cells holding several faces: the largest-face rule is exercised


#: The pyramids held to NumPy: the bundled model's, and two levels with fewer positive cells per face.
PYRAMIDS = [PyramidCodec((8, 16, 32)), PyramidCodec((16, 32), radius=0.0), PyramidCodec((16, 32), radius=1.0)]


@pytest.mark.parametrize("size", [256, 320])
@pytest.mark.parametrize("codec", PYRAMIDS, ids=["8-16-32", "16-32-r0", "16-32-r1"])
def test_every_pyramid_encoder_gives_the_same_targets_on_real_crops(train_faces, codec, size):
    """FaceSequence's batch targets, ``encode`` and the TensorFlow encoder agree bit for bit on cropped, flipped images.

    A quarter of the images are whole; the others are cropped down to 30% of
    their shorter side and flipped at random, so faces fall on every level,
    straddle the crop's edges and crowd each other's cells.
    """
    rng = np.random.default_rng(size)
    sizes = [(1024, max(768, int(np.ceil(boxes[:, 3].max(initial=0))))) for boxes, _ in train_faces]
    augment = Augment(crop_scale=(0.3, 1.0))
    jitters = [NO_JITTER if k % 4 == 0 else augment.sample(rng, w / h) for k, (w, h) in enumerate(sizes)]
    faces, ignored = [f for f, _ in train_faces], [i for _, i in train_faces]
    batch = ExampleBuilder(size, codec).targets(faces, sizes, jitters, ignored)

    @tf.function(reduce_retracing=True)
    def moved_and_encoded(boxes, ignore, image_size, crop, cropped, flip):
        move = dict(image_size=image_size, input_size=size, crop=crop, cropped=cropped, flip=flip)
        boxes, ignore = tf_targets.into_input(boxes, **move), tf_targets.into_input(ignore, **move)
        return boxes, ignore, tf_targets.encode(codec, boxes, ignore, size, size)

    _, _, levels = codec.cell_table(size, size)
    crowded = 0
    for k, (jitter, (width, height)) in enumerate(zip(jitters, sizes)):
        boxes, ignore, target = moved_and_encoded(
            tf.constant(faces[k]),
            tf.constant(ignored[k]),
            tf.constant([width, height], tf.float32),
            tf.constant(jitter.crop, tf.float64),
            tf.constant(jitter.crop != NO_JITTER.crop),
            tf.constant(jitter.flip),
        )
        assert_same_bits(target, batch[k])
        assert_same_bits(target, codec.encode(boxes.numpy(), size, size, ignore.numpy()))
        visible = box_ops.area(box_ops.clip(boxes.numpy(), size, size)) > 0
        crowded += len(codec.assign(boxes.numpy(), size, size)) < visible.sum()
    positive = batch[..., 0] == 1
    assert all(positive[:, levels == level].sum() > 20 for level in range(len(codec.strides)))  # every level
    assert (batch[..., 0] == -1).sum() > 0  # ignore cells (the faces left out are mostly too small to cover one)
    assert crowded > 10  # images with a face that lost every cell to smaller ones: the smallest-face rule at work


@pytest.mark.parametrize("codec", [*PYRAMIDS, PyramidCodec((8, 16, 32, 64), faces_per_stride=3.0)])
def test_pyramid_level_bounds_are_where_level_of_changes_level(codec):
    """The product bounds the graph compares with step exactly where NumPy's ``level_of`` does.

    Every float32 product within 2**16 steps of a bound (0.8% either side) is
    checked, and a million spread over a wide range of sizes: farther from a
    bound than that window, no rounding of ``log2`` could move a level.
    """
    bounds = tf_targets._level_bounds(codec)
    assert len(bounds) == len(codec.strides) - 1 and np.all(np.diff(bounds) > 0)
    near = [np.arange(b - 2**16, b + 2**16, dtype=np.int32).view(np.float32) for b in bounds.view(np.int32)]
    spread = np.exp(np.random.default_rng(0).uniform(np.log(1e-6), np.log(1e9), 10**6)).astype(np.float32)
    for products in [*near, spread]:
        probes = np.zeros((len(products), 4), np.float32)
        probes[:, 2], probes[:, 3] = products, 1.0
        np.testing.assert_array_equal(codec.level_of(probes), (products[:, None] >= bounds[None, :]).sum(axis=1))


def encoded_alike(codec, boxes, width=256, height=256, ignore=()):
    """The TensorFlow encoder's target, once checked bit for bit against ``codec.encode``."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ignore = np.asarray(ignore, np.float32).reshape(-1, 4)
    target = tf_targets.encode(codec, tf.constant(boxes), tf.constant(ignore), width, height)
    assert_same_bits(target, codec.encode(boxes, width, height, ignore))
    return target.numpy()


def test_pyramid_without_faces_and_with_faces_outside_the_image():
    codec = PyramidCodec()
    assert not encoded_alike(codec, []).any()
    outside = [[-50, -50, -10, -10], [300, 10, 400, 50], [10, 260, 50, 300], [10, 10, 10, 40], [20, 30, 60, 30]]
    assert not encoded_alike(codec, outside).any()  # beyond an edge, or no area: no cell at all
    partly = encoded_alike(codec, [*outside, [-20, -20, 30, 30]])
    assert (partly[:, 0] == 1).sum() >= 1 and (partly[:, 3:5] >= 0).all()  # clipped to 30 x 30
    only_ignored = encoded_alike(codec, [], width=250, height=190, ignore=[[0, 0, 100, 60]])  # sides not strided
    assert set(only_ignored[:, 0]) == {-1.0, 0.0} and not only_ignored[:, 1:].any()


def test_pyramid_shared_cells_go_to_the_smaller_face_then_the_last_listed():
    codec = PyramidCodec((8,))
    centres, _, _ = codec.cell_table(256, 256)
    home = np.flatnonzero((centres == [100.0, 100.0]).all(axis=1))[0]
    big, small = [76, 76, 124, 124], [94, 94, 106, 106]  # 48 and 12 px around (100, 100)
    for boxes in ([big, small], [small, big]):
        assert encoded_alike(codec, boxes)[home, 3:5].tolist() == [12 / 8, 12 / 8]
    tall, wide = [96, 92, 104, 108], [92, 96, 108, 104]  # 8 x 16 and 16 x 8: equal areas, the same cells
    assert encoded_alike(codec, [tall, wide])[home, 3:5].tolist() == [2.0, 1.0]
    assert encoded_alike(codec, [wide, tall])[home, 3:5].tolist() == [1.0, 2.0]
    crowd = np.random.default_rng(3).integers(96, 104, (60, 2)).astype(np.float32)
    encoded_alike(PyramidCodec(), np.concatenate([crowd - 7, crowd + 7], axis=1))  # 60 faces of one area


def test_pyramid_faces_exactly_on_level_bounds():
    codec = PyramidCodec()  # sides 32 x 64 multiply to 2048: sqrt / 4 = 8 * sqrt(2), halfway between 8 and 16
    _, _, levels = codec.cell_table(256, 256)
    for bound, level, width in zip(tf_targets._level_bounds(codec), (1, 2), (32, 64)):
        for product, expected in [(np.nextafter(bound, np.float32(0)), level - 1), (bound, level)]:
            # sides width x product / width, exact (a power of two apart), pinned to the origin: x2 - x1 is exact
            target = encoded_alike(codec, [[0, 0, width, product / np.float32(width)]])
            assert set(levels[target[:, 0] == 1]) == {expected}
            encoded_alike(codec, [[0, 0, np.sqrt(product), np.sqrt(product)]])
    for sides in ([32, 64], [64, 128], [45, 45], [91, 91]):
        encoded_alike(codec, [[10, 10, 10 + sides[0], 10 + sides[1]]])


def test_pyramid_ignore_regions_under_and_over_faces():
    codec = PyramidCodec()
    face, region = [40, 40, 72, 72], [0, 0, 128, 128]
    target = encoded_alike(codec, [face], ignore=[region])
    centres, _, _ = codec.cell_table(256, 256)
    covered = (centres > 0).all(axis=1) & (centres < 128).all(axis=1)
    positive = target[:, 0] == 1
    assert positive.sum() >= 1 and (target[covered & ~positive, 0] == -1).all() and (target[~covered, 0] == 0).all()
    assert not target[~positive, 1:].any()  # an ignore cell has no box
    encoded_alike(codec, [face, [100, 100, 180, 140]], ignore=[[60, 60, 120, 120], region, [-10, -10, 5, 300]])


def test_codecs_the_encoder_supports():
    assert tf_targets.supports(GridCodec(7)) and all(tf_targets.supports(codec) for codec in PYRAMIDS)
    tiny = PyramidCodec(faces_per_stride=1e-5)  # its first level ends below the smallest sides level_of tells apart
    assert not tf_targets.supports(tiny)
    with pytest.raises(TypeError, match="PyramidCodec"):
        tf_targets.encode(tiny, tf.zeros([0, 4]), tf.zeros([0, 4]), 128, 128)


def test_pyramid_encoder_runs_in_a_dataset_map_for_any_number_of_faces():
    codec = PyramidCodec()
    rng = np.random.default_rng(8)
    images = []
    for count in (0, 1, 5, 40):
        corner = rng.uniform(-20, 200, (count, 2))
        images.append(np.concatenate([corner, corner + rng.uniform(2, 120, (count, 2))], axis=1).astype(np.float32))
    ragged = tf.ragged.constant([b.tolist() for b in images], ragged_rank=1, inner_shape=(4,), dtype=tf.float32)
    encoded = tf.data.Dataset.from_tensor_slices(ragged).map(
        lambda boxes: tf_targets.encode(codec, boxes, boxes[:1] + 3.0, 256, 256)
    )
    for boxes, target in zip(images, encoded.as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(target, codec.encode(boxes, 256, 256, boxes[:1] + 3.0))
