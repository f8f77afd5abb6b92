"""The target layouts in TensorFlow ops (``facegrid.tf_targets``) hold to the NumPy codecs' answers."""

from __future__ import annotations

import numpy as np
import pytest

from facegrid import tf_targets
from facegrid.grid import GridCodec, PyramidCodec
from facegrid.index import FaceFilter
from facegrid.wider import read_annotations

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


@pytest.mark.parametrize("grid_size", [1, 7, 26])
def test_every_grid_encoder_gives_the_same_targets_on_real_annotations(train_faces, grid_size):
    """``encode``, ``encode_batch`` and the TensorFlow encoder agree bit for bit, image by image."""
    codec = GridCodec(grid_size)
    width, height = 1024, 768  # WIDER photos are 1024 wide; taller ones' lower faces are clipped away
    encoder = tf.function(lambda b, i: tf_targets.encode(codec, b, i, width, height), reduce_retracing=True)
    faces = [f for f, _ in train_faces]
    ignored = [i for _, i in train_faces]
    batch = codec.encode_batch(
        np.concatenate(faces), np.repeat(np.arange(len(faces)), [len(f) for f in faces]), len(faces), width, height,
        np.concatenate(ignored), np.repeat(np.arange(len(ignored)), [len(i) for i in ignored]),
    )
    crowded = 0
    for k, (boxes, ignore) in enumerate(train_faces):
        expected = codec.encode(boxes, width, height, ignore)
        np.testing.assert_array_equal(batch[k], expected)
        np.testing.assert_array_equal(encoder(tf.constant(boxes), tf.constant(ignore)).numpy(), expected)
        crowded += len(codec.assign(boxes, width, height)) < len(boxes)
    assert crowded > (0 if grid_size == 26 else 100)  # cells holding several faces: the largest-face rule is exercised


def test_pyramid_codec_is_refused():
    with pytest.raises(TypeError, match="PyramidCodec"):
        tf_targets.encode(PyramidCodec(), tf.zeros([0, 4]), tf.zeros([0, 4]), 128, 128)
